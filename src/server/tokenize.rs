//! `POST /tokenize` and `POST /detokenize` in vLLM's shapes (llama.cpp's server names the text
//! `content`; both names are read): what a client needs to count a prompt's tokens against the
//! context or to turn ids from `logprobs` back into text, with the model's own tokenizer.
//!
//! - `/tokenize` takes `prompt` (or `content`), or `messages` (and `tools`) rendered by the chat
//!   template exactly as `/v1/chat/completions` renders them; answers `{"tokens", "count",
//!   "max_model_len"}`.
//! - `/detokenize` takes `tokens` (ids in the vocabulary); answers `{"prompt"}`.
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::api::{parse_request, Prompt};
use super::errors::ApiError;
use super::params::input_ids;
use super::routes::read_body;
use super::AppState;

type Shared = std::sync::Arc<AppState>;

pub async fn tokenize(State(s): State<Shared>, body: Body) -> Response {
    tokenize_body(&s, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn detokenize(State(s): State<Shared>, body: Body) -> Response {
    detokenize_body(&s, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn tokenize_body(s: &Shared, body: Body) -> Result<Response, ApiError> {
    let body = read_body(s, body).await?;
    let model = s.model().ok_or_else(|| ApiError::unavailable("the model is still loading", 5))?;
    let mut req = parse_request(&body)?;
    if req.prompt.is_none() && req.messages.is_none() {
        // llama.cpp's name for the text.
        let content = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("content").cloned());
        match content {
            Some(Value::String(t)) => req.prompt = Some(Prompt::Text(t)),
            Some(_) => return Err(ApiError::invalid("`content` must be a string", Some("content"))),
            None => return Err(ApiError::invalid("give `prompt` (or `content`) or `messages`", Some("prompt"))),
        }
    }
    // A long prompt's tokenization is CPU work: off the async workers.
    let info = model.clone();
    let _slot = s.preparing.acquire().await.map_err(|_| ApiError::unavailable("the server is stopping", 1))?;
    let ids = tokio::task::spawn_blocking(move || input_ids(&req, &info))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??;
    Ok(Json(json!({"tokens": ids, "count": ids.len(), "max_model_len": model.ctx_size})).into_response())
}

async fn detokenize_body(s: &Shared, body: Body) -> Result<Response, ApiError> {
    let body = read_body(s, body).await?;
    let model = s.model().ok_or_else(|| ApiError::unavailable("the model is still loading", 5))?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not a valid JSON object: {e}"), None))?;
    let bad = || ApiError::invalid("`tokens` must be a list of token ids", Some("tokens"));
    let tokens = v.get("tokens").and_then(Value::as_array).ok_or_else(bad)?;
    let vocab = model.tokenizer.vocab_size();
    let out_of_range = |id: i128| ApiError::invalid(format!("token id {id} is not in 0..{vocab}"), Some("tokens"));
    let ids = tokens
        .iter()
        .map(|t| match (t.as_u64(), t.as_i64()) {
            (Some(id), _) if id < vocab as u64 => Ok(id as u32),
            (Some(id), _) => Err(out_of_range(id.into())),
            // A negative id is an integer, just not one in the vocabulary.
            (None, Some(id)) => Err(out_of_range(id.into())),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let text = model.tokenizer.decode(&ids).map_err(|e| ApiError::invalid(e.to_string(), Some("tokens")))?;
    Ok(Json(json!({"prompt": text})).into_response())
}
