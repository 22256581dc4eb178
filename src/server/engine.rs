//! The engine thread: it loads the model (so the executor, which may hold a GPU context, never
//! crosses threads), then runs queued jobs one at a time through the shared generation loop
//! (`generation::generate`: stop ids, stop strings, UTF-8-safe streaming, cancellation).
//!
//! The queue is bounded: a full queue is a 503 at once rather than an unbounded wait. Its
//! entries are requests, each with its jobs (one, or a batch completion's one per prompt), so a
//! batch is admitted or refused whole and then runs through. The KV cache keeps the previous
//! request's tokens, and a request that starts with them (a chat's next turn) prefills only what
//! is new.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Result;
use qwen_aot_runtime::sampler::SamplingParams;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::speculative::NgramDrafter;
use qwen_aot_runtime::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use super::api::Usage;
use super::errors::ApiError;
use super::metrics::Metrics;
use super::ModelInfo;
use crate::chat::common_prefix;
use crate::generation::{generate_events, prompt_logprobs, Emitted, GenOptions, Generation, StopReason};
use crate::grammar::GrammarError;
use crate::host_draw::HostDraw;
use crate::logprobs::TokenLogprob;

pub struct Job {
    pub prompt_ids: Vec<u32>,
    /// Answers to generate (`n`), one after another from the same prompt, each with its own
    /// seed (the request's seed plus its index).
    pub choices: usize,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    /// Report each token's log-probability with this many alternatives (`Event::Token`).
    pub logprobs: Option<usize>,
    /// Tokens drawn on the host (JSON mode, `frequency_penalty`, `logit_bias`: `HostDraw`).
    pub draw: Option<HostDraw>,
    /// The request parameter that gave `draw`'s grammar: a grammar that fails mid-answer is
    /// the client's error, a 400 naming it.
    pub constraint: Option<&'static str>,
    /// Completions' `echo`: with `logprobs`, the prompt's tokens are scored too
    /// (`Event::PromptLogprobs`). `max_tokens` may then be 0.
    pub echo: bool,
    /// Set when the client goes away: the engine skips the job, or ends it at the next token.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
    pub enqueued: Instant,
}

#[derive(Debug)]
pub enum Event {
    /// Text of choice `.0`.
    Text(usize, String),
    /// A token of choice `.0` and its log-probability (requests with `logprobs`), sent before its
    /// text.
    Token(usize, TokenLogprob),
    /// `echo` with `logprobs`: the prompt's tokens but the first (which nothing predicts), scored;
    /// sent before anything generated.
    PromptLogprobs(Vec<TokenLogprob>),
    /// Choice `choice` has ended.
    Finished { choice: usize, finish_reason: &'static str },
    /// Every choice has ended.
    Done { usage: Usage },
    /// The job failed: a 500, or a 400 when the request's own grammar could not go on.
    Failed(ApiError),
}

/// The HTTP side's end of the queue.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Vec<Job>>,
    metrics: Arc<Metrics>,
    /// Requests submitted whose jobs have not all run (waiting or running).
    pending: Arc<AtomicUsize>,
}

impl EngineHandle {
    /// Queues one request's jobs (run one after another, nothing between them), or refuses
    /// them all with a 503 when the queue is full.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), ApiError> {
        // Counted before the send so the engine's decrement never runs first.
        self.metrics.queue_depth.inc();
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(jobs) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.dec();
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => {
                        self.metrics.rejected_queue_full.inc();
                        ApiError::unavailable("the server is busy (request queue full); retry shortly", 1)
                    }
                    TrySendError::Disconnected(_) => ApiError::unavailable("the engine has stopped", 5),
                })
            }
        }
    }

    /// Whether a request is waiting for the engine or running on it.
    pub fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }
}

/// What the engine thread loads: the session, the compiled model it was built from (kept open
/// for the executor's lifetime), and what the HTTP side needs.
pub struct Loaded {
    pub session: Session,
    pub model: qwen_aot_runtime::compiled::CompiledModel,
    pub info: ModelInfo,
}

/// Starts the engine thread. `load` runs on it; once it succeeds `ready` holds what the HTTP
/// side needs, and on failure the error goes to `failed`.
pub fn start(
    load: impl FnOnce() -> Result<Loaded> + Send + 'static,
    queue: usize,
    metrics: Arc<Metrics>,
    ready: Arc<OnceLock<Arc<ModelInfo>>>,
    failed: tokio::sync::oneshot::Sender<anyhow::Error>,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let (tx, rx) = sync_channel::<Vec<Job>>(queue);
    let m = metrics.clone();
    let pending = Arc::new(AtomicUsize::new(0));
    let done = pending.clone();
    let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let Loaded { session, model, info } = match load() {
            Ok(x) => x,
            Err(e) => {
                let _ = failed.send(e);
                return;
            }
        };
        let (tokenizer, drafter) = (info.tokenizer.clone(), info.speculation);
        m.kv_cache_capacity.set(info.ctx_size as i64);
        // The HTTP side only starts serving generations once this is set.
        let _ = ready.set(Arc::new(info));
        run(session, &tokenizer, rx, &m, drafter, &done);
        drop(model);
    })?;
    Ok((EngineHandle { tx, metrics, pending }, thread))
}

/// Runs requests' jobs until every sender is gone (the server has stopped); `pending` counts
/// down as each request's last job ends.
fn run(
    mut session: Session,
    tok: &Tokenizer,
    rx: Receiver<Vec<Job>>,
    metrics: &Metrics,
    drafter: Option<NgramDrafter>,
    pending: &AtomicUsize,
) {
    // Token ids the KV cache holds, position by position.
    let mut cached: Vec<u32> = Vec::new();
    for jobs in rx {
        metrics.queue_depth.dec();
        for job in jobs {
            if job.cancel.load(Ordering::Relaxed) {
                continue;
            }
            // A panic in one generation must not take the server down: answer 500, forget the
            // cache.
            let outcome =
                catch_unwind(AssertUnwindSafe(|| run_job(&mut session, tok, &mut cached, &job, metrics, drafter)));
            let event = match outcome {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => Event::Failed(failure(&e, job.constraint)),
                Err(_) => {
                    session.reset();
                    cached.clear();
                    Event::Failed(ApiError::internal("internal error during generation"))
                }
            };
            let _ = job.events.send(event);
            metrics.kv_cache_used.set(session.pos() as i64);
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A job's error as the client hears it. A grammar that compiled but cannot go on mid-answer
/// (llguidance's limits: "Current row has 20001 items; max is 2000") is the request's grammar at
/// fault: a 400 naming its parameter, in llguidance's first line (what follows is a state dump
/// for its authors). Anything else is the server's: a 500 with the whole chain.
fn failure(e: &anyhow::Error, constraint: Option<&'static str>) -> ApiError {
    match e.chain().find_map(|c| c.downcast_ref::<GrammarError>()) {
        Some(GrammarError::Step(why)) => {
            let why = why.lines().next().unwrap_or_default().trim();
            match constraint {
                Some(param) => {
                    ApiError::invalid(format!("constrained decoding by `{param}` stopped: {why}"), Some(param))
                }
                None => ApiError::invalid(format!("constrained decoding stopped: {why}"), None),
            }
        }
        _ => ApiError::internal(format!("{e:#}")),
    }
}

fn run_job(
    session: &mut Session,
    tok: &Tokenizer,
    cached: &mut Vec<u32>,
    job: &Job,
    metrics: &Metrics,
    drafter: Option<NgramDrafter>,
) -> Result<Event> {
    let ids = &job.prompt_ids;
    let queue_wait = job.enqueued.elapsed().as_secs_f64();
    let send = |event: Event| {
        // The receiver is gone only when the client is: stop at the next token.
        if job.events.send(event).is_err() {
            job.cancel.store(true, Ordering::Relaxed);
        }
    };
    // Reuse the cache for the prefix it already holds; at least one token is prefilled, as the
    // prefill produces the first answer token. A prompt to score is prefilled whole, every row's
    // logits kept (all but its last token: the generation's prefill takes that one).
    let score = job.echo && job.logprobs.is_some();
    let keep = if score { 0 } else { common_prefix(cached, ids).min(ids.len() - 1) };
    session.rewind(keep);
    cached.truncate(keep);
    let mut start = keep;
    if let (true, Some(top_n)) = (score, job.logprobs) {
        let n = ids.len();
        let scored = prompt_logprobs(session, &ids[..n - 1], &ids[1..], top_n).inspect_err(|_| session.rewind(0))?;
        cached.extend_from_slice(&ids[..n - 1]);
        start = n - 1;
        send(Event::PromptLogprobs(scored));
    }
    metrics.prompt_tokens.inc_by(ids.len() as u64);
    metrics.cached_prompt_tokens.inc_by(keep as u64);
    let mut generated = 0;
    for choice in 0..job.choices {
        if job.max_tokens == 0 {
            // `echo` with no answer: the prompt alone (scored above when asked).
            send(Event::Finished { choice, finish_reason: "length" });
            continue;
        }
        if choice > 0 {
            // The next answer from the same prompt: the cache keeps all of it but its last token.
            if job.cancel.load(Ordering::Relaxed) {
                break;
            }
            start = ids.len() - 1;
            session.rewind(start);
            cached.truncate(start);
        }
        session.set_sampling(&SamplingParams {
            seed: job.sampling.seed.wrapping_add(choice as u64),
            ..job.sampling.clone()
        })?;
        let (gen, finish_reason) = run_choice(session, tok, cached, job, start, choice, drafter, &send)?;
        generated += gen.ids.len();
        metrics.generated_tokens.inc_by(gen.ids.len() as u64);
        metrics.draft_tokens.inc_by(gen.draft_tokens as u64);
        metrics.accepted_draft_tokens.inc_by(gen.accepted_draft_tokens as u64);
        if choice == 0 {
            metrics.ttft.observe(queue_wait + gen.ttft_ms / 1e3);
        }
        if let Some(rate) = gen.decode_tok_s {
            metrics.time_per_output_token.observe(1.0 / rate);
        }
        metrics.decode_seconds.inc_by(gen.decode_secs);
        metrics.decode_step_seconds.inc_by(gen.step_secs);
        send(Event::Finished { choice, finish_reason });
    }
    Ok(Event::Done { usage: Usage::new(ids.len(), keep, generated) })
}

/// One answer from the session at `start` (the cache holding `ids[..start]`), its events sent as
/// choice `choice`; the cache then holds the prompt and the answer but its last token.
#[allow(clippy::too_many_arguments)]
fn run_choice(
    session: &mut Session,
    tok: &Tokenizer,
    cached: &mut Vec<u32>,
    job: &Job,
    start: usize,
    choice: usize,
    drafter: Option<NgramDrafter>,
    send: &dyn Fn(Event),
) -> Result<(Generation, &'static str)> {
    let ids = &job.prompt_ids;
    let opts = GenOptions {
        max_tokens: job.max_tokens,
        stop_strings: job.stop.clone(),
        cancel: Some(&job.cancel),
        speculation: drafter,
        earlier: cached,
        logprobs: job.logprobs,
        // Host draws use the session's parameters, with this answer's seed set above.
        draw: job.draw.as_ref(),
    };
    let result = generate_events(session, tok, &ids[start..], &opts, |e| {
        send(match e {
            Emitted::Text(piece) => Event::Text(choice, piece.to_string()),
            Emitted::Token(lp) => Event::Token(choice, lp.clone()),
        })
    });
    let gen = match result {
        Ok(g) => g,
        Err(e) => {
            session.rewind(start);
            return Err(e);
        }
    };
    // The cache now holds the prompt and every generated id but the last (never fed back).
    cached.extend_from_slice(&ids[start..]);
    cached.extend_from_slice(&gen.ids[..gen.ids.len() - 1]);
    debug_assert_eq!(cached.len(), session.pos());
    let finish_reason = match gen.stop_reason {
        StopReason::Eos | StopReason::Stop => "stop",
        // Interrupted: the client is gone and nobody reads this.
        StopReason::Length | StopReason::Context | StopReason::Interrupted => "length",
    };
    Ok((gen, finish_reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grammar that cannot go on is the request's 400, in its first line and naming the
    /// parameter; every other failure is a 500 with the whole chain.
    #[test]
    fn a_grammar_that_stops_mid_answer_is_the_clients_error() {
        let step =
            GrammarError::Step("Parser Error: Current row has 3001 items; max is 2000\n<state>\nTokens: x".into());
        let e = failure(&anyhow::Error::new(step).context("generating"), Some("guided_grammar"));
        assert_eq!(
            (e.status.as_u16(), e.kind, e.param.as_deref()),
            (400, "invalid_request_error", Some("guided_grammar"))
        );
        assert_eq!(
            e.message,
            "constrained decoding by `guided_grammar` stopped: Parser Error: Current row has 3001 items; max is 2000"
        );
        let e = failure(&anyhow::anyhow!("the executor failed"), Some("guided_grammar"));
        assert_eq!((e.status.as_u16(), e.kind, e.message.as_str()), (500, "server_error", "the executor failed"));
    }
}
