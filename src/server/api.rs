//! Wire types of the OpenAI API subset that `serve` speaks: the request bodies of
//! `/v1/chat/completions` and `/v1/completions` (one struct; each endpoint requires its own
//! input field) and the response / stream-chunk bodies.
//!
//! Numbers that must be positive are read as signed or float so that a wrong value reaches our
//! own check (with the parameter's name) instead of a bare serde message. Unknown fields are
//! ignored, as OpenAI clients send fields this server has no use for (`user`, `metadata`, ...).
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::tool_calls::ToolCall;

/// `model` is not read: one model is served, whatever name a client sends.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CompletionRequest {
    /// Chat only.
    pub messages: Option<Vec<InMessage>>,
    /// Completions only: a string, token ids, or a list holding one of either.
    pub prompt: Option<Prompt>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Token ids (object keys) to biases added to their logits.
    pub logit_bias: Option<Value>,
    /// Not OpenAI's, but vLLM's and llama-server's name for the multiplicative penalty.
    pub repetition_penalty: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    /// A bool for chat (alternatives: `top_logprobs`), an integer for completions (the number of
    /// alternatives): params::logprobs reads both.
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
    /// Chat only: function definitions (`{"type": "function", "function": {"name", ...}}`).
    pub tools: Option<Vec<Value>>,
    /// "auto" (the default with tools), "none", "required" or one named function (forced by a
    /// grammar).
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    /// vLLM's structured-output extensions (`server::constraint`): `{"json" | "regex" |
    /// "choice" | "grammar": ...}`, and the older fields of the same meanings.
    pub structured_outputs: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    /// Null is allowed (an assistant turn that only called tools); it renders as empty text.
    pub content: Option<Content>,
    /// An assistant turn's calls: `[{"id", "type": "function", "function": {"name", "arguments":
    /// a JSON string}}]`.
    pub tool_calls: Option<Vec<Value>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    List(Vec<String>),
    /// Token ids (signed, so that a negative id reaches params' range check).
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Parses a request body: valid UTF-8, exactly one JSON object (nothing after it but
/// whitespace), the right types; the error names the field.
pub fn parse_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    if let Err(e) = std::str::from_utf8(body) {
        return Err(ApiError::invalid(
            format!("the request body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
            None,
        ));
    }
    let Some(&first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::invalid("the request body is empty; send a JSON object", None));
    };
    // serde reads a struct from a JSON array too (field by field, in order): only `{` may start.
    if first != b'{' {
        let what = match first {
            b'[' => "an array",
            b'"' => "a string",
            b'-' | b'0'..=b'9' => "a number",
            b't' | b'f' => "a boolean",
            b'n' => "null",
            _ => "not JSON",
        };
        return Err(ApiError::invalid(format!("the request body must be a JSON object, got {what}"), None));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A syntax error has no field to blame (serde_path_to_error says `?` or `.`).
        if inner.is_syntax() || inner.is_eof() || path.is_empty() || path == "." || path == "?" {
            ApiError::invalid(format!("the request body is not a valid JSON object: {inner}"), None)
        } else {
            ApiError::invalid(format!("invalid value for `{path}`: {inner}"), Some(&path))
        }
    })?;
    // One object per body: `{...} garbage` or `{...}{...}` is a malformed request, not the first
    // object with the rest ignored.
    de.end().map_err(|e| {
        ApiError::invalid(format!("the request body has more after its JSON object ({e}); send one object"), None)
    })?;
    Ok(req)
}

/// Which endpoint a response or chunk is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// `cached_tokens`: prompt tokens served from the previous request's KV cache (not prefilled).
    pub prompt_tokens_details: CachedTokens,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CachedTokens {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, cached_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: CachedTokens { cached_tokens },
        }
    }
}

/// Completions' `echo`: the prompt's text, returned before the answer, and its first token (the
/// one a scored prompt leaves unscored).
#[derive(Clone, Debug)]
pub struct Echo {
    pub text: String,
    pub first: u32,
}

/// What every response and chunk of one request shares.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseHead {
    fn wrap(&self, object: &str, choices: Value) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }

    /// Choice `index` of a non-streamed answer (`logprobs`: the choice's, or null).
    pub fn choice(&self, index: usize, text: &str, finish_reason: &str, logprobs: Option<Value>) -> Value {
        let logprobs = logprobs.unwrap_or(Value::Null);
        match self.endpoint {
            Endpoint::Chat => {
                json!({"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": finish_reason})
            }
            Endpoint::Completion => {
                json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason})
            }
        }
    }

    /// The whole answer of a non-streamed request: its `choices` ([`ResponseHead::choice`]).
    pub fn full(&self, choices: Vec<Value>, usage: Usage) -> Value {
        let object = if self.endpoint == Endpoint::Chat { "chat.completion" } else { "text_completion" };
        let mut v = self.wrap(object, Value::Array(choices));
        v["usage"] = json!(usage);
        v
    }

    /// The first chunk of choice `index` of a chat stream announces the role (OpenAI sends it
    /// with empty content).
    pub fn role_chunk(&self, index: usize) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| self.wrap("chat.completion.chunk", json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])))
    }

    /// A chat answer's function calls (tool_calls.rs) into its `choice`: the message's
    /// `tool_calls`, its content (null when none came before the calls), finish reason
    /// "tool_calls".
    pub fn with_tool_calls(choice: &mut Value, content: Option<&str>, calls: &[ToolCall]) {
        choice["message"]["content"] = content.map_or(Value::Null, |c| json!(c));
        choice["message"]["tool_calls"] = calls.iter().map(|c| c.json(None)).collect();
        choice["finish_reason"] = json!("tool_calls");
    }

    /// A chat stream's chunk with choice `index`'s function calls (each whole, with its index).
    pub fn tool_calls_chunk(&self, index: usize, calls: &[ToolCall]) -> Value {
        let calls: Vec<Value> = calls.iter().enumerate().map(|(i, c)| c.json(Some(i))).collect();
        self.wrap(
            "chat.completion.chunk",
            json!([{"index": index, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null}]),
        )
    }

    /// A chunk of choice `index` carrying `text` (and the log-probabilities of the tokens
    /// generated since its last chunk), or (with `finish_reason`) its closing chunk with an empty
    /// delta.
    pub fn chunk(&self, index: usize, text: &str, finish_reason: Option<&str>, logprobs: Option<Value>) -> Value {
        let logprobs = logprobs.unwrap_or(Value::Null);
        match self.endpoint {
            Endpoint::Chat => {
                let delta =
                    if finish_reason.is_some() && text.is_empty() { json!({}) } else { json!({"content": text}) };
                self.wrap(
                    "chat.completion.chunk",
                    json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]),
                )
            }
            Endpoint::Completion => self.wrap(
                "text_completion",
                json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]),
            ),
        }
    }

    /// `stream_options.include_usage`: one last chunk with no choices and the usage.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        let object = if self.endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut v = self.wrap(object, json!([]));
        v["usage"] = json!(usage);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One JSON object and nothing after it but whitespace; anything else is a 400 that says
    /// what was wrong, never a request built from part of the body.
    #[test]
    fn a_body_is_exactly_one_json_object() {
        let ok = parse_request(b" {\"prompt\": \"a\", \"max_tokens\": 2} \n").expect("one object");
        assert_eq!(ok.max_tokens, Some(2));
        let refused = |body: &[u8]| parse_request(body).expect_err("refused").message;
        let trailing = refused(b"{\"prompt\": \"a\"} }}}garbage");
        assert!(trailing.contains("more after its JSON object") && trailing.contains("column 17"), "{trailing}");
        assert!(refused(b"{\"prompt\": \"a\"}{\"x\": 1}").contains("more after its JSON object"));
        assert_eq!(refused(b"[\"a\", null, null, 1]"), "the request body must be a JSON object, got an array");
        assert_eq!(refused(b"\"a\""), "the request body must be a JSON object, got a string");
        assert_eq!(refused(b"17"), "the request body must be a JSON object, got a number");
        assert_eq!(refused(b"  "), "the request body is empty; send a JSON object");
        assert!(refused(b"{\"prompt\": ").starts_with("the request body is not a valid JSON object"));
    }
}
