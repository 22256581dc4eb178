//! Errors of the compiler crate. A variant's message says what failed; an underlying cause (an
//! I/O error) is its `source`, which callers print as part of the chain (`{:#}` in the CLIs), so
//! the message does not repeat it.
use thiserror::Error;

use crate::gguf::GgufError;
use crate::hparams::HParamsError;

#[derive(Debug, Error)]
pub enum CompileError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    HParams(#[from] HParamsError),
    #[error("architecture description: {0}")]
    Description(String),
    #[error("model is missing tensor `{0}` required by the architecture description")]
    MissingTensor(String),
    #[error(
        "model has no bias tensor `{0}`, which the architecture description requires (a bias the \
         description marks optional, `name?`, may be absent)"
    )]
    MissingBias(String),
    #[error(
        "layer {layer}: {missing} has no bias while {present} do: the fused bias+RoPE+KV write \
         adds one packed q|k|v bias, so a layer's q, k and v biases must all be present or all absent"
    )]
    PartialBias { layer: usize, missing: String, present: String },
    #[error("tensor `{name}`")]
    Tensor {
        name: String,
        #[source]
        source: GgufError,
    },
    #[error("tensor `{name}`")]
    Repack {
        name: String,
        #[source]
        source: crate::repack::RepackError,
    },
    #[error("tensor `{name}`")]
    NonFinite {
        name: String,
        #[source]
        source: crate::finite::NonFinite,
    },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?} from the model's metadata")]
    TensorShape { name: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("op graph: {0}")]
    Graph(String),
    #[error("cannot emit a plan step for `{0}`: it must be removed or fused by a pass first")]
    Unlowerable(String),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("refusing to write the compiled model to {path}: {why}")]
    OutputDir { path: String, why: &'static str },
}

impl CompileError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CompileError::Io { path: path.as_ref().display().to_string(), source }
    }
}
