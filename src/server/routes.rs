//! The HTTP routes: generation endpoints, `/v1/models`, `/tokenize` and `/detokenize`
//! (`tokenize.rs`), `/health`, `/metrics`, the API key check
//! and the request counter (which also logs every 500 on stderr), reading a body (bounded in size
//! and time), and OpenAI-style JSON for unknown paths and methods and bad paths.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use qwen_aot_runtime::tokenizer::Tokenizer;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;

use super::api::{parse_request, CompletionRequest, Echo, Endpoint, ResponseHead};
use super::constraint::Constraint;
use super::engine::{Event, Job};
use super::errors::{ApiError, Logged};
use super::logprobs::{logprobs_json, TextOffsets};
use super::params::{prepare, Prepared};
use super::tool_calls::parse;
use super::{batch, sse, tokenize, AppState, CancelOnDrop, ModelInfo};
use crate::host_draw::HostDraw;

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        // A wildcard: ids such as "Qwen/Qwen2.5-0.5B" span path segments.
        .route("/v1/models/{*id}", get(model))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move { ApiError::not_found(req.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        // A bug must cost one request a 500, never the server.
        .layer(CatchPanicLayer::custom(|panic: Box<dyn std::any::Any + Send>| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("qwen-aot serve: 500: a request handler panicked: {what}");
            ApiError::internal("internal error").into_response()
        }))
        .with_state(state)
}

async fn chat_completions(State(s): State<Shared>, body: Body) -> Response {
    generation(s, body, Endpoint::Chat).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Shared>, body: Body) -> Response {
    generation(s, body, Endpoint::Completion).await.unwrap_or_else(IntoResponse::into_response)
}

/// A request's body, read whole: 413 past `--max-body-bytes`, 408 when it has not all arrived
/// within `--read-timeout` (a client that sends part of a body and stops would otherwise hold its
/// connection, and a stop, forever), 503 when the server starts stopping and it has not arrived
/// [`STOP_BODY_GRACE`] later (a request not yet received is not in flight).
///
/// A body over the limit is still read to its end, up to [`DRAIN_BYTES`] past the limit, before
/// the 413: closing a connection with request bytes unread makes the kernel reset it, and a
/// client can then lose the 413 itself, or reuse the connection and fail its next request. Only
/// a body that says (Content-Length) or shows it is larger than that is answered at once.
pub(super) async fn read_body(s: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::too_large(s.max_body);
    let drain_limit = s.max_body.saturating_add(DRAIN_BYTES);
    if body.size_hint().lower() > drain_limit as u64 {
        return Err(too_large());
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let (mut buf, mut seen) = (Vec::new(), 0usize);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::invalid(format!("the request body could not be read: {e}"), None))?;
            seen = seen.saturating_add(chunk.len());
            if seen > drain_limit {
                return Err(too_large());
            }
            if seen <= s.max_body {
                buf.extend_from_slice(&chunk);
            }
        }
        if seen > s.max_body {
            return Err(too_large());
        }
        Ok(Bytes::from(buf))
    };
    let read = tokio::time::timeout(s.read_timeout, read);
    tokio::pin!(read);
    let timed_out = || Err(ApiError::body_timeout(s.read_timeout));
    let mut stopping = s.stopping.clone();
    tokio::select! {
        biased;
        r = &mut read => return r.unwrap_or_else(|_| timed_out()),
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // hyper hands the body over chunk by chunk, so a body sent whole just before the stop may
    // still be on its way in: it gets STOP_BODY_GRACE to finish before the 503.
    match tokio::time::timeout(STOP_BODY_GRACE, &mut read).await {
        Ok(r) => r.unwrap_or_else(|_| timed_out()),
        Err(_) => Err(ApiError::unavailable("the server is stopping", 1)),
    }
}

/// How far past `--max-body-bytes` a body is read (and dropped) before its 413 (see
/// [`read_body`]).
const DRAIN_BYTES: usize = 1 << 20;

/// How long a body still arriving when the server starts stopping may take to finish.
const STOP_BODY_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn response_id(endpoint: Endpoint) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{nanos:08x}{:06x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn generation(s: Shared, body: Body, endpoint: Endpoint) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let model = s.model().ok_or_else(|| ApiError::unavailable("the model is still loading", 5))?;
    let req = parse_request(&body)?;
    drop(body);
    if let Some(prompts) = batch::split(&req, endpoint)? {
        return batch::run(&s, &model, req, prompts).await;
    }
    let p = prepare_off_runtime(&s, &model, req, endpoint, None).await?;
    let q = submit(&s, &model, p, endpoint)?;
    if q.stream {
        return Ok(sse::response(q.head, q.rx, q.guard, q.include_usage, q.answer));
    }
    Ok(Json(collect(q.head, q.rx, q.guard, q.answer).await?).into_response())
}

/// A request in the engine's queue: where its events arrive and how to shape them.
pub(super) struct Queued {
    pub head: ResponseHead,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    /// Dropped (the client went away): the job is cancelled.
    pub guard: CancelOnDrop,
    pub answer: Answer,
    pub stream: bool,
    pub include_usage: bool,
}

/// [`prepare`] on tokio's blocking threads: tokenizing, rendering the template and
/// compiling a grammar (the first one indexes the vocabulary: ≈ 0.45 s) are CPU work, kept off
/// the async workers, at most [`AppState::preparing`] at once. `compiled`: the request's
/// constraint when already compiled (a batch's later prompts).
pub(super) async fn prepare_off_runtime(
    s: &Shared,
    model: &Arc<ModelInfo>,
    req: CompletionRequest,
    endpoint: Endpoint,
    compiled: Option<Option<Constraint>>,
) -> Result<Prepared, ApiError> {
    let model = model.clone();
    let _slot = s.preparing.acquire().await.map_err(|_| ApiError::unavailable("the server is stopping", 1))?;
    tokio::task::spawn_blocking(move || prepare(req, endpoint, &model, compiled))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the request failed: {e}")))?
}

/// Queues a prepared request's job.
pub(super) fn submit(s: &Shared, model: &Arc<ModelInfo>, p: Prepared, endpoint: Endpoint) -> Result<Queued, ApiError> {
    let (job, queued) = job(model, p, endpoint);
    s.engine.submit(vec![job])?;
    Ok(queued)
}

/// A prepared request as the engine's job, and where its events will arrive.
pub(super) fn job(model: &Arc<ModelInfo>, p: Prepared, endpoint: Endpoint) -> (Job, Queued) {
    let echo = p.echo.map(|text| Echo { text, first: p.prompt_ids[0] });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let job = Job {
        prompt_ids: p.prompt_ids,
        choices: p.choices,
        max_tokens: p.max_tokens,
        stop: p.stop,
        sampling: p.sampling.clone(),
        logprobs: p.logprobs,
        draw: p.host_draw.then(|| HostDraw {
            grammar: p.constraint.as_ref().map(|c| c.grammar.clone()),
            frequency_penalty: p.frequency_penalty,
            logit_bias: p.logit_bias.clone(),
        }),
        constraint: p.constraint.as_ref().map(|c| c.param),
        echo: echo.is_some(),
        cancel,
        events: tx,
        enqueued: Instant::now(),
    };
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let head = ResponseHead { endpoint, id: response_id(endpoint), created, model: model.id.clone() };
    let logprobs = p.logprobs.map(|_| model.tokenizer.clone());
    let answer = Answer { choices: p.choices, logprobs, echo, tools: p.tools };
    (job, Queued { head, rx, guard, answer, stream: p.stream, include_usage: p.include_usage })
}

/// What shapes an answer besides its text: log-probabilities (named through that tokenizer),
/// completions' `echo`, and the functions a chat answer may call.
pub struct Answer {
    /// `n`: how many choices.
    pub choices: usize,
    pub logprobs: Option<Arc<Tokenizer>>,
    pub echo: Option<Echo>,
    pub tools: Vec<String>,
}

/// A non-streamed answer: gathers each choice's pieces (and, with `logprobs`, its tokens'
/// log-probabilities), after the echoed prompt if any; with tools, the calls parsed out of each
/// text. Dropping this future (the client went away) drops the guard, which cancels the
/// generation.
pub(super) async fn collect(
    head: ResponseHead,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
    answer: Answer,
) -> Result<serde_json::Value, ApiError> {
    let Answer { choices: n, logprobs, echo, tools } = answer;
    let echoed = echo.as_ref().map(|e| e.text.clone()).unwrap_or_default();
    let mut texts = vec![echoed; n];
    let mut tokens = vec![Vec::new(); n];
    let mut finish = vec!["length"; n];
    // A scored prompt's entries (PromptLogprobs precedes every Token), before each choice's.
    let mut scored = Vec::new();
    let mut unscored = None;
    loop {
        match rx.recv().await {
            Some(Event::Text(i, t)) => texts[i].push_str(&t),
            Some(Event::Token(i, t)) => tokens[i].push(t),
            Some(Event::PromptLogprobs(s)) => {
                unscored = echo.as_ref().map(|e| e.first);
                scored = s;
            }
            Some(Event::Finished { choice, finish_reason }) => finish[choice] = finish_reason,
            Some(Event::Done { usage }) => {
                let choices = (0..n)
                    .map(|i| {
                        let lp = logprobs.as_deref().map(|tok| {
                            let all: Vec<_> = scored.iter().chain(&tokens[i]).cloned().collect();
                            let mut offsets = TextOffsets::new(0, texts[i].chars().count());
                            if let (Some(_), Some(e)) = (unscored, &echo) {
                                offsets = offsets.with_prompt(1 + scored.len(), e.text.chars().count());
                            }
                            logprobs_json(head.endpoint, tok, unscored, &all, &mut offsets)
                        });
                        let mut choice = head.choice(i, &texts[i], finish[i], lp);
                        if let Some((content, calls)) =
                            Some(&tools).filter(|t| !t.is_empty()).and_then(|t| parse(&texts[i], t))
                        {
                            ResponseHead::with_tool_calls(&mut choice, content.as_deref(), &calls);
                        }
                        choice
                    })
                    .collect();
                return Ok(head.full(choices, usage));
            }
            Some(Event::Failed(e)) => return Err(e.for_request(&head.id)),
            None => return Err(ApiError::internal("the engine stopped").for_request(&head.id)),
        }
    }
}

/// The served model's OpenAI model object.
fn model_object(s: &AppState) -> serde_json::Value {
    json!({"id": s.model_id, "object": "model", "created": s.started, "owned_by": "qwen-aot"})
}

async fn models(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({"object": "list", "data": [model_object(&s)]}))
}

/// `GET /v1/models/{id}` (the openai client's `models.retrieve`): the served model by its id, a
/// 404 in OpenAI's shape for any other; an id that is not text (`%ff`) is a 400 in that shape too.
async fn model(State(s): State<Shared>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(r) => {
            return ApiError::invalid(
                format!("the model id in the path is not valid: {}", r.body_text()),
                Some("model"),
            )
            .into_response()
        }
    };
    if id == s.model_id {
        Json(model_object(&s)).into_response()
    } else {
        ApiError::model_not_found(&id).into_response()
    }
}

/// 503 while the model loads, then 200: what a load balancer's health check wants.
async fn health(State(s): State<Shared>) -> Response {
    match s.model() {
        Some(m) => Json(json!({"status": "ok", "model": s.model_id, "backend": m.backend})).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
        .into_response()
}

/// `--api-key`: every /v1 route needs `Authorization: Bearer KEY` (health and metrics stay open
/// for probes and scrapers).
async fn require_api_key(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so response time does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts a handler as running while it is (a stop waits for it), and the request by endpoint
/// and status once answered; a 500 is also one line on stderr (method, path, request id where
/// the answer had one, message), or nobody would hear of it but the client.
async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    struct Handling<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Handling<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    s.handling.fetch_add(1, Ordering::SeqCst);
    let _handling = Handling(&s.handling);
    let (method, uri) = (req.method().clone(), req.uri().path().to_string());
    let path = req.extensions().get::<MatchedPath>().map_or("other", |p| match p.as_str() {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/models" | "/v1/models/{*id}" => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    });
    let resp = next.run(req).await;
    s.metrics.count_request(path, resp.status().as_u16());
    if let Some(line) = log_line(method.as_str(), &uri, &resp) {
        eprintln!("{line}");
    }
    resp
}

/// The stderr line for a 500 (None for any other status).
fn log_line(method: &str, path: &str, resp: &Response) -> Option<String> {
    if resp.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return None;
    }
    let (id, message) = match resp.extensions().get::<Logged>() {
        Some(l) => (l.request_id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default(), l.message.as_str()),
        None => (String::new(), "(no message)"),
    };
    Some(format!("qwen-aot serve: 500 on {method} {path}{id}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 500 is one line naming the route, the request and the message; nothing else is logged.
    #[test]
    fn a_500_is_logged_with_its_request_and_message() {
        let resp = ApiError::internal("the engine stopped").for_request("cmpl-1").into_response();
        assert_eq!(
            log_line("POST", "/v1/completions", &resp).as_deref(),
            Some("qwen-aot serve: 500 on POST /v1/completions (cmpl-1): the engine stopped")
        );
        let bare = ApiError::internal("boom").into_response();
        assert_eq!(log_line("GET", "/x", &bare).as_deref(), Some("qwen-aot serve: 500 on GET /x: boom"));
        let client = ApiError::invalid("bad", Some("n")).into_response();
        assert_eq!(log_line("POST", "/v1/completions", &client), None);
    }
}
