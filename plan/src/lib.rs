//! qwen-aot-plan: the plan, the contract between the compiler and the runtime, and what both
//! sides must agree on about it:
//! - the plan types (this module) and their one structural validator ([`validate()`]);
//! - the weight formats and their canonical layout ([`quant`]), with the reference
//!   dequantisation that defines their values;
//! - what the plan records to check `weights.bin` and itself ([`integrity`]: window hashes, the
//!   seal);
//! - the tokenizer's data, written as `tokenizer.json`, with its validator ([`tokenizer`]);
//! - SplitMix64 ([`rng`]), the seeded generator of the compiler's random models and the
//!   runtime's window sample.
//!
//! The compiler (`qwen-aot-compiler`) depends on this crate and not on the runtime; the runtime
//! re-exports it (`qwen_aot_runtime::plan`).
//!
//! Plain data, versioned, serialised with serde as `plan.json` inside a compiled directory next to
//! `weights.bin` (the packed weights) and `tokenizer.json`. The runtime interprets plans and knows
//! nothing about Qwen2: every step below is defined by its semantics alone.
//!
//! Conventions used by every step:
//! - Activation buffers are row-major `[rows, row_elems]` f32 (or i32) tensors in one activation
//!   arena. A program processes `n_tokens` rows, `1 <= n_tokens <= program.max_tokens`; row `t` is the
//!   token at absolute position `pos + t`, where `pos` is the number of tokens already in the KV
//!   cache. `n_tokens` and `pos` are run-time values (on the GPU they live in device memory so that a
//!   captured decode graph never changes).
//! - Weights live in `weights.bin`; matrices are `[n, k]` (output features major), stored in the
//!   GGUF's own quantization (one or more row-range parts, each one [`WeightFormat`], in the
//!   canonical layout of [`crate::quant`]; `--weights f16` plans hold F16 parts). Norm weights and
//!   biases are one F32 part.
//! - The KV cache holds, per layer, K and V as `[max_seq, n_kv_heads, head_dim]`; the runtime
//!   allocates it (`max_seq` is chosen at load time, at most `hparams.context_length`).
use serde::{Deserialize, Serialize};

pub mod derive;
pub mod integrity;
pub mod quant;
pub mod rng;
pub mod tokenizer;
pub mod validate;

pub use crate::quant::WeightFormat;
pub use crate::validate::{validate, InvalidPlan};

/// Bumped whenever the meaning or layout of anything in this module changes (2 was used by a
/// reverted experiment whose plans may still sit in caches; 3 added `Step::Gemv`; 4 groups the
/// bias/RoPE/KV-write attributes in `RopeKvWrite`; 5 keeps quantized weights quantized:
/// `WeightInfo::parts`; 6 hashes `weights.bin` in windows and seals the plan: `weights_windows`,
/// `plan_sha256`, and `weights_sha256` is the two-level hash of [`crate::integrity`]; 7 adds derived
/// weights, rebuilt at load from another weight and a stored correction: [`Plan::derived`],
/// [`crate::derive`]; 8 cuts the corrections into frames of whole rows, `DerivedWeight::frame_rows`,
/// so that a load can rebuild only the rows it reads). A plan with another version is rejected at load with a message asking to
/// recompile.
///
/// [`RopeKvWrite::bias`] became optional within 6, without a bump: a plan with a bias is written
/// byte for byte as before and means the same, so every existing plan still loads; a plan without
/// one (a model without q/k/v biases, which no earlier compiler accepted) fails to parse in an
/// older binary, which names the missing field `bias`.
pub const PLAN_FORMAT_VERSION: u32 = 8;

/// File names inside a compiled directory.
pub const PLAN_FILE: &str = "plan.json";
pub const WEIGHTS_FILE: &str = "weights.bin";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Alignment (bytes) of every weight in `weights.bin` and of every buffer in the arena: enough for
/// 16-byte vector loads and for cuBLAS' preferred 256-byte alignment.
pub const ALIGNMENT: u64 = 256;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Plan {
    pub format_version: u32,
    /// `CARGO_PKG_VERSION` of the compiler that wrote this plan.
    pub compiler_version: String,
    /// sha256 of the source GGUF (hex).
    pub model_sha256: String,
    /// The source GGUF's `general.name`, for display. Optional, so plans written before it existed
    /// still load (and binaries that do not know it ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    pub hparams: HyperParams,
    /// Total size of `weights.bin`, and the SHA-256 (hex) of its windows' SHA-256s in file order:
    /// a hash of every byte, computed window by window in parallel ([`crate::integrity`]).
    pub weights_bytes: u64,
    pub weights_sha256: String,
    /// Each window's SHA-256 truncated to 8 bytes, hex, in file order: what a load samples.
    pub weights_windows: String,
    pub weights: Vec<WeightInfo>,
    /// Weights rebuilt at load instead of stored ([`crate::derive`]); their offsets lie past
    /// `weights_bytes`, back to back in this order. Absent from `plan.json` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<derive::DerivedWeight>,
    /// Processes up to `max_tokens` prompt tokens at once (longer prompts run in chunks).
    pub prefill: Program,
    /// Exactly one token; fixed shapes, ready for graph capture.
    pub decode: Program,
    /// SHA-256 of `plan.json` with this value zeroed ([`crate::integrity::seal_plan`]); last, so
    /// that it is the last field of the file.
    pub plan_sha256: String,
}

impl Plan {
    /// Bytes of the weight space the executors see: `weights.bin` followed by the derived
    /// weights (equal to `weights_bytes` when there are none).
    pub fn weights_len(&self) -> u64 {
        self.weights.iter().map(|w| w.offset + w.bytes).fold(self.weights_bytes, u64::max)
    }

    /// Whether a matrix product (a `MatMul` or `Gemv` step of either program) reads weight `id`:
    /// such a weight may not be derived (a derived weight is rebuilt row by row where an executor
    /// reads it by rows: only embedding lookups may read one).
    pub fn read_by_matrix_product(&self, id: WeightId) -> bool {
        self.prefill.steps.iter().chain(&self.decode.steps).any(|s| match s {
            Step::MatMul { weight, .. } | Step::Gemv { weight, .. } => *weight == id,
            _ => false,
        })
    }

    /// The derived entry whose target is `id`, if `id` is derived.
    pub fn derivation(&self, id: WeightId) -> Option<&derive::DerivedWeight> {
        self.derived.iter().find(|d| d.target == id)
    }
}

/// Model sizes, all read from GGUF metadata by the compiler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HyperParams {
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub context_length: usize,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    I32,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WeightInfo {
    pub name: String,
    /// Matrices `[n, k]`; vectors `[len]`.
    pub shape: Vec<usize>,
    /// Byte offset in `weights.bin` (multiple of [`ALIGNMENT`]) and size of the whole weight
    /// (its parts, back to back).
    pub offset: u64,
    pub bytes: u64,
    /// Row ranges in order, each in one format: one part, unless the weight concatenates tensors
    /// of different formats (e.g. Q5_0 q|k with a Q8_0 v). A vector is one F32 part.
    pub parts: Vec<WeightPart>,
}

/// `rows` consecutive rows of a weight in one format, laid out as [`crate::quant::part_layout`]
/// says, at `offset` in `weights.bin` (a multiple of [`ALIGNMENT`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct WeightPart {
    pub rows: usize,
    pub format: WeightFormat,
    pub offset: u64,
    pub bytes: u64,
}

impl WeightInfo {
    /// The one format of a single-part weight.
    pub fn single_format(&self) -> Option<WeightFormat> {
        match self.parts.as_slice() {
            [p] => Some(p.format),
            _ => None,
        }
    }

    /// Whether every part has format `f`.
    pub fn all_parts(&self, f: WeightFormat) -> bool {
        self.parts.iter().all(|p| p.format == f)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BufferInfo {
    pub name: String,
    pub dtype: DType,
    /// Elements per token row; the buffer holds `program.max_tokens` rows.
    pub row_elems: usize,
    /// Byte offset in the activation arena (multiple of [`ALIGNMENT`]).
    pub offset: u64,
    pub bytes: u64,
}

/// Index into [`Plan::weights`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(pub u32);

/// Index into [`Program::buffers`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Program {
    pub max_tokens: usize,
    pub buffers: Vec<BufferInfo>,
    /// Bytes of the activation arena this program needs (buffers overlap where their lifetimes do
    /// not; the compiler's memory planner decided the offsets).
    pub arena_bytes: u64,
    /// What the naive allocation (every buffer its own memory) would need, for reports.
    pub naive_arena_bytes: u64,
    /// Input: token ids, `[max_tokens]` i32 (`row_elems` 1).
    pub tokens: BufId,
    /// Output: logits `[max_tokens, vocab]` f32 (see [`Step::MatMul::logit_rows`]).
    pub logits: BufId,
    /// Output: greedy next token, `[1]` i32: argmax of the logits of row `n_tokens - 1`.
    pub next_token: BufId,
    pub steps: Vec<Step>,
}

/// One kernel launch. Every variant's semantics are defined for rows `t in 0..n_tokens`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Step {
    /// `out[t, :] = table[tokens[t], :]` (table `[vocab, hidden]` f16, out f32).
    /// Token ids outside `0..vocab` are rejected by the runtime before the program runs.
    Embed { tokens: BufId, table: WeightId, out: BufId },

    /// `out[t, i] = x[t, i] / sqrt(mean_j(x[t, j]^2) + eps) * weight[i]` over `row_elems` of x;
    /// mean and scaling in f32. `weight` is f32 `[hidden]`.
    RmsNorm { x: BufId, weight: WeightId, out: BufId, eps: f32 },

    /// Fused residual add + RMSNorm: `sum[t, :] = a[t, :] + b[t, :]`, then
    /// `norm_out[t, :] = rms_norm(sum[t, :]) * weight` (as [`Step::RmsNorm`]).
    AddRmsNorm { a: BufId, b: BufId, weight: WeightId, eps: f32, sum_out: BufId, norm_out: BufId },

    /// `out[t, j] = sum_i x[t, i] * weight[j, i]` for `j in 0..n`, `i in 0..k`; weight `[n, k]` f16,
    /// accumulation in f32. If `residual` is set, `out[t, j] += residual[t, j]` (residual may not
    /// alias out). If `logit_rows` is true this is the LM head: the runtime may compute only row
    /// `n_tokens - 1` unless the caller asked for the logits of every row; rows it skips are
    /// left unspecified.
    MatMul { x: BufId, weight: WeightId, n: usize, k: usize, out: BufId, residual: Option<BufId>, logit_rows: bool },

    /// Fused bias + RoPE + KV-cache write on a packed QKV row (sizes, bias, layer and theta in
    /// `rope`) `qkv[t] = [q (n_heads*head_dim) | k (n_kv_heads*head_dim) | v (n_kv_heads*head_dim)]`:
    /// `bias` (f32, same packed length) is added to all three (no bias: 0.0 is added, so the result
    /// equals an all-zero bias's bit for bit); q and k are rotated NeoX style at
    /// position `p = pos + t`: for each head and `i < head_dim/2`, with
    /// `inv_freq = rope_theta^(-2i/head_dim)`, `angle = p * inv_freq` (computed in f32),
    /// `(x[i], x[i+d/2]) <- (x[i]*cos - x[i+d/2]*sin, x[i+d/2]*cos + x[i]*sin)`.
    /// Rotated q goes to `q_out[t]` (`n_heads*head_dim`); rotated k and biased v are written to the
    /// cache of `layer` at position `p`.
    BiasRopeKvWrite { qkv: BufId, rope: RopeKvWrite, q_out: BufId },

    /// Causal grouped-query attention over the cache of `layer`: for query row t (position
    /// `p = pos + t`) and head h (KV head `h / (n_heads / n_kv_heads)`), scores
    /// `s_j = scale * q[t,h,:] . K[j,kvh,:]` for `j in 0..=p`, softmax in f32, and
    /// `out[t,h,:] = sum_j softmax(s)_j * V[j,kvh,:]`. Out is `[n_heads*head_dim]` per row.
    Attention { q: BufId, layer: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize, scale: f32, out: BufId },

    /// SwiGLU on a packed `[gate (ffn) | up (ffn)]` row: `out[t, i] = silu(gate[t, i]) * up[t, i]`,
    /// `silu(x) = x / (1 + exp(-x))`.
    SwiGlu { gate_up: BufId, ffn: usize, out: BufId },

    /// `out[0] = argmax_j logits[n_tokens - 1, j]` over `vocab` columns (lowest index on ties).
    Argmax { logits: BufId, vocab: usize, out: BufId },

    /// A matrix-vector product with its neighbours folded in (the decode program's matmuls):
    /// `x' = x`, or `rms_norm(x) * norm.weight` (as [`Step::RmsNorm`], over `k` columns) when
    /// `norm` is set; `y[t, j] = sum_i x'[t, i] * weight[j, i]` (weight `[n, k]` f16, f32
    /// accumulation); then `epilogue` consumes y, which is never stored itself.
    Gemv { x: BufId, norm: Option<NormPrologue>, weight: WeightId, n: usize, k: usize, epilogue: GemvEpilogue },
}

/// RMSNorm of a [`Step::Gemv`]'s input row, applied as the row is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct NormPrologue {
    /// f32 `[k]`.
    pub weight: WeightId,
    pub eps: f32,
}

/// What a [`Step::Gemv`] does with its product row `y` (`n` columns).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum GemvEpilogue {
    /// `out[t, j] = y[t, j] (+ residual[t, j])` (residual may not alias out). `logit_rows` as for
    /// [`Step::MatMul`] (the LM head).
    Store { out: BufId, residual: Option<BufId>, logit_rows: bool },
    /// y is a packed `[gate (ffn) | up (ffn)]` row (`n = 2 * ffn`): [`Step::SwiGlu`] on it.
    SwiGlu { ffn: usize, out: BufId },
    /// y is a packed qkv row (`n = (n_heads + 2 * n_kv_heads) * head_dim`):
    /// [`Step::BiasRopeKvWrite`] on it.
    BiasRopeKvWrite { rope: RopeKvWrite, q_out: BufId },
}

/// What [`Step::BiasRopeKvWrite`] (and the GEMV epilogue of the same name) adds, rotates and
/// where it writes: `bias` f32 `[(n_heads + 2 * n_kv_heads) * head_dim]` or none (a model without
/// q/k/v biases), the cache of `layer`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct RopeKvWrite {
    /// Absent from `plan.json` when None, so plans with a bias read and write as before the field
    /// became optional (see [`PLAN_FORMAT_VERSION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<WeightId>,
    pub layer: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
}

impl RopeKvWrite {
    /// Columns of the packed qkv row: `(n_heads + 2 * n_kv_heads) * head_dim`.
    pub fn packed(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}

impl Step {
    /// Short kernel-family name, for reports and launch tables.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            Step::Embed { .. } => "embed",
            Step::RmsNorm { .. } => "rms_norm",
            Step::AddRmsNorm { .. } => "add_rms_norm",
            Step::MatMul { .. } => "matmul",
            Step::BiasRopeKvWrite { .. } => "bias_rope_kv_write",
            Step::Attention { .. } => "attention",
            Step::SwiGlu { .. } => "swiglu",
            Step::Argmax { .. } => "argmax",
            Step::Gemv { epilogue: GemvEpilogue::Store { .. }, .. } => "gemv",
            Step::Gemv { epilogue: GemvEpilogue::SwiGlu { .. }, .. } => "gemv_swiglu",
            Step::Gemv { epilogue: GemvEpilogue::BiasRopeKvWrite { .. }, .. } => "gemv_rope_kv_write",
        }
    }
}
