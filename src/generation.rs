//! Greedy generation over a [`Session`]: prefill the prompt, then one decode step per token
//! (only the token id crosses from the device), streaming text through the tokenizer's
//! UTF-8-safe stream decoder. Stops at a stop id, a stop string, `max_tokens`, a full context or
//! a cancel request (Ctrl-C in the chat). With `GenOptions::logprobs` every step also brings its
//! logits row back, and each generated token's log-probability is reported (`crate::logprobs`).
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use qwen_aot_runtime::executor::{LogitsWanted, StepOutput};
use qwen_aot_runtime::phases;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::speculative::{Draft, NgramDrafter, Speculator};
use qwen_aot_runtime::tokenizer::Tokenizer;
use serde::Serialize;

use crate::host_draw::{HostDraw, HostSteps};
use crate::logprobs::{from_score, token_logprob, TokenLogprob};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop id (`<|im_end|>`, `<|endoftext|>`) was generated; it is included in the ids, not
    /// in the text.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// The KV cache is full.
    Context,
    /// A `--stop` string appeared; the text ends before it.
    Stop,
    /// The caller cancelled (Ctrl-C).
    Interrupted,
}

impl StopReason {
    /// The name `--json` and the statistics line use.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::Length => "length",
            StopReason::Context => "context",
            StopReason::Stop => "stop",
            StopReason::Interrupted => "interrupted",
        }
    }
}

impl Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub ttft_ms: f64,
    /// Tokens per second after the first (which prefill produces); `None` (JSON null) when fewer
    /// than two tokens were generated, so there is no decode to time.
    pub decode_tok_s: Option<f64>,
    pub backend: String,
    /// Speculative decoding (`GenOptions::speculation`): tokens guessed and checked, and how
    /// many of them the model confirmed (both 0 without it).
    pub draft_tokens: usize,
    pub accepted_draft_tokens: usize,
    /// With `GenOptions::logprobs`: one entry per generated token but a final stop id (whose
    /// text is not output), in order.
    #[serde(skip)]
    pub logprobs: Vec<TokenLogprob>,
    /// Seconds from the first token to the last (the decode loop), and how many of them were
    /// spent in the steps -- from a step's launch (or a draft's verify, or a host draw) until its
    /// token was back: the rest is the host's own work per token (text, stop strings, events).
    #[serde(skip)]
    pub decode_secs: f64,
    #[serde(skip)]
    pub step_secs: f64,
}

/// What [`generate_events`] hands its caller as the answer grows.
#[derive(Debug)]
pub enum Emitted<'a> {
    /// Text that is final (no stop string can still claim it).
    Text(&'a str),
    /// A generated token's log-probability (with `GenOptions::logprobs`), before its text.
    Token(&'a TokenLogprob),
}

#[derive(Clone, Debug, Default)]
pub struct GenOptions<'a> {
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub cancel: Option<&'a AtomicBool>,
    /// Guess the next tokens by prompt lookup and check them in one pass; on backends without a
    /// multi-row verify ([`Session::can_verify`]) it is ignored and every token is one step.
    pub speculation: Option<NgramDrafter>,
    /// The tokens the cache held before this prompt (a chat's earlier turns), which the drafter
    /// may copy from as well.
    pub earlier: &'a [u32],
    /// Report each generated token's log-probability with this many alternatives
    /// (`Emitted::Token`): every step then copies its logits row back, and no drafts are made.
    pub logprobs: Option<usize>,
    /// Draw every token on the host from its logits row with the session's sampling parameters
    /// (grammars, `frequency_penalty`, `logit_bias`: [`HostDraw`]; the session's own choice is
    /// not used); no drafts.
    pub draw: Option<&'a HostDraw>,
}

/// Holds back streamed text that could still turn into a stop string.
struct StopFilter<'a> {
    stops: &'a [String],
    pending: String,
}

impl StopFilter<'_> {
    /// Adds `piece`; returns (text safe to emit, whether a stop string was found).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(at) =
            self.stops.iter().filter(|s| !s.is_empty()).filter_map(|s| self.pending.find(s.as_str())).min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).rev().filter(move |&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
            .filter(|p| self.pending.ends_with(p))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }
}

/// The start-up phase that ends with the first token (`generate --verbose`).
pub const FIRST_TOKEN_PHASE: &str = "prefill to the first token";

/// Rows a prompt is scored in at once ([`prompt_logprobs`]) where the backend's scores come from
/// rows copied to the host: 64 rows of a 151,936-token vocabulary are 39 MB, whatever the
/// prompt's length. A backend that scores on the device takes whole prefill chunks.
const HOST_SCORE_ROWS: usize = 64;

/// The log-probability of each of `targets` after the tokens before it, with `top_n`
/// alternatives: prefills `context` (`targets[i]` follows `context[..=i]`; the same length) from
/// the session's position, scoring every row (`session.prefill_scores`: where the rows are
/// computed; on the host in pieces of [`HOST_SCORE_ROWS`]).
pub fn prompt_logprobs(
    session: &mut Session,
    context: &[u32],
    targets: &[u32],
    top_n: usize,
) -> Result<Vec<TokenLogprob>> {
    if context.len() != targets.len() {
        bail!("{} context tokens for {} targets", context.len(), targets.len());
    }
    let piece =
        if session.executor().scores_on_device() { session.executor().max_prefill_tokens() } else { HOST_SCORE_ROWS };
    let mut out = Vec::with_capacity(targets.len());
    for (part, want) in context.chunks(piece).zip(targets.chunks(piece)) {
        let scores = session.prefill_scores(part, want, top_n)?;
        out.extend(want.iter().zip(scores).map(|(&t, s)| from_score(t, s)));
    }
    Ok(out)
}

/// [`generate_events`] for callers that only want the text.
pub fn generate(
    session: &mut Session,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    generate_events(session, tok, prompt_ids, opts, |e| {
        if let Emitted::Text(t) = e {
            on_text(t)
        }
    })
}

pub fn generate_events(
    session: &mut Session,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenOptions,
    mut on_event: impl FnMut(Emitted),
) -> Result<Generation> {
    if opts.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    // A prompt may fill the cache exactly: its first answer token comes from the prefill.
    let (max_seq, model_ctx) = (session.executor().max_seq(), session.executor().hparams().context_length);
    if session.pos() + prompt_ids.len() > max_seq {
        // At the model's whole context there is nothing left to raise.
        let help = if max_seq < model_ctx {
            format!("raise --ctx-size, up to the model's {model_ctx}")
        } else {
            "the model's whole context: shorten the prompt".to_string()
        };
        bail!("the prompt needs {} tokens but the context holds {max_seq} ({help})", session.pos() + prompt_ids.len());
    }
    let stop_ids = tok.eos_ids();
    let start = Instant::now();
    let first_pos = session.pos();
    let top_n = opts.logprobs;
    let rows = top_n.is_some() || opts.draw.is_some();
    let want = if rows { LogitsWanted::Last } else { LogitsWanted::None };
    let prefilled = phases::time(FIRST_TOKEN_PHASE, || session.prefill(prompt_ids, want))?;
    let mut host = opts.draw.map(|d| {
        HostSteps::new(d, session.sampling().clone(), opts.earlier.iter().chain(prompt_ids).copied().collect())
    });
    let first = match host.as_mut() {
        Some(j) => j.next(&prefilled.logits, session.pos())?,
        None => prefilled.next_token,
    };
    // The logprob of each token in `ready`, in the same order (with `logprobs` only).
    let mut ready_lp = std::collections::VecDeque::new();
    if let Some(n) = top_n {
        ready_lp.push_back(token_logprob(&prefilled.logits, first, n));
    }
    let mut logprobs = Vec::new();
    let ttft = start.elapsed();
    let decode_start = Instant::now();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stream = tok.stream_decoder();
    let mut filter = StopFilter { stops: &opts.stop_strings, pending: String::new() };
    let mut emit = |e: Emitted, text: &mut String| match e {
        Emitted::Text("") => {}
        Emitted::Text(s) => {
            on_event(Emitted::Text(s));
            text.push_str(s);
        }
        token => on_event(token),
    };
    // A verify pass brings no logits rows back: logprobs and JSON mode take plain steps.
    let speculation = if rows { None } else { opts.speculation };
    let mut speculator = speculation.and_then(|d| session.verify_row_cost().map(|cost| Speculator::new(d, cost)));
    // What the drafter looks up in: the earlier turns, the prompt, the answer so far.
    let mut context: Vec<u32> = match speculator {
        Some(_) => opts.earlier.iter().chain(prompt_ids).copied().collect(),
        None => Vec::new(),
    };
    let (mut drafted, mut accepted) = (0, 0);
    let mut step_secs = 0.0f64;
    // Tokens already chosen (a verified draft's) and not yet emitted, oldest first.
    let mut ready = std::collections::VecDeque::from([first]);
    // The loop as a closure, so that the rewind below runs on its errors too.
    let mut run = || -> Result<StopReason> {
        Ok(loop {
            let next = ready.pop_front().expect("a token is ready");
            ids.push(next);
            let is_stop_id = stop_ids.contains(&next);
            if let Some(lp) = ready_lp.pop_front().filter(|_| !is_stop_id) {
                emit(Emitted::Token(&lp), &mut text);
                logprobs.push(lp);
            }
            // A stop id ends the answer; its text (`<|im_end|>`) is a control marker, not output.
            let piece = if is_stop_id { String::new() } else { stream.push(next)? };
            let (out, hit) = filter.push(&piece);
            emit(Emitted::Text(&out), &mut text);
            if hit {
                break StopReason::Stop;
            }
            if is_stop_id {
                break StopReason::Eos;
            }
            if ids.len() >= opts.max_tokens {
                break StopReason::Length;
            }
            if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                break StopReason::Interrupted;
            }
            if !ready.is_empty() {
                continue;
            }
            if session.remaining() == 0 {
                break StopReason::Context;
            }
            // The first step captures the decode graph on the GPU: a start-up phase of its own.
            let _first = (ids.len() == 1).then(|| phases::span("first decode step"));
            let draft = match speculator.as_mut() {
                Some(s) => {
                    context.push(next);
                    debug_assert_eq!(context.len(), opts.earlier.len() + prompt_ids.len() + ids.len());
                    // Every token of the pass must fit the cache, and none past max_tokens is wanted.
                    let room = (session.remaining() - 1).min(session.executor().max_prefill_tokens() - 1);
                    s.draft(&context, room.min(opts.max_tokens - ids.len() - 1))
                }
                None => Draft::default(),
            };
            let step_start = Instant::now();
            if draft.tokens.is_empty() {
                let token = match host.as_mut() {
                    Some(h) => {
                        h.fed(next);
                        let (token, out) = host_step(session, next, top_n.is_some(), h)?;
                        if let Some(n) = top_n {
                            ready_lp.push_back(token_logprob(&out.logits, token, n));
                        }
                        token
                    }
                    // The step's row is scored where it is (on the GPU a few bytes cross, not
                    // the row).
                    None => {
                        let out = session.decode(next, false)?;
                        if let Some(n) = top_n {
                            let score = session.last_decode_score(out.next_token, n)?;
                            ready_lp.push_back(from_score(out.next_token, score));
                        }
                        out.next_token
                    }
                };
                ready.push_back(token);
            } else {
                let v = session.verify_draft(next, &draft.tokens)?;
                if let Some(s) = speculator.as_mut() {
                    s.record(&draft, v.accepted);
                }
                drafted += draft.tokens.len();
                accepted += v.accepted;
                // The accepted draft tokens are fed already; the drafter sees them as they are emitted.
                context.extend_from_slice(&v.tokens[..v.accepted]);
                ready.extend(v.tokens);
            }
            step_secs += step_start.elapsed().as_secs_f64();
        })
    };
    let stop_reason = run();
    // A verified draft may have fed tokens past the one the answer stopped at: the cache keeps
    // the prompt and every generated id but the last, as after plain decode steps.
    session.rewind(first_pos + prompt_ids.len() + ids.len().saturating_sub(1));
    let stop_reason = stop_reason?;
    if stop_reason != StopReason::Stop {
        let (out, _) = filter.push(&stream.finish());
        emit(Emitted::Text(&out), &mut text);
        let rest = std::mem::take(&mut filter.pending);
        emit(Emitted::Text(&rest), &mut text);
    }
    let decode_secs = decode_start.elapsed().as_secs_f64();
    let decoded = ids.len().saturating_sub(1);
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text,
        stop_reason,
        ttft_ms: ttft.as_secs_f64() * 1e3,
        decode_tok_s: (decoded > 0 && decode_secs > 0.0).then(|| decoded as f64 / decode_secs),
        backend: session.executor().backend().name().to_string(),
        draft_tokens: drafted,
        accepted_draft_tokens: accepted,
        logprobs,
        decode_secs,
        step_secs,
    })
}

/// One decode step whose token the host draws (`host`): the logits row crosses to the host only
/// where the draw needs it (`with_rows`, or a device choice the draw does not take -- for a
/// greedy answer under a grammar, most steps need no row: the device's argmax is allowed).
fn host_step(session: &mut Session, next: u32, with_rows: bool, host: &mut HostSteps) -> Result<(u32, StepOutput)> {
    // A draw that can never take the device's choice needs every row: with the token, in one
    // read-back, rather than after it.
    let mut out = decode_beside(session, next, with_rows || !host.may_take(), host)?;
    if host.takes(out.next_token)? {
        return Ok((out.next_token, out));
    }
    if out.logits.is_empty() {
        out.logits = session.last_decode_logits()?;
    }
    let token = host.next(&out.logits, session.pos())?;
    Ok((token, out))
}

/// One decode step with the host draw's next grammar mask computed beside it (it needs only the
/// tokens fed so far): on the GPU between the step's launch and its read-back, so that the mask
/// (≈ 16 µs per token on average for the bench's JSON schema on the CI machine; more for larger
/// grammars) hides behind the step instead of following it, with no thread of its own. Without a
/// grammar, the step alone.
fn decode_beside(session: &mut Session, next: u32, rows: bool, host: &mut HostSteps) -> Result<StepOutput> {
    if !host.has_grammar() {
        return Ok(session.decode(next, rows)?);
    }
    let mut prepared = Ok(());
    // A panic inside the grammar library must not unwind through the executor between a launch
    // and its read-back: it becomes this answer's error.
    let out = session.decode_beside(next, rows, &mut || {
        prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.prepare()))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the grammar's mask computation panicked")));
    });
    // The step's own error first: it says more than a grammar stopped by it.
    let out = out?;
    prepared?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter { stops: &stops, pending: String::new() };
        let mut out = String::new();
        for p in pieces {
            let (o, hit) = f.push(p);
            out.push_str(&o);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&f.pending);
        (out, false)
    }

    #[test]
    fn stop_strings_split_across_pieces_are_caught_and_never_printed() {
        assert_eq!(run(&["END"], &["hello E", "N", "D world"]), ("hello ".to_string(), true));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".to_string(), true));
        assert_eq!(run(&["END"], &["hello E", "nd"]), ("hello End".to_string(), false));
        assert_eq!(run(&[], &["x", "y"]), ("xy".to_string(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".to_string(), false));
    }

    #[test]
    fn stop_reason_names_are_the_json_names() {
        for r in [StopReason::Eos, StopReason::Length, StopReason::Context, StopReason::Stop, StopReason::Interrupted] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }
}
