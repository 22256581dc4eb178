//! Completions with a list of prompts (OpenAI's batch form: `"prompt": ["a", "b"]`, or a list of
//! token-id lists), as evaluation harnesses send them: each prompt is answered as if alone, and
//! the answers become one response whose choices are numbered prompt by prompt (prompt i's `n`
//! choices are i·n .. i·n + n - 1, as OpenAI numbers them) with the usage summed. Every prompt is
//! prepared (tokenized, checked; a constraint compiled once for all) before any is queued, so a
//! bad one costs nothing; then all of them enter the queue together as one request (one place,
//! admitted or refused whole: a full queue is a 503 before anything runs, never after some
//! answers are done) and run one after another. Not streamed (a 400 says so).
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::api::{CompletionRequest, Endpoint, Prompt};
use super::errors::ApiError;
use super::routes::{collect, job, prepare_off_runtime};
use super::{AppState, ModelInfo};

/// Most prompts in one request.
pub const MAX_PROMPTS: usize = 64;

/// The prompts of a batch request, each as a one-prompt `prompt` (None: not a batch).
pub fn split(req: &CompletionRequest, endpoint: Endpoint) -> Result<Option<Vec<Prompt>>, ApiError> {
    let prompts: Vec<Prompt> = match &req.prompt {
        Some(Prompt::List(l)) if l.len() > 1 => l.iter().cloned().map(Prompt::Text).collect(),
        Some(Prompt::TokenLists(l)) if l.len() > 1 => l.iter().cloned().map(Prompt::Tokens).collect(),
        _ => return Ok(None),
    };
    if endpoint != Endpoint::Completion {
        return Ok(None); // chat refuses `prompt` on its own
    }
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            format!("at most {MAX_PROMPTS} prompts per request, got {}", prompts.len()),
            Some("prompt"),
        ));
    }
    if req.stream == Some(true) {
        return Err(ApiError::invalid("a list of prompts is answered only without `stream`", Some("stream")));
    }
    Ok(Some(prompts))
}

/// Answers every prompt and joins the answers.
pub async fn run(
    s: &Arc<AppState>,
    model: &Arc<ModelInfo>,
    req: CompletionRequest,
    prompts: Vec<Prompt>,
) -> Result<Response, ApiError> {
    let mut prepared = Vec::with_capacity(prompts.len());
    // The first prompt's constraint, compiled, serves the rest (the same fields give the same
    // grammar): one copy per request, not one per prompt.
    let mut compiled = None;
    for prompt in prompts {
        let one = CompletionRequest { prompt: Some(prompt), ..req.clone() };
        let p = prepare_off_runtime(s, model, one, Endpoint::Completion, compiled.clone()).await?;
        compiled = Some(p.constraint.clone());
        prepared.push(p);
    }
    let (jobs, queued): (Vec<_>, Vec<_>) = prepared.into_iter().map(|p| job(model, p, Endpoint::Completion)).unzip();
    // Every prompt's cancel guard lives in `queued` until its answer is collected: a client that
    // leaves cancels the ones not yet run.
    s.engine.submit(jobs)?;
    let mut joined: Option<Value> = None;
    let mut offset = 0;
    for q in queued {
        let mut v = collect(q.head, q.rx, q.guard, q.answer).await?;
        let choices = v["choices"].as_array_mut().map(std::mem::take).unwrap_or_default();
        let count = choices.len();
        let renumbered = choices.into_iter().map(|mut c| {
            c["index"] = Value::from(offset + c["index"].as_u64().unwrap_or(0) as usize);
            c
        });
        match joined.as_mut() {
            None => {
                v["choices"] = Value::Array(renumbered.collect());
                joined = Some(v);
            }
            Some(all) => {
                if let Some(list) = all["choices"].as_array_mut() {
                    list.extend(renumbered);
                }
                add_usage(&mut all["usage"], &v["usage"]);
            }
        }
        offset += count;
    }
    Ok(Json(joined.unwrap_or(Value::Null)).into_response())
}

/// `total` += `one`, field by field (prompt, completion and total tokens, cached tokens).
fn add_usage(total: &mut Value, one: &Value) {
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        total[key] = Value::from(total[key].as_u64().unwrap_or(0) + one[key].as_u64().unwrap_or(0));
    }
    let cached = |u: &Value| u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    total["prompt_tokens_details"]["cached_tokens"] = Value::from(cached(total) + cached(one));
}
