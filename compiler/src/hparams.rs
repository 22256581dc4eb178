//! Model hyperparameters from GGUF metadata: [`ModelConfig::from_gguf`] picks the architecture
//! from `general.architecture` (the table in [`crate::architecture`]) and reads its
//! `<prefix>.*` keys (llama.cpp's names); head_dim is `<prefix>.attention.key_length` when the file
//! has it, else hidden / head_count. It takes the vocabulary size from the tokenizer (the token
//! embedding's shape when the file has none) and checks `token_embd` and `output` against it,
//! tells a tied LM head by the absence of `output.weight`, and validates every size so that later
//! stages (graph building, memory planning) can trust them.
use qwen_aot_plan::HyperParams;

use crate::architecture::{self, Architecture};
use crate::gguf::{GgufError, GgufFile};

pub const KEY_ARCHITECTURE: &str = "general.architecture";
// Suffixes of the architecture's keys: `<prefix>.<suffix>`.
const BLOCK_COUNT: &str = "block_count";
const EMBEDDING_LENGTH: &str = "embedding_length";
const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
const HEAD_COUNT: &str = "attention.head_count";
const HEAD_COUNT_KV: &str = "attention.head_count_kv";
const KEY_LENGTH: &str = "attention.key_length";
const VALUE_LENGTH: &str = "attention.value_length";
const ROPE_FREQ_BASE: &str = "rope.freq_base";
const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
const CONTEXT_LENGTH: &str = "context_length";
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT: &str = "output.weight";
/// The tokenizer's vocabulary, one string per token id.
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";

/// RoPE base used when the file does not say (llama.cpp's default).
pub const DEFAULT_ROPE_THETA: f32 = 10_000.0;
/// Upper bound (exclusive) for every model dimension: far above any real Qwen2 size, low enough
/// that products of two dimensions cannot overflow and absurd values are caught here.
pub const MAX_DIM: u64 = 1 << 20;
/// Upper bound (exclusive) for the context length (1M-token models exist).
pub const MAX_CONTEXT: u64 = 1 << 24;

#[derive(Debug, thiserror::Error)]
pub enum HParamsError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture {found} (qwen-aot supports {supported})")]
    UnsupportedArchitecture { found: String, supported: String },
    #[error("{key} = {value} is out of range: must be in 1..{max}")]
    OutOfRange { key: String, value: u64, max: u64 },
    #[error("{key} = {value} is invalid: must be finite and > 0")]
    BadFloat { key: String, value: f32 },
    #[error("{what}")]
    Inconsistent { what: String },
    #[error("model has no tensor {0:?}")]
    MissingTensor(&'static str),
    #[error("tensor `{name}` has shape {dims:?}, expected {expected}")]
    TensorShape { name: &'static str, dims: Vec<u64>, expected: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// From `general.architecture`: which description to compile and which keys were read.
    pub architecture: &'static Architecture,
    pub hparams: HyperParams,
    /// True when the file has no `output.weight`: the LM head reuses `token_embd.weight`.
    pub tied_embeddings: bool,
}

fn dim(g: &GgufFile, key: &str, max: u64) -> Result<usize, HParamsError> {
    let value = g.get_u64(key)?;
    check_dim(key, value, max)
}

/// `key`'s size when the file has it.
fn optional_dim(g: &GgufFile, key: &str, max: u64) -> Result<Option<usize>, HParamsError> {
    match g.get(key) {
        None => Ok(None),
        Some(_) => dim(g, key, max).map(Some),
    }
}

fn check_dim(key: &str, value: u64, max: u64) -> Result<usize, HParamsError> {
    if value == 0 || value >= max {
        return Err(HParamsError::OutOfRange { key: key.to_string(), value, max });
    }
    // value < max <= 2^24 fits in usize.
    Ok(value as usize)
}

fn positive(key: &str, value: f32) -> Result<f32, HParamsError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(HParamsError::BadFloat { key: key.to_string(), value })
    }
}

/// Refuses tensors of blocks the metadata does not declare: with `block_count` too small the
/// graph would silently skip the last blocks and the output would change without a word.
fn check_block_tensors(g: &GgufFile, block_count_key: &str, n_layers: usize) -> Result<(), HParamsError> {
    let block_of = |name: &str| name.strip_prefix("blk.")?.split('.').next()?.parse::<u64>().ok();
    // The highest block index, and its alphabetically first tensor as the example named.
    let Some((last, example)) = g
        .tensors()
        .iter()
        .filter_map(|t| block_of(&t.name).map(|b| (b, t.name.as_str())))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
    else {
        return Ok(());
    };
    if last >= n_layers as u64 {
        return Err(HParamsError::Inconsistent {
            what: format!(
                "{block_count_key} = {n_layers}, but the file holds tensors of {} blocks (`{example}`, ...): \
                 the metadata does not describe this model",
                last + 1
            ),
        });
    }
    Ok(())
}

/// head_dim: `<prefix>.attention.key_length` when present (models whose heads are not
/// hidden / head_count wide), else hidden / head_count. Values and keys must be as wide (the
/// KV cache and the attention kernels hold one head_dim), and even (RoPE rotates pairs).
fn head_dim(g: &GgufFile, key: &dyn Fn(&str) -> String, hidden: usize, n_heads: usize) -> Result<usize, HParamsError> {
    let head_dim = match optional_dim(g, &key(KEY_LENGTH), MAX_DIM)? {
        Some(d) => d,
        None if !hidden.is_multiple_of(n_heads) => {
            return Err(HParamsError::Inconsistent {
                what: format!(
                    "{} = {hidden} is not divisible by {} = {n_heads} (and the file has no {})",
                    key(EMBEDDING_LENGTH),
                    key(HEAD_COUNT),
                    key(KEY_LENGTH)
                ),
            });
        }
        None => hidden / n_heads,
    };
    if let Some(v) = optional_dim(g, &key(VALUE_LENGTH), MAX_DIM)? {
        if v != head_dim {
            return Err(HParamsError::Inconsistent {
                what: format!("{} = {v} differs from head_dim = {head_dim}: unsupported", key(VALUE_LENGTH)),
            });
        }
    }
    if !head_dim.is_multiple_of(2) {
        return Err(HParamsError::Inconsistent {
            what: format!(
                "head_dim = {head_dim} (hidden {hidden} / {n_heads} heads, or {}) is odd; RoPE rotates pairs",
                key(KEY_LENGTH)
            ),
        });
    }
    Ok(head_dim)
}

impl ModelConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig, HParamsError> {
        let arch_name = g.get_str(KEY_ARCHITECTURE)?;
        let arch = architecture::lookup(arch_name).ok_or_else(|| HParamsError::UnsupportedArchitecture {
            found: arch_name.to_string(),
            supported: architecture::supported_names(),
        })?;
        let key = |suffix: &str| arch.key(suffix);
        let n_layers = dim(g, &key(BLOCK_COUNT), MAX_DIM)?;
        let hidden = dim(g, &key(EMBEDDING_LENGTH), MAX_DIM)?;
        let ffn = dim(g, &key(FEED_FORWARD_LENGTH), MAX_DIM)?;
        let n_heads = dim(g, &key(HEAD_COUNT), MAX_DIM)?;
        let n_kv_heads = optional_dim(g, &key(HEAD_COUNT_KV), MAX_DIM)?.unwrap_or(n_heads);
        let rope_theta = match g.get(&key(ROPE_FREQ_BASE)) {
            None => DEFAULT_ROPE_THETA,
            Some(_) => positive(&key(ROPE_FREQ_BASE), g.get_f32(&key(ROPE_FREQ_BASE))?)?,
        };
        let rms_eps = positive(&key(RMS_EPS), g.get_f32(&key(RMS_EPS))?)?;
        let context_length = dim(g, &key(CONTEXT_LENGTH), MAX_CONTEXT)?;
        let head_dim = head_dim(g, &key, hidden, n_heads)?;
        if n_kv_heads > n_heads || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(HParamsError::Inconsistent {
                what: format!(
                    "{} = {n_heads} is not a multiple of {} = {n_kv_heads}",
                    key(HEAD_COUNT),
                    key(HEAD_COUNT_KV)
                ),
            });
        }

        check_block_tensors(g, &key(BLOCK_COUNT), n_layers)?;

        let embedding_length = key(EMBEDDING_LENGTH);
        let embd = g.tensor(TOKEN_EMBD).ok_or(HParamsError::MissingTensor(TOKEN_EMBD))?;
        // The vocabulary: the tokenizer's when the file has one (as llama.cpp, which sizes
        // token_embd and output by it), else token_embd's rows. Every tensor that disagrees is
        // named itself, so a shrunk token_embd is not blamed on output.weight.
        let tokens = match g.get(KEY_TOKENS) {
            Some(_) => Some(g.get_array(KEY_TOKENS)?.len() as u64),
            None => None,
        };
        let (rows, expected) = match tokens {
            Some(n) => (n, format!("[{hidden}, {n}] ({embedding_length}, then the {n} entries of {KEY_TOKENS})")),
            None => (
                embd.dims.get(1).copied().unwrap_or(0),
                format!("[{hidden}, vocabulary] ({embedding_length}, then the vocabulary size)"),
            ),
        };
        if embd.dims != [hidden as u64, rows] {
            return Err(HParamsError::TensorShape { name: TOKEN_EMBD, dims: embd.dims.clone(), expected });
        }
        let vocab = check_dim("vocabulary size (token_embd.weight dims[1])", rows, MAX_DIM)?;
        let tied_embeddings = match g.tensor(OUTPUT) {
            None => true,
            Some(out) if out.dims == embd.dims => false,
            Some(out) => {
                let source = if tokens.is_some() { KEY_TOKENS } else { TOKEN_EMBD };
                return Err(HParamsError::TensorShape {
                    name: OUTPUT,
                    dims: out.dims.clone(),
                    expected: format!("{:?} ({embedding_length}, then the vocabulary of {source})", embd.dims),
                });
            }
        };

        Ok(ModelConfig {
            architecture: arch,
            hparams: HyperParams {
                n_layers,
                hidden,
                n_heads,
                n_kv_heads,
                head_dim,
                ffn,
                vocab,
                rms_eps,
                rope_theta,
                context_length,
            },
            tied_embeddings,
        })
    }
}
