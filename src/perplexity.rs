//! Perplexity with llama.cpp's method (`llama-perplexity`): the text is split into
//! non-overlapping windows of `ctx` tokens, each evaluated from an empty cache, and only the
//! second half of each window is scored (every scored token has at least ctx/2 tokens of
//! context). PPL = exp(mean NLL); the standard error follows llama.cpp: the NLL's standard error
//! of the mean, propagated through exp.
use std::time::Instant;

use anyhow::{bail, Result};
use qwen_aot_runtime::scores::log_normaliser;
use qwen_aot_runtime::session::Session;
use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Perplexity {
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub windows: usize,
    pub tokens_scored: usize,
    pub tokens_evaluated: usize,
    pub tok_s: f64,
}

/// Negative log-likelihood of `target` under the logits `row` (log-softmax in f64).
pub fn nll(row: &[f32], target: u32) -> f64 {
    log_normaliser(row) - f64::from(row[target as usize])
}

/// The smallest window: the second half of it is scored, and it needs at least two targets.
pub fn check_ctx(ctx: usize) -> Result<()> {
    if ctx < 4 {
        bail!("--ctx must be at least 4");
    }
    Ok(())
}

pub fn perplexity(
    session: &mut Session,
    tokens: &[u32],
    ctx: usize,
    mut on_window: impl FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    check_ctx(ctx)?;
    if ctx > session.executor().max_seq() {
        bail!("--ctx {ctx} exceeds the KV cache ({} tokens)", session.executor().max_seq());
    }
    let windows = tokens.len() / ctx;
    if windows == 0 {
        bail!("the text has {} tokens; perplexity needs at least one window of --ctx {ctx} tokens", tokens.len());
    }
    let first = ctx / 2;
    let (mut sum, mut sum_sq, mut count) = (0.0f64, 0.0f64, 0usize);
    let start = Instant::now();
    for w in 0..windows {
        let win = &tokens[w * ctx..(w + 1) * ctx];
        session.reset();
        // Every row scored where it is computed (on the GPU only 16 bytes a row cross to the
        // host): its log-probability of the token after it. The second half's are summed, in
        // row order.
        let scores = session.prefill_scores(&win[..ctx - 1], &win[1..], 0)?;
        for s in &scores[first..] {
            let v = -f64::from(s.logprob);
            sum += v;
            sum_sq += v * v;
            count += 1;
        }
        on_window(w + 1, windows, (sum / count as f64).exp());
    }
    let secs = start.elapsed().as_secs_f64();
    let mean = sum / count as f64;
    let var = (sum_sq / count as f64 - mean * mean).max(0.0);
    let stderr_nll = (var / (count as f64 - 1.0).max(1.0)).sqrt();
    let ppl = mean.exp();
    Ok(Perplexity {
        ppl,
        ppl_stderr: ppl * stderr_nll,
        windows,
        tokens_scored: count,
        tokens_evaluated: windows * (ctx - 1),
        tok_s: (windows * (ctx - 1)) as f64 / secs,
    })
}
