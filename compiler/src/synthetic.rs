//! Seeded random-weight Qwen2 models of any shape, held in memory: for tests of the fused plan at
//! shapes other than 0.5B, for `qwen-aot check` without a model, and for benchmarks (a random model
//! with the real shapes costs the same to run as the real one). Matrices are f32 values
//! ([`random_model`]) or random GGUF blocks of chosen types per role ([`random_model_mix`]), so a
//! quantized model of any shape can be made without a file.
use qwen_aot_plan::HyperParams;
use rayon::prelude::*;

use crate::gguf::{dequantize, GgmlType};
use crate::source::{MemData, MemorySource};

/// SplitMix64: tiny, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The plan crate's SplitMix64 step (the runtime's kernel checks draw from the same generator).
    pub fn next_u64(&mut self) -> u64 {
        qwen_aot_plan::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn fill(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
    }
}

/// GGUF types of a random model's matrices, per role. F32 gives f32 values; F16 and BF16 the same
/// values rounded (so the plan holds what it held before plan 5); quantized types give random
/// blocks (see [`random_blocks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormatMix {
    pub embed: GgmlType,
    pub qk: GgmlType,
    pub v: GgmlType,
    pub o: GgmlType,
    pub gate_up: GgmlType,
    pub down: GgmlType,
    /// Ignored for tied models.
    pub output: GgmlType,
}

impl FormatMix {
    /// Every matrix of one type.
    pub fn all(t: GgmlType) -> Self {
        FormatMix { embed: t, qk: t, v: t, o: t, gate_up: t, down: t, output: t }
    }

    /// F16 matrices of [`random_model`]'s values: the plan random-model callers had before
    /// plan 5 (every matrix one F16 part).
    pub fn f16() -> Self {
        FormatMix::all(GgmlType::F16)
    }
}

/// The default model's file (Qwen2.5-Coder-0.5B Q4_K_M: 896 is not a multiple of 256, so most
/// matrices fall back to Q5_0): Q5_0 except `ffn_down` Q6_K, `attn_v` and `output` Q8_0.
pub fn default_model_mix() -> FormatMix {
    FormatMix { down: GgmlType::Q6_K, v: GgmlType::Q8_0, output: GgmlType::Q8_0, ..FormatMix::all(GgmlType::Q5_0) }
}

/// A Q4_K_M file of a model whose hidden size is a multiple of 256 (issue 15, item 7): Q4_K
/// matrices, Q6_K `ffn_down` and `output`.
pub fn q4_k_m_1_5b_mix() -> FormatMix {
    FormatMix { down: GgmlType::Q6_K, output: GgmlType::Q6_K, ..FormatMix::all(GgmlType::Q4_K) }
}

/// A random model with GGUF tensor names and dims, f32 matrices (uniform with variance 1/k, so
/// activations keep their scale through the layers); norm weights near 1; biases small.
pub fn random_model(hp: &HyperParams, tied: bool, seed: u64) -> MemorySource {
    random_model_mix(hp, tied, seed, &FormatMix::all(GgmlType::F32))
}

/// [`random_model`] with matrices of the types in `mix`. Float types draw the same values as
/// [`random_model`] (same seed, same values); quantized ones random blocks whose dequantised
/// values have about the same variance, 1/k.
pub fn random_model_mix(hp: &HyperParams, tied: bool, seed: u64, mix: &FormatMix) -> MemorySource {
    let mut rng = Rng::new(seed);
    let mut src = MemorySource::default();
    let mut index = 0u64;
    let mut matrix = |name: String, k: usize, n: usize, t: GgmlType, rng: &mut Rng| {
        let dims = vec![k as u64, n as u64];
        if matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            let scale = (3.0 / k as f32).sqrt();
            let v: Vec<f32> = (0..k * n).map(|_| rng.uniform() * scale).collect();
            match t {
                GgmlType::F32 => src.insert_f32(name, dims, v),
                GgmlType::F16 => src.insert_blocks(
                    name,
                    dims,
                    t,
                    v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                ),
                _ => src.insert_blocks(
                    name,
                    dims,
                    t,
                    v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
                ),
            }
        } else {
            // Blocks are drawn in parallel from per-tensor seeds, so they do not depend on the
            // thread count (the 1.5B model has 1.5 billion weights).
            index += 1;
            let bytes =
                random_blocks(t, n, k, (1.0 / k as f32).sqrt(), seed.wrapping_mul(0x1000_0001).wrapping_add(index));
            src.insert_blocks(name, dims, t, bytes);
        }
    };
    let (h, q, kv, f) = (hp.hidden, hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim, hp.ffn);
    matrix("token_embd.weight".into(), h, hp.vocab, mix.embed, &mut rng);
    if !tied {
        matrix("output.weight".into(), h, hp.vocab, mix.output, &mut rng);
    }
    for l in 0..hp.n_layers {
        matrix(format!("blk.{l}.attn_q.weight"), h, q, mix.qk, &mut rng);
        matrix(format!("blk.{l}.attn_k.weight"), h, kv, mix.qk, &mut rng);
        matrix(format!("blk.{l}.attn_v.weight"), h, kv, mix.v, &mut rng);
        matrix(format!("blk.{l}.attn_output.weight"), q, h, mix.o, &mut rng);
        matrix(format!("blk.{l}.ffn_gate.weight"), h, f, mix.gate_up, &mut rng);
        matrix(format!("blk.{l}.ffn_up.weight"), h, f, mix.gate_up, &mut rng);
        matrix(format!("blk.{l}.ffn_down.weight"), f, h, mix.down, &mut rng);
    }
    let mut vector = |name: String, len: usize, center: f32, spread: f32, rng: &mut Rng| {
        let v = (0..len).map(|_| center + spread * rng.uniform()).collect();
        src.insert_f32(name, vec![len as u64], v);
    };
    for l in 0..hp.n_layers {
        vector(format!("blk.{l}.attn_norm.weight"), h, 1.0, 0.2, &mut rng);
        vector(format!("blk.{l}.ffn_norm.weight"), h, 1.0, 0.2, &mut rng);
        vector(format!("blk.{l}.attn_q.bias"), q, 0.0, 0.5, &mut rng);
        vector(format!("blk.{l}.attn_k.bias"), kv, 0.0, 0.5, &mut rng);
        vector(format!("blk.{l}.attn_v.bias"), kv, 0.0, 0.5, &mut rng);
    }
    vector("output_norm.weight".into(), h, 1.0, 0.2, &mut rng);
    src
}

/// Makes `src` (with a Q8_0 `output.weight`) store its embedding twice, as llama.cpp's Q4_K_M
/// files of tied models do: `token_embd.weight` becomes the reference Q5_0 quantisation of the
/// dequantised `output.weight`, with one code changed in every `perturb_every`-th block (the
/// real file's blocks differ from a requantisation in about that many: `crate::derive`'s
/// correction then has something to correct). Returns false when `src` has no Q8_0 output.
pub fn store_embedding_twice(src: &mut MemorySource, perturb_every: usize) -> bool {
    use qwen_aot_plan::derive::quantize_q5_0_ref;
    let Some(out) = src.tensors.get("output.weight") else { return false };
    let MemData::Blocks { dtype: GgmlType::Q8_0, bytes } = &out.data else { return false };
    let dims = out.dims.clone();
    let mut q5 = Vec::with_capacity(bytes.len() / 34 * 22);
    for (i, b) in bytes.chunks_exact(34).enumerate() {
        let d8 = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let x: [f32; 32] = std::array::from_fn(|e| f32::from(b[2 + e] as i8) * d8);
        let (d, mut q) = quantize_q5_0_ref(&x);
        if perturb_every > 0 && i % perturb_every == 0 {
            q[i % 32] = (q[i % 32] + 1) % 32;
        }
        // GGUF Q5_0 block: f16 d, u32 qh (bit e: bit 4 of element e), 16 bytes of nibbles.
        let qh = q.iter().enumerate().fold(0u32, |acc, (e, &c)| acc | (u32::from(c >> 4) << e));
        q5.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        q5.extend_from_slice(&qh.to_le_bytes());
        q5.extend((0..16).map(|j| (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4)));
    }
    src.insert_blocks("token_embd.weight", dims, GgmlType::Q5_0, q5);
    true
}

/// Whether `name` is a layer's q, k or v bias (`blk.N.attn_{q,k,v}.bias`).
fn is_qkv_bias(name: &str) -> bool {
    name.starts_with("blk.") && [".attn_q.bias", ".attn_k.bias", ".attn_v.bias"].iter().any(|s| name.ends_with(s))
}

/// Removes every layer's q, k and v biases from `src`: the model without them (Llama-style
/// attention), which the description's optional biases compile with no bias at all.
pub fn remove_qkv_bias(src: &mut MemorySource) {
    src.tensors.retain(|name, _| !is_qkv_bias(name));
}

/// Sets every layer's q, k and v biases of `src` to zero: the same model as
/// [`remove_qkv_bias`]'s, with the biases stored.
pub fn zero_qkv_bias(src: &mut MemorySource) {
    for (_, t) in src.tensors.iter_mut().filter(|(name, _)| is_qkv_bias(name)) {
        let len = t.dims.iter().product::<u64>() as usize;
        t.data = crate::source::MemData::F32(vec![0.0; len]);
    }
}

/// Offsets of a block's f16 scale fields (d, and dmin or m), and their starting values: the
/// block is drawn with these, then all of them are multiplied by one factor (the values are
/// linear in them jointly) so that the block's root mean square is the target.
fn scale_fields(t: GgmlType) -> &'static [(usize, f32)] {
    match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[(0, 1.0)],
        // x = d q + m: m = -d * (mid code) centres the codes on zero.
        GgmlType::Q4_1 => &[(0, 1.0), (2, -7.5)],
        GgmlType::Q5_1 => &[(0, 1.0), (2, -15.5)],
        GgmlType::Q2_K => &[(80, 1.0), (82, 1.0)],
        GgmlType::Q3_K => &[(108, 1.0)],
        GgmlType::Q4_K | GgmlType::Q5_K => &[(0, 1.0), (2, 1.0)],
        GgmlType::Q6_K => &[(208, 1.0)],
        _ => &[],
    }
}

/// Q4_K/Q5_K sub-block scales and mins packed into ggml's 12 bytes (the inverse of
/// `get_scale_min_k4`).
fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
    }
    q
}

/// Random codes and sub-scales for one block, scale fields at their starting values. Sub-block
/// mins are chosen to centre each sub-block (as a quantiser would for zero-mean weights).
fn draw_block(t: GgmlType, b: &mut [u8], rng: &mut Rng) {
    rng.fill(b);
    let mut small = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
    match t {
        GgmlType::Q2_K => {
            for s in &mut b[0..16] {
                let sc = small(8, 10) as u8;
                *s = sc | (((sc as f32 * 1.5).round() as u8).min(15) << 4);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // Mid code 7.5 (Q4_K) or 15.5 (Q5_K) times the scale must fit the 6-bit min.
            let (lo, hi, mid) = if t == GgmlType::Q4_K { (4, 8, 7.5) } else { (2, 4, 15.5) };
            let sc: [u8; 8] = std::array::from_fn(|_| small(lo, hi) as u8);
            let m: [u8; 8] = std::array::from_fn(|j| ((sc[j] as f32 * mid).round() as u8).min(63));
            b[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &m));
        }
        _ => {}
    }
    for &(at, v) in scale_fields(t) {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
}

/// Draws one block and rescales it to root mean square `rms`.
fn random_block(t: GgmlType, b: &mut [u8], rms: f32, rng: &mut Rng) {
    let block = t.block_size() as usize;
    draw_block(t, b, rng);
    let Ok(x) = dequantize(t, b, block) else { return };
    let have = (x.iter().map(|v| v * v).sum::<f32>() / block as f32).sqrt();
    if have > 0.0 {
        let c = rms / have;
        for &(at, v) in scale_fields(t) {
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v * c).to_le_bytes());
        }
    }
}

/// `rows` rows of `k` elements of quantized type `t`: random codes, each block scaled to root
/// mean square `rms`. Deterministic in `seed` (chunks of rows draw from their own seeds).
pub fn random_blocks(t: GgmlType, rows: usize, k: usize, rms: f32, seed: u64) -> Vec<u8> {
    let size = t.type_size() as usize;
    let per_row = k / t.block_size() as usize * size;
    let mut out = vec![0u8; rows * per_row];
    const ROWS_PER_TASK: usize = 64;
    out.par_chunks_mut((ROWS_PER_TASK * per_row).max(1)).enumerate().for_each(|(i, chunk)| {
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        for b in chunk.chunks_exact_mut(size) {
            random_block(t, b, rms, &mut rng);
        }
    });
    out
}

/// Two small layers and a 2,048-token vocabulary: with [`FormatMix::f16`], a `weights.bin` of
/// about 6 MiB, many more 64 KiB windows than a load hashes (the integrity tests' model).
pub fn multi_window_hparams() -> HyperParams {
    HyperParams {
        n_layers: 2,
        hidden: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        ffn: 1024,
        vocab: 2048,
        rms_eps: 1e-6,
        rope_theta: 1e4,
        context_length: 64,
    }
}

/// One small layer (hidden 64, 4 query / 2 KV heads of 16, ffn 32) with a `vocab`-token vocabulary
/// and a context of `context_length`: the smallest model the compile and executor tests use.
pub fn one_layer_hparams(vocab: usize, context_length: usize) -> HyperParams {
    HyperParams {
        n_layers: 1,
        hidden: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn: 32,
        vocab,
        rms_eps: 1e-6,
        rope_theta: 1e4,
        context_length,
    }
}

/// The Qwen2.5-0.5B sizes with `n_layers` layers (24 for the real shapes).
pub fn qwen05b_hparams(n_layers: usize) -> HyperParams {
    HyperParams {
        n_layers,
        hidden: 896,
        n_heads: 14,
        n_kv_heads: 2,
        head_dim: 64,
        ffn: 4864,
        vocab: 151936,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 32768,
    }
}

/// The Qwen2.5-1.5B sizes (28 layers, hidden 1536, 12/2 heads of 128, ffn 8960).
pub fn qwen15b_hparams() -> HyperParams {
    HyperParams {
        n_layers: 28,
        hidden: 1536,
        n_heads: 12,
        n_kv_heads: 2,
        head_dim: 128,
        ffn: 8960,
        vocab: 151936,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 32768,
    }
}

/// The Qwen2.5-3B sizes (36 layers, hidden 2048, 16/2 heads of 128, ffn 11008; its embedding
/// is tied to the LM head).
pub fn qwen3b_hparams() -> HyperParams {
    HyperParams {
        n_layers: 36,
        hidden: 2048,
        n_heads: 16,
        n_kv_heads: 2,
        head_dim: 128,
        ffn: 11008,
        vocab: 151936,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 32768,
    }
}

/// The Qwen2.5-7B sizes (28 layers, hidden 3584, 28/4 heads of 128, ffn 18944, vocab 152064).
pub fn qwen7b_hparams() -> HyperParams {
    HyperParams {
        n_layers: 28,
        hidden: 3584,
        n_heads: 28,
        n_kv_heads: 4,
        head_dim: 128,
        ffn: 18944,
        vocab: 152064,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 32768,
    }
}

/// A Q4_K_M file of a model with a tied embedding (Qwen2.5-3B): llama.cpp gives the embedding,
/// which is also the LM head, the output's Q6_K; Q4_K matrices, Q6_K `ffn_down`.
pub fn q4_k_m_tied_mix() -> FormatMix {
    FormatMix { embed: GgmlType::Q6_K, ..q4_k_m_1_5b_mix() }
}

/// Parameters of a model of these sizes as [`random_model_mix`] writes it (every matrix, the q/k/v
/// biases and the norms; the embedding once when `tied`).
pub fn parameter_count(hp: &HyperParams, tied: bool) -> u64 {
    let (h, q, kv, f) =
        (hp.hidden as u64, (hp.n_heads * hp.head_dim) as u64, (hp.n_kv_heads * hp.head_dim) as u64, hp.ffn as u64);
    let embed = h * hp.vocab as u64;
    let layer = h * (q + 2 * kv) + (q + 2 * kv) + q * h + 3 * h * f + 2 * h;
    embed * if tied { 1 } else { 2 } + hp.n_layers as u64 * layer + h
}

/// Compiles a seeded random model with matrices of the types in `mix` into `dir` (no
/// tokenizer), ready for the runtime. [`FormatMix::f16`] gives the F16 plan of before plan 5.
pub fn compile_random(
    hp: &HyperParams,
    tied: bool,
    seed: u64,
    mix: &FormatMix,
    opts: &crate::compile::CompileOptions,
    dir: &std::path::Path,
) -> Result<(), crate::error::CompileError> {
    let src = random_model_mix(hp, tied, seed, mix);
    let mut c = crate::compile::build(hp, &src, &format!("random-seed-{seed}"), opts)?;
    crate::compile::write_dir(&mut c, &src, None, dir, |_| {})
}

pub mod gguf_file;

#[cfg(test)]
mod tests;
