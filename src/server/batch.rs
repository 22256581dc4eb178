//! Completions with a list of prompts (OpenAI's batch form: `"prompt": ["a", "b"]`, or a list of
//! token-id lists), as evaluation harnesses send them: each prompt is answered as its own request,
//! one after another through the queue, and the answers become one response whose choices are
//! numbered prompt by prompt (prompt i's `n` choices are i·n .. i·n + n - 1, as OpenAI numbers
//! them) with the usage summed. Every prompt is prepared (tokenized, checked) before the first is
//! queued, so a bad one costs nothing. Not streamed (a 400 says so).
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::api::{CompletionRequest, Endpoint, Prompt};
use super::errors::ApiError;
use super::routes::{collect, prepare_off_runtime, submit};
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

/// Answers every prompt in turn and joins the answers.
pub async fn run(
    s: &Arc<AppState>,
    model: &Arc<ModelInfo>,
    req: CompletionRequest,
    prompts: Vec<Prompt>,
) -> Result<Response, ApiError> {
    let mut prepared = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let one = CompletionRequest { prompt: Some(prompt), ..req.clone() };
        prepared.push(prepare_off_runtime(s, model, one, Endpoint::Completion).await?);
    }
    let mut joined: Option<Value> = None;
    let mut offset = 0;
    for p in prepared {
        let q = submit(s, model, p, Endpoint::Completion)?;
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
