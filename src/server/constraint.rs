//! What constrains a request's answer, and its grammar: `response_format` (json_object,
//! json_schema), a forced `tool_choice`, or vLLM's structured-output extensions
//! (`structured_outputs: {"json" | "regex" | "choice" | "grammar": ...}`, and the older
//! `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`). At most one may be given;
//! each compiles (`crate::grammar`, through llguidance) before the request is queued, and one
//! that does not is a 400 naming its parameter.
//!
//! A compiled grammar stays with its request while it waits in the queue, and llguidance's size
//! grows with the literal text it must match: `guided_choice` with 1024 strings of 3 KB (a 3 MB
//! body) held ~150 MB per queued request. So a constraint's source -- the choices' bytes, the
//! regex, the grammar, the schema as JSON text -- is at most [`MAX_SOURCE_BYTES`] (64 KiB): the
//! largest such choice list measured ~2.5 MB compiled, so a full queue of 64 holds ~160 MB of
//! grammars at worst. Small sources with large repetitions (`[a-z]{1,100000}`) stay small:
//! llguidance builds its automata lazily. A forced tool call's grammar, which the server writes
//! from the offered functions' schemas, may be [`MAX_TOOLS_SOURCE_BYTES`] (1 MiB): long tool lists
//! are ordinary requests, and schemas are not literal text.
use std::sync::Arc;

use serde_json::Value;

use super::api::CompletionRequest;
use super::errors::ApiError;
use super::params::ForcedCall;
use super::ModelInfo;
use crate::grammar::{bound_whitespace, Grammar, GrammarEnv, GrammarError};

/// Most `choice` strings (vLLM's `guided_choice`): each is an alternative of the grammar.
const MAX_CHOICES: usize = 1024;

/// Largest constraint source in bytes (see the module's note).
pub const MAX_SOURCE_BYTES: usize = 64 << 10;

/// Largest grammar of a forced tool call (`tool_choice` "required" or named), which the server
/// writes from the offered functions' schemas: a long tool list (40 functions of 12 parameters
/// make 77 KB) is an ordinary request, and its grammar is schemas, not literal text to match.
pub const MAX_TOOLS_SOURCE_BYTES: usize = 1 << 20;

/// A request's compiled constraint and the parameter that gave it (named by a 400 when the
/// grammar fails mid-answer).
#[derive(Clone)]
pub struct Constraint {
    pub grammar: Arc<Grammar>,
    pub param: &'static str,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").field("param", &self.param).finish_non_exhaustive()
    }
}

/// A constraint before compiling.
enum Source {
    JsonSchema(Value),
    /// Lark generated here (a forced tool call).
    Lark(String),
    /// A grammar the request gave: GBNF or Lark.
    UserGrammar(String),
    Regex(String),
    Choice(Vec<String>),
}

impl Source {
    /// The most bytes the source may have: [`MAX_TOOLS_SOURCE_BYTES`] for the grammar this
    /// server writes from the offered functions, [`MAX_SOURCE_BYTES`] for what a request gives.
    fn limit(&self) -> usize {
        match self {
            Source::Lark(_) => MAX_TOOLS_SOURCE_BYTES,
            _ => MAX_SOURCE_BYTES,
        }
    }

    /// The source's size in bytes, as [`MAX_SOURCE_BYTES`] counts it.
    fn bytes(&self) -> usize {
        match self {
            Source::JsonSchema(schema) => serde_json::to_string(schema).map_or(usize::MAX, |t| t.len()),
            Source::Lark(text) | Source::UserGrammar(text) | Source::Regex(text) => text.len(),
            Source::Choice(choices) => choices.iter().map(String::len).sum(),
        }
    }
}

/// The request's constraint compiled over the model's vocabulary (None: the answer is free).
pub fn constraint(
    req: &CompletionRequest,
    model: &ModelInfo,
    tool_defs: &[Value],
    forced: Option<&ForcedCall>,
) -> Result<Option<Constraint>, ApiError> {
    let mut given: Vec<(Source, &'static str)> = Vec::new();
    match response_format(req)? {
        Format::Text => {}
        Format::JsonObject => {
            given.push((Source::JsonSchema(serde_json::json!({"type": "object"})), "response_format"))
        }
        Format::JsonSchema(schema) => given.push((Source::JsonSchema(schema), "response_format")),
    }
    if let Some(f) = forced {
        // The tools' parameters are what can fail to compile.
        given.push((Source::Lark(tool_call_grammar(model, tool_defs, f)), "tools"));
    }
    given.extend(guided(req)?);
    match given.len() {
        0 => return Ok(None),
        1 => {}
        _ => {
            let names: Vec<&str> = given.iter().map(|(_, p)| *p).collect();
            return Err(ApiError::invalid(
                format!("one constraint per request: {} were given", names.join(", ")),
                Some(names[1]),
            ));
        }
    }
    let (source, param) = given.remove(0);
    let (size, limit) = (source.bytes(), source.limit());
    if size > limit {
        return Err(ApiError::invalid(
            format!(
                "`{param}` is {size} bytes; a constraint may be at most {limit} bytes (choices' text, regex, \
                 grammar, schema as JSON, or a forced tool call's grammar)"
            ),
            Some(param),
        ));
    }
    let env = grammar_env(model, param)?;
    let compiled = match source {
        Source::JsonSchema(schema) => Grammar::json_schema(&env, schema),
        Source::Lark(text) => Grammar::lark(&env, text),
        Source::UserGrammar(text) => Grammar::lark_or_gbnf(&env, text),
        Source::Regex(rx) => Grammar::regex(&env, &rx),
        Source::Choice(choices) => Grammar::choice(&env, &choices),
    };
    let grammar = compiled.map_err(|e| match e {
        GrammarError::Invalid(why) => ApiError::invalid(format!("`{param}` does not compile: {why}"), Some(param)),
        other => ApiError::internal(other.to_string()),
    })?;
    Ok(Some(Constraint { grammar: Arc::new(grammar), param }))
}

/// vLLM's extensions: `structured_outputs` with one of `json`, `regex`, `choice`, `grammar` (a
/// Lark grammar in llguidance's dialect), or the `guided_*` fields of the same meanings.
fn guided(req: &CompletionRequest) -> Result<Vec<(Source, &'static str)>, ApiError> {
    let mut out = Vec::new();
    let parse = |v: &Value, kind: &str, param: &'static str| -> Result<(Source, &'static str), ApiError> {
        let bad = |what: &str| Err(ApiError::invalid(format!("`{param}` must be {what}"), Some(param)));
        let source = match (kind, v) {
            ("json", Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(schema @ Value::Object(_)) => Source::JsonSchema(schema),
                _ => return bad("a JSON schema (an object, or its text)"),
            },
            ("json", schema @ Value::Object(_)) => Source::JsonSchema(schema.clone()),
            ("json", _) => return bad("a JSON schema (an object, or its text)"),
            ("regex", Value::String(rx)) => Source::Regex(rx.clone()),
            ("grammar", Value::String(g)) => Source::UserGrammar(g.clone()),
            ("choice", Value::Array(items)) if !items.is_empty() && items.len() <= MAX_CHOICES => {
                let choices: Option<Vec<String>> = items.iter().map(|c| c.as_str().map(str::to_string)).collect();
                match choices {
                    Some(c) => Source::Choice(c),
                    None => return bad("a list of strings"),
                }
            }
            ("choice", _) => return bad(&format!("a list of 1 to {MAX_CHOICES} strings")),
            _ => return bad("a string"),
        };
        Ok((source, param))
    };
    for (kind, field, param) in [
        ("json", &req.guided_json, "guided_json"),
        ("regex", &req.guided_regex, "guided_regex"),
        ("choice", &req.guided_choice, "guided_choice"),
        ("grammar", &req.guided_grammar, "guided_grammar"),
    ] {
        if let Some(v) = field.as_ref().filter(|v| !v.is_null()) {
            out.push(parse(v, kind, param)?);
        }
    }
    match req.structured_outputs.as_ref().filter(|v| !v.is_null()) {
        None => {}
        Some(Value::Object(o)) => {
            for key in o.keys().filter(|k| !["json", "regex", "choice", "grammar", "json_object"].contains(&k.as_str()))
            {
                if !o[key].is_null() {
                    return Err(ApiError::invalid(
                        format!(
                            "`structured_outputs.{key}` is not supported (json, regex, choice, grammar, json_object)"
                        ),
                        Some("structured_outputs"),
                    ));
                }
            }
            match o.get("json_object") {
                None | Some(Value::Null | Value::Bool(false)) => {}
                Some(Value::Bool(true)) => out.push((
                    Source::JsonSchema(serde_json::json!({"type": "object"})),
                    "structured_outputs.json_object",
                )),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "`structured_outputs.json_object` must be true or false",
                        Some("structured_outputs.json_object"),
                    ))
                }
            }
            for (kind, param) in [
                ("json", "structured_outputs.json"),
                ("regex", "structured_outputs.regex"),
                ("choice", "structured_outputs.choice"),
                ("grammar", "structured_outputs.grammar"),
            ] {
                if let Some(v) = o.get(kind).filter(|v| !v.is_null()) {
                    out.push(parse(v, kind, param)?);
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "`structured_outputs` must be an object with one of json, regex, choice, grammar",
                Some("structured_outputs"),
            ))
        }
    }
    Ok(out)
}

/// What `response_format` asks the answer to be.
enum Format {
    Text,
    /// `{"type": "json_object"}`: any JSON object (JSON mode: the schema `{"type": "object"}`).
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {"schema": ...}}`: a JSON value valid against
    /// the schema (`grammar`).
    JsonSchema(Value),
}

/// `response_format`: text (or absent), `json_object` or `json_schema` (OpenAI's shape: the
/// schema under `json_schema.schema`; `strict` is accepted either way, the schema is always
/// enforced).
fn response_format(req: &CompletionRequest) -> Result<Format, ApiError> {
    let bad = |m: &str| Err(ApiError::invalid(m, Some("response_format")));
    let Some(f) = req.response_format.as_ref().filter(|f| !f.is_null()) else { return Ok(Format::Text) };
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Format::Text),
        Some("json_object") => Ok(Format::JsonObject),
        Some("json_schema") => match f.get("json_schema").and_then(|j| j.get("schema")) {
            Some(schema @ (Value::Object(_) | Value::Bool(true))) => Ok(Format::JsonSchema(schema.clone())),
            _ => bad("`response_format.json_schema.schema` must be a JSON schema object"),
        },
        _ => bad("`response_format.type` must be \"text\", \"json_object\" or \"json_schema\""),
    }
}

/// The model's vocabulary indexed for grammars, built by the first request that needs it.
fn grammar_env(model: &ModelInfo, param: &str) -> Result<Arc<GrammarEnv>, ApiError> {
    model
        .grammar_env
        .get_or_init(|| GrammarEnv::new(&model.tokenizer).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| ApiError::invalid(format!("this model cannot take structured outputs: {e}"), Some(param)))
}

/// The grammar of a forced answer: calls in Qwen2's form, `<tool_call>` newline
/// `{"name": ..., "arguments": {...}}` newline `</tool_call>`, the object by a JSON schema (the
/// name one of the allowed tools', the arguments that tool's `parameters`). One call, then the
/// end: a grammar that allows another lets a small model chain calls it was not asked for
/// until `max_tokens` (measured: "required" on a greeting gave three, the last one cut). The
/// markers are their token ids where the vocabulary has them as single tokens (as Qwen2.5's
/// does), else their text.
fn tool_call_grammar(model: &ModelInfo, defs: &[Value], forced: &ForcedCall) -> String {
    let calls: Vec<Value> = defs
        .iter()
        .filter_map(|d| d.get("function"))
        .filter(|f| match forced {
            ForcedCall::Any => true,
            ForcedCall::Named(n) => f.get("name").and_then(Value::as_str) == Some(n),
        })
        .enumerate()
        .map(|(i, f)| {
            let mut params = f.get("parameters").filter(|p| p.is_object()).cloned().unwrap_or(serde_json::json!({}));
            // The parameters' own `$ref`s ("#/$defs/X", as pydantic writes them) resolve against
            // their schema, not the combined one: a base URI of their own.
            params["$id"] = Value::String(format!("urn:qwen-aot:tool:{i}"));
            // Arguments are an object whatever the parameters say (`{}` allows any value), or
            // the call would not parse back into `tool_calls`.
            let arguments = serde_json::json!({"allOf": [{"type": "object"}, params]});
            serde_json::json!({
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = serde_json::json!({"anyOf": calls});
    bound_whitespace(&mut schema);
    let marker = |t: &str| match model.tokenizer.token_to_id(t) {
        Some(id) => format!("<[{id}]>"),
        None => serde_json::to_string(t).unwrap_or_default(),
    };
    format!("start: {} \"\\n\" body \"\\n\" {}\nbody: %json {schema}\n", marker("<tool_call>"), marker("</tool_call>"))
}
