//! The chat's input: lines read from stdin assembled into messages. A line ending with `\`
//! continues on the next line (the explicit way, in a terminal or a pipe); on a terminal, lines
//! that arrive together -- a paste -- are one message too, told apart from typing by more input
//! being ready the moment a line is read (a person does not press Enter and type the next line
//! within [`PASTE_GAP_MS`]). A pipe keeps one message per line unless a line ends with `\`.
use std::io::{BufRead, BufReader};

/// How long after a line more input must be ready for it to count as the same paste.
pub const PASTE_GAP_MS: i32 = 25;

/// Adds `line` (without its newline) to the message being assembled in `msg`; returns whether
/// the message is complete. `more_ready`: further input is already there (a paste goes on).
pub fn assemble(msg: &mut String, line: &str, more_ready: bool) -> bool {
    let (text, continued) = match line.strip_suffix('\\') {
        Some(t) => (t, true),
        None => (line, false),
    };
    if !msg.is_empty() {
        msg.push('\n');
    }
    msg.push_str(text);
    !(continued || more_ready)
}

/// stdin, read line by line, with a look at whether more is ready.
pub struct Input {
    reader: BufReader<std::io::Stdin>,
    /// Whether to treat ready input as a paste (a terminal; never a pipe).
    paste: bool,
}

/// The longest line the chat reads (a message may span several): far more text than any context
/// holds, and a bound on what one line of stdin can make the process hold in memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// What [`Input::message`] read.
pub enum Got {
    Message(String),
    /// End of input (Ctrl-D or the pipe closed) with nothing pending.
    End,
    /// A message the chat cannot take (why, for the user); the chat goes on with the next one.
    Skipped(&'static str),
}

/// One line of input, read with a bound on its length.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without its `\n` / `\r\n`.
    Text(String),
    /// End of input before any byte of a line.
    End,
    NotUtf8,
    /// Longer than the bound; the rest of it was read and dropped.
    TooLong,
}

/// Reads one line of at most `limit` bytes (more is read to its end and dropped, a chunk at a
/// time, so memory stays bounded).
pub fn read_line_bounded(reader: &mut impl BufRead, limit: usize) -> std::io::Result<Line> {
    let mut bytes = Vec::new();
    let n = std::io::Read::take(&mut *reader, limit as u64 + 1).read_until(b'\n', &mut bytes)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if bytes.len() > limit && bytes.last() != Some(&b'\n') {
        // Drop the rest of the line without keeping it.
        loop {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            reader.consume(used);
            if done {
                break;
            }
        }
        return Ok(Line::TooLong);
    }
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(String::from_utf8(bytes).map_or(Line::NotUtf8, Line::Text))
}

impl Input {
    pub fn new(terminal: bool) -> Self {
        Input { reader: BufReader::new(std::io::stdin()), paste: terminal }
    }

    /// The next message: lines up to one that completes it (see [`assemble`]). `continuation` is
    /// called before a further line the user has to type (after a `\`), to show a prompt.
    pub fn message(&mut self, mut continuation: impl FnMut()) -> std::io::Result<Got> {
        let mut msg = String::new();
        let mut started = false;
        loop {
            let line = match read_line_bounded(&mut self.reader, MAX_LINE_BYTES)? {
                Line::Text(line) => line,
                Line::End => return Ok(if started { Got::Message(msg) } else { Got::End }),
                // The whole message is dropped: a part of it would be sent as if it were all.
                Line::NotUtf8 => return Ok(Got::Skipped("the message is not UTF-8 text")),
                Line::TooLong => return Ok(Got::Skipped("a line of the message is longer than 16 MiB")),
            };
            started = true;
            let line = line.as_str();
            let pasting = self.paste && self.more_ready();
            if assemble(&mut msg, line, pasting) {
                return Ok(Got::Message(msg));
            }
            // A prompt for the next line the user types (a paste's next line is already there).
            if !pasting {
                continuation();
            }
        }
    }

    /// Whether more input is ready now: already buffered, or readable on stdin within the gap.
    fn more_ready(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let mut fd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call; fd 0 is stdin, which we read.
        let r = unsafe { libc::poll(&mut fd, 1, PASTE_GAP_MS) };
        r > 0 && fd.revents & libc::POLLIN != 0
    }
}

#[cfg(test)]
mod tests {
    use super::{assemble, read_line_bounded, Line};

    #[test]
    fn lines_are_bounded_and_checked() {
        let mut input: &[u8] = b"hello\r\nabc\xff\nok\n0123456789abcdef\nlast";
        let mut next = || read_line_bounded(&mut input, 10).unwrap();
        assert_eq!(next(), Line::Text("hello".into()));
        assert_eq!(next(), Line::NotUtf8);
        assert_eq!(next(), Line::Text("ok".into()));
        // 16 bytes against a bound of 10: dropped to its end, and the next line reads whole.
        assert_eq!(next(), Line::TooLong);
        assert_eq!(next(), Line::Text("last".into()));
        assert_eq!(next(), Line::End);
        // Exactly the bound, with its newline: kept.
        let mut exact: &[u8] = b"0123456789\n";
        assert_eq!(read_line_bounded(&mut exact, 10).unwrap(), Line::Text("0123456789".into()));
    }

    /// Feeds `(line, more_ready)` pairs; returns the messages completed.
    fn messages(lines: &[(&str, bool)]) -> Vec<String> {
        let (mut out, mut msg) = (Vec::new(), String::new());
        for &(line, more) in lines {
            if assemble(&mut msg, line, more) {
                out.push(std::mem::take(&mut msg));
            }
        }
        out
    }

    #[test]
    fn a_line_is_a_message() {
        assert_eq!(messages(&[("hello", false), ("again", false)]), ["hello", "again"]);
    }

    #[test]
    fn a_trailing_backslash_continues_and_is_dropped() {
        assert_eq!(messages(&[("def f():\\", false), ("    return 1", false)]), ["def f():\n    return 1"]);
        // Only a trailing one: a backslash inside a line is text.
        assert_eq!(messages(&[(r"a\b", false)]), [r"a\b"]);
        // An empty continued line keeps the blank line.
        assert_eq!(messages(&[("a\\", false), ("\\", false), ("b", false)]), ["a\n\nb"]);
    }

    #[test]
    fn lines_that_arrive_together_are_one_message() {
        let paste = [("first line", true), ("", true), ("last line", false), ("next", false)];
        assert_eq!(messages(&paste), ["first line\n\nlast line", "next"]);
    }
}
