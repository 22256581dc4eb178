//! The fused GEMV kernels -- f16 weights (kernels/matmul.cu part 1) and every quantized format
//! (kernels/qmatmul.cu), each with the norm prologue and the store, SwiGLU and bias+RoPE+KV-write
//! epilogues -- against the CPU twins run in sequence, exactly as the CPU executor runs a plan
//! `Gemv` step: `rms_norm`, `matmul`, then `swiglu` / `bias_rope_kv_write`. The weights' values
//! are the CPU reference's dequantisation (check/weights.rs).
//!
//! Bounds, element by element. With x' the normalised row and S_j = sum_i |x'_i| m_ji, m_ji the
//! magnitude of w_ji as the kernels add it up (|w| for floats; |dl (q - z)| + |ml| with a min):
//! - product y_j: both sides sum k products in different orders (2k * 2^-24 * S_j); the GPU
//!   applies the norm's scale once to the sum instead of to each x_i, and sums the k squares in
//!   another order ((2k + 8) * 2^-24 relative on the scale, so on y_j); the quantized kernels
//!   scale each half-group's sum after adding it up and subtract the min term once per group (a
//!   few roundings per group, within 48 * 2^-24 * S_j): e_j = (4k + 64) * 2^-24 * S_j
//!   (without a norm: (2k + 48) * 2^-24 * S_j).
//! - store: e_j + one rounding of the residual add (2 * 2^-24 * |out_j|).
//! - SwiGLU: silu has slope within [-0.1, 1.1], so |d out| <= 1.1 e_g |u| + |silu(g)| e_u + e_g e_u,
//!   plus silu's own few roundings (8 * 2^-24 * |out|).
//! - RoPE: a rotation is norm-preserving, so each rotated element moves by at most e_a + e_b, plus
//!   the sincosf difference of rope.cu's check (2^-19 (|a| + |b|)); V adds the f16 rounding of the
//!   store (2^-11 |value|); K is stored in f32.
use super::weights::{k_for, DevWeight, TestWeight};
use super::{cpu, CheckShape, Harness, Rng, RopeOutputs, RopeResult, U16, U32};
use crate::cuda::argmax_key;
use crate::cuda::launch::{self, GemvNorm, GemvOut, Op};
use crate::cuda::{q5_direct, q8_direct, qmma};
use crate::error::RuntimeError;
use crate::quant::{WeightFormat, ALL_FORMATS};

/// A random problem: x [t, k], norm weight [k], W [n, k] on the device, and the CPU product.
struct Problem {
    x: Vec<f32>,
    norm_w: Vec<f32>,
    w: DevWeight,
    /// CPU y [t, n] and its element bounds e_j.
    y: Vec<f32>,
    bound: Vec<f32>,
}

const EPS: f32 = 1e-6;

/// What the weights of one round of checks are: f16 matrices, or parts of a format.
#[derive(Clone, Copy, Debug)]
enum Recipe {
    F16,
    Quant(WeightFormat),
}

/// A format to pair with `f` in a mixed weight (the default model's Q5_0 q|k + Q8_0 v; a
/// Q4_K_M 1.5B's Q4_K + Q6_K), never `f` itself.
fn partner(f: WeightFormat) -> WeightFormat {
    let k_quant = f.row_multiple() == crate::quant::SUPER;
    match (k_quant, f) {
        (true, WeightFormat::Q6_K) => WeightFormat::Q4_K,
        (true, _) => WeightFormat::Q6_K,
        (false, WeightFormat::Q8_0) => WeightFormat::Q5_0,
        (false, _) => WeightFormat::Q8_0,
    }
}

impl Recipe {
    /// A weight of `parts` row counts (one part for f16 or a single entry); quantized weights with
    /// several row counts alternate between the format and its partner when `mixed`.
    fn weight(self, rng: &mut Rng, rows: &[usize], k: usize, mixed: bool) -> TestWeight {
        self.weight_ext(rng, rows, k, mixed, true)
    }

    /// [`Recipe::weight`], with the f16-maximum scales only when `extreme`.
    fn weight_ext(self, rng: &mut Rng, rows: &[usize], k: usize, mixed: bool, extreme: bool) -> TestWeight {
        match self {
            Recipe::F16 => TestWeight::f16(rng, rows.iter().sum(), k),
            Recipe::Quant(f) => {
                let parts: Vec<(WeightFormat, usize)> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| (if mixed && i % 2 == 1 { partner(f) } else { f }, r))
                    .collect();
                TestWeight::quant(rng, &parts, k, extreme)
            }
        }
    }
}

/// The GEMV launch for `w` (f16 or quantized kernels).
#[allow(clippy::too_many_arguments)]
fn gemv_op(
    h: &Harness,
    w: &DevWeight,
    x: u64,
    norm: Option<GemvNorm>,
    n: usize,
    k: usize,
    t: usize,
    epi: GemvOut,
) -> Op {
    let st = h.state.ptr();
    match (w.f16_ptr(), w.parts()) {
        (Some(p), _) => launch::gemv(h.dev, st, x, norm, p, n, k, t, epi),
        (None, Some(parts)) => launch::qgemv(h.dev, st, x, norm, parts, n, k, t, epi),
        (None, None) => unreachable!("a weight is f16 or quantized"),
    }
}

fn problem(h: &Harness, rng: &mut Rng, t: usize, tw: &TestWeight, norm: bool) -> Result<Problem, RuntimeError> {
    let (n, k) = (tw.n, tw.k);
    let mut x = rng.vec(t * k, 3.0);
    if t > 1 {
        for v in &mut x[k..2 * k] {
            *v *= 1000.0; // a large-magnitude row: the norm must bring it back
        }
    }
    let norm_w = rng.vec(k, 2.0);
    let wf = &tw.values;
    let xn = if norm {
        let mut v = vec![0f32; t * k];
        cpu::rms_norm(&x, &norm_w, EPS, k, &mut v);
        v
    } else {
        x.clone()
    };
    let mut y = vec![0f32; t * n];
    cpu::matmul(&xn, wf, t, n, k, None, &mut y);
    let xa: Vec<f32> = xn.iter().map(|v| v.abs()).collect();
    let mut sabs = vec![0f32; t * n];
    cpu::matmul(&xa, &tw.mags, t, n, k, None, &mut sabs);
    let factor = if norm { (4.0 * k as f32 + 64.0) * U32 } else { (2.0 * k as f32 + 48.0) * U32 };
    let bound = sabs.iter().map(|s| factor * s).collect();
    Ok(Problem { x, norm_w, w: tw.upload(h)?, y, bound })
}

pub(super) fn check_gemv(h: &mut Harness, rng: &mut Rng, s: &CheckShape) -> Result<(), RuntimeError> {
    for norm in [true, false] {
        check_recipe(h, rng, s, Recipe::F16, s.hidden, norm, "")?;
    }
    // Every format (floats as parts too), at the next row length it supports; the norm prologue
    // on for every other format, so that both forms run on every shape set. Twice: on the kernels
    // the launcher picks (the tensor-core ones where they take the weight), then with every
    // quantized GEMV forced onto kernels/qgemv.cu, the fallback.
    for (path, v2) in [("", false), ("v2:", true)] {
        qmma::force_v2(v2);
        let checked = ALL_FORMATS
            .into_iter()
            .try_for_each(|f| check_recipe(h, rng, s, Recipe::Quant(f), k_for(f, s.hidden), f.code() % 2 == 0, path));
        qmma::force_v2(false);
        checked?;
    }
    // Q5_0's store and SwiGLU run on kernels/q5_direct.cu above; once more on kernels/qmma.cu,
    // which still serves them when the direct kernels are turned off.
    let q5 = WeightFormat::Q5_0;
    q5_direct::force_off(true);
    let checked = check_recipe(h, rng, s, Recipe::Quant(q5), k_for(q5, s.hidden), q5.code() % 2 == 0, "qmma:");
    q5_direct::force_off(false);
    checked
}

/// The LM head's last row (a tall matrix: the store's rows per warp and grid-stride) against the
/// CPU, then its argmax epilogue; `which` names the kernel family in the check's lines. Returns
/// whether kernels/q8_direct.cu ran it.
#[allow(clippy::too_many_arguments)]
fn check_lm_head(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    recipe: Recipe,
    k: usize,
    norm: bool,
    tag: &str,
    which: &str,
) -> Result<bool, RuntimeError> {
    let t = s.n_tokens;
    // (Quantized: at most 20,003 rows, still many units per warp, for the CPU side's time.)
    let n = match recipe {
        Recipe::F16 => s.vocab + 3,
        Recipe::Quant(_) => s.vocab.min(20_000) + 3,
    };
    let tw = recipe.weight(rng, &[n], k, false);
    let p = problem(h, rng, t, &tw, norm)?;
    let (dx, dnw) = (h.input(&p.x)?, h.input(&p.norm_w)?);
    let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
    let out = h.output(t * n * 4)?;
    let op = gemv_op(h, &p.w, dx.ptr(), gn, n, k, t, GemvOut::Store { out: out.ptr(), residual: None, last_row: true });
    let (grid, kernel) = match &op {
        Op::Kernel(l) => (l.grid.0, l.kernel.name()),
        Op::Gemm(_) => (0, "cuBLAS"),
    };
    h.run(&[op], tag)?;
    let g = h.read_f32(&out, t * n)?;
    let last = (t - 1) * n;
    h.record_bounded(
        format!("{tag} lm_head{which} [{n}x{k}] last row, {grid} blocks of {kernel}"),
        &g[last..],
        &p.y[last..],
        &p.bound[last..],
    );
    check_lm_head_argmax(h, &p, t, n, k, norm, &g[last..], tag)?;
    Ok(kernel.starts_with("gemv_q8_direct"))
}

/// The LM head with the greedy argmax as its epilogue (`launch::qgemv_argmax`), where a
/// tensor-core entry point takes `p`'s weight ([`qmma::argmax_kernel`]): on `p`'s x its logits
/// are bit for bit the plain store's (`store_row`: the same code before the epilogue) and its key
/// names their argmax exactly; on an all-zero x every logit is 0 and the key names index 0 (ties
/// go to the lowest index); on an x with a NaN through the norm every logit is NaN and the key
/// names the last index (as `cpu::argmax`).
#[allow(clippy::too_many_arguments)]
fn check_lm_head_argmax(
    h: &mut Harness,
    p: &Problem,
    t: usize,
    n: usize,
    k: usize,
    norm: bool,
    store_row: &[f32],
    tag: &str,
) -> Result<(), RuntimeError> {
    let Some(parts) = p.w.parts().filter(|parts| qmma::argmax_kernel(parts, n, k).is_some()) else {
        return Ok(());
    };
    let zero = vec![0f32; t * k];
    let mut nan = p.x.clone();
    nan[(t - 1) * k + k / 2] = f32::NAN;
    let dnw = h.input(&p.norm_w)?;
    let cases: [(&str, &[f32], bool, Option<usize>); 3] =
        [("", &p.x, norm, None), (", x = 0", &zero, norm, Some(0)), (", a NaN in x", &nan, true, Some(n - 1))];
    for (what, x, with_norm, index) in cases {
        let dx = h.input(x)?;
        let out = h.output(t * n * 4)?;
        let key = h.input(&[0u64])?; // zeroed, as the program's embed leaves it
        let gn = with_norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let op = launch::qgemv_argmax(h.dev, h.state.ptr(), dx.ptr(), gn, parts, n, k, out.ptr(), key.ptr())
            .ok_or_else(|| RuntimeError::Cuda("qgemv_argmax refused a weight argmax_kernel takes".into()))?;
        h.run(&[op], tag)?;
        let row = h.read_f32(&out, t * n)?.split_off((t - 1) * n);
        let mut kv = [0u64];
        h.dev.dtoh(key.ptr(), &mut kv, "argmax key read")?;
        let (got, want) = (argmax_key::decode(kv[0]) as usize, cpu::argmax(&row));
        let name = format!("{tag} lm_head+argmax [{n}x{k}]{what}: index {got}, logits' argmax {want}");
        h.record_flag(name, got == want && index.is_none_or(|i| i == want));
        if what.is_empty() {
            let same = row.iter().zip(store_row).all(|(a, b)| a.to_bits() == b.to_bits());
            h.record_flag(format!("{tag} lm_head+argmax [{n}x{k}]: logits bit-identical to the store's"), same);
        }
    }
    Ok(())
}

/// The plain store with a residual on every row of `p` (`n` x `k`): out = y + r, one more rounding
/// of |out| than y's bound.
#[allow(clippy::too_many_arguments)]
fn check_store_residual(
    h: &mut Harness,
    rng: &mut Rng,
    t: usize,
    p: &Problem,
    n: usize,
    k: usize,
    norm: bool,
    tag: &str,
    name: String,
) -> Result<(), RuntimeError> {
    let (dx, dnw) = (h.input(&p.x)?, h.input(&p.norm_w)?);
    let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
    let r = rng.vec(t * n, 1.0);
    let dr = h.input(&r)?;
    let out = h.output(t * n * 4)?;
    h.run(
        &[gemv_op(
            h,
            &p.w,
            dx.ptr(),
            gn,
            n,
            k,
            t,
            GemvOut::Store { out: out.ptr(), residual: Some(dr.ptr()), last_row: false },
        )],
        tag,
    )?;
    let g = h.read_f32(&out, t * n)?;
    let c: Vec<f32> = p.y.iter().zip(&r).map(|(y, r)| y + r).collect();
    let bound: Vec<f32> = p.bound.iter().zip(&c).map(|(e, o)| e + 2.0 * U32 * o.abs()).collect();
    h.record_bounded(name, &g, &c, &bound);
    Ok(())
}

/// The store (+ residual, every row; last row; a tall LM head; a long down_proj-like row),
/// SwiGLU and RoPE epilogues with weights of `recipe` and rows of `k`; `path` prefixes the names
/// (which quantized kernels ran).
fn check_recipe(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    recipe: Recipe,
    k: usize,
    norm: bool,
    path: &str,
) -> Result<(), RuntimeError> {
    let t = s.n_tokens;
    {
        let tag = match recipe {
            Recipe::F16 if norm => "norm_gemv".to_string(),
            Recipe::F16 => "gemv".to_string(),
            Recipe::Quant(f) => format!("{path}{}gemv_{}", if norm { "norm_" } else { "" }, f.name()),
        };
        let tag = tag.as_str();

        // ---- store (+ residual), every row; and the LM head's last row ----
        // Quantized: q|k|v-like rows in two parts (a mixed-format weight, rows not a multiple of
        // a block's 8 warps).
        let n = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
        let tw = match recipe {
            Recipe::F16 => recipe.weight(rng, &[n], k, false),
            Recipe::Quant(_) => recipe.weight(rng, &[n - 3, 3], k, true),
        };
        let p = problem(h, rng, t, &tw, norm)?;
        check_store_residual(h, rng, t, &p, n, k, norm, tag, format!("{tag} [{n}x{k}] {} +residual", tw.label()))?;
        let (dx, dnw) = (h.input(&p.x)?, h.input(&p.norm_w)?);
        let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let out = h.output(t * n * 4)?;
        h.run(
            &[gemv_op(
                h,
                &p.w,
                dx.ptr(),
                gn,
                n,
                k,
                t,
                GemvOut::Store { out: out.ptr(), residual: None, last_row: true },
            )],
            tag,
        )?;
        let g = h.read_f32(&out, t * n)?;
        let last = (t - 1) * n;
        h.record_bounded(format!("{tag} [{n}x{k}] last row"), &g[last..], &p.y[last..], &p.bound[last..]);
        let untouched = g[..last].iter().all(|v| v.is_nan());
        h.record_flag(format!("{tag} last row: other rows untouched"), untouched);

        // ---- the LM head: a tall matrix, several rows per warp (3 rows past a multiple of 64,
        // so the last warps get partial row ranges); a Q8_0 one on kernels/q8_direct.cu, then
        // again on kernels/qmma.cu ----
        if check_lm_head(h, rng, s, recipe, k, norm, tag, "")? {
            q8_direct::force_off(true);
            let checked = check_lm_head(h, rng, s, recipe, k, norm, tag, " (qmma)");
            q8_direct::force_off(false);
            checked?;
        }

        // ---- a long row (down_proj: k = ffn), several warps per row, + residual ----
        if let Recipe::Quant(f) = recipe {
            let (n, k) = (s.hidden + 1, k_for(f, s.ffn));
            let tw = recipe.weight(rng, &[n], k, false);
            let p = problem(h, rng, t, &tw, norm)?;
            check_store_residual(
                h,
                rng,
                t,
                &p,
                n,
                k,
                norm,
                tag,
                format!("{tag} down [{n}x{k}] {} +residual", tw.label()),
            )?;
        }

        // ---- SwiGLU epilogue on a packed gate|up product ----
        // (Quantized: gate and up in the same format, then in two formats.)
        let mixes: &[bool] = match recipe {
            Recipe::F16 => &[false],
            Recipe::Quant(_) => &[false, true],
        };
        for &mixed in mixes {
            let ffn = s.ffn;
            let tw = recipe.weight(rng, &[ffn, ffn], k, mixed);
            let p = problem(h, rng, t, &tw, norm)?;
            let (dx, dnw) = (h.input(&p.x)?, h.input(&p.norm_w)?);
            let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
            let out = h.output(t * ffn * 4)?;
            h.run(&[gemv_op(h, &p.w, dx.ptr(), gn, 2 * ffn, k, t, GemvOut::SwiGlu { out: out.ptr() })], tag)?;
            let g = h.read_f32(&out, t * ffn)?;
            let mut c = vec![0f32; t * ffn];
            cpu::swiglu(&p.y, ffn, t, &mut c);
            let mut bound = vec![0f32; t * ffn];
            for row in 0..t {
                for i in 0..ffn {
                    let (gi, ui) = (row * 2 * ffn + i, row * 2 * ffn + ffn + i);
                    let (eg, eu) = (p.bound[gi], p.bound[ui]);
                    bound[row * ffn + i] = 1.1 * eg * p.y[ui].abs()
                        + cpu::silu(p.y[gi]).abs() * eu
                        + eg * eu
                        + 8.0 * U32 * c[row * ffn + i].abs();
                }
            }
            h.record_bounded(format!("{tag}_swiglu [{}x{k}] {}", 2 * ffn, tw.label()), &g, &c, &bound);
        }

        // ---- bias + RoPE + KV write epilogue on a packed qkv product ----
        // With a bias, then without: a null pointer, which the epilogue reads as an all-zero bias
        // (the twin adds 0.0).
        for with_bias in [true, false] {
            let sh = cpu::AttnShape { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: s.head_dim };
            let (ql, kl, d) = (sh.q_len(), sh.kv_len(), s.head_dim);
            let row = ql + 2 * kl;
            // Quantized: q|k in the format, v in its partner (as the default model's Q5_0 + Q8_0);
            // no f16-maximum scales: K and V are stored as f16, where such values overflow.
            let tw = recipe.weight_ext(rng, &[ql + kl, kl], k, true, false);
            let p = problem(h, rng, t, &tw, norm)?;
            let bias = if with_bias { rng.vec(row, 4.0) } else { vec![0.0; row] };
            let (dx, dnw, db) = (h.input(&p.x)?, h.input(&p.norm_w)?, h.input(&bias)?);
            let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
            let max_seq = s.pos + t + 3;
            let outs = RopeOutputs::new(h, s, t)?;
            let epi = GemvOut::Rope(outs.args(if with_bias { db.ptr() } else { 0 }));
            h.run(&[gemv_op(h, &p.w, dx.ptr(), gn, row, k, t, epi)], tag)?;
            let RopeResult { q: gq, k: gk, v: gv } = outs.read(h)?;
            let (mut cq, mut ck, mut cv) =
                (vec![0f32; t * ql], vec![f32::NAN; max_seq * kl], vec![f32::NAN; max_seq * kl]);
            let cbias = with_bias.then_some(bias.as_slice());
            cpu::bias_rope_kv_write(&p.y, cbias, sh, s.rope_theta, s.pos, t, &mut ck, &mut cv, &mut cq);
            // Bounds per packed element (rotation pairs share theirs), then scattered like the outputs.
            let half = d / 2;
            let (mut bq, mut bk, mut bv) = (vec![0f32; t * ql], vec![0f32; max_seq * kl], vec![0f32; max_seq * kl]);
            for tt in 0..t {
                let pos = s.pos + tt;
                for e in 0..row {
                    let (head, i) = (e / d, e % d);
                    let partner = if i < half { e + half } else { e - half };
                    let ye = |j: usize| (p.y[tt * row + j] + bias[j]).abs();
                    let (be, bp) = (p.bound[tt * row + e], p.bound[tt * row + partner]);
                    if head < s.n_heads {
                        bq[tt * ql + e] = be + bp + (ye(e) + ye(partner)) / 524_288.0;
                    } else if head < s.n_heads + s.n_kv_heads {
                        // K is stored in f32 (no rounding beyond q's).
                        bk[pos * kl + e - ql] = be + bp + (ye(e) + ye(partner)) / 524_288.0;
                    } else {
                        let c = cv[pos * kl + e - ql - kl];
                        bv[pos * kl + e - ql - kl] = be + U16 * c.abs();
                    }
                }
            }
            let tag = if with_bias { format!("{tag}_rope_kv_write") } else { format!("{tag}_rope_kv_write, no bias") };
            h.record_bounded(format!("{tag}/q {}", tw.label()), &gq, &cq, &bq);
            let written = s.pos * kl..(s.pos + t) * kl;
            h.record_bounded(
                format!("{tag}/k_cache"),
                &gk[written.clone()],
                &ck[written.clone()],
                &bk[written.clone()],
            );
            h.record_bounded(
                format!("{tag}/v_cache"),
                &gv[written.clone()],
                &cv[written.clone()],
                &bv[written.clone()],
            );
            // Other cache positions keep their poison (NaN on both sides counts as equal).
            let untouched = |v: &[f32]| v[..written.start].iter().chain(&v[written.end..]).all(|x| x.is_nan());
            h.record_flag(format!("{tag}: other positions untouched"), untouched(&gk) && untouched(&gv));
        }
    }
    Ok(())
}
