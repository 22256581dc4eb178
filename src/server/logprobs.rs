//! Generated tokens' log-probabilities (`crate::logprobs`) as each endpoint's JSON:
//! - chat (`logprobs: true`, `top_logprobs: N`): `{"content": [{"token", "logprob", "bytes",
//!   "top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": null}`;
//! - completions (`logprobs: N`): the legacy parallel lists `{"tokens", "token_logprobs",
//!   "top_logprobs": [{token: logprob, ...}, ...], "text_offset"}`; with `echo` the prompt's
//!   tokens come first, the very first with null in both (nothing predicts it).
//!
//! `text_offset` counts characters of the returned text as it is decoded ([`TextOffsets`]).
//!
//! A token's "token" is its bytes as UTF-8 (U+FFFD where a token holds part of a character;
//! "bytes" has the exact bytes). An id past the tokenizer's vocabulary (the logits row may be
//! padded) is the empty string.
use qwen_aot_runtime::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use super::api::Endpoint;
use crate::logprobs::TokenLogprob;

fn token_text(tok: &Tokenizer, id: u32) -> (String, &[u8]) {
    let bytes = tok.token_bytes(id).unwrap_or(&[]);
    (String::from_utf8_lossy(bytes).into_owned(), bytes)
}

/// One chat `content` entry (token, logprob, bytes), plus its alternatives when `top` is given.
fn chat_entry(tok: &Tokenizer, id: u32, logprob: f32, top: Option<&[(u32, f32)]>) -> Value {
    let (text, bytes) = token_text(tok, id);
    let mut v = json!({"token": text, "logprob": logprob, "bytes": bytes});
    if let Some(top) = top {
        v["top_logprobs"] = top.iter().map(|&(j, lp)| chat_entry(tok, j, lp, None)).collect();
    }
    v
}

/// Where completions' `text_offset`s point: the character (Unicode scalar) each token's text
/// starts at in the text returned, counted as that text is decoded -- bytes that end mid-character
/// are held until the token that completes the character, so a token holding only part of one
/// adds nothing and the next starts where the character does; an invalid byte, or a character
/// left incomplete where the prompt ends, is one U+FFFD, as the decoders write it. The echoed prompt
/// and the answer are decoded apart: the answer's first token starts where the prompt's text as
/// returned ends. Offsets never pass `limit`, the characters of the text they index (text held
/// back by a stop string is never sent).
#[derive(Clone, Debug, Default)]
pub struct TextOffsets {
    chars: usize,
    /// Bytes of a character not yet complete (at most 3).
    pending: Vec<u8>,
    /// Tokens left in the echoed prompt, and where its text ends (in characters).
    prompt_left: usize,
    prompt_end: usize,
    pub limit: usize,
}

impl TextOffsets {
    /// Offsets from `start` characters (the text before the first token), bounded by `limit`.
    pub fn new(start: usize, limit: usize) -> TextOffsets {
        TextOffsets { chars: start, limit, ..TextOffsets::default() }
    }

    /// The next `prompt_tokens` are an echoed prompt's, whose text (`prompt_chars` characters
    /// as returned) ends after them.
    pub fn with_prompt(mut self, prompt_tokens: usize, prompt_chars: usize) -> TextOffsets {
        self.prompt_left = prompt_tokens;
        self.prompt_end = self.chars + prompt_chars;
        self
    }

    /// The offset of a token with these bytes, then the characters it completes counted.
    pub fn next(&mut self, bytes: &[u8]) -> usize {
        let at = self.chars.min(self.limit);
        self.pending.extend_from_slice(bytes);
        self.chars += complete_chars(&mut self.pending);
        if self.prompt_left > 0 {
            self.prompt_left -= 1;
            if self.prompt_left == 0 {
                // The answer's decoder starts afresh where the prompt's text ends.
                self.pending.clear();
                self.chars = self.prompt_end;
            }
        }
        at
    }
}

/// Counts the characters `buf` decodes to, as the stream decoder writes them (an invalid
/// sequence is one U+FFFD), and removes them; an incomplete character at the end stays.
fn complete_chars(buf: &mut Vec<u8>) -> usize {
    let mut count = 0;
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                count += s.chars().count();
                rest = &[];
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                count += std::str::from_utf8(&rest[..valid]).map_or(0, |s| s.chars().count());
                match e.error_len() {
                    Some(bad) => {
                        count += 1;
                        rest = &rest[valid + bad..];
                    }
                    None => {
                        rest = &rest[valid..];
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    buf.drain(..buf.len() - keep);
    count
}

/// The `logprobs` object of a choice (or of a stream chunk) for `tokens`, after `unscored` (an
/// echoed prompt's first token: null log-probability; completions only); `offsets` gives each
/// token's `text_offset` (completions only) and moves past them.
pub fn logprobs_json(
    endpoint: Endpoint,
    tok: &Tokenizer,
    unscored: Option<u32>,
    tokens: &[TokenLogprob],
    offsets: &mut TextOffsets,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<Value> = tokens.iter().map(|t| chat_entry(tok, t.id, t.logprob, Some(&t.top))).collect();
            json!({"content": content, "refusal": null})
        }
        Endpoint::Completion => {
            let (mut texts, mut at, mut tops, mut lps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            if let Some(id) = unscored {
                let (text, bytes) = token_text(tok, id);
                at.push(offsets.next(bytes));
                texts.push(text);
                tops.push(Value::Null);
                lps.push(Value::Null);
            }
            for t in tokens {
                let (text, bytes) = token_text(tok, t.id);
                at.push(offsets.next(bytes));
                texts.push(text);
                // Two alternatives may share a text (byte fragments): the likelier one is kept.
                let mut top = Map::new();
                for &(j, lp) in &t.top {
                    top.entry(token_text(tok, j).0).or_insert(json!(lp));
                }
                tops.push(Value::Object(top));
                lps.push(json!(t.logprob));
            }
            json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": at})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "🙂" is F0 9F 99 82: split over three tokens, all three start where the character does
    /// (the first two complete nothing), and the token after it starts one character later.
    #[test]
    fn a_character_split_across_tokens_counts_once_where_it_completes() {
        let mut o = TextOffsets::new(0, usize::MAX);
        let at: Vec<usize> = [&b"a "[..], b"\xF0\x9F", b"\x99", b"\x82", b" b"].iter().map(|t| o.next(t)).collect();
        assert_eq!(at, [0, 2, 2, 2, 3]);
        assert_eq!(o.next(b""), 5, "a 🙂 b is 5 characters");
    }

    /// An invalid byte is one U+FFFD; the echoed prompt's text (here "x" and the U+FFFD its
    /// incomplete last character decodes to) ends after its tokens, so the answer's bytes do not
    /// complete its character.
    #[test]
    fn incomplete_and_invalid_bytes_are_one_replacement_each() {
        let mut o = TextOffsets::new(0, usize::MAX).with_prompt(2, 2);
        assert_eq!(o.next(b"x"), 0);
        assert_eq!(o.next(b"\xE4\xB8"), 1, "the prompt ends mid-character: one U+FFFD");
        assert_eq!(o.next(b"\xAD"), 2, "the answer's stray continuation byte");
        assert_eq!(o.next(b"\xFFy"), 3);
        assert_eq!(o.next(b""), 5, "x, U+FFFD, U+FFFD, U+FFFD, y");
    }

    /// Offsets never pass the text they index (tokens of a stop string the text leaves out).
    #[test]
    fn offsets_stop_at_the_limit() {
        let mut o = TextOffsets::new(0, 3);
        let at: Vec<usize> = [&b"ab"[..], b"cd", b"ef"].iter().map(|t| o.next(t)).collect();
        assert_eq!(at, [0, 2, 3]);
    }
}
