//! The tokenizer of Qwen2-family models: byte-level BPE (GPT-2 style) with the Qwen2
//! pre-tokenizer and inline added tokens, built from the GGUF vocabulary that the compiler
//! copies into `tokenizer.json` ([`TokenizerData`]).
//!
//! Encoding, as Hugging Face `tokenizers` does it for a GGUF-derived Qwen2 tokenizer (the
//! reference this module is tested against):
//! 1. added tokens (control and user-defined, e.g. `<|im_start|>`) are cut out of the text,
//!    leftmost-longest, and become single ids ([`added_tokens`]);
//! 2. the text between them is split by the Qwen2 pre-tokenizer regex ([`pretokenize`]), with
//!    no Unicode normalisation;
//! 3. each piece's UTF-8 bytes are BPE-merged by rank ([`bpe`]).
//!
//! Decoding concatenates the bytes each token stands for ([`byte_level`]); [`StreamDecoder`]
//! does it incrementally without ever emitting half a character. No BOS/EOS is ever added.
//!
//! The tokenizer is immutable after construction (`Send + Sync`): share it between threads.

mod added_tokens;
mod bpe;
mod pretokenize;
mod stream;

use std::path::Path;

use rustc_hash::FxHashMap;

/// The tokenizer's data, errors and validator are the plan's (`qwen_aot_plan::tokenizer`), shared
/// with the compiler.
pub use qwen_aot_plan::tokenizer::{TokenType, TokenizerData, TokenizerError, MAX_MERGES, MAX_TOKEN_BYTES, MAX_VOCAB};
pub use stream::StreamDecoder;

use added_tokens::{AddedTokens, Segment};
use bpe::{Merges, Scratch};
use qwen_aot_plan::tokenizer::{byte_level, ValidVocab, VocabIndex};

/// Most distinct pieces one `encode` call remembers (about 40 bytes each).
const ENCODE_CACHE_ENTRIES: usize = 1 << 16;

/// Tokens that end a chat turn or a document in Qwen2 vocabularies; generation stops on them.
const STOP_TOKENS: [&str; 2] = ["<|endoftext|>", "<|im_end|>"];

/// A byte-level BPE tokenizer; see the module documentation.
pub struct Tokenizer {
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// Token string → id over `tokens`.
    index: VocabIndex,
    /// The bytes of token `i` are `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    /// Id of the single-byte token for each byte.
    byte_ids: [u32; 256],
    merges: Merges,
    added: AddedTokens,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("added_tokens", &self.added.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

/// Every token's bytes back to back and their offsets (`n + 1`): added tokens literally, the
/// others decoded from the byte-level alphabet.
fn token_bytes(data: &TokenizerData) -> (Vec<u8>, Vec<u32>) {
    let n = data.tokens.len();
    let mut bytes = Vec::with_capacity(n * 8);
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0u32);
    for (tok, &ty) in data.tokens.iter().zip(&data.token_types) {
        if TokenType::from_i32(ty).is_some_and(|t| t.is_added()) {
            bytes.extend_from_slice(tok.as_bytes());
        } else {
            byte_level::append_token_bytes(tok, &mut bytes);
        }
        // A token's bytes are never longer than its string, so the total stays below
        // MAX_VOCAB * MAX_TOKEN_BYTES = 2 GiB and fits in u32 (the validator bounds both).
        offsets.push(bytes.len().min(u32::MAX as usize) as u32);
    }
    (bytes, offsets)
}

/// The most `tokenizer.json` may hold: the default model's is 4.1 MB, and vocabularies of 256 K
/// tokens stay far below this. A bigger file is not a tokenizer.
const TOKENIZER_JSON_MAX_BYTES: u64 = 256 << 20;

impl Tokenizer {
    /// Builds a tokenizer from data that [`TokenizerData::validate`] accepts (the plan crate's
    /// one tokenizer validator: sizes, token types, merges, byte tokens, special ids, model and
    /// pre-tokenizer), or its error.
    pub fn from_data(data: TokenizerData) -> Result<Tokenizer, TokenizerError> {
        // The tokens' bytes beside the validation (neither needs the other: a token type the
        // validator refuses fails the whole load anyway).
        let (valid, (bytes, offsets)) = rayon::join(|| data.validate(), || token_bytes(&data));
        let ValidVocab { types, index, byte_ids, merges } = valid?;
        let merges = Merges::new(merges);

        let added = AddedTokens::new(
            data.tokens
                .iter()
                .zip(&types)
                .enumerate()
                .filter(|(_, (_, ty))| ty.is_added())
                .map(|(i, (tok, _))| (tok.as_str(), i as u32)),
        );

        Ok(Tokenizer {
            tokens: data.tokens,
            types,
            index,
            bytes,
            offsets,
            byte_ids,
            merges,
            added,
            bos_id: data.bos_id,
            eos_id: data.eos_id,
            pad_id: data.pad_id,
            add_bos: data.add_bos,
            chat_template: data.chat_template,
        })
    }

    /// Reads `tokenizer.json` (as written by the compiler) and builds the tokenizer.
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let json = crate::bounded_read::read_utf8_bounded(path, TOKENIZER_JSON_MAX_BYTES, "tokenizer.json")
            .map_err(|source| TokenizerError::Io { path: path.display().to_string(), source })?;
        Tokenizer::from_data(TokenizerData::from_json(&json)?)
    }

    /// Token ids of `text`. No BOS/EOS is added; added tokens written in the text (such as
    /// `<|im_start|>`) become their single ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        // Words repeat: remember where each piece's ids were first written in `out` and copy
        // them from there (BPE is a pure function of the piece). Bounded for huge inputs.
        let mut seen: FxHashMap<&str, (u32, u32)> = FxHashMap::default();
        self.added.for_each_segment(text, |seg| match seg {
            Segment::Added(id) => out.push(id),
            Segment::Text(t) => pretokenize::for_each_piece(t, |piece| {
                if piece.len() < 2 {
                    bpe::encode_word(piece.as_bytes(), &self.byte_ids, &self.merges, &mut scratch, &mut out);
                    return;
                }
                if let Some(&(start, len)) = seen.get(piece) {
                    let start = start as usize;
                    out.extend_from_within(start..start + len as usize);
                    return;
                }
                let start = out.len();
                bpe::encode_word(piece.as_bytes(), &self.byte_ids, &self.merges, &mut scratch, &mut out);
                if seen.len() < ENCODE_CACHE_ENTRIES && start <= u32::MAX as usize {
                    seen.insert(piece, (start as u32, (out.len() - start) as u32));
                }
            }),
        });
        out
    }

    /// The bytes `ids` stand for, concatenated.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// The text `ids` stand for (added tokens included verbatim). Byte sequences that are not
    /// UTF-8 (only possible for id sequences that split a character) become U+FFFD, as in HF.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The raw bytes of one token.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8], TokenizerError> {
        let i = id as usize;
        if i >= self.tokens.len() {
            return Err(TokenizerError::UnknownId { id, vocab: self.tokens.len() });
        }
        Ok(&self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Id of a token given in its stored form (`"Ġworld"`, `"<|im_end|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.index.get(&self.tokens, token)
    }

    /// Stored form of a token (GPT-2 byte-level spelling for BPE tokens).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// GGUF type of a token.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Number of tokens (the model's vocabulary size, padding slots included).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Ids that end generation: the EOS id, then `<|endoftext|>` and `<|im_end|>` when present;
    /// no duplicates.
    pub fn eos_ids(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.eos_id.into_iter().collect();
        for t in STOP_TOKENS {
            if let Some(id) = self.token_to_id(t) {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// `tokenizer.ggml.padding_token_id`.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether the model expects BOS in front of a prompt (the caller adds it; false for Qwen2).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The Jinja chat template stored with the vocabulary, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}
