//! Output into a closed pipe (`generate ... | head`) ends the program quietly, as it does for
//! other Unix tools: Rust ignores SIGPIPE, so every `println!` after the reader has gone would
//! panic ("failed printing to stdout: Broken pipe") and `generate` would keep decoding into the
//! void. Restoring the default action makes the first such write end the process (status 141).

/// Call first thing in `main`.
pub fn restore_default() {
    #[cfg(unix)]
    // SAFETY: signal(2) with SIG_DFL for SIGPIPE installs no handler (no Rust code runs in signal
    // context); it is called before any thread is spawned, and only changes what a write to a
    // closed pipe does.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
