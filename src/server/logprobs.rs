//! Generated tokens' log-probabilities (`crate::logprobs`) as each endpoint's JSON:
//! - chat (`logprobs: true`, `top_logprobs: N`): `{"content": [{"token", "logprob", "bytes",
//!   "top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": null}`;
//! - completions (`logprobs: N`): the legacy parallel lists `{"tokens", "token_logprobs",
//!   "top_logprobs": [{token: logprob, ...}, ...], "text_offset"}`; with `echo` the prompt's
//!   tokens come first, the very first with null in both (nothing predicts it).
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

/// The `logprobs` object of a choice (or of a stream chunk) for `tokens`, after `unscored` (an
/// echoed prompt's first token: null log-probability; completions only); `text_offset` is where
/// the first token's text starts in the text returned (completions only; in characters).
pub fn logprobs_json(
    endpoint: Endpoint,
    tok: &Tokenizer,
    unscored: Option<u32>,
    tokens: &[TokenLogprob],
    text_offset: usize,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<Value> = tokens.iter().map(|t| chat_entry(tok, t.id, t.logprob, Some(&t.top))).collect();
            json!({"content": content, "refusal": null})
        }
        Endpoint::Completion => {
            let (mut texts, mut offsets, mut tops, mut lps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut at = text_offset;
            if let Some(id) = unscored {
                let (text, _) = token_text(tok, id);
                offsets.push(at);
                at += text.chars().count();
                texts.push(text);
                tops.push(Value::Null);
                lps.push(Value::Null);
            }
            for t in tokens {
                let (text, _) = token_text(tok, t.id);
                offsets.push(at);
                at += text.chars().count();
                texts.push(text);
                // Two alternatives may share a text (byte fragments): the likelier one is kept.
                let mut top = Map::new();
                for &(j, lp) in &t.top {
                    top.entry(token_text(tok, j).0).or_insert(json!(lp));
                }
                tops.push(Value::Object(top));
                lps.push(json!(t.logprob));
            }
            json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
        }
    }
}

/// Characters the completion-style tokens `ids` add to `text_offset` (for the next stream chunk).
pub fn chars_of(tok: &Tokenizer, ids: impl IntoIterator<Item = u32>) -> usize {
    ids.into_iter().map(|id| token_text(tok, id).0.chars().count()).sum()
}
