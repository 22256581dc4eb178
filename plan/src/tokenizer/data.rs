//! `TokenizerData`: the tokenizer as plain data, the contract between the compiler (which reads it
//! from the GGUF `tokenizer.*` metadata and writes it as `tokenizer.json` into the compiled model
//! directory) and the runtime (which builds its `Tokenizer` from it).
//!
//! Fields mirror the GGUF keys one to one so that the compiler does no interpretation; all
//! validation happens in [`TokenizerData::validate`].

use serde::{Deserialize, Serialize};

/// Largest vocabulary accepted (Qwen2 has 151 936 entries; the largest current vocabularies about
/// 260 000). With [`MAX_TOKEN_BYTES`] it keeps all token bytes below 2 GiB (u32 offsets).
pub const MAX_VOCAB: usize = 1 << 21;
/// Largest number of merges accepted.
pub const MAX_MERGES: usize = 1 << 22;
/// Longest token string accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 1: an ordinary BPE token (byte-level encoded).
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token such as `<|im_start|>`; matched inline as one id.
    Control,
    /// 4: a user-defined added token such as `<tool_call>`; matched inline as one id.
    UserDefined,
    /// 5: an unused padding slot (`[PAD151665]`).
    Unused,
    /// 6: a byte token.
    Byte,
}

impl TokenType {
    /// Maps the GGUF integer; `None` for values outside 1..=6.
    pub fn from_i32(v: i32) -> Option<TokenType> {
        Some(match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }

    /// The GGUF integer.
    pub fn as_i32(self) -> i32 {
        match self {
            TokenType::Normal => 1,
            TokenType::Unknown => 2,
            TokenType::Control => 3,
            TokenType::UserDefined => 4,
            TokenType::Unused => 5,
            TokenType::Byte => 6,
        }
    }

    /// Added tokens: written literally (not byte-level encoded) and matched inline in the input
    /// text before pre-tokenization, longest match first.
    pub fn is_added(self) -> bool {
        matches!(self, TokenType::Control | TokenType::UserDefined)
    }
}

/// The tokenizer of a compiled model, as written to `tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerData {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) is the only one supported.
    #[serde(default = "default_model")]
    pub model: String,
    /// `tokenizer.ggml.tokens`: token strings in GPT-2 byte-to-unicode form; added tokens
    /// (control / user-defined) are stored literally.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (see [`TokenType`]).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: "a b" lines, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.pre`: the pre-tokenizer ("qwen2").
    pub pre: String,
    /// `tokenizer.ggml.bos_token_id`.
    #[serde(default)]
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    #[serde(default)]
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (false for Qwen2). The tokenizer itself never adds BOS;
    /// the caller does when this is set.
    #[serde(default)]
    pub add_bos: bool,
    /// `tokenizer.chat_template` (Jinja), rendered by the runtime's `ChatTemplate`.
    #[serde(default)]
    pub chat_template: Option<String>,
}

fn default_model() -> String {
    "gpt2".to_string()
}

impl TokenizerData {
    /// Parses `tokenizer.json` contents.
    pub fn from_json(json: &str) -> Result<TokenizerData, super::TokenizerError> {
        Ok(serde_json::from_str(json)?)
    }

    /// Serialises to `tokenizer.json` contents.
    pub fn to_json(&self) -> Result<String, super::TokenizerError> {
        Ok(serde_json::to_string(self)?)
    }
}
