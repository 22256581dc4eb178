//! From a parsed request to what the engine runs: the prompt's token ids (through the model's
//! chat template for chat), the token budget and the sampling parameters. Every value the
//! engine cannot honour is refused here with a 400 naming the parameter, before the request
//! takes a place in the queue.
use std::time::{SystemTime, UNIX_EPOCH};

use qwen_aot_runtime::chat_template::ChatMessage;
use qwen_aot_runtime::sampler::SamplingParams;
use serde_json::Value;

use super::api::{CompletionRequest, Content, Endpoint, Prompt, Stop};
use super::constraint::{constraint, Constraint};
use super::errors::ApiError;
use super::ModelInfo;
use crate::logprobs::MAX_TOP_LOGPROBS;

/// Most stop strings per request (OpenAI allows 4; more only costs a little per token).
const MAX_STOPS: usize = 16;

#[derive(Debug)]
pub struct Prepared {
    pub prompt_ids: Vec<u32>,
    /// `n`: answers to generate from the prompt.
    pub choices: usize,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    /// Report log-probabilities with this many alternatives per token.
    pub logprobs: Option<usize>,
    /// Completions' `echo`: the prompt as given, to put before the answer (and with `logprobs`,
    /// its tokens scored).
    pub echo: Option<String>,
    /// Chat with `tools`: the functions an answer may call (their calls are parsed out of it).
    pub tools: Vec<String>,
    /// `response_format` json_object or json_schema, a forced `tool_choice` or vLLM's guided
    /// fields: the answer is a sentence of this grammar.
    pub constraint: Option<Constraint>,
    /// OpenAI's `frequency_penalty` and `logit_bias` (drawn on the host: `host_draw`).
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    /// Whether tokens are drawn on the host (a grammar, a frequency penalty or a logit bias).
    pub host_draw: bool,
    pub stream: bool,
    pub include_usage: bool,
}

/// The request as the engine's job; `compiled`: its constraint when already compiled (a batch
/// completion's prompts share their request's one grammar instead of holding a copy each).
pub fn prepare(
    req: CompletionRequest,
    endpoint: Endpoint,
    model: &ModelInfo,
    compiled: Option<Option<Constraint>>,
) -> Result<Prepared, ApiError> {
    refuse_unsupported(&req)?;
    let Tools { defs: tool_defs, names: tools, forced } = tools(&req, endpoint)?;
    let (text, prompt_ids) = input(&req, endpoint, model, &tool_defs)?;
    let suffix = req.suffix.as_deref().filter(|s| !s.is_empty());
    let echo = match (req.echo, endpoint) {
        (Some(true), Endpoint::Chat) => {
            return Err(ApiError::invalid("`echo` belongs to /v1/completions", Some("echo")));
        }
        (Some(true), _) if suffix.is_some() => {
            return Err(ApiError::invalid("`echo` and `suffix` cannot be combined", Some("echo")));
        }
        (Some(true), Endpoint::Completion) => Some(text),
        _ => None,
    };
    let (prompt_ids, fim_stops) = match (suffix, endpoint) {
        (None, _) => (prompt_ids, Vec::new()),
        (Some(_), Endpoint::Chat) => {
            return Err(ApiError::invalid("`suffix` belongs to /v1/completions", Some("suffix")))
        }
        (Some(s), Endpoint::Completion) => fill_in_the_middle(model, prompt_ids, s)?,
    };
    if prompt_ids.is_empty() {
        return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
    }
    let ctx = model.ctx_size;
    let param = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
    if prompt_ids.len() > ctx {
        return Err(ApiError::invalid(
            format!("the prompt has {} tokens but the context holds {ctx} (server --ctx-size)", prompt_ids.len()),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    let max_tokens = max_tokens(&req, prompt_ids.len(), ctx, echo.is_some())?;
    let sampling = sampling(&req)?;
    let constraint = match compiled {
        Some(c) => c,
        None => constraint(&req, model, &tool_defs, forced.as_ref())?,
    };
    let frequency_penalty = match req.frequency_penalty {
        None => 0.0,
        Some(f) if f.is_finite() && (-2.0..=2.0).contains(&f) => f as f32,
        Some(f) => {
            return Err(ApiError::invalid(
                format!("`frequency_penalty` must be in [-2, 2], got {f:?}"),
                Some("frequency_penalty"),
            ))
        }
    };
    let logit_bias = logit_bias(&req, model.tokenizer.vocab_size())?;
    Ok(Prepared {
        prompt_ids,
        choices: choices(&req)?,
        max_tokens,
        logprobs: logprobs(&req, endpoint)?,
        echo,
        tools,
        host_draw: constraint.is_some() || frequency_penalty != 0.0 || !logit_bias.is_empty(),
        constraint,
        frequency_penalty,
        logit_bias,
        stop: stop_strings(req.stop)?.into_iter().chain(fim_stops).collect(),
        sampling,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
    })
}

/// Features this server does not have: a clear 400 rather than a silently different answer.
fn refuse_unsupported(req: &CompletionRequest) -> Result<(), ApiError> {
    let no = |what: &str, param: &str| {
        Err(ApiError::invalid(format!("{what} is not supported by this server"), Some(param)))
    };
    if req.best_of.is_some_and(|b| b != 1) {
        return no("`best_of` other than 1", "best_of");
    }
    Ok(())
}

/// Chat: `logprobs` true or false, `top_logprobs` 0..=20 alternatives (only with `logprobs`).
/// Completions: `logprobs` an integer 0..=20 (the alternatives; OpenAI allows up to 5).
fn logprobs(req: &CompletionRequest, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let max = MAX_TOP_LOGPROBS as i64;
    let count = |v: i64, name: &str| match usize::try_from(v) {
        Ok(n) if n <= MAX_TOP_LOGPROBS => Ok(n),
        _ => Err(ApiError::invalid(format!("`{name}` must be in 0..={max}, got {v}"), Some(name))),
    };
    let on = req.logprobs.as_ref().filter(|v| !v.is_null());
    match endpoint {
        Endpoint::Chat => {
            let on = match on {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(v) => {
                    return Err(ApiError::invalid(
                        format!("`logprobs` is true or false for chat (alternatives: `top_logprobs`), got {v}"),
                        Some("logprobs"),
                    ))
                }
            };
            match (on, req.top_logprobs) {
                (true, top) => Ok(Some(top.map_or(Ok(0), |k| count(k, "top_logprobs"))?)),
                (false, None) => Ok(None),
                (false, Some(_)) => {
                    Err(ApiError::invalid("`top_logprobs` needs `logprobs` set to true", Some("top_logprobs")))
                }
            }
        }
        Endpoint::Completion => {
            if req.top_logprobs.is_some() {
                return Err(ApiError::invalid(
                    "`top_logprobs` belongs to chat; completions take the number of alternatives as `logprobs`",
                    Some("top_logprobs"),
                ));
            }
            match on {
                None => Ok(None),
                Some(Value::Number(n)) if n.as_i64().is_some() => {
                    Ok(Some(count(n.as_i64().unwrap_or(-1), "logprobs")?))
                }
                Some(v) => Err(ApiError::invalid(
                    format!("`logprobs` is the number of alternatives (0..={max}) for completions, got {v}"),
                    Some("logprobs"),
                )),
            }
        }
    }
}

/// Fill-in-the-middle tokens (Qwen2.5-Coder's; StarCoder-style models spell them alike):
/// prefix, suffix, middle, then the markers that end a middle when the model writes them.
const FIM: [&str; 3] = ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"];
const FIM_ENDS: [&str; 3] = ["<|fim_pad|>", "<|file_sep|>", "<|repo_name|>"];

/// Completions' `suffix`: the prompt as the code before the gap and `suffix` as the code after
/// it, in the model's fill-in-the-middle form `<|fim_prefix|>` prefix `<|fim_suffix|>` suffix
/// `<|fim_middle|>` (the markers as their token ids, the texts encoded apart); the answer is
/// the middle. (Marker text inside the prompt or suffix still becomes a marker token, as the
/// tokenizer treats added tokens everywhere, and as HF's does by default.) Also returns the stop strings that end a middle
/// (the FIM markers the model may write next). A model without these tokens gets a 400.
fn fill_in_the_middle(model: &ModelInfo, prefix: Vec<u32>, suffix: &str) -> Result<(Vec<u32>, Vec<String>), ApiError> {
    let tok = &model.tokenizer;
    let Some([p, s, m]) =
        FIM.iter().map(|t| tok.token_to_id(t)).collect::<Option<Vec<u32>>>().map(|v| [v[0], v[1], v[2]])
    else {
        return Err(ApiError::invalid("this model has no fill-in-the-middle tokens for `suffix`", Some("suffix")));
    };
    let mut ids = Vec::with_capacity(prefix.len() + 3);
    ids.push(p);
    ids.extend(prefix);
    ids.push(s);
    ids.extend(tok.encode(suffix));
    ids.push(m);
    let stops = FIM.iter().chain(&FIM_ENDS).filter(|t| tok.token_to_id(t).is_some()).map(|t| t.to_string()).collect();
    Ok((ids, stops))
}

/// Most `logit_bias` entries (OpenAI's limit).
const MAX_LOGIT_BIAS: usize = 300;

/// `logit_bias`: token ids (as JSON object keys) to biases in [-100, 100].
fn logit_bias(req: &CompletionRequest, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = req.logit_bias.as_ref().filter(|m| !m.is_null()) else { return Ok(Vec::new()) };
    let bad = |m: String| ApiError::invalid(m, Some("logit_bias"));
    let Some(map) = map.as_object() else {
        return Err(bad(format!("`logit_bias` maps token ids to biases, got {map}")));
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(bad(format!("at most {MAX_LOGIT_BIAS} `logit_bias` entries, got {}", map.len())));
    }
    map.iter()
        .map(|(k, v)| {
            let id = match k.parse::<u32>() {
                Ok(id) if (id as usize) < vocab => id,
                _ => return Err(bad(format!("`logit_bias` key {k:?} is not a token id in 0..{vocab}"))),
            };
            match v.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(bad(format!("`logit_bias` for token {id} must be a number in [-100, 100], got {v}"))),
            }
        })
        .collect()
}

/// Most answers per request (`n`): each is a full generation, one after another.
const MAX_CHOICES: usize = 16;

/// `n`, 1..=MAX_CHOICES (default 1).
fn choices(req: &CompletionRequest) -> Result<usize, ApiError> {
    match req.n {
        None => Ok(1),
        Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(format!("`n` must be in 1..={MAX_CHOICES}, got {n}"), Some("n"))),
    }
}

/// Most function definitions per request.
const MAX_TOOLS: usize = 128;

/// A chat's `tools`: their definitions (for the template), their names (what a call in the
/// answer may name) and the call `tool_choice` forces, if any.
#[derive(Debug)]
struct Tools {
    defs: Vec<Value>,
    names: Vec<String>,
    forced: Option<ForcedCall>,
}

/// `tool_choice` other than "auto" and "none": the answer is calls, by a grammar.
#[derive(Debug, PartialEq)]
pub(super) enum ForcedCall {
    /// "required": a call of any of the tools.
    Any,
    /// `{"type": "function", "function": {"name"}}`: one call of this tool.
    Named(String),
}

/// The chat's `tools` with `tool_choice` ("auto", "none" -- the tools left out of the prompt --,
/// "required" or one named function).
fn tools(req: &CompletionRequest, endpoint: Endpoint) -> Result<Tools, ApiError> {
    let none = Tools { defs: Vec::new(), names: Vec::new(), forced: None };
    let defs = req.tools.clone().unwrap_or_default();
    if defs.is_empty() {
        if req.tool_choice.as_ref().is_some_and(|c| !c.is_null() && c != "none" && c != "auto") {
            return Err(ApiError::invalid("`tool_choice` forces a call but there are no `tools`", Some("tool_choice")));
        }
        return Ok(none);
    }
    if endpoint == Endpoint::Completion {
        return Err(ApiError::invalid("`tools` belong to /v1/chat/completions", Some("tools")));
    }
    if defs.len() > MAX_TOOLS {
        return Err(ApiError::invalid(format!("at most {MAX_TOOLS} tools, got {}", defs.len()), Some("tools")));
    }
    let mut names = Vec::with_capacity(defs.len());
    for (i, d) in defs.iter().enumerate() {
        let name = d.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
        match (d.get("type").and_then(Value::as_str), name) {
            (Some("function"), Some(n)) => names.push(n.to_string()),
            _ => {
                return Err(ApiError::invalid(
                    "a tool is {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}",
                    Some(&format!("tools[{i}]")),
                ))
            }
        }
    }
    let forced = match &req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(Value::String(s)) if s == "none" => return Ok(none),
        Some(Value::String(s)) if s == "required" => Some(ForcedCall::Any),
        Some(c) => match c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(n) if c.get("type").and_then(Value::as_str) == Some("function") && names.iter().any(|t| t == n) => {
                Some(ForcedCall::Named(n.to_string()))
            }
            Some(n) if c.get("type").and_then(Value::as_str) == Some("function") => {
                return Err(ApiError::invalid(format!("`tool_choice` names {n:?}, which is not in `tools`"), Some("tool_choice")))
            }
            _ => {
                return Err(ApiError::invalid(
                    "`tool_choice` is \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    Some("tool_choice"),
                ))
            }
        },
    };
    Ok(Tools { defs, names, forced })
}

/// An assistant turn's OpenAI `tool_calls` as the chat template reads them: `arguments`, a JSON
/// string on the wire, as the object it spells (transformers' convention; kept as a string when
/// it is not JSON).
fn template_calls(calls: &[Value], i: usize) -> Result<Vec<Value>, ApiError> {
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let f = c.get("function").filter(|f| f.get("name").is_some_and(Value::is_string)).ok_or_else(|| {
                ApiError::invalid(
                    "a tool call is {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}",
                    Some(&format!("messages[{i}].tool_calls[{j}]")),
                )
            })?;
            let args = match f.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
                Some(v) => v.clone(),
                None => Value::Object(Default::default()),
            };
            Ok(serde_json::json!({"type": "function", "function": {"name": f["name"], "arguments": args}}))
        })
        .collect()
}

fn render_chat(req: &CompletionRequest, model: &ModelInfo, tools: &[Value]) -> Result<String, ApiError> {
    if req.prompt.is_some() {
        return Err(ApiError::invalid("`prompt` belongs to /v1/completions; chat takes `messages`", Some("prompt")));
    }
    let Some(messages) = &req.messages else {
        return Err(ApiError::invalid("`messages` is required", Some("messages")));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("`messages` must hold at least one message", Some("messages")));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(ApiError::invalid(
                    format!("unknown role {other:?} (system, developer, user, assistant or tool)"),
                    Some(&format!("messages[{i}].role")),
                ))
            }
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                format!("content part of type {:?} is not supported (text only)", p.kind),
                                Some(&format!("messages[{i}].content[{j}]")),
                            ))
                        }
                    }
                }
                text
            }
        };
        turns.push(match m.tool_calls.as_deref() {
            Some(calls) if role == "assistant" && !calls.is_empty() => {
                ChatMessage::assistant_calls(content, template_calls(calls, i)?)
            }
            _ => ChatMessage::new(role, content),
        });
    }
    let Some(template) = &model.template else {
        return Err(ApiError::invalid("this model has no chat template; use /v1/completions", Some("messages")));
    };
    template
        .render_with_tools(&turns, tools, true)
        .map_err(|e| ApiError::invalid(format!("the conversation cannot be rendered: {e}"), Some("messages")))
}

/// The token ids a request's input becomes, as the generation endpoints make them: `messages`
/// through the chat template (with its `tools`), else the completion's `prompt`.
pub fn input_ids(req: &CompletionRequest, model: &ModelInfo) -> Result<Vec<u32>, ApiError> {
    let endpoint = if req.messages.is_some() { Endpoint::Chat } else { Endpoint::Completion };
    let Tools { defs, .. } = tools(req, endpoint)?;
    Ok(input(req, endpoint, model, &defs)?.1)
}

/// The endpoint's input as text and token ids: chat's `messages` (with `tools`) through the
/// template, a completion's `prompt` as given.
fn input(
    req: &CompletionRequest,
    endpoint: Endpoint,
    model: &ModelInfo,
    tool_defs: &[Value],
) -> Result<(String, Vec<u32>), ApiError> {
    match endpoint {
        Endpoint::Chat => {
            let text = render_chat(req, model, tool_defs)?;
            let ids = model.tokenizer.encode(&text);
            Ok((text, ids))
        }
        Endpoint::Completion => prompt_input(req, model),
    }
}

/// A completion's prompt as text and token ids: a string is tokenized; token ids (checked
/// against the vocabulary) are taken as they are, their text decoded (for `echo`).
fn prompt_input(req: &CompletionRequest, model: &ModelInfo) -> Result<(String, Vec<u32>), ApiError> {
    if req.messages.is_some() {
        return Err(ApiError::invalid(
            "`messages` belongs to /v1/chat/completions; completions take `prompt`",
            Some("messages"),
        ));
    }
    let one = |n: usize| {
        Err(ApiError::invalid(
            format!("`prompt` must be one prompt here (lists go to /v1/completions), got a list of {n}"),
            Some("prompt"),
        ))
    };
    let ids = match &req.prompt {
        None => return Err(ApiError::invalid("`prompt` is required", Some("prompt"))),
        Some(Prompt::Text(t)) => return Ok((t.clone(), model.tokenizer.encode(t))),
        Some(Prompt::List(l)) if l.len() == 1 => return Ok((l[0].clone(), model.tokenizer.encode(&l[0]))),
        Some(Prompt::List(l)) => return one(l.len()),
        Some(Prompt::Tokens(ids)) => ids,
        Some(Prompt::TokenLists(l)) if l.len() == 1 => &l[0],
        Some(Prompt::TokenLists(l)) => return one(l.len()),
    };
    let vocab = model.tokenizer.vocab_size();
    let ids: Vec<u32> = ids
        .iter()
        .map(|&id| match u32::try_from(id) {
            Ok(v) if (v as usize) < vocab => Ok(v),
            _ => Err(ApiError::invalid(format!("token id {id} in `prompt` is not in 0..{vocab}"), Some("prompt"))),
        })
        .collect::<Result<_, _>>()?;
    let text = model.tokenizer.decode(&ids).map_err(|e| ApiError::invalid(format!("{e}"), Some("prompt")))?;
    Ok((text, ids))
}

/// `max_completion_tokens` (the newer name) wins over `max_tokens`; absent, the answer may fill
/// the context. 0 only with `echo` (`zero_ok`): the prompt alone, scored with `logprobs`.
fn max_tokens(req: &CompletionRequest, prompt_len: usize, ctx: usize, zero_ok: bool) -> Result<usize, ApiError> {
    let (value, param) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(v), _) => (v, "max_completion_tokens"),
        (None, Some(v)) => (v, "max_tokens"),
        (None, None) => return Ok((ctx - prompt_len).max(1)),
    };
    if value == 0 && zero_ok {
        return Ok(0);
    }
    if value < 1 {
        let least = if zero_ok { "0" } else { "1 (0 only with `echo`)" };
        return Err(ApiError::invalid(format!("`{param}` must be at least {least}, got {value}"), Some(param)));
    }
    let value = usize::try_from(value).unwrap_or(usize::MAX);
    if value > ctx {
        return Err(ApiError::invalid(format!("`{param}` is {value} but the context holds {ctx} tokens"), Some(param))
            .with_code("context_length_exceeded"));
    }
    if prompt_len + value > ctx {
        return Err(ApiError::invalid(
            format!("the context holds {ctx} tokens, but {} were requested ({prompt_len} in the prompt, {value} for the answer); lower `{param}`", prompt_len + value),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(value)
}

fn stop_strings(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let list = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(l)) => l,
    };
    if list.len() > MAX_STOPS {
        return Err(ApiError::invalid(format!("at most {MAX_STOPS} stop strings, got {}", list.len()), Some("stop")));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// OpenAI's parameters onto the engine's sampler. Defaults are OpenAI's (temperature 1,
/// top_p 1); `top_k` 0 or -1 means no limit beyond the sampler's 256 candidates. OpenAI's
/// presence penalty is subtracted once from every token already present, which is what the
/// sampler's does (over its window of recent tokens, prompt included).
/// The sampler takes 32-bit floats: a value is checked as it will be used, after narrowing, so
/// that one in range as a JSON number but not as an f32 (`top_p` 1e-300 is 0, a
/// `repetition_penalty` of 1e300 is infinite) is a 400 naming it, not the sampler's refusal
/// (a 500 naming a command-line flag) once queued.
fn sampling(req: &CompletionRequest) -> Result<SamplingParams, ApiError> {
    let range =
        |v: Option<f64>, name: &str, default: f32, ok: &dyn Fn(f32) -> bool, want: &str| -> Result<f32, ApiError> {
            let Some(x) = v else { return Ok(default) };
            let narrowed = x as f32;
            if narrowed.is_finite() && ok(narrowed) {
                return Ok(narrowed);
            }
            // Out of range only once narrowed: say why the number the client sent is refused.
            let lost = x.is_finite() && (narrowed.is_infinite() || (narrowed == 0.0 && x != 0.0));
            // Debug, not Display: 1e-300 rather than three hundred digits.
            let as_f32 =
                if lost { format!(" ({x:?} is {narrowed:?} as the sampler's 32-bit float)") } else { String::new() };
            Err(ApiError::invalid(format!("`{name}` must be {want}, got {x:?}{as_f32}"), Some(name)))
        };
    let top_k = match req.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(ApiError::invalid(
                format!("`top_k` must be >= 1, or 0 / -1 for no limit, got {k}"),
                Some("top_k"),
            ))
        }
    };
    let seed = match req.seed {
        // The same seed gives the same text; without one, each request draws differently.
        Some(s) => s as u64,
        None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    };
    Ok(SamplingParams {
        temperature: range(req.temperature, "temperature", 1.0, &|x| (0.0..=2.0).contains(&x), "in [0, 2]")?,
        top_k,
        top_p: range(req.top_p, "top_p", 1.0, &|x| x > 0.0 && x <= 1.0, "in (0, 1]")?,
        min_p: range(req.min_p, "min_p", 0.0, &|x| (0.0..=1.0).contains(&x), "in [0, 1]")?,
        repeat_penalty: range(req.repetition_penalty, "repetition_penalty", 1.0, &|x| x > 0.0, "> 0")?,
        presence_penalty: range(
            req.presence_penalty,
            "presence_penalty",
            0.0,
            &|x| (-2.0..=2.0).contains(&x),
            "in [-2, 2]",
        )?,
        penalty_window: SamplingParams::default().penalty_window,
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::parse_request;

    fn req(json: &str) -> CompletionRequest {
        parse_request(json.as_bytes()).expect("valid request")
    }

    fn refused_param(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        r.expect_err("refused").param.unwrap_or_default()
    }

    #[test]
    fn openai_defaults_and_greedy_map_onto_the_sampler() {
        let s = sampling(&req(r#"{"temperature": 0, "seed": 7}"#)).unwrap();
        assert!(s.is_greedy() && s.seed == 7);
        let s = sampling(&req("{}")).unwrap();
        assert_eq!((s.temperature, s.top_p, s.top_k, s.min_p), (1.0, 1.0, 0, 0.0));
        let s = sampling(&req(r#"{"top_k": -1, "presence_penalty": 0.5, "repetition_penalty": 1.1}"#)).unwrap();
        assert_eq!((s.top_k, s.presence_penalty, s.repeat_penalty), (0, 0.5, 1.1));
    }

    #[test]
    fn out_of_range_sampling_values_name_their_parameter() {
        assert_eq!(refused_param(sampling(&req(r#"{"temperature": 3}"#))), "temperature");
        assert_eq!(refused_param(sampling(&req(r#"{"top_p": 0}"#))), "top_p");
        assert_eq!(refused_param(sampling(&req(r#"{"top_k": -2}"#))), "top_k");
        assert_eq!(refused_param(sampling(&req(r#"{"min_p": 1.5}"#))), "min_p");
        assert!(refuse_unsupported(&req(r#"{"logprobs": false, "n": 1, "frequency_penalty": 0}"#)).is_ok());
    }

    /// The sampler's floats are 32-bit: a number in range as sent but not once narrowed (zero,
    /// infinite) is a 400 naming the parameter and saying so, never the sampler's 500.
    #[test]
    fn sampling_values_are_checked_as_32_bit_floats() {
        let refused = |json: &str| sampling(&req(json)).expect_err("refused");
        let e = refused(r#"{"top_p": 1e-300}"#);
        assert_eq!(e.param.as_deref(), Some("top_p"));
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "`top_p` must be in (0, 1], got 1e-300 (1e-300 is 0.0 as the sampler's 32-bit float)");
        let e = refused(r#"{"repetition_penalty": 1e300}"#);
        assert_eq!(e.param.as_deref(), Some("repetition_penalty"));
        assert!(e.message.contains("1e300 is inf"), "{}", e.message);
        assert_eq!(refused(r#"{"repetition_penalty": 1e-300}"#).param.as_deref(), Some("repetition_penalty"));
        assert_eq!(refused(r#"{"repetition_penalty": -1}"#).message, "`repetition_penalty` must be > 0, got -1.0");
        // Values that survive narrowing, even as f32 subnormals, are taken as the f32.
        let s = sampling(&req(r#"{"top_p": 1e-40, "repetition_penalty": 1e30, "temperature": 1e-300}"#)).unwrap();
        assert!(s.top_p > 0.0 && s.repeat_penalty == 1e30 && s.temperature == 0.0);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn n_is_one_to_sixteen_choices() {
        assert_eq!(choices(&req("{}")).unwrap(), 1);
        assert_eq!(choices(&req(r#"{"n": 16}"#)).unwrap(), 16);
        assert_eq!(refused_param(choices(&req(r#"{"n": 0}"#))), "n");
        assert_eq!(refused_param(choices(&req(r#"{"n": 17}"#))), "n");
    }

    /// `tools` for chat only, well-formed definitions; the names are what an answer may call;
    /// `tool_choice` "auto", "none" (which renders none), "required" or one named tool of the
    /// list forces a call; a forced choice without tools or naming another is refused.
    #[test]
    fn tools_and_tool_choice() {
        let f = r#"{"type": "function", "function": {"name": "f", "parameters": {}}}"#;
        let with = |choice: &str| tools(&req(&format!(r#"{{"tools": [{f}]{choice}}}"#)), Endpoint::Chat);
        let t = with("").unwrap();
        assert_eq!((t.defs.len(), t.names, t.forced), (1, vec!["f".to_string()], None));
        assert!(with(r#", "tool_choice": "none""#).unwrap().defs.is_empty());
        assert_eq!(with(r#", "tool_choice": "auto""#).unwrap().names.len(), 1);
        assert_eq!(with(r#", "tool_choice": "required""#).unwrap().forced, Some(ForcedCall::Any));
        let named = r#", "tool_choice": {"type": "function", "function": {"name": "f"}}"#;
        assert_eq!(with(named).unwrap().forced, Some(ForcedCall::Named("f".into())));
        assert!(tools(&req("{}"), Endpoint::Chat).unwrap().defs.is_empty());

        let refused = |json: String, e| refused_param(tools(&req(&json), e));
        assert_eq!(
            refused_param(with(r#", "tool_choice": {"type": "function", "function": {"name": "g"}}"#)),
            "tool_choice"
        );
        assert_eq!(refused_param(with(r#", "tool_choice": "sometimes""#)), "tool_choice");
        assert_eq!(refused(r#"{"tool_choice": "required"}"#.into(), Endpoint::Chat), "tool_choice");
        assert_eq!(
            refused(r#"{"tools": [{"type": "function", "function": {"name": ""}}]}"#.into(), Endpoint::Chat),
            "tools[0]"
        );
        assert_eq!(refused(r#"{"tools": [{"type": "retrieval"}]}"#.into(), Endpoint::Chat), "tools[0]");
        assert_eq!(refused(format!(r#"{{"tools": [{f}]}}"#), Endpoint::Completion), "tools");
    }

    /// An assistant turn's calls reach the template with their arguments as objects.
    #[test]
    fn assistant_tool_calls_render_their_arguments_as_objects() {
        let calls = vec![
            serde_json::json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}),
        ];
        let out = template_calls(&calls, 0).unwrap();
        assert_eq!(out[0]["function"]["arguments"], serde_json::json!({"x": 1}));
        let raw = vec![serde_json::json!({"function": {"name": "f", "arguments": "not json"}})];
        assert_eq!(template_calls(&raw, 0).unwrap()[0]["function"]["arguments"], "not json");
        assert_eq!(
            refused_param(template_calls(&[serde_json::json!({"type": "function"})], 2)),
            "messages[2].tool_calls[0]"
        );
    }

    /// Chat: a bool and `top_logprobs`; completions: a count. Each wrong form names its parameter.
    #[test]
    fn logprobs_take_each_endpoints_form() {
        let (chat, cmpl) = (Endpoint::Chat, Endpoint::Completion);
        assert_eq!(logprobs(&req("{}"), chat).unwrap(), None);
        assert_eq!(logprobs(&req(r#"{"logprobs": false}"#), chat).unwrap(), None);
        assert_eq!(logprobs(&req(r#"{"logprobs": true}"#), chat).unwrap(), Some(0));
        assert_eq!(logprobs(&req(r#"{"logprobs": true, "top_logprobs": 5}"#), chat).unwrap(), Some(5));
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": true, "top_logprobs": 21}"#), chat)), "top_logprobs");
        assert_eq!(refused_param(logprobs(&req(r#"{"top_logprobs": 2}"#), chat)), "top_logprobs");
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": 3}"#), chat)), "logprobs");
        assert_eq!(logprobs(&req(r#"{"logprobs": null}"#), cmpl).unwrap(), None);
        assert_eq!(logprobs(&req(r#"{"logprobs": 0}"#), cmpl).unwrap(), Some(0));
        assert_eq!(logprobs(&req(r#"{"logprobs": 20}"#), cmpl).unwrap(), Some(20));
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": -1}"#), cmpl)), "logprobs");
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": true}"#), cmpl)), "logprobs");
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": 1.5}"#), cmpl)), "logprobs");
        assert_eq!(refused_param(logprobs(&req(r#"{"logprobs": 1, "top_logprobs": 1}"#), cmpl)), "top_logprobs");
    }

    #[test]
    fn the_token_budget_fits_the_context() {
        assert_eq!(max_tokens(&req("{}"), 10, 100, false).unwrap(), 90);
        assert_eq!(max_tokens(&req(r#"{"max_tokens": 5, "max_completion_tokens": 7}"#), 10, 100, false).unwrap(), 7);
        assert_eq!(refused_param(max_tokens(&req(r#"{"max_tokens": 0}"#), 10, 100, false)), "max_tokens");
        assert_eq!(max_tokens(&req(r#"{"max_tokens": 0}"#), 10, 100, true).unwrap(), 0, "echo: the prompt alone");
        assert_eq!(refused_param(max_tokens(&req(r#"{"max_tokens": -1}"#), 10, 100, true)), "max_tokens");
        assert_eq!(refused_param(max_tokens(&req(r#"{"max_tokens": 91}"#), 10, 100, false)), "max_tokens");
        assert_eq!(max_tokens(&req(r#"{"max_tokens": 90}"#), 10, 100, false).unwrap(), 90);
    }

    #[test]
    fn stop_is_a_string_or_a_list_and_empty_strings_are_dropped() {
        assert_eq!(stop_strings(req(r#"{"stop": "END"}"#).stop).unwrap(), ["END"]);
        assert_eq!(stop_strings(req(r#"{"stop": ["a", "", "b"]}"#).stop).unwrap(), ["a", "b"]);
        assert_eq!(refused_param(stop_strings(req(&format!(r#"{{"stop": {:?}}}"#, vec!["x"; 17])).stop)), "stop");
    }
}
