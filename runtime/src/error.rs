//! Errors of the runtime crate: one enum, one clear message per failure. An underlying cause (an
//! I/O error) is the variant's `source`, printed by the caller's chain, not repeated in the message.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot read compiled model file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} (recompile with `qwen-aot compile`)")]
    BadPlan(String),
    /// `weights.bin` differs from what the compiler wrote (the windows say where).
    #[error("{path} is corrupt: {what}; `qwen-aot verify` checks every byte, and recompiling (`qwen-aot compile`) replaces it")]
    CorruptWeights { path: String, what: String },
    #[error("plan format version {found} does not match this runtime's {expected}: recompile the model with `qwen-aot compile`")]
    PlanVersion { found: u32, expected: u32 },
    #[error("token id {id} is out of range (vocabulary has {vocab} tokens)")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("context full: {needed} tokens needed but the KV cache holds {max_seq}")]
    ContextFull { needed: usize, max_seq: usize },
    #[error("invalid call: {0}")]
    InvalidCall(String),
    /// A user-supplied setting out of range (the message names the flag).
    #[error("{0}")]
    InvalidArgument(String),
    /// NaN/Inf weights or an overflow: the tokens would be garbage, so generation stops.
    #[error("the model produced a non-finite logit ({value} for token {token} at position {pos}); its weights or the computation are broken, so no token is chosen from it")]
    NonFiniteLogit { value: f32, token: usize, pos: usize },
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("out of GPU memory: allocating {what} needs {needed_mib:.1} MiB, but only {free_mib:.1} MiB of the GPU's {total_mib:.0} MiB are free (try a smaller --ctx-size, or free the GPU)")]
    OutOfDeviceMemory { what: String, needed_mib: f64, free_mib: f64, total_mib: f64 },
    /// The host could not give the CPU executor's buffers (the allocator's refusal, not an abort).
    #[error("out of memory: the CPU executor's {what} needs {mib:.1} MiB (try a smaller --ctx-size)")]
    OutOfHostMemory { what: &'static str, mib: f64 },
    #[error("CUDA backend unavailable: {0}")]
    CudaUnavailable(String),
}

/// The plan validator's refusal is a bad plan (the message asks to recompile).
impl From<qwen_aot_plan::InvalidPlan> for RuntimeError {
    fn from(e: qwen_aot_plan::InvalidPlan) -> RuntimeError {
        RuntimeError::BadPlan(e.0)
    }
}
