//! JSON mode (the server's `response_format: {"type": "json_object"}`): decoding constrained so
//! that the answer is one JSON object (RFC 8259 syntax, any keys and values) followed by the end
//! of text. Each step the logits of every token that cannot continue a valid prefix are set to
//! -inf before the token is drawn (on the host, with the same sampler as the executors).
//!
//! - [`Json`]: a byte-level pushdown recogniser of JSON text whose top-level value is an object;
//!   `Copy` (the container stack is a bit set, at most [`MAX_DEPTH`] deep), so a token is tried
//!   by feeding its bytes to a copy.
//! - [`JsonMask`]: the vocabulary indexed once per tokenizer: tokens by first byte (a state that
//!   refuses a byte skips every token starting with it) and the tokens that are plain string
//!   content (no quote, backslash or control byte: inside a string they are always allowed, which
//!   is most of the vocabulary), so a step walks few tokens' bytes.
use std::sync::Arc;

use qwen_aot_runtime::tokenizer::{TokenType, Tokenizer};

/// Deepest nesting of objects and arrays the recogniser follows (deeper is refused).
pub const MAX_DEPTH: u8 = 64;

/// Longest run of whitespace between tokens. JSON allows any, and a model that would rather
/// write prose keeps choosing spaces when nothing else is allowed: without a bound it fills the
/// answer with them. (The text must also start with its '{'.)
pub const MAX_WS_RUN: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    /// After '-': a digit must follow.
    Minus,
    /// "0" as the integer part: '.', 'e' or the end.
    Zero,
    /// Integer digits.
    Int,
    /// After '.': a digit must follow.
    Dot,
    /// Fraction digits.
    Frac,
    /// After 'e' / 'E': a sign or a digit.
    Exp,
    /// After the exponent's sign: a digit must follow.
    ExpSign,
    /// Exponent digits.
    ExpInt,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpInt)
    }

    fn step(self, b: u8) -> Option<Num> {
        let digit = b.is_ascii_digit();
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, _) if digit => Num::Int,
            (Num::Int, _) if digit => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, _) if digit => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign | Num::ExpInt, _) if digit => Num::ExpInt,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Before the top-level object: whitespace, then '{'.
    Start,
    /// A value is due (`close`: or the ']' of an empty array).
    Value {
        close: bool,
    },
    /// A key is due (`close`: or the '}' of an empty object).
    Key {
        close: bool,
    },
    /// After a key: ':'.
    Colon,
    /// After a value inside a container: ',' or the container's closer.
    After,
    /// Inside a string (a key's when `key`); `esc`: 0 plain, 1 after '\', 2-5 hex digits due
    /// (`esc - 1` of them).
    Str {
        key: bool,
        esc: u8,
    },
    Num(Num),
    /// Inside `true` / `false` / `null`: `word` indexes LITERALS, `at` bytes matched.
    Lit {
        word: u8,
        at: u8,
    },
    /// The top-level object is closed: whitespace only.
    Done,
}

const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// A valid prefix of a JSON text whose top-level value is an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Json {
    lex: Lex,
    depth: u8,
    /// Bit d: the container at depth d (1-based) is an array.
    arrays: u64,
    /// Whitespace bytes just before this point, outside strings.
    ws: u8,
}

impl Default for Json {
    fn default() -> Json {
        Json { lex: Lex::Start, depth: 0, arrays: 0, ws: 0 }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl Json {
    /// Whether the text so far is one whole JSON object (and whitespace).
    pub fn complete(&self) -> bool {
        self.lex == Lex::Done
    }

    /// Whether the text so far ends inside a string with nothing pending (where a byte that is
    /// not a quote, backslash or control character keeps the state as it is).
    fn in_plain_string(&self) -> bool {
        matches!(self.lex, Lex::Str { esc: 0, .. })
    }

    fn in_array(&self) -> bool {
        self.depth > 0 && self.arrays & (1 << (self.depth - 1)) != 0
    }

    fn push(mut self, array: bool) -> Option<Json> {
        if self.depth == MAX_DEPTH {
            return None;
        }
        if array {
            self.arrays |= 1 << self.depth;
        } else {
            self.arrays &= !(1 << self.depth);
        }
        self.depth += 1;
        self.lex = if array { Lex::Value { close: true } } else { Lex::Key { close: true } };
        Some(self)
    }

    /// A value has ended (a closed container's, after its pop).
    fn value_done(mut self) -> Json {
        self.lex = if self.depth == 0 { Lex::Done } else { Lex::After };
        self
    }

    fn pop(mut self) -> Json {
        self.depth -= 1;
        self.value_done()
    }

    /// The state after byte `b`, or None if no valid text continues so.
    pub fn step(self, b: u8) -> Option<Json> {
        let mut next = self.step_syntax(b)?;
        let blank = is_ws(b) && !matches!(self.lex, Lex::Str { .. });
        next.ws = if blank { self.ws + 1 } else { 0 };
        (next.ws <= MAX_WS_RUN).then_some(next)
    }

    fn step_syntax(self, b: u8) -> Option<Json> {
        let mut s = self;
        match s.lex {
            Lex::Start => match b {
                b'{' => s.push(false),
                _ => None,
            },
            Lex::Value { close } => match b {
                _ if is_ws(b) => Some(s),
                b'{' => s.push(false),
                b'[' => s.push(true),
                b'"' => Some(Json { lex: Lex::Str { key: false, esc: 0 }, ..s }),
                b'-' => Some(Json { lex: Lex::Num(Num::Minus), ..s }),
                b'0' => Some(Json { lex: Lex::Num(Num::Zero), ..s }),
                b'1'..=b'9' => Some(Json { lex: Lex::Num(Num::Int), ..s }),
                b't' => Some(Json { lex: Lex::Lit { word: 0, at: 1 }, ..s }),
                b'f' => Some(Json { lex: Lex::Lit { word: 1, at: 1 }, ..s }),
                b'n' => Some(Json { lex: Lex::Lit { word: 2, at: 1 }, ..s }),
                b']' if close && s.in_array() => Some(s.pop()),
                _ => None,
            },
            Lex::Key { close } => match b {
                _ if is_ws(b) => Some(s),
                b'"' => Some(Json { lex: Lex::Str { key: true, esc: 0 }, ..s }),
                b'}' if close => Some(s.pop()),
                _ => None,
            },
            Lex::Colon => match b {
                _ if is_ws(b) => Some(s),
                b':' => Some(Json { lex: Lex::Value { close: false }, ..s }),
                _ => None,
            },
            Lex::After => match b {
                _ if is_ws(b) => Some(s),
                b',' if s.in_array() => Some(Json { lex: Lex::Value { close: false }, ..s }),
                b',' => Some(Json { lex: Lex::Key { close: false }, ..s }),
                b']' if s.in_array() => Some(s.pop()),
                b'}' if !s.in_array() => Some(s.pop()),
                _ => None,
            },
            Lex::Str { key, esc } => {
                s.lex = match (esc, b) {
                    (0, b'"') if key => Lex::Colon,
                    (0, b'"') => return Some(s.value_done()),
                    (0, b'\\') => Lex::Str { key, esc: 1 },
                    (0, _) if b < 0x20 => return None,
                    (0, _) => Lex::Str { key, esc: 0 },
                    (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Lex::Str { key, esc: 0 },
                    (1, b'u') => Lex::Str { key, esc: 5 },
                    (2, _) if b.is_ascii_hexdigit() => Lex::Str { key, esc: 0 },
                    (3..=5, _) if b.is_ascii_hexdigit() => Lex::Str { key, esc: esc - 1 },
                    _ => return None,
                };
                Some(s)
            }
            Lex::Num(n) => match n.step(b) {
                Some(next) => Some(Json { lex: Lex::Num(next), ..s }),
                // The number ends here; the byte belongs to what follows it.
                None if n.complete() => s.value_done().step(b),
                None => None,
            },
            Lex::Lit { word, at } => {
                let w = LITERALS[word as usize];
                if w[at as usize] != b {
                    return None;
                }
                s.lex = Lex::Lit { word, at: at + 1 };
                Some(if at as usize + 1 == w.len() { s.value_done() } else { s })
            }
            Lex::Done => is_ws(b).then_some(s),
        }
    }

    /// The state after `bytes`, or None.
    pub fn feed(self, bytes: &[u8]) -> Option<Json> {
        bytes.iter().try_fold(self, |s, &b| s.step(b))
    }
}

/// A tokenizer's vocabulary, indexed for masking (built once per model).
pub struct JsonMask {
    /// Per id: its bytes, or None for tokens that never appear in JSON text (control and added
    /// tokens, padding, empty tokens).
    bytes: Vec<Option<Box<[u8]>>>,
    /// Ids of text tokens by first byte.
    by_first: Vec<Vec<u32>>,
    /// Per id: a text token with no quote, backslash or control byte.
    plain: Vec<bool>,
    /// The end-of-text ids: allowed only once the object is complete.
    eos: Vec<u32>,
}

impl JsonMask {
    pub fn new(tok: &Tokenizer) -> Arc<JsonMask> {
        let n = tok.vocab_size();
        let mut bytes = Vec::with_capacity(n);
        let mut by_first = vec![Vec::new(); 256];
        let mut plain = vec![false; n];
        for id in 0..n as u32 {
            let text = matches!(tok.token_type(id), Some(TokenType::Normal | TokenType::Byte));
            let b = tok.token_bytes(id).ok().filter(|b| text && !b.is_empty());
            if let Some(b) = b {
                by_first[b[0] as usize].push(id);
                plain[id as usize] = b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\');
            }
            bytes.push(b.map(Box::from));
        }
        Arc::new(JsonMask { bytes, by_first, plain, eos: tok.eos_ids() })
    }

    /// Sets `logits[id]` to -inf for every token that cannot follow `state` (every id past the
    /// tokenizer's vocabulary too); once the object is complete, only the end-of-text ids remain.
    pub fn apply(&self, state: &Json, logits: &mut [f32]) {
        let mut allowed = vec![false; logits.len()];
        if state.complete() {
            for &e in &self.eos {
                if let Some(a) = allowed.get_mut(e as usize) {
                    *a = true;
                }
            }
        } else {
            let plain_ok = state.in_plain_string();
            for (first, ids) in self.by_first.iter().enumerate() {
                let Some(after_first) = state.step(first as u8) else { continue };
                for &id in ids {
                    let i = id as usize;
                    if i >= allowed.len() {
                        continue;
                    }
                    allowed[i] = (plain_ok && self.plain[i])
                        || self.bytes[i].as_deref().is_some_and(|b| after_first.feed(&b[1..]).is_some());
                }
            }
        }
        for (l, ok) in logits.iter_mut().zip(allowed) {
            if !ok {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// The state after token `id` (None: it was not allowed; end-of-text ids leave it as it is).
    pub fn advance(&self, state: Json, id: u32) -> Option<Json> {
        if self.eos.contains(&id) {
            return state.complete().then_some(state);
        }
        state.feed(self.bytes.get(id as usize)?.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        Json::default().feed(text.as_bytes()).is_some_and(|s| s.complete())
    }

    fn prefix_ok(text: &str) -> bool {
        Json::default().feed(text.as_bytes()).is_some()
    }

    /// Whole objects that serde_json parses are accepted; its rejects are not, and neither are
    /// top-level values other than an object.
    #[test]
    fn accepts_exactly_json_objects() {
        let good = [
            "{}",
            "{\n\t\"a\" : 1 } ",
            r#"{"a": [1, -2.5e+3, 0, 0.0e-1, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"], "b": {"c": []}}"#,
            r#"{"k": [[[]], {}], "é": "ü 😀"}"#,
            r#"{"n": -0, "m": 10E2}"#,
        ];
        for g in good {
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(g).is_ok(), "{g}");
            assert!(accepts(g), "{g}");
        }
        let bad = [
            "[]",
            "1",
            "\"s\"",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":.5}",
            "{\"a\":tru}",
            "{\"a\":1}}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":[1,]}",
            "{1:2}",
            "{} {}",
            "{\"a\":1 2}",
            "{\"a\":[}",
        ];
        for b in bad {
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(b).is_err(), "{b}");
            assert!(!accepts(b), "{b}");
        }
        // Prefixes of valid text are valid prefixes; the end of a number is seen at its follower.
        assert!(prefix_ok("{\"a\": 12") && prefix_ok("{\"a\": [tr") && prefix_ok("{\"a\": \"\\u00"));
        assert!(!prefix_ok("{\"a\": 12x") && !prefix_ok("x") && !prefix_ok("{}x"));
        // No whitespace before the object; runs of at most MAX_WS_RUN between tokens, any
        // length inside strings.
        assert!(!prefix_ok(" {") && !prefix_ok("\n{"));
        let run = |n: usize| format!("{{\"a\":{}1}}", " ".repeat(n));
        assert!(accepts(&run(MAX_WS_RUN as usize)) && !prefix_ok(&run(MAX_WS_RUN as usize + 1)));
        assert!(accepts(&format!("{{\"a\":\"{}\"}}", " ".repeat(100))));
    }

    #[test]
    fn nesting_stops_at_max_depth() {
        let deep = |d: usize| format!("{{\"a\":{}{}}}", "[".repeat(d), "]".repeat(d));
        assert!(accepts(&deep(MAX_DEPTH as usize - 1)));
        assert!(!prefix_ok(&deep(MAX_DEPTH as usize)));
    }

    /// On random byte strings the fast mask (first-byte buckets, plain string tokens) allows
    /// exactly the tokens that a copy of the state accepts byte by byte, in states met along
    /// valid texts.
    #[test]
    fn the_mask_is_the_byte_walk() {
        let vocab: Vec<Box<[u8]>> = [
            "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "a", "ab", "\"a\"", "\":", "1", "12", "-", ".", "e", "tr",
            "ue", "true", "null", "\\", "\\n", "\\u", "00e9", " \"", "\",", "}\n", "x\"y", "é", "\u{1}",
        ]
        .iter()
        .map(|t| Box::from(t.as_bytes()))
        .collect();
        let n = vocab.len();
        let mut by_first = vec![Vec::new(); 256];
        for (id, b) in vocab.iter().enumerate() {
            by_first[b[0] as usize].push(id as u32);
        }
        let plain = vocab.iter().map(|b| b.iter().all(|&c| c >= 0x20 && c != b'"' && c != b'\\')).collect();
        let mask = JsonMask { bytes: vocab.iter().cloned().map(Some).collect(), by_first, plain, eos: vec![] };
        let texts =
            ["", "{", "{\"a", "{\"a\\", "{\"a\\u0", "{\"a\":", "{\"a\": 1", "{\"a\": [", "{\"a\": [t", "{\"k\": \"v\""];
        for t in texts {
            let state = Json::default().feed(t.as_bytes()).expect("valid prefix");
            let mut logits = vec![0.0f32; n + 2];
            mask.apply(&state, &mut logits);
            for (id, b) in vocab.iter().enumerate() {
                assert_eq!(
                    logits[id] == 0.0,
                    state.feed(b).is_some(),
                    "after {t:?}: token {:?}",
                    String::from_utf8_lossy(b)
                );
            }
            assert!(logits[n..].iter().all(|l| *l == f32::NEG_INFINITY), "ids past the vocabulary");
        }
    }
}
