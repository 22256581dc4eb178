//! llama.cpp's GBNF grammars (`root ::= ...`) as llguidance's Lark dialect, so that a grammar
//! file written for llama.cpp works as it is (`generate --grammar-file`, the server's
//! `guided_grammar`). llguidance reads only its Lark dialect; its own converter is a Python
//! script, so the translation is here: rules become one line each (`name: body`), names
//! lowercase (Lark's uppercase names are terminals), string literals JSON strings, character
//! classes and `.` regexes; grouping, alternation and the repetition operators (`* + ?` and
//! `{m,n}`) are the same in both.
use std::collections::HashMap;
use std::fmt::Write;

use crate::grammar::GrammarError;

/// Whether `src` reads as GBNF: some line, comments aside, defines a rule with `::=` (Lark uses
/// `:`), the test vLLM applies to tell the two apart.
pub fn is_gbnf(src: &str) -> bool {
    src.lines().any(|l| l.split('#').next().is_some_and(|code| code.contains("::=")))
}

/// The Lark grammar equivalent to the GBNF grammar `src`, which must define `root`.
pub fn gbnf_to_lark(src: &str) -> Result<String, GrammarError> {
    let tokens = tokenize(src)?;
    let mut names = Names::default();
    let mut out = String::new();
    let mut has_root = false;
    let mut i = 0;
    while i < tokens.len() {
        let (Tok::Name(name), Some(Tok::Defines)) = (&tokens[i], tokens.get(i + 1)) else {
            return Err(bad(format!("expected a rule (`name ::= ...`), found {}", tokens[i].describe())));
        };
        has_root |= name == "root";
        let _ = write!(out, "{}:", names.lark(name));
        i += 2;
        let start = i;
        // The body runs to the next `name ::=`.
        while i < tokens.len()
            && !(matches!(tokens[i], Tok::Name(_)) && matches!(tokens.get(i + 1), Some(Tok::Defines)))
        {
            out.push(' ');
            match &tokens[i] {
                Tok::Name(n) => out.push_str(&names.lark(n)),
                Tok::Text(t) => out.push_str(t),
                Tok::Defines => return Err(bad("`::=` without a rule name before it".into())),
            }
            i += 1;
        }
        if i == start {
            return Err(bad(format!("rule `{name}` has an empty body")));
        }
        out.push('\n');
    }
    if !has_root {
        return Err(bad("the grammar defines no `root` rule".into()));
    }
    Ok(format!("start: {}\n{out}", names.lark("root")))
}

fn bad(msg: String) -> GrammarError {
    GrammarError::Invalid(format!("GBNF: {msg}"))
}

#[derive(Debug)]
enum Tok {
    Name(String),
    Defines,
    /// Already in Lark's syntax: a literal, a regex, an operator, a bracket, a repetition.
    Text(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("`{n}`"),
            Tok::Defines => "`::=`".into(),
            Tok::Text(t) => format!("`{t}`"),
        }
    }
}

/// GBNF names (letters, digits, `-`; `_` accepted too) as distinct Lark rule names: lowercase,
/// starting with a letter, `root` as itself; a name that would collide with another's gets a
/// numbered suffix.
#[derive(Default)]
struct Names {
    map: HashMap<String, String>,
    taken: HashMap<String, String>,
}

impl Names {
    fn lark(&mut self, gbnf: &str) -> String {
        if let Some(l) = self.map.get(gbnf) {
            return l.clone();
        }
        let mut base = gbnf.to_ascii_lowercase().replace('_', "-");
        if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
            base.insert(0, 'r');
        }
        // `start` is the converted grammar's own entry rule.
        let mut name = if base == "start" { "start-rule".to_string() } else { base.clone() };
        let mut n = 1;
        while self.taken.contains_key(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.taken.insert(name.clone(), gbnf.to_string());
        self.map.insert(gbnf.to_string(), name.clone());
        name
    }
}

fn tokenize(src: &str) -> Result<Vec<Tok>, GrammarError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ':' if chars[i..].starts_with(&[':', ':', '=']) => {
                out.push(Tok::Defines);
                i += 3;
            }
            '"' => {
                let (text, next) = literal(&chars, i + 1)?;
                out.push(Tok::Text(lark_string(&text)));
                i = next;
            }
            '[' => {
                let (class, next) = char_class(&chars, i + 1)?;
                out.push(Tok::Text(class));
                i = next;
            }
            '.' => {
                out.push(Tok::Text("/(?s:.)/".into()));
                i += 1;
            }
            '(' | ')' | '|' | '*' | '+' | '?' => {
                out.push(Tok::Text(c.to_string()));
                i += 1;
            }
            '{' => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|p| i + p)
                    .ok_or_else(|| bad("unclosed `{`".into()))?;
                let inner: String = chars[i + 1..end].iter().collect();
                if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
                    return Err(bad(format!("bad repetition `{{{inner}}}`")));
                }
                out.push(Tok::Text(format!("{{{}}}", inner.replace(' ', ""))));
                i = end + 1;
            }
            _ if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Name(chars[start..i].iter().collect()));
            }
            _ => return Err(bad(format!("unexpected character {c:?}"))),
        }
    }
    Ok(out)
}

/// One escaped character of a literal or a class at `chars[i]` (after its backslash when
/// `escaped`): the character and the index after it.
fn escape(chars: &[char], i: usize) -> Result<(char, usize), GrammarError> {
    let hex = |len: usize| -> Result<(char, usize), GrammarError> {
        let digits: String = chars.get(i + 1..i + 1 + len).map(|s| s.iter().collect()).unwrap_or_default();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == len)
            .and_then(char::from_u32)
            .map(|c| (c, i + 1 + len))
            .ok_or_else(|| bad(format!("bad escape `\\{}{digits}`", chars[i])))
    };
    match chars.get(i) {
        Some('n') => Ok(('\n', i + 1)),
        Some('r') => Ok(('\r', i + 1)),
        Some('t') => Ok(('\t', i + 1)),
        Some('x') => hex(2),
        Some('u') => hex(4),
        Some('U') => hex(8),
        Some(&c @ ('\\' | '"' | '[' | ']' | '-' | '^')) => Ok((c, i + 1)),
        Some(c) => Err(bad(format!("unknown escape `\\{c}`"))),
        None => Err(bad("a backslash at the end".into())),
    }
}

/// A string literal's characters from `chars[i]` (after the opening quote) to the closing quote;
/// the index after it.
fn literal(chars: &[char], mut i: usize) -> Result<(String, usize), GrammarError> {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None => return Err(bad("unterminated string".into())),
            Some('"') => return Ok((s, i + 1)),
            Some('\\') => {
                let (c, next) = escape(chars, i + 1)?;
                s.push(c);
                i = next;
            }
            Some(&c) => {
                s.push(c);
                i += 1;
            }
        }
    }
}

/// A literal as a Lark (JSON) string; an empty one matches the empty sequence, as in GBNF.
fn lark_string(s: &str) -> String {
    if s.is_empty() {
        return "\"\"".into();
    }
    // serde_json leaves DEL as it is, which Lark's string syntax refuses.
    serde_json::to_string(s).unwrap_or_default().replace('\u{7f}', "\\u007f")
}

/// A character class from `chars[i]` (after `[`) to its `]`, as a Lark regex whose every
/// character is written `\x{..}` (nothing in it is then special to the regex or to Lark's `/`);
/// the index after the `]`.
fn char_class(chars: &[char], mut i: usize) -> Result<(String, usize), GrammarError> {
    let mut re = String::from("/[");
    if chars.get(i) == Some(&'^') {
        re.push('^');
        i += 1;
    }
    let mut items = 0;
    let one = |i: usize| -> Result<(char, usize), GrammarError> {
        match chars.get(i) {
            None => Err(bad("unterminated character class".into())),
            Some('\\') => escape(chars, i + 1),
            Some(&c) => Ok((c, i + 1)),
        }
    };
    loop {
        match chars.get(i) {
            None => return Err(bad("unterminated character class".into())),
            Some(']') => {
                if items == 0 {
                    return Err(bad("an empty character class".into()));
                }
                re.push_str("]/");
                return Ok((re, i + 1));
            }
            _ => {
                let (lo, next) = one(i)?;
                i = next;
                let _ = write!(re, "\\x{{{:x}}}", lo as u32);
                if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
                    let (hi, next) = one(i + 1)?;
                    if hi < lo {
                        return Err(bad(format!("a range {lo:?}-{hi:?} backwards")));
                    }
                    i = next;
                    let _ = write!(re, "-\\x{{{:x}}}", hi as u32);
                }
                items += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_names_literals_and_classes_translate() {
        let g = "# a comment\nroot ::= Greeting-Word (\" \" name)? [.!]{1,3}\nGreeting-Word ::= \"hi\\n\\\"x\\\"\" | \"\\x41\"\nname ::= [^a-z\\]] .*\n";
        let lark = gbnf_to_lark(g).unwrap();
        assert_eq!(
            lark,
            "start: root\nroot: greeting-word ( \" \" name ) ? /[\\x{2e}\\x{21}]/ {1,3}\ngreeting-word: \"hi\\n\\\"x\\\"\" | \"A\"\nname: /[^\\x{61}-\\x{7a}\\x{5d}]/ /(?s:.)/ *\n"
        );
        assert!(is_gbnf(g));
        assert!(!is_gbnf("start: \"a\" # not ::= here"));
    }

    #[test]
    fn colliding_and_odd_names_stay_distinct() {
        let lark =
            gbnf_to_lark("root ::= A a start 1x\nA ::= \"1\"\na ::= \"2\"\nstart ::= \"3\"\n1x ::= \"4\"").unwrap();
        assert_eq!(
            lark,
            "start: root\nroot: a a-1 start-rule r1x\na: \"1\"\na-1: \"2\"\nstart-rule: \"3\"\nr1x: \"4\"\n"
        );
    }

    #[test]
    fn malformed_grammars_are_errors_that_say_why() {
        for (src, why) in [
            ("item ::= \"a\"", "no `root`"),
            ("root ::= \"a", "unterminated string"),
            ("root ::= [a-", "unterminated character class"),
            ("root ::= []", "empty character class"),
            ("root ::= [z-a]", "backwards"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= \"\\x4\"", "bad escape"),
            ("root ::= \"a\"{x}", "bad repetition"),
            ("root ::= \"a\" ;", "unexpected character"),
            ("\"a\" ::= root", "expected a rule"),
            ("root ::=\nnext ::= \"a\"", "empty body"),
        ] {
            let e = gbnf_to_lark(src).unwrap_err().to_string();
            assert!(e.contains(why), "{src:?}: {e}");
        }
    }
}
