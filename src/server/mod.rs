//! `qwen-aot serve`: an OpenAI-compatible HTTP server.
//!
//! Layout: `api` (wire types), `params` (request -> prompt ids, budget, sampling; every refusal
//! a 400), `engine` (the thread that owns the session, the bounded queue, prefix reuse),
//! `routes` (handlers, API key, request counting), `sse` (streamed answers), `metrics`
//! (Prometheus text), `errors` (OpenAI-style error bodies).
//!
//! The listener is bound before the model loads, so `/health` answers 503 during the load and
//! 200 after; SIGINT/SIGTERM stop accepting connections, let the requests in flight finish
//! (streams end with their last chunk and `[DONE]`) and return. Connections are served by
//! `listen` (timeouts on reading a request, a cap on open connections, a bounded stop).
mod api;
mod batch;
mod constraint;
mod engine;
mod errors;
mod listen;
mod logprobs;
mod metrics;
mod params;
mod routes;
mod sse;
mod tokenize;
mod tool_calls;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use qwen_aot_runtime::chat_template::ChatTemplate;
use qwen_aot_runtime::speculative::NgramDrafter;
use qwen_aot_runtime::tokenizer::Tokenizer;

use crate::backend::{self, BackendChoice};
use crate::model;

/// Requests prepared at once ([`AppState::preparing`]): more than the cores that run them.
const PREPARING_AT_ONCE: usize = 4;

/// `qwen-aot serve`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeOptions {
    /// GGUF file or compiled directory (default: the default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port; 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// KV-cache size in tokens (default: min(4096, model context)).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1 routes, /tokenize and /detokenize (default:
    /// $QWEN_AOT_API_KEY, else none).
    #[arg(long, env = "QWEN_AOT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait for the engine; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers, and then again its body: a connection
    /// whose headers do not arrive in time (an idle keep-alive one too) is closed, a body that
    /// does not is answered 408.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout: u64,
    /// Connections open at once; more wait to be accepted until one closes (also kept below
    /// the process's open-file limit).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// No notes on stderr (the listening address is still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Speculative decoding for every request; ignored on a backend that cannot verify drafts,
    /// with a note when `--draft-max` was given (not defaulted).
    #[command(flatten)]
    pub speculation: crate::speculation_args::SpeculationArgs,
    #[command(flatten)]
    pub template: crate::template_args::TemplateArgs,
}

/// What request handling needs of the loaded model.
pub struct ModelInfo {
    pub id: String,
    pub tokenizer: Arc<Tokenizer>,
    /// None when the model has none (or it does not parse): chat requests get a 400.
    pub template: Option<ChatTemplate>,
    pub ctx_size: usize,
    pub backend: String,
    /// The drafter every generation uses (None: one token per step).
    pub speculation: Option<NgramDrafter>,
    /// The vocabulary indexed for structured outputs (`grammar`), built on the first request
    /// that asks for one; the error when it cannot be.
    pub grammar_env: std::sync::OnceLock<Result<Arc<crate::grammar::GrammarEnv>, String>>,
}

pub struct AppState {
    pub model_id: String,
    ready: Arc<OnceLock<Arc<ModelInfo>>>,
    pub engine: engine::EngineHandle,
    pub metrics: Arc<metrics::Metrics>,
    pub api_key: Option<String>,
    pub max_body: usize,
    /// `--read-timeout`: how long a request's body may take to arrive.
    pub read_timeout: Duration,
    /// Turns true when the server starts stopping: a body still arriving is not waited for.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Requests whose handler is running (the stop waits for them, and for the engine's jobs).
    pub handling: AtomicUsize,
    pub started: u64,
    /// Requests being prepared at once (tokenized, rendered, their grammar compiled) on tokio's
    /// blocking threads: a burst waits here rather than taking hundreds of threads.
    pub preparing: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The model, once loaded.
    pub fn model(&self) -> Option<Arc<ModelInfo>> {
        self.ready.get().cloned()
    }
}

/// Cancels a request's generation when dropped: when its handler or stream goes away with the
/// client, or once it has finished (then it is a no-op).
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The name `/v1/models` lists and responses carry: the model file's name without `.gguf`.
fn model_id(model: Option<&std::path::Path>) -> String {
    let name = model
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| model::DEFAULT_MODEL_FILE.to_string());
    name.strip_suffix(".gguf").map(str::to_string).unwrap_or(name)
}

pub fn run(opts: ServeOptions) -> Result<()> {
    if opts.max_queue == 0 {
        anyhow::bail!("--max-queue must be at least 1");
    }
    // Flag mistakes fail before the listener is bound or the model loads.
    let drafter = opts.speculation.drafter()?;
    let chat_template = opts.template.read()?;
    // HTTP work is light; the engine thread does the heavy lifting.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut engine_thread = None;
    let result = rt.block_on(serve(opts, drafter, chat_template, &mut engine_thread));
    // Ending the runtime ends every task, and with them the last handles to the engine; its
    // thread then drops the model -- on the GPU its graphs, device memory and context -- and the
    // process exits only after that: exiting while it did so crashed inside the CUDA driver
    // (SIGSEGV after SIGTERM, most runs on an H100).
    rt.shutdown_timeout(ENGINE_STOP_WAIT);
    if let Some(thread) = engine_thread {
        let deadline = std::time::Instant::now() + ENGINE_STOP_WAIT;
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    result
}

/// How long a stopping server waits for its tasks, then for the engine thread to let go of the
/// model (a generation still running would be cancelled by then: its client is gone).
const ENGINE_STOP_WAIT: Duration = Duration::from_secs(10);

async fn serve(
    opts: ServeOptions,
    drafter: Option<NgramDrafter>,
    chat_template: Option<String>,
    engine_thread: &mut Option<std::thread::JoinHandle<()>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .with_context(|| format!("listening on {}:{}", opts.host, opts.port))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read the port (with --port 0) from this line.
    eprintln!("qwen-aot serve: listening on http://{addr}");
    let id = model_id(opts.model.as_deref());
    let metrics = Arc::new(metrics::Metrics::new());
    let ready = Arc::new(OnceLock::new());
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel();
    let (model_path, choice, ctx, quiet, info_id) =
        (opts.model.clone(), opts.backend, opts.ctx_size, opts.quiet, id.clone());
    let speculation = (drafter, opts.speculation.asked() && !quiet);
    let load = move || load_model(model_path.as_deref(), choice, ctx, quiet, info_id, speculation, chat_template);
    let (engine, thread) = engine::start(load, opts.max_queue, metrics.clone(), ready.clone(), fail_tx)
        .context("starting the engine thread")?;
    *engine_thread = Some(thread);
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let read_timeout = Duration::from_secs(opts.read_timeout);
    let state = Arc::new(AppState {
        model_id: id,
        ready,
        engine,
        metrics,
        api_key: opts.api_key.clone(),
        max_body: opts.max_body_bytes,
        read_timeout,
        stopping: stopping.clone(),
        handling: AtomicUsize::new(0),
        started,
        preparing: Arc::new(tokio::sync::Semaphore::new(PREPARING_AT_ONCE)),
    });
    let app = routes::router(state.clone());

    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let failure_slot = failure.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => {
                eprintln!("qwen-aot serve: stopping (finishing requests in flight; a second signal exits at once)");
                tokio::spawn(async {
                    shutdown_signal().await;
                    std::process::exit(130);
                });
            }
            Ok(e) = fail_rx => {
                if let Ok(mut slot) = failure_slot.lock() {
                    *slot = Some(e);
                }
            }
        }
        let _ = stop_tx.send(true);
    });
    let limits = listen::Limits {
        header_timeout: read_timeout,
        max_connections: connection_cap(opts.max_connections, opts.quiet),
    };
    let busy = move || state.handling.load(Ordering::Relaxed) > 0 || state.engine.busy();
    listen::serve(listener, app, limits, stopping, busy).await;
    // The engine thread ends once the last request's handle is gone (`run` waits for it).
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    match failed {
        Some(e) => Err(e.context("loading the model")),
        None => Ok(()),
    }
}

/// Runs on the engine thread: finds (or compiles) the model and opens it on the backend.
fn load_model(
    model_path: Option<&std::path::Path>,
    choice: BackendChoice,
    ctx: Option<usize>,
    quiet: bool,
    id: String,
    (speculation, note_without_verify): (Option<NgramDrafter>, bool),
    chat_template: Option<String>,
) -> Result<engine::Loaded> {
    let backend::Loaded { mut session, tokenizer, model, .. } = backend::load_model(model_path, choice, ctx, quiet)?;
    // A server answers many prompts: pay the fast prompt path's one-time costs (cuBLAS on the GPU,
    // ~0.2 s) while /health still says loading, not in the first request's time to first token.
    if let Err(e) = session.warm_up() {
        eprintln!("warning: warm-up failed ({e}); the first prompts may be slower");
    }
    let tokenizer = Arc::new(tokenizer);
    let template = match chat_template.as_deref().or(tokenizer.chat_template()).map(ChatTemplate::new) {
        Some(Ok(t)) => Some(crate::template_args::with_model_tokens(t, &tokenizer)),
        Some(Err(e)) => {
            eprintln!("warning: {e}; chat requests will be refused");
            None
        }
        None => None,
    };
    let info = ModelInfo {
        id,
        tokenizer,
        template,
        ctx_size: session.executor().max_seq(),
        backend: session.executor().backend().name().to_string(),
        speculation: speculation.filter(|_| session.can_verify()),
        grammar_env: std::sync::OnceLock::new(),
    };
    if note_without_verify && info.speculation.is_none() {
        eprintln!("{}", crate::speculation_args::unsupported_note(&info.backend));
    }
    if !quiet {
        eprintln!("qwen-aot serve: model loaded ({} backend, context {} tokens)", info.backend, info.ctx_size);
    }
    Ok(engine::Loaded { session, model, info })
}

/// Descriptors kept for everything but connections: the model's files, the listener, stdio.
const RESERVED_FDS: u64 = 64;

/// `--max-connections`, lowered to fit the process's open-file limit (with a note) so that a
/// flood of connections can never take the descriptors the rest of the server needs.
fn connection_cap(asked: u64, quiet: bool) -> usize {
    #[cfg(unix)]
    let fit = {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if ok && lim.rlim_cur != libc::RLIM_INFINITY {
            // rlim_t is u64 on Linux but not on every unix.
            #[allow(clippy::unnecessary_cast)]
            let cur = lim.rlim_cur as u64;
            cur.saturating_sub(RESERVED_FDS).max(1)
        } else {
            u64::MAX
        }
    };
    #[cfg(not(unix))]
    let fit = u64::MAX;
    if asked > fit && !quiet {
        eprintln!("qwen-aot serve: --max-connections {asked} lowered to {fit} (the open-file limit, less {RESERVED_FDS} kept for the rest)");
    }
    usize::try_from(asked.min(fit)).unwrap_or(usize::MAX)
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
