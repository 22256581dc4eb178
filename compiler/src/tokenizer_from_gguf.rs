//! Extracts the tokenizer from GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) into
//! the plan's [`TokenizerData`], which the compiler writes as `tokenizer.json` next to the plan.
//!
//! This is the only place that knows the GGUF tokenizer keys: the runtime never reads GGUF. The
//! extraction copies values one to one and checks only their types; the meaning (merges name known
//! tokens, sizes match, …) is validated by [`TokenizerData::validate`] (the plan crate's, which the
//! runtime's tokenizer builds on), which [`tokenizer_json_from_gguf`] runs before writing so that a
//! broken vocabulary fails the compile instead of the first generation.

use qwen_aot_plan::tokenizer::{TokenizerData, TokenizerError};
use thiserror::Error;

use crate::gguf::{GgufError, GgufFile, GgufValue};
use crate::hparams::KEY_TOKENS;

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Errors of reading the tokenizer out of a GGUF file.
#[derive(Debug, Error)]
pub enum TokenizerFromGgufError {
    /// A required key is missing or has the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// An array element has the wrong type or range.
    #[error("GGUF tokenizer metadata: {key}[{index}] is {found}, expected {expected}")]
    BadElement { key: &'static str, index: usize, expected: &'static str, found: String },
    /// A token id does not fit in u32.
    #[error("GGUF tokenizer metadata: {key} = {value} is not a valid token id")]
    BadId { key: &'static str, value: String },
    /// The vocabulary is inconsistent (checked by [`TokenizerData::validate`]).
    #[error(transparent)]
    Invalid(#[from] TokenizerError),
}

fn strings(g: &GgufFile, key: &'static str) -> Result<Vec<String>, TokenizerFromGgufError> {
    g.get_array(key)?
        .iter()
        .enumerate()
        .map(|(index, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| TokenizerFromGgufError::BadElement {
                key,
                index,
                expected: "a string",
                found: v.type_name().to_string(),
            })
        })
        .collect()
}

fn optional_id(g: &GgufFile, key: &'static str) -> Result<Option<u32>, TokenizerFromGgufError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64().and_then(|u| u32::try_from(u).ok()) {
            Some(id) => Ok(Some(id)),
            None => Err(TokenizerFromGgufError::BadId { key, value: describe(v) }),
        },
    }
}

fn describe(v: &GgufValue) -> String {
    match v.as_i64() {
        Some(i) => i.to_string(),
        None => format!("a {}", v.type_name()),
    }
}

/// Reads the tokenizer metadata of `g`. Required: `tokenizer.ggml.model`, `.tokens`, `.merges`;
/// `.pre` defaults to "default" (which the runtime rejects as unsupported), `.token_type` to all
/// normal, `.add_bos_token` to false; ids and the chat template are optional.
pub fn tokenizer_data_from_gguf(g: &GgufFile) -> Result<TokenizerData, TokenizerFromGgufError> {
    let model = g.get_str(KEY_MODEL)?.to_string();
    let pre = match g.get(KEY_PRE) {
        None => "default".to_string(),
        Some(_) => g.get_str(KEY_PRE)?.to_string(),
    };
    let tokens = strings(g, KEY_TOKENS)?;
    let token_types = match g.get(KEY_TOKEN_TYPE) {
        None => vec![1; tokens.len()],
        Some(_) => g
            .get_array(KEY_TOKEN_TYPE)?
            .iter()
            .enumerate()
            .map(|(index, v)| {
                v.as_i64().and_then(|i| i32::try_from(i).ok()).ok_or_else(|| TokenizerFromGgufError::BadElement {
                    key: KEY_TOKEN_TYPE,
                    index,
                    expected: "an i32",
                    found: describe(v),
                })
            })
            .collect::<Result<Vec<i32>, _>>()?,
    };
    let merges = strings(g, KEY_MERGES)?;
    let add_bos = match g.get(KEY_ADD_BOS) {
        None => false,
        Some(_) => g.get_bool(KEY_ADD_BOS)?,
    };
    let chat_template = match g.get(KEY_CHAT_TEMPLATE) {
        None => None,
        Some(_) => Some(g.get_str(KEY_CHAT_TEMPLATE)?.to_string()),
    };
    Ok(TokenizerData {
        model,
        tokens,
        token_types,
        merges,
        pre,
        bos_id: optional_id(g, KEY_BOS)?,
        eos_id: optional_id(g, KEY_EOS)?,
        pad_id: optional_id(g, KEY_PAD)?,
        add_bos,
        chat_template,
    })
}

/// Reads, validates ([`TokenizerData::validate`]) and serialises the tokenizer of `g`:
/// the contents of `tokenizer.json` in the compiled directory.
pub fn tokenizer_json_from_gguf(g: &GgufFile) -> Result<String, TokenizerFromGgufError> {
    let data = tokenizer_data_from_gguf(g)?;
    data.validate()?;
    Ok(data.to_json()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufBuilder;
    use crate::synthetic::gguf_file::byte_tokens;

    fn strs(v: &[&str]) -> GgufValue {
        GgufValue::Array(v.iter().map(|s| GgufValue::String(s.to_string())).collect())
    }

    fn tiny_gguf(merges: GgufValue, extra: impl FnOnce(GgufBuilder) -> GgufBuilder) -> GgufFile {
        let mut tokens = byte_tokens();
        tokens.push("Ġw".into());
        tokens.push("<|im_end|>".into());
        let types: Vec<GgufValue> = (0..tokens.len()).map(|i| GgufValue::I32(if i == 257 { 3 } else { 1 })).collect();
        let b = GgufBuilder::new()
            .kv(KEY_MODEL, GgufValue::String("gpt2".into()))
            .kv(KEY_PRE, GgufValue::String("qwen2".into()))
            .kv(KEY_TOKENS, GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()))
            .kv(KEY_TOKEN_TYPE, GgufValue::Array(types))
            .kv(KEY_MERGES, merges)
            .kv(KEY_EOS, GgufValue::U32(257));
        let bytes = extra(b).build().expect("builds");
        GgufFile::parse_bytes(bytes).expect("parses")
    }

    #[test]
    fn extracts_and_validates() {
        let g = tiny_gguf(strs(&["Ġ w"]), |b| b.kv(KEY_CHAT_TEMPLATE, GgufValue::String("{{ messages }}".into())));
        let data = tokenizer_data_from_gguf(&g).expect("extracts");
        assert_eq!(data.tokens.len(), 258);
        assert_eq!(data.token_types[257], 3);
        assert_eq!(data.eos_id, Some(257));
        assert_eq!(data.bos_id, None);
        assert!(!data.add_bos);
        assert_eq!(data.chat_template.as_deref(), Some("{{ messages }}"));
        let json = tokenizer_json_from_gguf(&g).expect("valid");
        let back = TokenizerData::from_json(&json).expect("parses");
        assert_eq!(back, data, "tokenizer.json holds the data as extracted");
        // The merge "Ġ w" joins byte tokens ' ' (id 32) and 'w' (id 119) into "Ġw" (id 256); the
        // encoding itself is the runtime tokenizer's (tests/tokenizer_refs.rs and runtime/tests).
        let vocab = back.validate().expect("valid");
        assert_eq!(vocab.merges, [(32, 119, 256)]);
        assert_eq!(vocab.byte_ids[b' ' as usize], 32);
    }

    #[test]
    fn wrong_types_are_errors() {
        let g = tiny_gguf(strs(&["Ġ w"]), |b| b.kv(KEY_BOS, GgufValue::I32(-1)));
        assert!(matches!(tokenizer_data_from_gguf(&g), Err(TokenizerFromGgufError::BadId { .. })));
        let g = tiny_gguf(GgufValue::Array(vec![GgufValue::U32(1)]), |b| b);
        assert!(matches!(tokenizer_data_from_gguf(&g), Err(TokenizerFromGgufError::BadElement { .. })));
        let g = tiny_gguf(strs(&["Ġ x"]), |b| b);
        assert!(matches!(tokenizer_json_from_gguf(&g), Err(TokenizerFromGgufError::Invalid(_))));
    }
}
