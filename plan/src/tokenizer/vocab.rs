//! Token string → id index over the token list, without copying the strings: a hash table of ids
//! whose equality check looks the string up in the list. Building it is one pass over ~150k
//! tokens; a `HashMap<String, u32>` would clone every token and double the memory.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Index of `tokens` by content; on duplicate contents the first id wins.
pub struct VocabIndex {
    table: HashTable<u32>,
}

#[inline]
fn hash(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

impl VocabIndex {
    /// Indexes `tokens`. Returns the index and the (first id, later id) pairs of duplicates.
    pub fn new(tokens: &[String]) -> (VocabIndex, Vec<(u32, u32)>) {
        let mut table = HashTable::with_capacity(tokens.len());
        let mut duplicates = Vec::new();
        for (i, tok) in tokens.iter().enumerate() {
            let h = hash(tok);
            match table.find(h, |&id: &u32| tokens[id as usize] == *tok) {
                Some(&first) => duplicates.push((first, i as u32)),
                None => {
                    table.insert_unique(h, i as u32, |&id: &u32| hash(&tokens[id as usize]));
                }
            }
        }
        (VocabIndex { table }, duplicates)
    }

    /// The id of `s`; `tokens` must be the list the index was built from.
    #[inline]
    pub fn get(&self, tokens: &[String], s: &str) -> Option<u32> {
        self.table.find(hash(s), |&id| tokens[id as usize] == s).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::VocabIndex;

    #[test]
    fn finds_first_of_duplicates() {
        let tokens: Vec<String> = ["a", "b", "a", "cd"].iter().map(|s| s.to_string()).collect();
        let (idx, dups) = VocabIndex::new(&tokens);
        assert_eq!(dups, vec![(0, 2)]);
        assert_eq!(idx.get(&tokens, "a"), Some(0));
        assert_eq!(idx.get(&tokens, "cd"), Some(3));
        assert_eq!(idx.get(&tokens, "c"), None);
    }
}
