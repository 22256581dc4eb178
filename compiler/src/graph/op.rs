//! Operations of the op graph: the unfused vocabulary of the architecture description, plus the
//! fused operations the passes create. Only fused-or-primitive ops that have a plan step can be
//! emitted (see [`crate::emit`]).
use std::fmt;

/// A weight as the graph sees it: one GGUF tensor, or several concatenated along their first
/// (row / output-feature) dimension by the weight packer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightRef {
    Tensor(String),
    Concat(Vec<String>),
}

impl WeightRef {
    /// Name in the plan's weight table (concatenations get a `+`-joined name).
    pub fn plan_name(&self) -> String {
        match self {
            WeightRef::Tensor(n) => n.clone(),
            WeightRef::Concat(parts) => parts.join("+"),
        }
    }

    pub fn parts(&self) -> Vec<&str> {
        match self {
            WeightRef::Tensor(n) => vec![n.as_str()],
            WeightRef::Concat(p) => p.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Program input: token ids (one i32 per row).
    Tokens,
    Embedding {
        table: WeightRef,
    },
    RmsNorm {
        weight: WeightRef,
        eps: f32,
    },
    /// `y = x W^T` with W `[n, k]`; `logits` marks the LM head.
    MatMul {
        weight: WeightRef,
        n: usize,
        k: usize,
        logits: bool,
    },
    BiasAdd {
        bias: WeightRef,
    },
    Rope {
        heads: usize,
        head_dim: usize,
        theta: f32,
    },
    /// Inputs k, v; output: an ordering token (0 columns) read by attention.
    KvWrite {
        layer: usize,
        kv_heads: usize,
        head_dim: usize,
    },
    /// Inputs q, kv-token; output: scores (symbolic width).
    AttnScores {
        layer: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    },
    Scale {
        factor: f32,
    },
    CausalMask,
    Softmax,
    /// Inputs probabilities, kv-token.
    AttnContext {
        layer: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    },
    Add,
    Silu,
    Mul,
    /// Columns `start..start+len` of the input.
    Slice {
        start: usize,
        len: usize,
    },
    Argmax {
        vocab: usize,
    },
    // ---- created by passes ----
    /// Inputs a, b; outputs [a + b, rms_norm(a + b)].
    AddRmsNorm {
        weight: WeightRef,
        eps: f32,
    },
    /// Inputs q, k, v (raw projections) or one packed qkv; outputs [rotated q, kv-token].
    BiasRopeKvWrite(RopeKv),
    /// Inputs q, kv-token.
    Attention {
        layer: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        scale: f32,
    },
    /// Inputs gate, up or one packed gate|up.
    SwiGlu {
        ffn: usize,
    },
    // ---- created by the decode passes ----
    /// A matmul with its neighbours folded in (plan step Gemv): input x (and the residual, for
    /// `Store { residual: true }`), the RMS norm `norm` applied to x as it is read, and
    /// `epilogue` consuming the product. Outputs: Store [n]; SwiGlu [ffn]; BiasRopeKvWrite
    /// [rotated q, kv-token] (like [`Op::BiasRopeKvWrite`]).
    Gemv {
        weight: WeightRef,
        n: usize,
        k: usize,
        norm: Option<(WeightRef, f32)>,
        epilogue: GemvEpi,
    },
}

/// What a [`Op::Gemv`] does with its product row.
#[derive(Clone, Debug, PartialEq)]
pub enum GemvEpi {
    /// Stores it (plus the second input when `residual`); `logits` marks the LM head.
    Store { residual: bool, logits: bool },
    /// SwiGLU of the packed gate|up product.
    SwiGlu { ffn: usize },
    /// Bias (if any), RoPE and KV write of the packed qkv product.
    BiasRopeKvWrite(RopeKv),
}

/// What a bias + RoPE + KV write does, standalone ([`Op::BiasRopeKvWrite`]) or as a GEMV's
/// epilogue ([`GemvEpi::BiasRopeKvWrite`]). `bias`: the packed q|k|v bias, or None for a model
/// without them (nothing is added).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeKv {
    pub bias: Option<WeightRef>,
    pub layer: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub theta: f32,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Tokens => "tokens",
            Op::Embedding { .. } => "embedding",
            Op::RmsNorm { .. } => "rms_norm",
            Op::MatMul { .. } => "matmul",
            Op::BiasAdd { .. } => "bias_add",
            Op::Rope { .. } => "rope",
            Op::KvWrite { .. } => "kv_write",
            Op::AttnScores { .. } => "attn_scores",
            Op::Scale { .. } => "scale",
            Op::CausalMask => "causal_mask",
            Op::Softmax => "softmax",
            Op::AttnContext { .. } => "attn_context",
            Op::Add => "add",
            Op::Silu => "silu",
            Op::Mul => "mul",
            Op::Slice { .. } => "slice",
            Op::Argmax { .. } => "argmax",
            Op::AddRmsNorm { .. } => "add_rms_norm",
            Op::BiasRopeKvWrite(_) => "bias_rope_kv_write",
            Op::Attention { .. } => "attention",
            Op::SwiGlu { .. } => "swiglu",
            Op::Gemv { norm, epilogue, .. } => match (norm.is_some(), epilogue) {
                (false, GemvEpi::Store { residual: false, .. }) => "gemv",
                (false, GemvEpi::Store { residual: true, .. }) => "gemv_residual",
                (true, GemvEpi::Store { residual: false, .. }) => "norm_gemv",
                (true, GemvEpi::Store { residual: true, .. }) => "norm_gemv_residual",
                (false, GemvEpi::SwiGlu { .. }) => "gemv_swiglu",
                (true, GemvEpi::SwiGlu { .. }) => "norm_gemv_swiglu",
                (false, GemvEpi::BiasRopeKvWrite(_)) => "gemv_rope_kv_write",
                (true, GemvEpi::BiasRopeKvWrite(_)) => "norm_gemv_rope_kv_write",
            },
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::MatMul { weight, n, k, .. } | Op::Gemv { weight, n, k, .. } => {
                write!(f, "{} {} [{n}x{k}]", self.name(), weight.plan_name())
            }
            Op::Embedding { table } => write!(f, "embedding {}", table.plan_name()),
            Op::RmsNorm { weight, .. } | Op::AddRmsNorm { weight, .. } => {
                write!(f, "{} {}", self.name(), weight.plan_name())
            }
            Op::BiasAdd { bias } | Op::BiasRopeKvWrite(RopeKv { bias: Some(bias), .. }) => {
                write!(f, "{} {}", self.name(), bias.plan_name())
            }
            Op::BiasRopeKvWrite(RopeKv { bias: None, .. }) => write!(f, "{} (no bias)", self.name()),
            Op::Slice { start, len } => write!(f, "slice [{start}..{}]", start + len),
            _ => f.write_str(self.name()),
        }
    }
}
