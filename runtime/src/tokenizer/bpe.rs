//! Byte-level BPE over one pre-token: start from one symbol per byte and repeatedly apply the
//! highest-priority merge (lowest rank, leftmost first) until none applies.
//!
//! This is the algorithm of Hugging Face `tokenizers` (`models/bpe/word.rs`, `merge_all`): a
//! binary heap of candidate merges ordered by (rank, position) over a doubly linked list of
//! symbols, so a word of n bytes costs O(n log n) rather than O(n²). Stale heap entries are
//! skipped with the same test HF uses (the pair at that position no longer produces that token),
//! which keeps the result identical to the reference even in corner cases.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Merge table: (left id, right id) → (rank, merged id).
pub struct Merges {
    map: FxHashMap<u64, (u32, u32)>,
}

#[inline]
fn key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl Merges {
    /// Builds the table from (left, right, merged) triples in priority order. A repeated pair
    /// keeps its first (highest-priority) rank, as HF does.
    pub fn new(triples: impl IntoIterator<Item = (u32, u32, u32)>) -> Merges {
        let iter = triples.into_iter();
        let mut map = FxHashMap::default();
        map.reserve(iter.size_hint().0);
        for (rank, (a, b, m)) in iter.enumerate() {
            map.entry(key(a, b)).or_insert((rank as u32, m));
        }
        Merges { map }
    }

    /// (rank, merged id) of the pair, if it merges.
    #[inline]
    pub fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.map.get(&key(a, b)).copied()
    }

    /// Number of distinct merges.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    /// False once merged into its left neighbour.
    alive: bool,
}

const NONE: u32 = u32::MAX;

#[derive(PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: u32,
    new_id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the lowest rank, then the leftmost position, is greatest.
        other.rank.cmp(&self.rank).then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reusable buffers so that encoding a long text allocates once, not once per word.
#[derive(Default)]
pub struct Scratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
}

/// Appends the BPE ids of `word` (raw bytes of one pre-token) to `out`. `byte_ids[b]` is the id
/// of the single-byte token for byte `b`.
pub fn encode_word(word: &[u8], byte_ids: &[u32; 256], merges: &Merges, scratch: &mut Scratch, out: &mut Vec<u32>) {
    match word.len() {
        0 => return,
        1 => {
            out.push(byte_ids[word[0] as usize]);
            return;
        }
        _ => {}
    }
    let symbols = &mut scratch.symbols;
    let heap = &mut scratch.heap;
    symbols.clear();
    heap.clear();
    let n = word.len() as u32;
    for (i, &b) in word.iter().enumerate() {
        let i = i as u32;
        symbols.push(Symbol {
            id: byte_ids[b as usize],
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
            alive: true,
        });
    }
    for i in 0..symbols.len() - 1 {
        if let Some((rank, new_id)) = merges.get(symbols[i].id, symbols[i + 1].id) {
            heap.push(Candidate { rank, pos: i as u32, new_id });
        }
    }
    while let Some(top) = heap.pop() {
        let pos = top.pos as usize;
        let sym = symbols[pos];
        if !sym.alive || sym.next == NONE {
            continue;
        }
        let right_pos = sym.next as usize;
        let right = symbols[right_pos];
        // Stale entry: the pair at `pos` changed since it was queued.
        match merges.get(sym.id, right.id) {
            Some((_, id)) if id == top.new_id => {}
            _ => continue,
        }
        symbols[pos].id = top.new_id;
        symbols[pos].next = right.next;
        symbols[right_pos].alive = false;
        if right.next != NONE {
            symbols[right.next as usize].prev = top.pos;
            if let Some((rank, new_id)) = merges.get(top.new_id, symbols[right.next as usize].id) {
                heap.push(Candidate { rank, pos: top.pos, new_id });
            }
        }
        if sym.prev != NONE {
            if let Some((rank, new_id)) = merges.get(symbols[sym.prev as usize].id, top.new_id) {
                heap.push(Candidate { rank, pos: sym.prev, new_id });
            }
        }
    }
    let mut i = 0u32;
    while i != NONE {
        out.push(symbols[i as usize].id);
        i = symbols[i as usize].next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte ids are the byte values; merged tokens get ids from 256 on.
    fn setup(merges: &[(&str, &str)]) -> (Vec<Vec<u8>>, Merges) {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut triples = Vec::new();
        for (a, b) in merges {
            let ia = vocab.iter().position(|t| t == a.as_bytes()).expect("left known");
            let ib = vocab.iter().position(|t| t == b.as_bytes()).expect("right known");
            let joined = [a.as_bytes(), b.as_bytes()].concat();
            let im = match vocab.iter().position(|t| *t == joined) {
                Some(i) => i,
                None => {
                    vocab.push(joined);
                    vocab.len() - 1
                }
            };
            triples.push((ia as u32, ib as u32, im as u32));
        }
        (vocab, Merges::new(triples))
    }

    fn run(word: &str, vocab: &[Vec<u8>], merges: &Merges) -> Vec<String> {
        let byte_ids: [u32; 256] = std::array::from_fn(|b| b as u32);
        let mut out = Vec::new();
        encode_word(word.as_bytes(), &byte_ids, merges, &mut Scratch::default(), &mut out);
        out.iter().map(|&i| String::from_utf8_lossy(&vocab[i as usize]).into_owned()).collect()
    }

    /// The textbook algorithm: merge the best (lowest rank, leftmost) pair until none merges.
    fn naive(word: &str, vocab: &[Vec<u8>], merges: &Merges) -> Vec<String> {
        let mut ids: Vec<u32> = word.bytes().map(|b| b as u32).collect();
        loop {
            let best = (0..ids.len().saturating_sub(1))
                .filter_map(|i| merges.get(ids[i], ids[i + 1]).map(|(r, m)| (r, i, m)))
                .min();
            match best {
                Some((_, i, m)) => {
                    ids[i] = m;
                    ids.remove(i + 1);
                }
                None => break,
            }
        }
        ids.iter().map(|&i| String::from_utf8_lossy(&vocab[i as usize]).into_owned()).collect()
    }

    #[test]
    fn merges_by_rank_then_leftmost() {
        let (vocab, merges) = setup(&[("a", "b"), ("b", "c"), ("ab", "c"), ("a", "a")]);
        assert_eq!(run("abc", &vocab, &merges), ["abc"]);
        assert_eq!(run("bcab", &vocab, &merges), ["bc", "ab"]);
        assert_eq!(run("aaa", &vocab, &merges), ["aa", "a"]);
        assert_eq!(run("x", &vocab, &merges), ["x"]);
        assert_eq!(run("", &vocab, &merges), Vec::<String>::new());
    }

    #[test]
    fn agrees_with_naive_on_random_words() {
        let (vocab, merges) = setup(&[
            ("a", "b"),
            ("b", "a"),
            ("a", "a"),
            ("ab", "a"),
            ("aa", "b"),
            ("b", "b"),
            ("ab", "ab"),
            ("ba", "b"),
            ("a", "bb"),
            ("aab", "a"),
            ("c", "a"),
            ("ca", "b"),
        ]);
        let mut state = 12345u64;
        for _ in 0..5000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (state >> 60) as usize + 1;
            let word: String = (0..len).map(|k| ["a", "b", "c"][((state >> (k * 3 % 57)) % 3) as usize]).collect();
            assert_eq!(run(&word, &vocab, &merges), naive(&word, &vocab, &merges), "{word}");
        }
    }

    #[test]
    fn long_word_is_not_quadratic() {
        let (vocab, merges) = setup(&[("a", "a"), ("aa", "aa"), ("aaaa", "aaaa")]);
        let word = "a".repeat(200_000);
        let t = std::time::Instant::now();
        let out = run(&word, &vocab, &merges);
        assert_eq!(out.len(), 25_000);
        assert!(t.elapsed().as_secs_f64() < 5.0);
    }
}
