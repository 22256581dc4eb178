//! Greedy generation over a [`Session`]: prefill the prompt, then one decode step per token
//! (only the token id crosses from the device), streaming text through the tokenizer's
//! UTF-8-safe stream decoder.
use std::time::Instant;

use anyhow::{bail, Result};
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::tokenizer::Tokenizer;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// A stop id (`<|im_end|>`, `<|endoftext|>`) was generated; it is included in the ids.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// The KV cache is full.
    Context,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub ttft_ms: f64,
    pub decode_tok_s: f64,
    pub backend: String,
}

pub fn generate(session: &mut Session, tok: &Tokenizer, prompt_ids: &[u32], max_tokens: usize, mut on_text: impl FnMut(&str)) -> Result<Generation> {
    if max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    if session.pos() + prompt_ids.len() >= session.executor().max_seq() {
        bail!(
            "the prompt has {} tokens but the context holds {} (raise --ctx-size up to the model's context length)",
            prompt_ids.len(),
            session.executor().max_seq()
        );
    }
    let stop_ids = tok.eos_ids();
    let start = Instant::now();
    let mut next = session.prefill(prompt_ids, LogitsWanted::None)?.next_token;
    let ttft = start.elapsed();
    let decode_start = Instant::now();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stream = tok.stream_decoder();
    let stop_reason = loop {
        ids.push(next);
        let piece = stream.push(next)?;
        if !piece.is_empty() {
            on_text(&piece);
            text.push_str(&piece);
        }
        if stop_ids.contains(&next) {
            break StopReason::Eos;
        }
        if ids.len() >= max_tokens {
            break StopReason::Length;
        }
        if session.remaining() == 0 {
            break StopReason::Context;
        }
        next = session.decode(next, false)?.next_token;
    };
    let tail = stream.finish();
    if !tail.is_empty() {
        on_text(&tail);
        text.push_str(&tail);
    }
    let decode_secs = decode_start.elapsed().as_secs_f64();
    let decoded = ids.len().saturating_sub(1);
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text,
        stop_reason,
        ttft_ms: ttft.as_secs_f64() * 1e3,
        decode_tok_s: if decoded > 0 && decode_secs > 0.0 { decoded as f64 / decode_secs } else { 0.0 },
        backend: session.executor().backend().name().to_string(),
    })
}
