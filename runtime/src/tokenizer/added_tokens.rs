//! Inline matching of added tokens (GGUF token types 3 "control" and 4 "user-defined", e.g.
//! `<|im_start|>`, `<|endoftext|>`, `<tool_call>`): they are found in the raw text before
//! pre-tokenization and become single ids; the text between them is tokenized normally.
//!
//! Matching is leftmost-longest, as in Hugging Face `tokenizers` (aho-corasick LeftmostLongest):
//! at the first position where any added token starts, the longest one starting there wins.
//! Candidates are indexed by first byte, so text without such bytes is scanned at memchr speed.

/// An added-token matcher.
pub struct AddedTokens {
    /// For each first byte, the (token bytes, id) starting with it, longest first.
    by_first_byte: Vec<Vec<(Box<[u8]>, u32)>>,
    /// Distinct first bytes, for the fast scan.
    first_bytes: Vec<u8>,
}

/// A piece of input: plain text to pre-tokenize, or one added token.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Added(u32),
}

impl AddedTokens {
    /// Builds the matcher from (content, id) pairs. Empty contents are ignored; when two ids
    /// share a content, the first wins.
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, u32)>) -> AddedTokens {
        let mut by_first_byte: Vec<Vec<(Box<[u8]>, u32)>> = vec![Vec::new(); 256];
        for (content, id) in tokens {
            let bytes = content.as_bytes();
            let Some(&first) = bytes.first() else { continue };
            let bucket = &mut by_first_byte[first as usize];
            if bucket.iter().any(|(b, _)| &**b == bytes) {
                continue;
            }
            bucket.push((bytes.into(), id));
        }
        let mut first_bytes = Vec::new();
        for (b, bucket) in by_first_byte.iter_mut().enumerate() {
            // Stable sort: equal lengths keep insertion (id) order.
            bucket.sort_by_key(|(tok, _)| std::cmp::Reverse(tok.len()));
            if !bucket.is_empty() {
                first_bytes.push(b as u8);
            }
        }
        AddedTokens { by_first_byte, first_bytes }
    }

    /// Number of distinct added tokens.
    pub fn len(&self) -> usize {
        self.by_first_byte.iter().map(Vec::len).sum()
    }

    /// The added token (id, length in bytes) that starts at byte `i`, longest first.
    #[inline]
    fn match_at(&self, bytes: &[u8], i: usize) -> Option<(u32, usize)> {
        let rest = &bytes[i..];
        self.by_first_byte[bytes[i] as usize]
            .iter()
            .find(|(tok, _)| rest.starts_with(tok))
            .map(|(tok, id)| (*id, tok.len()))
    }

    /// Next position at or after `from` whose byte may start an added token.
    #[inline]
    fn next_candidate(&self, bytes: &[u8], from: usize) -> Option<usize> {
        let hay = &bytes[from..];
        let found = match self.first_bytes.as_slice() {
            [] => None,
            [a] => memchr::memchr(*a, hay),
            [a, b] => memchr::memchr2(*a, *b, hay),
            [a, b, c] => memchr::memchr3(*a, *b, *c, hay),
            _ => hay.iter().position(|&b| !self.by_first_byte[b as usize].is_empty()),
        };
        found.map(|p| from + p)
    }

    /// Splits `text` into plain-text segments and added tokens, calling `f` with each in order.
    pub fn for_each_segment<'a>(&self, text: &'a str, mut f: impl FnMut(Segment<'a>)) {
        let bytes = text.as_bytes();
        let mut start = 0; // start of the pending plain text
        let mut i = 0;
        while let Some(pos) = self.next_candidate(bytes, i) {
            match self.match_at(bytes, pos) {
                Some((id, len)) => {
                    if pos > start {
                        f(Segment::Text(&text[start..pos]));
                    }
                    f(Segment::Added(id));
                    start = pos + len;
                    i = start;
                }
                None => i = pos + 1,
            }
        }
        if start < text.len() {
            f(Segment::Text(&text[start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments<'a>(m: &AddedTokens, text: &'a str) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        m.for_each_segment(text, |s| out.push(s));
        out
    }

    #[test]
    fn longest_match_first() {
        let m = AddedTokens::new([("<|a|>", 1), ("<|a|><|b|>", 2), ("<|b|>", 3), ("x", 4)]);
        assert_eq!(
            segments(&m, "q<|a|><|b|>r<|b|>x<|a"),
            vec![
                Segment::Text("q"),
                Segment::Added(2),
                Segment::Text("r"),
                Segment::Added(3),
                Segment::Added(4),
                Segment::Text("<|a"),
            ]
        );
        assert_eq!(segments(&m, ""), vec![]);
        assert_eq!(segments(&m, "<|a|>"), vec![Segment::Added(1)]);
    }

    #[test]
    fn multibyte_text_around_tokens() {
        let m = AddedTokens::new([("<|e|>", 7)]);
        assert_eq!(segments(&m, "中<|e|>文<"), vec![Segment::Text("中"), Segment::Added(7), Segment::Text("文<")]);
    }
}
