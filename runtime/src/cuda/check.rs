//! Every CUDA kernel against its CPU twin ([`crate::cpu::kernels`]) on seeded random inputs.
//!
//! Inputs are random (never zeros), outputs are poisoned with NaN bytes before each launch (a
//! kernel that skips an element leaves a NaN, which fails the row), and each op's tolerance is a
//! bound derived from the numerics of the two sides, justified next to it. Errors are measured
//! in absolute terms (`max_abs`); `max_rel` is `max_abs / max |reference|`.
//!
//! The same launch builders as the executor are used (module `launch`), so what passes here is
//! what the executor runs.
use half::f16;

mod attn_fold;
mod gemv;
mod qprefill;
mod sampler;
mod scores;
mod weights;
mod x_digits;

use super::device::{CudaDevice, DevBuf};
use super::executor::inv_freq_table;
use super::launch::{
    self, ArgmaxScratch, AttnScratch, GemmScratch, Heads, MatMulMode, Op, RopeArgs, ARGMAX_MAX_BLOCKS,
};
use super::test_kernels::TestKernels;
use crate::cpu::kernels as cpu;
use crate::error::RuntimeError;

/// One comparison: kernel `name` at `shape`. `pass` is `max_abs <= tol`. For element-wise
/// bounds (matmul) `max_abs`/`tol` are those of the element closest to its own bound.
#[derive(Clone, Debug)]
pub struct CheckRow {
    pub name: String,
    pub shape: String,
    pub max_abs: f32,
    pub max_rel: f32,
    pub tol: f32,
    pub pass: bool,
}

/// Sizes for one round of checks (every kernel at these sizes).
#[derive(Clone, Debug)]
pub struct CheckShape {
    pub label: String,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub n_tokens: usize,
    pub pos: usize,
    pub rope_theta: f32,
}

impl CheckShape {
    /// Qwen2.5-0.5B sizes with `n_tokens` rows starting at position `pos`.
    pub fn qwen05b(n_tokens: usize, pos: usize) -> CheckShape {
        CheckShape {
            label: format!("0.5B t={n_tokens} pos={pos}"),
            hidden: 896,
            n_heads: 14,
            n_kv_heads: 2,
            head_dim: 64,
            ffn: 4864,
            vocab: 151936,
            n_tokens,
            pos,
            rope_theta: 1e6,
        }
    }

    /// The default set: 0.5B decode at positions 0 and 2000, 0.5B prefill of 37 rows, and odd
    /// shapes (k not a multiple of 256 or of 8, k > 1024, head_dim 128 with 4 KV heads, MHA, odd
    /// ffn).
    pub fn default_set() -> Vec<CheckShape> {
        vec![
            CheckShape::qwen05b(1, 0),
            CheckShape::qwen05b(1, 2000),
            CheckShape::qwen05b(37, 0),
            CheckShape::qwen05b(37, 1990),
            CheckShape {
                label: "odd: k=200, d=128, 16/4 heads, t=37".into(),
                hidden: 200,
                n_heads: 16,
                n_kv_heads: 4,
                head_dim: 128,
                ffn: 333,
                vocab: 1003,
                n_tokens: 37,
                pos: 5,
                rope_theta: 10000.0,
            },
            CheckShape {
                label: "odd: k=98, MHA 8/8 d=64, t=1".into(),
                hidden: 98,
                n_heads: 8,
                n_kv_heads: 8,
                head_dim: 64,
                ffn: 333,
                vocab: 5000,
                n_tokens: 1,
                pos: 1234,
                rope_theta: 1e6,
            },
            CheckShape {
                // Rows wider than a warp's registers hold (k > 1024): the GEMVs' general paths.
                label: "1.5B-like: k=1536, d=128, 12/2 heads, t=1".into(),
                hidden: 1536,
                n_heads: 12,
                n_kv_heads: 2,
                head_dim: 128,
                ffn: 8960,
                vocab: 3000,
                n_tokens: 1,
                pos: 300,
                rope_theta: 1e6,
            },
            CheckShape {
                label: "odd: d=128, 28/4 heads, t=1".into(),
                hidden: 3584 / 4,
                n_heads: 28,
                n_kv_heads: 4,
                head_dim: 128,
                ffn: 1000,
                vocab: 1000,
                n_tokens: 1,
                pos: 777,
                rope_theta: 1e6,
            },
        ]
    }
}

/// Unit roundoff of f32 (2^-24) and f16 (2^-11).
const U32: f32 = 1.0 / 16_777_216.0;
const U16: f32 = 1.0 / 2048.0;

/// SplitMix64: tiny, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        crate::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(scale)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn from_f16(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// (max |g - c|, max |g - c| / max |c|); a NaN/inf in `g` where `c` is finite counts as infinite.
fn compare(gpu: &[f32], cpu: &[f32]) -> (f32, f32) {
    assert_eq!(gpu.len(), cpu.len());
    let mut m = 0.0f32;
    for (&g, &c) in gpu.iter().zip(cpu) {
        let d = if g.is_finite() || !c.is_finite() { (g - c).abs() } else { f32::INFINITY };
        let d = if d.is_nan() {
            if g.is_nan() && c.is_nan() {
                0.0
            } else {
                f32::INFINITY
            }
        } else {
            d
        };
        m = m.max(d);
    }
    let scale = max_abs(cpu);
    (m, if scale > 0.0 { m / scale } else { m })
}

struct Harness<'a> {
    dev: &'a CudaDevice,
    /// The test image (kernels only these checks launch), loaded on `dev`.
    tests: TestKernels,
    state: DevBuf,
    argmax: DevBuf,
    rows: Vec<CheckRow>,
    shape: String,
}

impl<'a> Harness<'a> {
    fn set_state(&self, pos: usize, n: usize) -> Result<(), RuntimeError> {
        self.dev.htod(self.state.ptr(), &[pos as i32, n as i32], "check state")
    }
    fn input<T: Copy>(&self, data: &[T]) -> Result<DevBuf, RuntimeError> {
        self.dev.upload(data, "check input")
    }
    /// Output buffer of `bytes` bytes filled with 0xFF (NaN as f32 and as f16).
    fn output(&self, bytes: usize) -> Result<DevBuf, RuntimeError> {
        let b = self.dev.alloc(bytes, "check output")?;
        self.dev.memset_u8(b.ptr(), 0xFF, bytes, "poison")?;
        Ok(b)
    }
    fn run(&self, ops: &[Op], what: &str) -> Result<(), RuntimeError> {
        // SAFETY: every op in this module is built over buffers allocated right here with the sizes
        // its builder documents (see each call site), and we synchronise before they are dropped.
        unsafe { self.dev.run_ops(ops)? };
        self.dev.sync(what)
    }
    fn read_f32(&self, b: &DevBuf, n: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut v = vec![0f32; n];
        self.dev.dtoh(b.ptr(), &mut v, "check read")?;
        Ok(v)
    }
    fn read_f16(&self, b: &DevBuf, n: usize) -> Result<Vec<f32>, RuntimeError> {
        let mut v = vec![f16::ZERO; n];
        self.dev.dtoh(b.ptr(), &mut v, "check read")?;
        Ok(from_f16(&v))
    }
    fn record(&mut self, name: impl Into<String>, gpu: &[f32], cpu: &[f32], tol: f32) {
        let (max_abs, max_rel) = compare(gpu, cpu);
        self.rows.push(CheckRow {
            name: name.into(),
            shape: self.shape.clone(),
            max_abs,
            max_rel,
            tol,
            pass: max_abs <= tol,
        });
    }
    /// Element-wise bounds: passes when |g - c| <= bound[i] everywhere. Reports the element
    /// with the largest |g - c| / bound[i]: its |g - c| as `max_abs` and its bound as `tol` (so
    /// the row reads `max_abs <= tol` exactly when it passes); `max_rel` is over all elements.
    fn record_bounded(&mut self, name: impl Into<String>, gpu: &[f32], cpu: &[f32], bound: &[f32]) {
        let (_, max_rel) = compare(gpu, cpu);
        let mut worst = (f32::NEG_INFINITY, 0.0f32, 0.0f32); // (ratio, |g - c|, bound)
        for ((&g, &c), &b) in gpu.iter().zip(cpu).zip(bound) {
            let d = (g - c).abs();
            let (d, ratio) = if d.is_nan() {
                (f32::INFINITY, f32::INFINITY)
            } else if b > 0.0 {
                (d, d / b)
            } else if d == 0.0 {
                (d, 0.0)
            } else {
                (d, f32::INFINITY)
            };
            if ratio > worst.0 {
                worst = (ratio, d, b);
            }
        }
        self.rows.push(CheckRow {
            name: name.into(),
            shape: self.shape.clone(),
            max_abs: worst.1,
            max_rel,
            tol: worst.2,
            pass: worst.0 <= 1.0,
        });
    }
    /// A yes/no property (e.g. "rows it must not write keep their poison"): max_abs 0 when it
    /// holds, infinite when not.
    fn record_flag(&mut self, name: impl Into<String>, ok: bool) {
        self.rows.push(CheckRow {
            name: name.into(),
            shape: self.shape.clone(),
            max_abs: if ok { 0.0 } else { f32::INFINITY },
            max_rel: 0.0,
            tol: 0.0,
            pass: ok,
        });
    }
    fn argmax_scratch(&self) -> ArgmaxScratch {
        let a = self.argmax.ptr();
        ArgmaxScratch { part_v: a, part_i: a + ARGMAX_MAX_BLOCKS as u64 * 4, counter: a + ARGMAX_MAX_BLOCKS as u64 * 8 }
    }
}

/// The outputs of a bias+RoPE+KV write under test (the standalone kernel or a GEMV epilogue):
/// q [t, q_len] f32, the K cache [max_seq, kv_len] f32 and the V cache f16, all poisoned, plus the f32 inverse
/// frequencies the kernels read.
struct RopeOutputs {
    inv_freq: DevBuf,
    q_out: DevBuf,
    k_cache: DevBuf,
    v_cache: DevBuf,
    heads: Heads,
    t: usize,
    max_seq: usize,
}

/// What a [`RopeOutputs`] read back: q, then the whole K and V caches (as f32).
struct RopeResult {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl RopeOutputs {
    fn new(h: &Harness, s: &CheckShape, t: usize) -> Result<Self, RuntimeError> {
        let heads = Heads { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: s.head_dim };
        let (ql, kl) = (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
        let max_seq = s.pos + t + 3;
        Ok(Self {
            inv_freq: h.input(&inv_freq_table(s.rope_theta, s.head_dim))?,
            q_out: h.output(t * ql * 4)?,
            k_cache: h.output(max_seq * kl * 4)?,
            v_cache: h.output(max_seq * kl * 2)?,
            heads,
            t,
            max_seq,
        })
    }
    /// The kernel arguments; `bias` 0 is the null pointer (read as an all-zero bias).
    fn args(&self, bias: u64) -> RopeArgs {
        RopeArgs {
            bias,
            inv_freq: self.inv_freq.ptr(),
            q_out: self.q_out.ptr(),
            k_cache: self.k_cache.ptr(),
            v_cache: self.v_cache.ptr(),
            heads: self.heads,
        }
    }
    fn read(&self, h: &Harness) -> Result<RopeResult, RuntimeError> {
        let (ql, kl) = (self.heads.n_heads * self.heads.head_dim, self.heads.n_kv_heads * self.heads.head_dim);
        Ok(RopeResult {
            q: h.read_f32(&self.q_out, self.t * ql)?,
            k: h.read_f32(&self.k_cache, self.max_seq * kl)?,
            v: h.read_f16(&self.v_cache, self.max_seq * kl)?,
        })
    }
}

/// Runs every kernel at every shape; returns one row per comparison. `test_image` is the test
/// kernels' image (`qwen_aot::kernels::TEST_IMAGE`), loaded next to the device's. Errors only for
/// CUDA failures (a wrong result is a failing row, not an error).
pub fn check_kernels(
    dev: &CudaDevice,
    test_image: &[u8],
    seed: u64,
    shapes: &[CheckShape],
) -> Result<Vec<CheckRow>, RuntimeError> {
    let mut h = Harness {
        dev,
        tests: TestKernels::load(dev, test_image)?,
        state: dev.alloc(16, "check state")?,
        argmax: dev.alloc(ARGMAX_MAX_BLOCKS * 8 + 16, "argmax scratch")?,
        rows: Vec::new(),
        shape: String::new(),
    };
    for (si, s) in shapes.iter().enumerate() {
        let mut rng = Rng(seed ^ (si as u64).wrapping_mul(0x1234_5678_9ABC_DEF1));
        h.shape = s.label.clone();
        check_shape(&mut h, &mut rng, s)?;
    }
    h.shape.clear();
    // A subset of the shapes (the compute-sanitizer runs) gets an eighth of the sampler draws.
    sampler::sampler_checks(&mut h, seed, shapes.len() < CheckShape::default_set().len())?;
    x_digits::x_digit_checks(&mut h, seed)?;
    Ok(h.rows)
}

fn check_shape(h: &mut Harness, rng: &mut Rng, s: &CheckShape) -> Result<(), RuntimeError> {
    let t = s.n_tokens;
    let st = h.state.ptr();
    let eps = 1e-6f32;
    h.set_state(s.pos, t)?;

    // ---- embed: f16 -> f32 conversion is exact, so the tolerance is 0. ----
    let table = rng.vec(s.vocab * s.hidden, 0.1);
    let table16 = to_f16(&table);
    let table_f = from_f16(&table16);
    let mut tokens: Vec<i32> = (0..t).map(|_| rng.below(s.vocab) as i32).collect();
    tokens[0] = (s.vocab - 1) as i32;
    {
        let d_table = h.input(&table16)?;
        let d_tok = h.input(&tokens)?;
        let out = h.output(t * s.hidden * 4)?;
        let key = h.output(8)?; // the LM head's argmax key, which the program's embed zeroes
        h.run(&[launch::embed(st, d_tok.ptr(), d_table.ptr(), out.ptr(), s.hidden, s.vocab, t, key.ptr())], "embed")?;
        let g = h.read_f32(&out, t * s.hidden)?;
        let mut c = vec![0f32; t * s.hidden];
        cpu::embed(&tokens, &table_f, s.hidden, &mut c);
        h.record("embed", &g, &c, 0.0);
        let mut k = [u64::MAX];
        h.dev.dtoh(key.ptr(), &mut k, "argmax key read")?;
        h.record_flag("embed: zeroes the argmax key", k[0] == 0);
    }

    // ---- rms_norm / add_rms_norm ----
    // Tolerance: both sides sum n squares in f32 in different orders (relative error of the mean
    // <= n * 2^-24 each), then a handful of correctly rounded ops; bound
    // (2n + 8) * 2^-24 * max |out|.
    {
        let n = s.hidden;
        let mut x = rng.vec(t * n, 4.0);
        if t > 1 {
            for v in &mut x[n..2 * n] {
                *v *= 1000.0; // a large-magnitude row (residual streams grow)
            }
        }
        let w = rng.vec(n, 2.0);
        let b = rng.vec(t * n, 4.0);
        let tol_of = |c: &[f32]| (2.0 * n as f32 + 8.0) * U32 * max_abs(c);
        let (dx, dw, db) = (h.input(&x)?, h.input(&w)?, h.input(&b)?);

        let out = h.output(t * n * 4)?;
        h.run(&[launch::rms_norm(st, dx.ptr(), dw.ptr(), out.ptr(), n, eps, t)], "rms_norm")?;
        let g = h.read_f32(&out, t * n)?;
        let mut c = vec![0f32; t * n];
        cpu::rms_norm(&x, &w, eps, n, &mut c);
        h.record("rms_norm", &g, &c, tol_of(&c));

        let sum = h.output(t * n * 4)?;
        let out = h.output(t * n * 4)?;
        h.run(
            &[launch::add_rms_norm(st, dx.ptr(), db.ptr(), dw.ptr(), sum.ptr(), out.ptr(), n, eps, t)],
            "add_rms_norm",
        )?;
        let (gs, g) = (h.read_f32(&sum, t * n)?, h.read_f32(&out, t * n)?);
        let (mut cs, mut c) = (vec![0f32; t * n], vec![0f32; t * n]);
        cpu::add_rms_norm(&x, &b, &w, eps, n, &mut cs, &mut c);
        // The sum is one f32 addition on both sides: exact agreement.
        h.record("add_rms_norm/sum", &gs, &cs, 0.0);
        h.record("add_rms_norm/norm", &g, &c, tol_of(&c));

        // In place (sum_out == a), as the planner may schedule the residual stream.
        let a_inplace = h.input(&x)?;
        let out = h.output(t * n * 4)?;
        h.run(
            &[launch::add_rms_norm(st, a_inplace.ptr(), db.ptr(), dw.ptr(), a_inplace.ptr(), out.ptr(), n, eps, t)],
            "add_rms_norm in place",
        )?;
        let (gs, g) = (h.read_f32(&a_inplace, t * n)?, h.read_f32(&out, t * n)?);
        h.record("add_rms_norm/in-place sum", &gs, &cs, 0.0);
        h.record("add_rms_norm/in-place norm", &g, &c, tol_of(&c));
    }

    // ---- matmul ----
    // Tolerance: with S_j = sum_i |x_i w_ji|, two f32 dot products in different orders differ by at
    // most 2k * 2^-24 * S_j (gamma_k bound for each side). The cuBLAS path also rounds x to f16
    // after an exact power-of-two row scaling: + 2^-11 * S_j. Checked element by element (one
    // row of x is scaled by 1e5, so a global bound would be too loose for the other rows).
    {
        let qkv_n = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
        let cases: Vec<(&str, usize, usize, bool)> = vec![
            ("matmul qkv", qkv_n, s.hidden, false),
            ("matmul o_proj+res", s.hidden, s.n_heads * s.head_dim, true),
            ("matmul gate_up", 2 * s.ffn, s.hidden, false),
            ("matmul down+res", s.hidden, s.ffn, true),
        ];
        let max_k = cases.iter().map(|c| c.2).max().unwrap_or(0).max(s.hidden);
        let x16 = h.dev.alloc(t * max_k * 2, "check x16")?;
        let scale = h.dev.alloc(t * 4, "check scales")?;
        let gs = GemmScratch { x16: x16.ptr(), scale: scale.ptr(), rows: t };
        let mut modes = vec![if t == 1 { MatMulMode::Gemv } else { MatMulMode::Gemm }];
        if t > 1 {
            modes.push(MatMulMode::Gemv); // the no-cuBLAS fallback: one GEMV row per token
        }
        for &(name, n, k, res) in &cases {
            let mut x = rng.vec(t * k, 2.0);
            if t > 1 {
                for v in &mut x[k..2 * k] {
                    *v *= 1e5; // beyond the f16 range: exercises the row scaling of the GEMM path
                }
            }
            let w = rng.vec(n * k, 0.05);
            let w16 = to_f16(&w);
            let wf = from_f16(&w16);
            let r = rng.vec(t * n, 1.0);
            let mut c = vec![0f32; t * n];
            cpu::matmul(&x, &wf, t, n, k, res.then_some(r.as_slice()), &mut c);
            let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let wa: Vec<f32> = wf.iter().map(|v| v.abs()).collect();
            let mut sabs = vec![0f32; t * n];
            cpu::matmul(&xa, &wa, t, n, k, None, &mut sabs);
            let (dx, dw, dr) = (h.input(&x)?, h.input(&w16)?, h.input(&r)?);
            for &mode in &modes {
                if mode == MatMulMode::Gemm && !h.dev.has_cublas() {
                    continue;
                }
                let out = h.output(t * n * 4)?;
                let ops = launch::matmul(
                    h.dev,
                    st,
                    dx.ptr(),
                    dw.ptr(),
                    out.ptr(),
                    res.then_some(dr.ptr()),
                    n,
                    k,
                    t,
                    mode,
                    gs,
                );
                h.run(&ops, name)?;
                let g = h.read_f32(&out, t * n)?;
                let factor = match mode {
                    MatMulMode::Gemm => U16 + 2.0 * k as f32 * U32,
                    _ => 2.0 * k as f32 * U32,
                };
                // The residual add is one more rounding of |out|.
                let bound: Vec<f32> = sabs.iter().zip(&c).map(|(s, o)| factor * s + 2.0 * U32 * o.abs()).collect();
                let tag = match mode {
                    MatMulMode::Gemm => "cublas",
                    MatMulMode::Gemv => "gemv",
                    MatMulMode::LastRow => "gemv last row",
                };
                h.record_bounded(format!("{name} [{n}x{k}] {tag}"), &g, &c, &bound);
            }
        }

        // LM head: the last row only (the executor's default), with the (tied) embedding table.
        let k = s.hidden;
        let n = s.vocab;
        let x = rng.vec(t * k, 2.0);
        let last = &x[(t - 1) * k..];
        let mut c = vec![0f32; n];
        cpu::matmul(last, &table_f, 1, n, k, None, &mut c);
        let la: Vec<f32> = last.iter().map(|v| v.abs()).collect();
        let ta: Vec<f32> = table_f.iter().map(|v| v.abs()).collect();
        let mut sabs = vec![0f32; n];
        cpu::matmul(&la, &ta, 1, n, k, None, &mut sabs);
        let d_table = h.input(&table16)?;
        let dx = h.input(&x)?;
        let out = h.output(t * n * 4)?;
        let ops = launch::matmul(h.dev, st, dx.ptr(), d_table.ptr(), out.ptr(), None, n, k, t, MatMulMode::LastRow, gs);
        h.run(&ops, "lm_head")?;
        let g_all = h.read_f32(&out, t * n)?;
        let g = &g_all[(t - 1) * n..];
        let bound: Vec<f32> = sabs.iter().map(|s| 2.0 * k as f32 * U32 * s).collect();
        h.record_bounded(format!("matmul lm_head [{n}x{k}] last row"), g, &c, &bound);
        // Rows other than the last must be untouched (still poison).
        let untouched = g_all[..(t - 1) * n].iter().all(|v| v.is_nan());
        h.record_flag("matmul lm_head other rows untouched", untouched);

        // ---- argmax on these logits (exact index) ----
        scores::argmax_checks(h, rng, s, &g_all, n)?;
        scores::row_score_checks(h, rng, s, &g_all, n)?;
    }

    // ---- bias + RoPE + KV write ----
    let sh = cpu::AttnShape { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: s.head_dim };
    let heads = Heads { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: s.head_dim };
    let (ql, kl) = (sh.q_len(), sh.kv_len());
    let max_seq = s.pos + t + 3;
    // With a bias, and without (a null pointer, which the kernel reads as an all-zero bias; the
    // twin adds 0.0).
    for with_bias in [true, false] {
        let row = ql + 2 * kl;
        let qkv = rng.vec(t * row, 2.0);
        let bias = if with_bias { rng.vec(row, 4.0) } else { vec![0.0; row] };
        let (dq, db) = (h.input(&qkv)?, h.input(&bias)?);
        let outs = RopeOutputs::new(h, s, t)?;
        let args = outs.args(if with_bias { db.ptr() } else { 0 });
        h.run(&[launch::bias_rope_kv_write(st, dq.ptr(), args, t)], "bias_rope_kv_write")?;
        let RopeResult { q: gq, k: gk, v: gv } = outs.read(h)?;
        let (mut cq, mut ck, mut cv) = (vec![0f32; t * ql], vec![f32::NAN; max_seq * kl], vec![f32::NAN; max_seq * kl]);
        let cbias = with_bias.then_some(bias.as_slice());
        cpu::bias_rope_kv_write(&qkv, cbias, sh, s.rope_theta, s.pos, t, &mut ck, &mut cv, &mut cq);
        // q: the angle p * inv_freq is bit-identical on both sides (same f32 table and product);
        // CUDA's sincosf is within 2 ulp (libm within 1) and the rotation's two products may be
        // FMA-contracted: a few 2^-24 of |a| + |b| <= 2 max|x|. Bound 2^-19 * max|x + bias|.
        let xmax = qkv.iter().enumerate().map(|(i, v)| (v + bias[i % row]).abs()).fold(0.0f32, f32::max);
        let tol_q = xmax / 524_288.0;
        let name = if with_bias { "bias_rope_kv_write" } else { "bias_rope_kv_write, no bias" };
        h.record(format!("{name}/q"), &gq, &cq, tol_q);
        // K is stored in f32, like q; V as f16: + half an f16 ulp (2^-11 relative). Positions
        // outside [pos, pos + t) must keep their poison (NaN on both sides -> 0 difference).
        h.record(format!("{name}/k_cache"), &gk, &ck, tol_q);
        h.record(format!("{name}/v_cache"), &gv, &cv, U16 * max_abs(&cv));
    }

    // ---- attention ----
    // Tolerance: the GPU reads the same cache values the CPU gets (K f32, V f16 converted exactly
    // to f32).
    // Scores differ by the dot-product order: <= 2d * 2^-24 * scale * d * max|q| max|k|; softmax
    // weights then differ by that (relative) plus a few ulps of expf and an L-term sum in
    // different orders (2L * 2^-24); the output is a convex combination of V rows, so the error is
    // bounded by (score bound + 8 * 2^-24 + 2L * 2^-24) * max|v|.
    {
        let len = s.pos + t;
        let q = rng.vec(t * ql, 1.0);
        let kf = rng.vec(max_seq * kl, 4.0);
        let vf = from_f16(&to_f16(&rng.vec(max_seq * kl, 1.0)));
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let mut c = vec![0f32; t * ql];
        cpu::attention(&q, &kf, &vf, sh, scale, s.pos, t, &mut c);
        let d = s.head_dim as f32;
        let tol = (2.0 * d * U32 * scale * d * max_abs(&q) * max_abs(&kf) + 8.0 * U32 + 2.0 * len as f32 * U32)
            * max_abs(&vf);
        let (dq, dk, dv) = (h.input(&q)?, h.input(&kf)?, h.input(&to_f16(&vf))?);
        // Direct (prefill) mode, and split mode with the executor's split count for a 4k cache.
        let mut split_counts = vec![1usize];
        if t == 1 {
            split_counts.push(launch::attention_splits(s.n_kv_heads, h.dev.sm_count(), 4096));
            split_counts.push(3);
        }
        for splits in split_counts {
            let part_o = h.dev.alloc(t * s.n_heads * splits * s.head_dim * 4, "attention partials")?;
            let part_ml = h.dev.alloc(t * s.n_heads * splits * 2 * 4, "attention partials")?;
            let counters = h.dev.alloc(t * s.n_heads * 4, "attention counters")?;
            let out = h.output(t * ql * 4)?;
            let ops = launch::attention(
                st,
                dq.ptr(),
                dk.ptr(),
                dv.ptr(),
                out.ptr(),
                heads,
                scale,
                t,
                splits,
                AttnScratch { part_o: part_o.ptr(), part_ml: part_ml.ptr(), counters: counters.ptr() },
                0,
            );
            h.run(&ops, "attention")?;
            let g = h.read_f32(&out, t * ql)?;
            h.record(format!("attention splits={splits}"), &g, &c, tol);
            if splits > 1 {
                // Again on the same scratch: the merging block must have reset its counters.
                let out2 = h.output(t * ql * 4)?;
                let ops = launch::attention(
                    st,
                    dq.ptr(),
                    dk.ptr(),
                    dv.ptr(),
                    out2.ptr(),
                    heads,
                    scale,
                    t,
                    splits,
                    AttnScratch { part_o: part_o.ptr(), part_ml: part_ml.ptr(), counters: counters.ptr() },
                    0,
                );
                h.run(&ops, "attention relaunch")?;
                let g2 = h.read_f32(&out2, t * ql)?;
                h.record(format!("attention splits={splits} (relaunch)"), &g2, &c, tol);
                let case =
                    attn_fold::AttnCase { q: dq.ptr(), k_cache: dk.ptr(), v_cache: dv.ptr(), heads, scale, c: &c, tol };
                attn_fold::check_attn_fold(h, rng, s, &case, splits)?;
            }
        }
    }

    // ---- swiglu ----
    // Tolerance: x / (1 + exp(-x)) * up: expf within 2 ulp (libm 1), then three correctly rounded
    // ops: < 8 * 2^-24 relative per element; bound 8 * 2^-24 * max|out|.
    {
        let gu = rng.vec(t * 2 * s.ffn, 6.0);
        let dg = h.input(&gu)?;
        let out = h.output(t * s.ffn * 4)?;
        h.run(&[launch::swiglu(st, dg.ptr(), out.ptr(), s.ffn, t)], "swiglu")?;
        let g = h.read_f32(&out, t * s.ffn)?;
        let mut c = vec![0f32; t * s.ffn];
        cpu::swiglu(&gu, s.ffn, t, &mut c);
        h.record("swiglu", &g, &c, 8.0 * U32 * max_abs(&c));
    }

    // ---- the decode program's fused GEMVs ----
    gemv::check_gemv(h, rng, s)?;
    qprefill::check_qprefill(h, rng, s)
}

/// Prints rows as an aligned table (for the CLI and the device test script).
pub fn format_rows(rows: &[CheckRow]) -> String {
    let mut s =
        format!("{:<44} {:<40} {:>11} {:>11} {:>11}  {}\n", "kernel", "shape", "max_abs", "max_rel", "tol", "ok");
    for r in rows {
        s += &format!(
            "{:<44} {:<40} {:>11.3e} {:>11.3e} {:>11.3e}  {}\n",
            r.name,
            r.shape,
            r.max_abs,
            r.max_rel,
            r.tol,
            if r.pass { "PASS" } else { "FAIL" }
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    s += &format!("{} passed, {} failed\n", rows.len() - failed, failed);
    s
}
