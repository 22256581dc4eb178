//! The program's output on stdout. A write that fails -- a full disk (`> /dev/full`), a file
//! system gone read-only -- ends the program with one clear error and status 1, as a closed pipe
//! ends it quietly (`sigpipe.rs`), instead of `println!`'s panic with a backtrace, and instead of
//! decoding on into output that is lost. [`outln!`] and [`out!`] are `println!` and `print!` so.
use std::io::Write;

/// Writes `args` to stdout, or ends the program on the error (see the module's comment).
pub fn write_fmt_or_exit(args: std::fmt::Arguments) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        exit_on(e);
    }
}

/// Writes `bytes` to stdout and flushes them (streamed text: each piece shows as it comes), or
/// ends the program on the error.
pub fn write_flushed_or_exit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        exit_on(e);
    }
}

fn exit_on(e: std::io::Error) -> ! {
    eprintln!("error: writing the output to stdout: {e}");
    std::process::exit(1);
}

/// `println!` that ends the program with one clear error when stdout cannot be written.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write_fmt_or_exit(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write_fmt_or_exit(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends the program with one clear error when stdout cannot be written.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write_fmt_or_exit(format_args!($($arg)*))
    };
}
