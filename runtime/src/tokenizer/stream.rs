//! Streaming detokenization: byte-level BPE tokens can end in the middle of a UTF-8 character
//! (an emoji is often split over two or three tokens), so text can only be emitted once its
//! characters are complete.
//!
//! [`StreamDecoder`] keeps the bytes of an unfinished character and returns only complete
//! characters from [`StreamDecoder::push`]; bytes that can never form a character are replaced
//! with U+FFFD right away (as `String::from_utf8_lossy` would), and [`StreamDecoder::finish`]
//! replaces an incomplete tail with U+FFFD. The concatenation of everything returned equals
//! `String::from_utf8_lossy` of all the tokens' bytes.

use super::{Tokenizer, TokenizerError};

/// Incremental decoder over one [`Tokenizer`]; see the module documentation.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    /// Bytes received but not yet returned: at most an incomplete character (< 4 bytes) between
    /// calls.
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder { tokenizer, pending: Vec::with_capacity(16) }
    }

    /// Adds one token and returns the text it completes (possibly empty). Unknown ids are an
    /// error and leave the pending bytes untouched.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let bytes = self.tokenizer.token_bytes(id)?;
        self.pending.extend_from_slice(bytes);
        Ok(drain_complete(&mut self.pending, false))
    }

    /// Returns what is still pending, an incomplete character replaced with U+FFFD, and resets
    /// the decoder.
    pub fn finish(&mut self) -> String {
        drain_complete(&mut self.pending, true)
    }

    /// True when bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Removes and returns the longest prefix of `buf` that is complete text (invalid sequences
/// become U+FFFD). With `flush`, an incomplete tail is replaced too and `buf` ends up empty.
fn drain_complete(buf: &mut Vec<u8>, flush: bool) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // from_utf8 guarantees that rest[..valid] is valid, so the default never shows.
                out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        rest = &rest[valid + bad..];
                    }
                    None => {
                        // An incomplete character at the end: hold it back unless flushing.
                        rest = &rest[valid..];
                        if flush {
                            out.push('\u{FFFD}');
                            rest = &[];
                        }
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    let start = buf.len() - keep;
    buf.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::drain_complete;

    fn feed(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut buf = Vec::new();
        let mut outs = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            outs.push(drain_complete(&mut buf, false));
        }
        let tail = drain_complete(&mut buf, true);
        (outs, tail)
    }

    #[test]
    fn holds_back_partial_characters() {
        let smile = "😀".as_bytes();
        let (outs, tail) = feed(&[b"a", &smile[..1], &smile[1..3], &smile[3..], b"b"]);
        assert_eq!(outs, ["a", "", "", "😀", "b"]);
        assert_eq!(tail, "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (outs, tail) = feed(&[b"x\xFFy", b"\xE4\xB8"]);
        assert_eq!(outs, ["x\u{FFFD}y", ""]);
        assert_eq!(tail, "\u{FFFD}");
        let all = b"x\xFFy\xE4\xB8";
        assert_eq!(String::from_utf8_lossy(all), outs.concat() + &tail);
    }

    #[test]
    fn interrupted_sequence_matches_lossy() {
        // A lead byte followed by a non-continuation byte: lossy gives U+FFFD then the byte.
        let (outs, tail) = feed(&[b"\xE4", b"a"]);
        assert_eq!(outs.concat() + &tail, String::from_utf8_lossy(b"\xE4a"));
    }
}
