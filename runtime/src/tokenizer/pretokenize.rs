//! The Qwen2 pre-tokenizer: splits text into the pieces that BPE then encodes one at a time.
//!
//! Hugging Face uses this regex (Split, behaviour Isolated) for `tokenizer.ggml.pre = "qwen2"`:
//!
//! ```text
//! (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//! ```
//!
//! It needs a look-ahead, which only backtracking engines support, and those are slow. So this
//! module is a hand-written scanner that makes, at each position, the choice the backtracking
//! engine makes (alternatives in order, greedy quantifiers, backtracking where it changes the
//! result); `tests` compares it with the regex itself (fancy-regex) on random and edge-case text.
//! Every character is a letter (`\p{L}`), a number (`\p{N}`), white space (`\s`, Unicode
//! White_Space) or "other", so every position starts a match and the pieces cover the text.

use std::sync::OnceLock;

/// Character classes the regex distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

const L: u8 = 0;
const N: u8 = 1;
const S: u8 = 2;
const O: u8 = 3;

/// Class tables: a dense table for the Basic Multilingual Plane and sorted ranges above it.
struct Tables {
    bmp: Vec<u8>,
    /// (start, end inclusive, class) for code points >= 0x10000, sorted by start.
    astral: Vec<(u32, u32, u8)>,
}

/// Code point ranges of a Unicode class expression, from the regex crate's own tables.
fn class_ranges(expr: &str) -> Vec<(u32, u32)> {
    let hir = match regex_syntax::Parser::new().parse(expr) {
        Ok(h) => h,
        Err(_) => return Vec::new(),
    };
    match hir.kind() {
        regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(cls)) => {
            cls.ranges().iter().map(|r| (r.start() as u32, r.end() as u32)).collect()
        }
        _ => Vec::new(),
    }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut bmp = vec![O; 0x10000];
        let mut astral = Vec::new();
        // Letters and numbers are disjoint general categories; white space is disjoint from both.
        for (expr, class) in [(r"\p{L}", L), (r"\p{N}", N), (r"\s", S)] {
            for (start, end) in class_ranges(expr) {
                for cp in start..=end.min(0xFFFF) {
                    bmp[cp as usize] = class;
                }
                if end >= 0x10000 {
                    astral.push((start.max(0x10000), end, class));
                }
            }
        }
        astral.sort_unstable();
        Tables { bmp, astral }
    })
}

#[inline]
fn class_of(c: char, t: &Tables) -> Class {
    let cp = c as u32;
    let raw = if cp < 0x10000 {
        t.bmp[cp as usize]
    } else {
        match t.astral.binary_search_by(|&(s, _, _)| s.cmp(&cp)) {
            Ok(i) => t.astral[i].2,
            Err(0) => O,
            Err(i) => {
                let (_, e, k) = t.astral[i - 1];
                if cp <= e {
                    k
                } else {
                    O
                }
            }
        }
    };
    match raw {
        L => Class::Letter,
        N => Class::Number,
        S => Class::Space,
        _ => Class::Other,
    }
}

/// The character starting at byte `i` of `s` (which must be a char boundary) and its length.
#[inline]
fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    let b = *s.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((b as char, 1));
    }
    s[i..].chars().next().map(|c| (c, c.len_utf8()))
}

/// Splits `text` into pre-tokens and calls `f` with each one, in order. The pieces concatenate
/// to `text`.
pub fn for_each_piece<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let t = tables();
    let mut i = 0;
    while i < text.len() {
        let end = piece_end(text, i, t);
        debug_assert!(end > i);
        f(&text[i..end]);
        i = end;
    }
}

/// Splits `text` into pre-tokens (convenience wrapper around [`for_each_piece`]).
#[cfg(test)]
pub fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for_each_piece(text, |p| out.push(p));
    out
}

/// End (exclusive) of the regex match that starts at byte `i`.
fn piece_end(s: &str, i: usize, t: &Tables) -> usize {
    let Some((c0, l0)) = char_at(s, i) else { return s.len() };
    let next = char_at(s, i + l0);

    // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)  (case-insensitive with Unicode simple case folding:
    //    U+017F LONG S folds to 's'; no other character folds to these letters.)
    if c0 == '\'' {
        if let Some((c1, l1)) = next {
            match c1 {
                's' | 'S' | '\u{17F}' | 't' | 'T' | 'm' | 'M' | 'd' | 'D' => return i + l0 + l1,
                'r' | 'R' | 'v' | 'V' | 'l' | 'L' => {
                    if let Some((c2, l2)) = char_at(s, i + l0 + l1) {
                        let ok = match c1 {
                            'r' | 'R' | 'v' | 'V' => matches!(c2, 'e' | 'E'),
                            _ => matches!(c2, 'l' | 'L'),
                        };
                        if ok {
                            return i + l0 + l1 + l2;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let k0 = class_of(c0, t);
    let letters_from = |mut j: usize| {
        while let Some((c, l)) = char_at(s, j) {
            if class_of(c, t) != Class::Letter {
                break;
            }
            j += l;
        }
        j
    };

    // 2. [^\r\n\p{L}\p{N}]?\p{L}+
    if k0 == Class::Letter {
        return letters_from(i + l0);
    }
    let is_newline = |c: char| c == '\r' || c == '\n';
    if k0 != Class::Number && !is_newline(c0) {
        if let Some((c1, l1)) = next {
            if class_of(c1, t) == Class::Letter {
                return letters_from(i + l0 + l1);
            }
        }
    }

    // 3. \p{N}
    if k0 == Class::Number {
        return i + l0;
    }

    // 4. ' '?[^\s\p{L}\p{N}]+[\r\n]*
    let others_then_newlines = |mut j: usize| {
        while let Some((c, l)) = char_at(s, j) {
            if class_of(c, t) != Class::Other {
                break;
            }
            j += l;
        }
        while let Some((c, l)) = char_at(s, j) {
            if !is_newline(c) {
                break;
            }
            j += l;
        }
        j
    };
    if k0 == Class::Other {
        return others_then_newlines(i + l0);
    }
    if c0 == ' ' {
        if let Some((c1, l1)) = next {
            if class_of(c1, t) == Class::Other {
                return others_then_newlines(i + l0 + l1);
            }
        }
    }

    // c0 is white space. Scan the maximal white-space run, remembering the last newline and the
    // start of the last character.
    let mut j = i;
    let mut last_newline_end = None;
    let mut last_char_start = i;
    while let Some((c, l)) = char_at(s, j) {
        if class_of(c, t) != Class::Space {
            break;
        }
        if is_newline(c) {
            last_newline_end = Some(j + l);
        }
        last_char_start = j;
        j += l;
    }
    // 5. \s*[\r\n]+ : \s* backs off to the last newline of the run; [\r\n]+ then ends right
    //    after it (what follows it is either non-newline white space or the end of the run).
    if let Some(end) = last_newline_end {
        return end;
    }
    // 6. \s+(?!\S) : the whole run at the end of the text, else the run minus its last
    //    character (which is white space, so the look-ahead holds), if that is non-empty.
    if j == s.len() {
        return j;
    }
    if last_char_start > i {
        return last_char_start;
    }
    // 7. \s+ : a single white-space character before a non-space.
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    const HF_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    fn oracle(text: &str) -> Vec<String> {
        static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let re = RE.get_or_init(|| fancy_regex::Regex::new(HF_QWEN2).expect("regex compiles"));
        let mut out = Vec::new();
        let mut last = 0;
        for m in re.find_iter(text) {
            let m = m.expect("regex runs");
            assert_eq!(m.start(), last, "gap in regex coverage of {text:?}");
            out.push(m.as_str().to_string());
            last = m.end();
        }
        assert_eq!(last, text.len());
        out
    }

    fn check(text: &str) {
        let ours: Vec<String> = pieces(text).into_iter().map(String::from).collect();
        assert_eq!(ours, oracle(text), "pieces of {text:?}");
    }

    #[test]
    fn hand_written_cases() {
        for text in [
            "",
            "Hello world",
            "    four leading spaces",
            "\n  both ends  \n",
            "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n",
            "x    =    1  ;  y =\t\t2",
            "DON'T I'M YOU'RE we'll they've he'd it's 'x 'LL 'Re",
            "Wait... what?!?! (yes) [no] {maybe} --- ***",
            "a \n b\t \n\n  c  \t\n",
            "\r\n\r\n  \r\n x",
            "  \u{a0}\u{3000}word",
            "用中文介绍一下你自己。",
            "👨‍👩‍👧‍👦 🇫🇷🇯🇵",
            "café naïve",
            "Ⅻ ½ ² 𝟙𝟚 𝔸𝔹",
            "'ſ '\u{212A}",
            " ''s",
            "end.\n\n\tx",
        ] {
            check(text);
        }
    }

    #[test]
    fn source_text_matches_regex() {
        // Real prose and code with every kind of punctuation and white space.
        for text in [include_str!("mod.rs"), include_str!("pretokenize.rs"), include_str!("../chat_template.rs")] {
            check(text);
        }
    }

    #[test]
    fn random_text_matches_regex() {
        // Deterministic xorshift so the test is reproducible without a rand dependency.
        let alphabet: Vec<char> =
            " \t\n\r\u{a0}\u{2003}'sStTrReEvVlLmMdDxyz019½Ⅻ.,;!?-_()[]{}\"#<|>中文ü\u{301}😀\u{200d}ſ"
                .chars()
                .collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            check(&text);
        }
    }
}
