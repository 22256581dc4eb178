//! Function calling: finding the calls in a chat answer (Qwen2's templates ask for
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks; small models often answer
//! with the bare object alone) and holding streamed text back while it may still be one.
//!
//! A call's `arguments` go out as a JSON string, as OpenAI's API sends them; an answer whose
//! would-be calls do not parse, or name no offered function, stays plain content.
use serde_json::{json, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One function call of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object, serialized.
    pub arguments: String,
}

impl ToolCall {
    /// The call as a message's (or, with `index`, a stream delta's) `tool_calls` entry.
    pub fn json(&self, index: Option<usize>) -> Value {
        let mut v =
            json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}});
        if let Some(i) = index {
            v["index"] = json!(i);
        }
        v
    }
}

/// The content before the calls (None when empty) and the calls, if `text` holds any calls of
/// the functions `names`.
pub fn parse(text: &str, names: &[String]) -> Option<(Option<String>, Vec<ToolCall>)> {
    let call = |v: Value| -> Option<(String, Value)> {
        let name = v.get("name")?.as_str()?.to_string();
        let args = v.get("arguments").cloned().unwrap_or(json!({}));
        // A model may write the arguments as a string holding the object.
        let args = match args {
            Value::String(s) => serde_json::from_str(&s).ok()?,
            other => other,
        };
        (names.contains(&name) && args.is_object()).then_some((name, args))
    };
    let mut calls = Vec::new();
    let content = match text.find(OPEN) {
        Some(first) => {
            let mut rest = &text[first..];
            while let Some(start) = rest.find(OPEN) {
                let body = &rest[start + OPEN.len()..];
                let (inner, after) = match body.find(CLOSE) {
                    Some(end) => (&body[..end], &body[end + CLOSE.len()..]),
                    None => (body, ""), // the answer ended (length) inside the block
                };
                calls.push(call(serde_json::from_str(inner.trim()).ok()?)?);
                rest = after;
            }
            &text[..first]
        }
        None => {
            calls.push(call(serde_json::from_str(text.trim()).ok()?)?);
            ""
        }
    };
    let content = Some(content.trim()).filter(|c| !c.is_empty()).map(str::to_string);
    let calls =
        calls.into_iter().map(|(name, args)| ToolCall { id: call_id(), name, arguments: args.to_string() }).collect();
    Some((content, calls))
}

/// `call_` and 24 hex digits, unique within the process and unlikely to repeat across runs.
fn call_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("call_{nanos:016x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed) as u32)
}

/// Streamed text of an answer that may call functions: text is passed on until it could be the
/// start of a call -- the answer so far opening with `{` or a prefix of `<tool_call>`, or
/// anything from a `<tool_call>` on -- and held from there to the end, where [`parse`] decides.
#[derive(Debug, Default)]
pub struct CallFilter {
    /// Everything so far (for the final parse).
    all: String,
    /// Bytes of `all` already passed on.
    sent: usize,
    /// A call may have started: nothing more is passed on.
    holding: bool,
}

impl CallFilter {
    /// Adds `piece`; returns the text that can be passed on now.
    pub fn push(&mut self, piece: &str) -> String {
        self.all.push_str(piece);
        if self.holding {
            return String::new();
        }
        let pending = &self.all[self.sent..];
        // Before anything is sent: blank so far, a brace, or the tag's beginning -- wait.
        let start = self.all.trim_start();
        if self.sent == 0 && (start.starts_with('{') || OPEN.starts_with(start)) {
            self.holding = start.starts_with('{') || start == OPEN;
            return String::new();
        }
        if let Some(at) = pending.find(OPEN) {
            self.holding = true;
            let out = pending[..at].to_string();
            self.sent += at;
            return out;
        }
        // Hold back a tail that may be the beginning of `<tool_call>`.
        let keep = (1..OPEN.len()).rev().find(|&k| pending.ends_with(&OPEN[..k])).unwrap_or(0);
        let cut = pending.len() - keep;
        let out = pending[..cut].to_string();
        self.sent += cut;
        out
    }

    /// At the end: the calls (and the content before them that was held back), or the held-back
    /// text as plain content.
    pub fn finish(self, names: &[String]) -> Finished {
        match parse(&self.all, names) {
            Some((_, calls)) => {
                // Content before the first tag that was held back (a bare call has none).
                let content = match self.all.find(OPEN) {
                    Some(first) if first > self.sent => self.all[self.sent..first].trim_end().to_string(),
                    _ => String::new(),
                };
                Finished::Calls { content, calls }
            }
            None => Finished::Text(self.all[self.sent..].to_string()),
        }
    }
}

/// How a [`CallFilter`]'d answer ends.
#[derive(Debug, PartialEq)]
pub enum Finished {
    /// Plain content still to pass on.
    Text(String),
    /// Calls, after content still to pass on (possibly empty).
    Calls { content: String, calls: Vec<ToolCall> },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["get_weather".to_string(), "search".to_string()]
    }

    /// Content and (name, arguments) of each call.
    type Parsed = (Option<String>, Vec<(String, String)>);

    fn calls(text: &str) -> Option<Parsed> {
        parse(text, &names()).map(|(c, calls)| (c, calls.into_iter().map(|t| (t.name, t.arguments)).collect()))
    }

    #[test]
    fn tagged_bare_and_plain_answers() {
        let w = ("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string());
        assert_eq!(
            calls("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"),
            Some((None, vec![w.clone()]))
        );
        assert_eq!(
            calls("{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"),
            Some((None, vec![w.clone()]))
        );
        // Content first, two calls, arguments given as a string, an unterminated last block.
        let two = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", \"arguments\": {}}";
        let s = ("search".to_string(), "{}".to_string());
        assert_eq!(calls(two), Some((Some("Let me look.".to_string()), vec![w, s])));
        // Not calls: plain text, JSON that names no offered function, a broken block.
        assert_eq!(calls("It is sunny."), None);
        assert_eq!(calls("{\"name\": \"rm_rf\", \"arguments\": {}}"), None);
        assert_eq!(calls("{\"a\": 1}"), None);
        assert_eq!(calls("<tool_call>\n{\"name\": \"search\", \"arguments\": {\n</tool_call>"), None);
        let ids: Vec<String> = parse("{\"name\": \"search\", \"arguments\": {}}", &names())
            .unwrap()
            .1
            .iter()
            .map(|c| c.id.clone())
            .collect();
        assert!(ids[0].starts_with("call_") && ids[0].len() == 29, "{ids:?}");
    }

    fn stream(pieces: &[&str]) -> (String, Finished) {
        let mut f = CallFilter::default();
        let sent: String = pieces.iter().map(|p| f.push(p)).collect();
        (sent, f.finish(&names()))
    }

    #[test]
    fn streamed_text_is_held_only_while_it_may_be_a_call() {
        // Plain text flows (a '<' tail waits one piece), and nothing is left at the end.
        assert_eq!(stream(&["It is ", "sunny <", "3"]), ("It is sunny <3".to_string(), Finished::Text(String::new())));
        // A bare object is held from its first brace and becomes a call.
        let (sent, end) = stream(&["{\"name\": \"search\",", " \"arguments\": {}}"]);
        assert!(
            sent.is_empty()
                && matches!(end, Finished::Calls { ref content, ref calls } if content.is_empty() && calls.len() == 1),
            "{end:?}"
        );
        // Content, then a tag split across pieces: the content is sent, the call held.
        let (sent, end) = stream(&["Sure.\n<tool", "_call>\n{\"name\": \"search\", \"arguments\": {}}\n</tool_call>"]);
        assert_eq!(sent, "Sure.\n");
        assert!(matches!(end, Finished::Calls { ref calls, .. } if calls[0].name == "search"), "{end:?}");
        // Held JSON that is no call goes out as text at the end; so does a lone '<'.
        assert_eq!(stream(&["{\"a\": ", "1}"]), (String::new(), Finished::Text("{\"a\": 1}".to_string())));
        assert_eq!(stream(&["<"]), (String::new(), Finished::Text("<".to_string())));
        // Leading blank text waits too, so a bare call after it is still caught.
        let (sent, end) = stream(&["\n", "{\"name\": \"search\", \"arguments\": {}}"]);
        assert!(sent.is_empty() && matches!(end, Finished::Calls { .. }), "{end:?}");
    }
}
