//! The tokenizer as plan data: [`TokenizerData`] (what the compiler copies out of the GGUF and
//! writes as `tokenizer.json`; what the runtime builds its `Tokenizer` from), its errors, the GPT-2
//! byte-level alphabet its token strings are spelled in ([`byte_level`]), and its one validator,
//! [`TokenizerData::validate`]: the compiler runs it before writing, so a broken vocabulary fails
//! the compile, and the runtime's `Tokenizer::from_data` builds on what it returns.
pub mod byte_level;
mod data;
mod error;
mod vocab;

pub use data::{TokenType, TokenizerData, MAX_MERGES, MAX_TOKEN_BYTES, MAX_VOCAB};
pub use error::TokenizerError;
pub use vocab::VocabIndex;

use rayon::prelude::*;

/// A vocabulary [`TokenizerData::validate`] accepted, indexed: what a tokenizer keeps.
pub struct ValidVocab {
    /// One per token.
    pub types: Vec<TokenType>,
    /// Token string → id over `TokenizerData::tokens`.
    pub index: VocabIndex,
    /// Id of the single-byte BPE token for each byte.
    pub byte_ids: [u32; 256],
    /// Every merge as (left, right, merged) ids, highest priority first.
    pub merges: Vec<(u32, u32, u32)>,
}

/// A merge as (left, right, merged) ids.
type Merge = (u32, u32, u32);

/// Merges per parallel chunk of the validator.
const MERGE_CHUNK: usize = 8192;

/// Merge `index` (`"left right"`) as (left, right, merged) ids, through `bpe_id`; `joined` is
/// scratch for the merged string.
fn merge_ids(
    index: usize,
    line: &str,
    bpe_id: &impl Fn(&str) -> Option<u32>,
    joined: &mut String,
) -> Result<Merge, TokenizerError> {
    let malformed = || TokenizerError::MalformedMerge { index, line: line.to_string() };
    let (a, b) = line.split_once(' ').ok_or_else(malformed)?;
    if a.is_empty() || b.is_empty() || b.contains(' ') {
        return Err(malformed());
    }
    joined.clear();
    joined.push_str(a);
    joined.push_str(b);
    let lookup = |t: &str| {
        bpe_id(t).ok_or_else(|| TokenizerError::MergeUnknownToken {
            index,
            line: line.to_string(),
            token: t.to_string(),
        })
    };
    Ok((lookup(a)?, lookup(b)?, lookup(joined)?))
}

/// A tokenizer of `tokens` entries serves a model of `model` vocabulary rows only when the two are
/// equal (GGUF pads the token list to the embedding's rows, as llama.cpp requires).
pub fn check_model_vocab(tokens: usize, model: usize) -> Result<(), TokenizerError> {
    if tokens == model {
        Ok(())
    } else {
        Err(TokenizerError::ModelVocabMismatch { tokens, model })
    }
}

impl TokenizerData {
    /// Validates the vocabulary: sizes match and are bounded, token types are known, every merge
    /// names known tokens and yields a known token, all 256 byte tokens exist, special ids are in
    /// range, and model/pre-tokenizer are supported.
    pub fn validate(&self) -> Result<ValidVocab, TokenizerError> {
        if self.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(self.model.clone()));
        }
        if self.pre != "qwen2" {
            return Err(TokenizerError::UnsupportedPreTokenizer(self.pre.clone()));
        }
        let n = self.tokens.len();
        if n == 0 || n > MAX_VOCAB {
            return Err(TokenizerError::VocabSize(n));
        }
        if self.token_types.len() != n {
            return Err(TokenizerError::TypeCountMismatch { tokens: n, types: self.token_types.len() });
        }
        if self.merges.len() > MAX_MERGES {
            return Err(TokenizerError::TooManyMerges(self.merges.len()));
        }
        for (which, id) in [("bos", self.bos_id), ("eos", self.eos_id), ("padding", self.pad_id)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(TokenizerError::SpecialIdOutOfRange { which, id, vocab: n });
                }
            }
        }

        let mut types = Vec::with_capacity(n);
        for (i, (tok, &ty)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            let id = i as u32;
            if tok.is_empty() || tok.len() > MAX_TOKEN_BYTES {
                return Err(TokenizerError::TokenLength { id, len: tok.len() });
            }
            types.push(TokenType::from_i32(ty).ok_or(TokenizerError::TokenType { id, ty })?);
        }
        let (index, duplicates) = VocabIndex::new(&self.tokens);
        if let Some(&(first, second)) = duplicates.first() {
            let text = self.tokens[first as usize].clone();
            return Err(TokenizerError::DuplicateToken { text, first, second });
        }
        let tokens = &self.tokens;
        // BPE (non-added) tokens only: byte tokens and merges may only reference these.
        let bpe_id = |t: &str| index.get(tokens, t).filter(|&id| !types[id as usize].is_added());

        let byte_chars = byte_level::byte_to_char_table();
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            let mut buf = [0u8; 4];
            let s: &str = byte_chars[b as usize].encode_utf8(&mut buf);
            byte_ids[b as usize] = bpe_id(s).ok_or(TokenizerError::MissingByteToken(b))?;
        }

        // The merges in chunks on every core (≈ 450k lookups, the largest part of a tokenizer's
        // load); the first bad merge in file order is the error, whichever chunk finds it first.
        let chunks: Vec<Result<Vec<Merge>, TokenizerError>> = self
            .merges
            .par_chunks(MERGE_CHUNK)
            .enumerate()
            .map(|(c, lines)| {
                let mut joined = String::new();
                lines
                    .iter()
                    .enumerate()
                    .map(|(j, line)| merge_ids(c * MERGE_CHUNK + j, line, &bpe_id, &mut joined))
                    .collect()
            })
            .collect();
        let mut merges = Vec::with_capacity(self.merges.len());
        for chunk in chunks {
            merges.extend(chunk?);
        }
        Ok(ValidVocab { types, index, byte_ids, merges })
    }
}
