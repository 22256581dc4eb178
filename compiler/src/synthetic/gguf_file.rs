//! A random model as a complete GGUF file: the `qwen2.*` metadata of its hyperparameters, a
//! `general.name`, a small byte-level BPE tokenizer with Qwen's special tokens and a ChatML
//! template, and the tensors. What a whole command (`generate`, `qwen-aot bench`, the chat, the
//! cache) needs to run end to end on a model of a few hundred kilobytes, and the base that tests
//! break one field of to check a message.
use qwen_aot_plan::tokenizer::byte_level::byte_to_char_table;
use qwen_aot_plan::HyperParams;

use crate::gguf::{GgufBuilder, GgufValue};
use crate::source::{MemData, MemorySource};

/// The special tokens, after the 256 byte tokens and the one merged token: ids 257, 258, 259.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// The one merge (two spaces), so the BPE has something to merge.
const MERGED: &str = "ĠĠ";
/// Byte tokens, the merged token and the specials: the smallest vocabulary [`gguf_builder`] takes.
pub const MIN_VOCAB: usize = 256 + 1 + SPECIAL_TOKENS.len();

/// Qwen's chat format (ChatML), without Qwen's default system message.
pub const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The 256 GPT-2 byte-level tokens, in byte order (printable bytes are themselves, the others
/// the characters from U+0100 on: the plan's byte-level alphabet).
pub fn byte_tokens() -> Vec<String> {
    byte_to_char_table().iter().map(|c| c.to_string()).collect()
}

/// `src` (e.g. [`super::random_model_mix`]) with `hp`'s metadata, named `name`, as a GGUF
/// builder: callers add keys or change them ([`GgufBuilder::set`]) and `build()` it. The
/// vocabulary is padded with unused `[PAD{id}]` tokens to `hp.vocab` entries, as llama.cpp pads
/// Qwen's, so the tokenizer agrees with `token_embd`; `hp.vocab` must be at least [`MIN_VOCAB`].
pub fn gguf_builder(src: &MemorySource, hp: &HyperParams, name: &str) -> GgufBuilder {
    let mut tokens = byte_tokens();
    tokens.push(MERGED.to_string());
    tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
    let specials = tokens.len() - SPECIAL_TOKENS.len()..tokens.len();
    // Token types as llama.cpp writes them: 1 normal, 3 control, 5 unused.
    let mut types: Vec<GgufValue> =
        (0..tokens.len()).map(|i| GgufValue::I32(if specials.contains(&i) { 3 } else { 1 })).collect();
    for id in tokens.len()..hp.vocab {
        tokens.push(format!("[PAD{id}]"));
        types.push(GgufValue::I32(5));
    }
    let u32v = |v: usize| GgufValue::U32(v as u32);
    let mut b = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("qwen2".into()))
        .kv("general.name", GgufValue::String(name.into()))
        .kv("qwen2.block_count", u32v(hp.n_layers))
        .kv("qwen2.context_length", u32v(hp.context_length))
        .kv("qwen2.embedding_length", u32v(hp.hidden))
        .kv("qwen2.feed_forward_length", u32v(hp.ffn))
        .kv("qwen2.attention.head_count", u32v(hp.n_heads))
        .kv("qwen2.attention.head_count_kv", u32v(hp.n_kv_heads))
        .kv("qwen2.rope.freq_base", GgufValue::F32(hp.rope_theta))
        .kv("qwen2.attention.layer_norm_rms_epsilon", GgufValue::F32(hp.rms_eps))
        .kv("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", GgufValue::String("qwen2".into()))
        .kv("tokenizer.ggml.tokens", GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()))
        .kv("tokenizer.ggml.token_type", GgufValue::Array(types))
        .kv("tokenizer.ggml.merges", GgufValue::Array(vec![GgufValue::String("Ġ Ġ".into())]))
        .kv("tokenizer.ggml.eos_token_id", u32v(specials.end - 1))
        .kv("tokenizer.ggml.padding_token_id", u32v(specials.start))
        .kv("tokenizer.chat_template", GgufValue::String(CHATML.into()));
    for (name, t) in &src.tensors {
        b = match &t.data {
            MemData::F32(v) => b.tensor_f32(name, &t.dims, v),
            MemData::Blocks { dtype, bytes } => b.tensor(name, *dtype, &t.dims, bytes.clone()),
        };
    }
    b
}

/// The hyperparameters of a tiny model that still has every part of Qwen2 (two layers, grouped
/// KV heads, biases), runs a token in well under a millisecond on the CPU and has room for
/// [`gguf_builder`]'s vocabulary.
pub fn tiny_hparams() -> HyperParams {
    HyperParams {
        n_layers: 2,
        hidden: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 32,
        ffn: 128,
        vocab: 288,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 256,
    }
}
