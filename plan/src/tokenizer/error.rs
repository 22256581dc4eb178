//! Errors of the tokenizer: validating [`super::TokenizerData`] (the vocabulary
//! and merges written by the compiler) and decoding ids that are not in the vocabulary.
//!
//! One `thiserror` enum so that callers can tell a corrupt `tokenizer.json` from a bad id.

use thiserror::Error;

/// Everything that can go wrong while validating tokenizer data or using the runtime's tokenizer.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// `tokens` and `token_types` have different lengths.
    #[error("tokenizer data: {tokens} tokens but {types} token types")]
    TypeCountMismatch { tokens: usize, types: usize },
    /// The vocabulary is empty or larger than the supported bound.
    #[error("tokenizer data: vocabulary size {0} out of range (1..={max})", max = super::data::MAX_VOCAB)]
    VocabSize(usize),
    /// More merges than the supported bound.
    #[error("tokenizer data: {0} merges exceed the bound {max}", max = super::data::MAX_MERGES)]
    TooManyMerges(usize),
    /// A token string is empty or longer than the supported bound.
    #[error("tokenizer data: token {id} has length {len} (allowed 1..={max})", max = super::data::MAX_TOKEN_BYTES)]
    TokenLength { id: u32, len: usize },
    /// A token type outside 1..=6 (GGUF `tokenizer.ggml.token_type`).
    #[error("tokenizer data: token {id} has unknown type {ty}")]
    TokenType { id: u32, ty: i32 },
    /// The same token string appears twice among the BPE (non-special) tokens.
    #[error("tokenizer data: token {text:?} appears twice (ids {first} and {second})")]
    DuplicateToken { text: String, first: u32, second: u32 },
    /// A merge line is not two space-separated tokens.
    #[error("tokenizer data: merge {index} {line:?} is not of the form \"a b\"")]
    MalformedMerge { index: usize, line: String },
    /// A merge names a token that is not in the vocabulary (either side or the result).
    #[error("tokenizer data: merge {index} {line:?} references unknown token {token:?}")]
    MergeUnknownToken { index: usize, line: String, token: String },
    /// One of the 256 byte-level base tokens is missing, so some input could not be encoded.
    #[error("tokenizer data: byte-level base token for byte 0x{0:02x} is missing")]
    MissingByteToken(u8),
    /// Only GPT-2 style byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is supported.
    #[error("tokenizer data: unsupported tokenizer model {0:?} (supported: \"gpt2\")")]
    UnsupportedModel(String),
    /// The pre-tokenizer named by `tokenizer.ggml.pre` is not implemented.
    #[error("tokenizer data: unsupported pre-tokenizer {0:?} (supported: \"qwen2\")")]
    UnsupportedPreTokenizer(String),
    /// A special id (BOS/EOS/padding) is outside the vocabulary.
    #[error("tokenizer data: {which} id {id} is outside the vocabulary of {vocab}")]
    SpecialIdOutOfRange { which: &'static str, id: u32, vocab: usize },
    /// The vocabulary's size is not the model's (the rows of its embedding and LM head): ids the
    /// model produces would not decode, or ids the tokenizer produces would have no embedding.
    #[error("tokenizer data: {tokens} tokens, but the model's vocabulary has {model}")]
    ModelVocabMismatch { tokens: usize, model: usize },
    /// `decode` was given an id outside the vocabulary.
    #[error("unknown token id {id} (vocabulary size {vocab})")]
    UnknownId { id: u32, vocab: usize },
    /// Reading `tokenizer.json` failed.
    #[error("reading tokenizer data {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer.json` is not valid tokenizer data (serde's message is the source).
    #[error("parsing tokenizer data")]
    Json(#[from] serde_json::Error),
}
