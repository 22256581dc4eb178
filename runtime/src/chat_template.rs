//! Chat templates: renders a conversation into the prompt text the model was trained on, using
//! the Jinja template stored in the GGUF (`tokenizer.chat_template`).
//!
//! Hugging Face renders these templates with Python Jinja2 (`trim_blocks`, `lstrip_blocks`, the
//! `loopcontrols` extension, a `raise_exception` function and a `tojson` filter that is
//! `json.dumps(x, ensure_ascii=False)`). This module sets up `minijinja` to behave the same:
//! the same whitespace control, Python string/dict methods (`.strip()`, `.startswith()`,
//! `.items()`, … through `minijinja-contrib`'s pycompat), `raise_exception`, and a `tojson` that
//! writes Python's `json.dumps` layout (`", "` / `": "` separators, keys in insertion order, no
//! HTML escaping) instead of minijinja's HTML-safe one.

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

const TEMPLATE_NAME: &str = "chat_template";

/// Errors of parsing or rendering a chat template. The message carries minijinja's detailed
/// report (`{:#}`: what went wrong and where in the template); `source()` skips that error --
/// a caller printing the chain would show the report twice -- and goes on with minijinja's own
/// cause, where it has one (`{{ 42|list }}`: "number is not iterable").
#[derive(Debug)]
pub enum ChatTemplateError {
    /// The template is not valid Jinja (or uses syntax minijinja does not support).
    Parse(Error),
    /// Rendering failed: `raise_exception` was called, or the template did something invalid
    /// with the messages (for example an unsupported role).
    Render(Error),
    /// Rendering took more than [`RENDER_FUEL`] template instructions.
    TooMuchWork,
    /// The rendered text passed [`MAX_RENDERED_BYTES`].
    TooLong,
}

/// Template instructions one render may execute: the Qwen2 template renders 20,000 turns within
/// it (`tests/chat_template_qwen2.rs`; within half of it, too), far more than any context holds,
/// while a template of nested loops stops within seconds instead of running for minutes.
/// minijinja also charges every value a render builds, one instruction per 64 bytes, so this
/// bounds the strings a template can grow to ≈ 256 MB (a string doubled in a loop took the
/// process to 1.3 GB under the earlier 20,000,000).
pub const RENDER_FUEL: u64 = 4_000_000;
/// The most text one render may produce: a 128 K-token context is ≈ 0.5 MB of text.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Where a render writes: refuses bytes past [`MAX_RENDERED_BYTES`] (minijinja then stops with a
/// write failure), so that a template's loops cannot fill memory with output.
struct BoundedOutput {
    bytes: Vec<u8>,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other("the rendered text is too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Display for ChatTemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatTemplateError::Parse(e) => write!(f, "chat template does not parse: {e:#}"),
            ChatTemplateError::Render(e) => write!(f, "chat template failed to render: {e:#}"),
            ChatTemplateError::TooMuchWork => {
                write!(f, "chat template failed to render: more than {RENDER_FUEL} template instructions")
            }
            ChatTemplateError::TooLong => {
                write!(f, "chat template failed to render: more than {MAX_RENDERED_BYTES} bytes of text")
            }
        }
    }
}

impl std::error::Error for ChatTemplateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChatTemplateError::Parse(e) | ChatTemplateError::Render(e) => std::error::Error::source(e),
            ChatTemplateError::TooMuchWork | ChatTemplateError::TooLong => None,
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant" (or "tool").
    pub role: String,
    /// The text of the turn.
    pub content: String,
    /// An assistant turn's function calls, as templates read them (`{"name", "arguments":
    /// object}`, optionally inside `{"function": ...}`); absent for other turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into(), tool_calls: None }
    }

    /// An assistant turn that called functions (`calls` as [`ChatMessage::tool_calls`] says).
    pub fn assistant_calls(content: impl Into<String>, calls: Vec<serde_json::Value>) -> ChatMessage {
        ChatMessage { tool_calls: Some(calls), ..ChatMessage::new("assistant", content) }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// A parsed chat template, ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parses a Jinja chat template.
    pub fn new(template: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        // Jinja2 as configured by transformers: trim_blocks + lstrip_blocks, and (Jinja2's
        // default) the template's single trailing newline dropped.
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(ChatTemplateError::Parse)?;
        env.set_syntax(syntax);
        // A template comes from a model file or a flag: bound its work, so that nested loops
        // (each under minijinja's per-range limit) cannot run for minutes.
        env.set_fuel(Some(RENDER_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, template.to_string()).map_err(ChatTemplateError::Parse)?;
        Ok(ChatTemplate { env, bos_token: None, eos_token: None })
    }

    /// Sets the `bos_token` / `eos_token` variables some templates use (Qwen2's does not).
    pub fn with_special_tokens(mut self, bos_token: Option<String>, eos_token: Option<String>) -> ChatTemplate {
        self.bos_token = bos_token;
        self.eos_token = eos_token;
        self
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the header of an
    /// assistant turn, ready for the model to continue. No tools are passed.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        self.render_with_tools(messages, &[], add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with function definitions (`tools`, as transformers'
    /// `apply_chat_template(tools=...)` passes them: OpenAI's `{"type": "function", "function":
    /// {...}}` objects); none: the template's variable is left undefined, as without tools.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(ChatTemplateError::Render)?;
        let mut ctx = vec![
            ("messages", Value::from(Serde(messages))),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        if !tools.is_empty() {
            ctx.push(("tools", Value::from(Serde(tools))));
        }
        if let Some(bos) = &self.bos_token {
            ctx.push(("bos_token", Value::from(bos.as_str())));
        }
        if let Some(eos) = &self.eos_token {
            ctx.push(("eos_token", Value::from(eos.as_str())));
        }
        let ctx = Value::from_pairs(ctx);
        let mut out = BoundedOutput { bytes: Vec::new() };
        template.render_captured_to(ctx, &mut out).map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => ChatTemplateError::TooMuchWork,
            ErrorKind::WriteFailure => ChatTemplateError::TooLong,
            _ => ChatTemplateError::Render(e),
        })?;
        // The template's text and the messages' are UTF-8, and so is every value it prints.
        String::from_utf8(out.bytes).map_err(|_| ChatTemplateError::TooLong)
    }
}

/// `raise_exception(message)`: HF templates call it to reject conversations they cannot render.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `x | tojson(indent=None, ensure_ascii=False, sort_keys=False)`, laid out as Python's
/// `json.dumps` lays it out.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let opts = JsonOpts { indent, ensure_ascii: ensure_ascii.unwrap_or(false), sort_keys: sort_keys.unwrap_or(false) };
    let mut out = String::new();
    write_json(value, &opts, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn write_json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7E) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", u));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn newline_indent(opts: &JsonOpts, depth: usize, out: &mut String) {
    if let Some(n) = opts.indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', n * depth));
    }
}

fn write_json(value: &Value, opts: &JsonOpts, depth: usize, out: &mut String) -> Result<(), Error> {
    // Python: item separator "," with indent, ", " without; key separator ": ".
    let item_sep = if opts.indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let s = value.to_string();
            out.push_str(match s.as_str() {
                "NaN" | "nan" => "NaN",
                "inf" => "Infinity",
                "-inf" => "-Infinity",
                other => other,
            })
        }
        ValueKind::String => write_json_str(value.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline_indent(opts, depth + 1, out);
                match key.as_str() {
                    Some(k) => write_json_str(k, opts.ensure_ascii, out),
                    None => write_json_str(&key.to_string(), opts.ensure_ascii, out),
                }
                out.push_str(": ");
                write_json(&value.get_item(key)?, opts, depth + 1, out)?;
            }
            newline_indent(opts, depth, out);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline_indent(opts, depth + 1, out);
                write_json(item, opts, depth + 1, out)?;
            }
            newline_indent(opts, depth, out);
            out.push(']');
        }
        ValueKind::Bytes | ValueKind::Plain | ValueKind::Invalid => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a {} value", value.kind()),
            ));
        }
        // ValueKind is non-exhaustive in spirit: treat anything new as a string.
        #[allow(unreachable_patterns)]
        _ => write_json_str(&value.to_string(), opts.ensure_ascii, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, ctx: Value) -> String {
        let t = ChatTemplate::new(template).expect("parses");
        let tpl = t.env.get_template(TEMPLATE_NAME).expect("present");
        tpl.render(ctx).expect("renders")
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        // A dict literal keeps insertion order (as Python dicts do).
        let v = r#"{"name": "f", "args": {"x": [1, 2.5, true, none], "s": "é\"\n<"}}"#;
        // Python: json.dumps(v, ensure_ascii=False) and json.dumps(v, ensure_ascii=False, indent=2).
        let expected = r#"{"name": "f", "args": {"x": [1, 2.5, true, null], "s": "é\"\n<"}}"#;
        assert_eq!(render(&format!("{{{{ {v} | tojson }}}}"), Value::UNDEFINED), expected);
        let expected_indent = "{\n  \"name\": \"f\",\n  \"args\": {\n    \"x\": [\n      1,\n      2.5,\n      true,\n      null\n    ],\n    \"s\": \"é\\\"\\n<\"\n  }\n}";
        assert_eq!(render(&format!("{{{{ {v} | tojson(indent=2) }}}}"), Value::UNDEFINED), expected_indent);
        assert_eq!(render("{{ 'é😀' | tojson(ensure_ascii=true) }}", Value::UNDEFINED), "\"\\u00e9\\ud83d\\ude00\"");
        assert_eq!(render("{{ [] | tojson }}{{ {} | tojson }}", Value::UNDEFINED), "[]{}");
        let sorted = render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", Value::UNDEFINED);
        assert_eq!(sorted, r#"{"a": 2, "b": 1}"#);
    }

    #[test]
    fn python_methods_and_whitespace_control() {
        let out = render(
            "{% for m in ms %}\n  {{ m.strip() }}{% if m.strip().startswith('a') %}!{% endif %}\n{% endfor %}\n",
            Value::from_pairs([("ms", Value::from(Serde(["  ab ", "b"])))]),
        );
        // Python Jinja2 with trim_blocks + lstrip_blocks gives '  ab!  b': the newline after each
        // block tag is dropped, the indentation before `{{` is kept.
        assert_eq!(out, "  ab!  b");
    }

    #[test]
    fn raise_exception_is_a_render_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").expect("parses");
        let err = t.render(&[], false).expect_err("must fail");
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn syntax_error_is_a_parse_error() {
        assert!(matches!(ChatTemplate::new("{% if %}"), Err(ChatTemplateError::Parse(_))));
    }

    /// The detail is in the message once; nothing further down the chain repeats it, and
    /// minijinja's own cause, where it has one, is still in the chain.
    #[test]
    fn errors_state_their_detail_once() {
        let chain = |e: &dyn std::error::Error| {
            let mut text = e.to_string();
            let mut cur = e.source();
            while let Some(c) = cur {
                text += &format!(": {c}");
                cur = c.source();
            }
            text
        };
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").expect("parses");
        let err = t.render(&[], false).expect_err("must fail");
        assert_eq!(chain(&err).matches("no system role").count(), 1, "{}", chain(&err));
        let err = ChatTemplate::new("{% if %}").expect_err("must fail");
        assert!(chain(&err).starts_with("chat template does not parse: "), "{}", chain(&err));
        let t = ChatTemplate::new("{{ 42|list }}").expect("parses");
        let err = t.render(&[], false).expect_err("must fail");
        let text = chain(&err);
        assert_eq!(text.matches("cannot convert value to list").count(), 1, "{text}");
        assert!(text.contains("not iterable"), "the cause is kept: {text}");
    }
}
