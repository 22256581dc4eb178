//! Seeded random-weight Qwen2 models of any shape, held in memory: for tests of the fused plan at
//! shapes other than 0.5B, for `qwen-aot check` without a model, and for benchmarks (a random model
//! with the real shapes costs the same to run as the real one).
use qwen_aot_runtime::plan::HyperParams;

use crate::source::MemorySource;

/// SplitMix64: tiny, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A random model with GGUF tensor names and dims. Matrices are uniform with variance 1/k (so
/// activations keep their scale through the layers); norm weights near 1; biases small.
pub fn random_model(hp: &HyperParams, tied: bool, seed: u64) -> MemorySource {
    let mut rng = Rng::new(seed);
    let mut src = MemorySource::default();
    let mut matrix = |name: String, k: usize, n: usize, rng: &mut Rng| {
        let scale = (3.0 / k as f32).sqrt();
        let v = (0..k * n).map(|_| rng.uniform() * scale).collect();
        src.tensors.insert(name, (vec![k as u64, n as u64], v));
    };
    let (h, q, kv, f) = (hp.hidden, hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim, hp.ffn);
    // The embedding gets a larger scale so that rows are not all tiny.
    matrix("token_embd.weight".into(), h, hp.vocab, &mut rng);
    if !tied {
        matrix("output.weight".into(), h, hp.vocab, &mut rng);
    }
    for l in 0..hp.n_layers {
        matrix(format!("blk.{l}.attn_q.weight"), h, q, &mut rng);
        matrix(format!("blk.{l}.attn_k.weight"), h, kv, &mut rng);
        matrix(format!("blk.{l}.attn_v.weight"), h, kv, &mut rng);
        matrix(format!("blk.{l}.attn_output.weight"), q, h, &mut rng);
        matrix(format!("blk.{l}.ffn_gate.weight"), h, f, &mut rng);
        matrix(format!("blk.{l}.ffn_up.weight"), h, f, &mut rng);
        matrix(format!("blk.{l}.ffn_down.weight"), f, h, &mut rng);
    }
    let mut vector = |name: String, len: usize, center: f32, spread: f32, rng: &mut Rng| {
        let v = (0..len).map(|_| center + spread * rng.uniform()).collect();
        src.tensors.insert(name, (vec![len as u64], v));
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

/// The Qwen2.5-0.5B sizes with `n_layers` layers (24 for the real shapes).
pub fn qwen05b_hparams(n_layers: usize) -> HyperParams {
    HyperParams { n_layers, hidden: 896, n_heads: 14, n_kv_heads: 2, head_dim: 64, ffn: 4864, vocab: 151936, rms_eps: 1e-6, rope_theta: 1e6, context_length: 32768 }
}

/// Compiles a seeded random model into `dir` (no tokenizer), ready for the runtime.
pub fn compile_random(hp: &HyperParams, tied: bool, seed: u64, opts: &crate::compile::CompileOptions, dir: &std::path::Path) -> Result<(), crate::error::CompileError> {
    let src = random_model(hp, tied, seed);
    let mut c = crate::compile::build(hp, &src, &format!("random-seed-{seed}"), opts)?;
    crate::compile::write_dir(&mut c, &src, None, dir, |_| {})
}
