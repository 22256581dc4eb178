//! Model hyperparameters from GGUF metadata: [`ModelConfig::from_gguf`] reads the `qwen2.*` keys
//! (llama.cpp's names), derives head_dim, takes the vocabulary size from the tokenizer (the token
//! embedding's shape when the file has none) and checks `token_embd` and `output` against it,
//! tells a tied LM head by the absence of `output.weight`, and validates every size so that later
//! stages (graph building, memory planning) can trust them.
use qwen_aot_runtime::plan::HyperParams;

use crate::gguf::{GgufError, GgufFile};

/// The only architecture qwen-aot compiles.
pub const ARCHITECTURE: &str = "qwen2";
pub const KEY_ARCHITECTURE: &str = "general.architecture";
pub const KEY_BLOCK_COUNT: &str = "qwen2.block_count";
pub const KEY_EMBEDDING_LENGTH: &str = "qwen2.embedding_length";
pub const KEY_FEED_FORWARD_LENGTH: &str = "qwen2.feed_forward_length";
pub const KEY_HEAD_COUNT: &str = "qwen2.attention.head_count";
pub const KEY_HEAD_COUNT_KV: &str = "qwen2.attention.head_count_kv";
pub const KEY_ROPE_FREQ_BASE: &str = "qwen2.rope.freq_base";
pub const KEY_RMS_EPS: &str = "qwen2.attention.layer_norm_rms_epsilon";
pub const KEY_CONTEXT_LENGTH: &str = "qwen2.context_length";
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
    #[error("unsupported architecture {0} (qwen-aot supports qwen2)")]
    UnsupportedArchitecture(String),
    #[error("{key} = {value} is out of range: must be in 1..{max}")]
    OutOfRange { key: &'static str, value: u64, max: u64 },
    #[error("{key} = {value} is invalid: must be finite and > 0")]
    BadFloat { key: &'static str, value: f32 },
    #[error("{what}")]
    Inconsistent { what: String },
    #[error("model has no tensor {0:?}")]
    MissingTensor(&'static str),
    #[error("tensor `{name}` has shape {dims:?}, expected {expected}")]
    TensorShape { name: &'static str, dims: Vec<u64>, expected: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub hparams: HyperParams,
    /// True when the file has no `output.weight`: the LM head reuses `token_embd.weight`.
    pub tied_embeddings: bool,
}

fn dim(g: &GgufFile, key: &'static str, max: u64) -> Result<usize, HParamsError> {
    let value = g.get_u64(key)?;
    check_dim(key, value, max)
}

fn check_dim(key: &'static str, value: u64, max: u64) -> Result<usize, HParamsError> {
    if value == 0 || value >= max {
        return Err(HParamsError::OutOfRange { key, value, max });
    }
    // value < max <= 2^24 fits in usize.
    Ok(value as usize)
}

fn positive(key: &'static str, value: f32) -> Result<f32, HParamsError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(HParamsError::BadFloat { key, value })
    }
}

/// Refuses tensors of blocks the metadata does not declare: with `block_count` too small the
/// graph would silently skip the last blocks and the output would change without a word.
fn check_block_tensors(g: &GgufFile, n_layers: usize) -> Result<(), HParamsError> {
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
                "{KEY_BLOCK_COUNT} = {n_layers}, but the file holds tensors of {} blocks (`{example}`, ...): \
                 the metadata does not describe this model",
                last + 1
            ),
        });
    }
    Ok(())
}

impl ModelConfig {
    pub fn from_gguf(g: &GgufFile) -> Result<ModelConfig, HParamsError> {
        let arch = g.get_str(KEY_ARCHITECTURE)?;
        if arch != ARCHITECTURE {
            return Err(HParamsError::UnsupportedArchitecture(arch.to_string()));
        }
        let n_layers = dim(g, KEY_BLOCK_COUNT, MAX_DIM)?;
        let hidden = dim(g, KEY_EMBEDDING_LENGTH, MAX_DIM)?;
        let ffn = dim(g, KEY_FEED_FORWARD_LENGTH, MAX_DIM)?;
        let n_heads = dim(g, KEY_HEAD_COUNT, MAX_DIM)?;
        let n_kv_heads = match g.get(KEY_HEAD_COUNT_KV) {
            None => n_heads,
            Some(_) => dim(g, KEY_HEAD_COUNT_KV, MAX_DIM)?,
        };
        let rope_theta = match g.get(KEY_ROPE_FREQ_BASE) {
            None => DEFAULT_ROPE_THETA,
            Some(_) => positive(KEY_ROPE_FREQ_BASE, g.get_f32(KEY_ROPE_FREQ_BASE)?)?,
        };
        let rms_eps = positive(KEY_RMS_EPS, g.get_f32(KEY_RMS_EPS)?)?;
        let context_length = dim(g, KEY_CONTEXT_LENGTH, MAX_CONTEXT)?;

        if !hidden.is_multiple_of(n_heads) {
            return Err(HParamsError::Inconsistent {
                what: format!("{KEY_EMBEDDING_LENGTH} = {hidden} is not divisible by {KEY_HEAD_COUNT} = {n_heads}"),
            });
        }
        let head_dim = hidden / n_heads;
        if !head_dim.is_multiple_of(2) {
            return Err(HParamsError::Inconsistent {
                what: format!("head_dim = {hidden} / {n_heads} = {head_dim} is odd; RoPE rotates pairs"),
            });
        }
        if n_kv_heads > n_heads || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(HParamsError::Inconsistent {
                what: format!("{KEY_HEAD_COUNT} = {n_heads} is not a multiple of {KEY_HEAD_COUNT_KV} = {n_kv_heads}"),
            });
        }

        check_block_tensors(g, n_layers)?;

        let embd = g.tensor(TOKEN_EMBD).ok_or(HParamsError::MissingTensor(TOKEN_EMBD))?;
        // The vocabulary: the tokenizer's when the file has one (as llama.cpp, which sizes
        // token_embd and output by it), else token_embd's rows. Every tensor that disagrees is
        // named itself, so a shrunk token_embd is not blamed on output.weight.
        let tokens = match g.get(KEY_TOKENS) {
            Some(_) => Some(g.get_array(KEY_TOKENS)?.len() as u64),
            None => None,
        };
        let (rows, expected) = match tokens {
            Some(n) => (n, format!("[{hidden}, {n}] ({KEY_EMBEDDING_LENGTH}, then the {n} entries of {KEY_TOKENS})")),
            None => (
                embd.dims.get(1).copied().unwrap_or(0),
                format!("[{hidden}, vocabulary] ({KEY_EMBEDDING_LENGTH}, then the vocabulary size)"),
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
                    expected: format!("{:?} ({KEY_EMBEDDING_LENGTH}, then the vocabulary of {source})", embd.dims),
                });
            }
        };

        Ok(ModelConfig {
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
