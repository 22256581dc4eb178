//! The fused GEMV kernels (kernels/matmul.cu part 1: norm prologue; store, SwiGLU and
//! bias+RoPE+KV-write epilogues) against the CPU twins run in sequence, exactly as the CPU
//! executor runs a plan `Gemv` step: `rms_norm`, `matmul`, then `swiglu` / `bias_rope_kv_write`.
//!
//! Bounds, element by element. With x' the normalised row and S_j = sum_i |x'_i w_ji|:
//! - product y_j: both sides sum k products in different orders (2k * 2^-24 * S_j); the GPU
//!   applies the norm's scale once to the sum instead of to each x_i, and sums the k squares in
//!   another order ((2k + 8) * 2^-24 relative on the scale, so on y_j): e_j = (4k + 16) * 2^-24 * S_j
//!   (without a norm: 2k * 2^-24 * S_j).
//! - store: e_j + one rounding of the residual add (2 * 2^-24 * |out_j|).
//! - SwiGLU: silu has slope within [-0.1, 1.1], so |d out| <= 1.1 e_g |u| + |silu(g)| e_u + e_g e_u,
//!   plus silu's own few roundings (8 * 2^-24 * |out|).
//! - RoPE: a rotation is norm-preserving, so each rotated element moves by at most e_a + e_b, plus
//!   the sincosf difference of rope.cu's check (2^-19 (|a| + |b|)); K and V add the f16 rounding of
//!   the store (2^-11 |value|).
use super::{cpu, from_f16, to_f16, CheckShape, Harness, Rng, U16, U32};
use crate::cuda::executor::inv_freq_table;
use crate::cuda::launch::{self, GemvNorm, GemvOut, Heads, RopeArgs};
use crate::error::RuntimeError;

/// A random problem: x [t, k], norm weight [k], W [n, k] (f16-exact), and the CPU product.
struct Problem {
    x: Vec<f32>,
    norm_w: Vec<f32>,
    w16: Vec<half::f16>,
    /// CPU y [t, n] and its element bounds e_j.
    y: Vec<f32>,
    bound: Vec<f32>,
}

const EPS: f32 = 1e-6;

fn problem(rng: &mut Rng, t: usize, n: usize, k: usize, norm: bool) -> Problem {
    let mut x = rng.vec(t * k, 3.0);
    if t > 1 {
        for v in &mut x[k..2 * k] {
            *v *= 1000.0; // a large-magnitude row: the norm must bring it back
        }
    }
    let norm_w = rng.vec(k, 2.0);
    let w16 = to_f16(&rng.vec(n * k, 0.05));
    let wf = from_f16(&w16);
    let xn = if norm {
        let mut v = vec![0f32; t * k];
        cpu::rms_norm(&x, &norm_w, EPS, k, &mut v);
        v
    } else {
        x.clone()
    };
    let mut y = vec![0f32; t * n];
    cpu::matmul(&xn, &wf, t, n, k, None, &mut y);
    let xa: Vec<f32> = xn.iter().map(|v| v.abs()).collect();
    let wa: Vec<f32> = wf.iter().map(|v| v.abs()).collect();
    let mut sabs = vec![0f32; t * n];
    cpu::matmul(&xa, &wa, t, n, k, None, &mut sabs);
    let factor = if norm { (4.0 * k as f32 + 16.0) * U32 } else { 2.0 * k as f32 * U32 };
    let bound = sabs.iter().map(|s| factor * s).collect();
    Problem { x, norm_w, w16, y, bound }
}

pub(super) fn check_gemv(h: &mut Harness, rng: &mut Rng, s: &CheckShape) -> Result<(), RuntimeError> {
    let t = s.n_tokens;
    let st = h.state.ptr();
    let k = s.hidden;
    for norm in [true, false] {
        let tag = if norm { "norm_gemv" } else { "gemv" };

        // ---- store (+ residual), every row; and the LM head's last row ----
        let n = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim;
        let p = problem(rng, t, n, k, norm);
        let (dx, dnw, dw) = (h.input(&p.x)?, h.input(&p.norm_w)?, h.input(&p.w16)?);
        let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let r = rng.vec(t * n, 1.0);
        let dr = h.input(&r)?;
        let out = h.output(t * n * 4)?;
        h.run(&[launch::gemv(h.dev, st, dx.ptr(), gn, dw.ptr(), n, k, t, GemvOut::Store { out: out.ptr(), residual: Some(dr.ptr()), last_row: false })], tag)?;
        let g = h.read_f32(&out, t * n)?;
        let c: Vec<f32> = p.y.iter().zip(&r).map(|(y, r)| y + r).collect();
        let bound: Vec<f32> = p.bound.iter().zip(&c).map(|(e, o)| e + 2.0 * U32 * o.abs()).collect();
        h.record_bounded(format!("{tag} [{n}x{k}] +residual"), &g, &c, &bound);

        let out = h.output(t * n * 4)?;
        h.run(&[launch::gemv(h.dev, st, dx.ptr(), gn, dw.ptr(), n, k, t, GemvOut::Store { out: out.ptr(), residual: None, last_row: true })], tag)?;
        let g = h.read_f32(&out, t * n)?;
        let last = (t - 1) * n;
        h.record_bounded(format!("{tag} [{n}x{k}] last row"), &g[last..], &p.y[last..], &p.bound[last..]);
        let untouched = g[..last].iter().all(|v| v.is_nan());
        h.record_flag(format!("{tag} last row: other rows untouched"), untouched);

        // ---- the LM head: a tall matrix, several rows per warp (3 rows past a multiple of 64,
        // so the last warps get partial row ranges) ----
        let n = s.vocab + 3;
        let p = problem(rng, t, n, k, norm);
        let (dx, dnw, dw) = (h.input(&p.x)?, h.input(&p.norm_w)?, h.input(&p.w16)?);
        let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let out = h.output(t * n * 4)?;
        let rpw = launch::gemv_rows_per_warp(n, k, launch::gemv_warps_per_row(n, k, h.dev.sm_count()), h.dev.sm_count());
        h.run(&[launch::gemv(h.dev, st, dx.ptr(), gn, dw.ptr(), n, k, t, GemvOut::Store { out: out.ptr(), residual: None, last_row: true })], tag)?;
        let g = h.read_f32(&out, t * n)?;
        let last = (t - 1) * n;
        h.record_bounded(format!("{tag} lm_head [{n}x{k}] last row, {rpw} rows/warp"), &g[last..], &p.y[last..], &p.bound[last..]);

        // ---- SwiGLU epilogue on a packed gate|up product ----
        let ffn = s.ffn;
        let p = problem(rng, t, 2 * ffn, k, norm);
        let (dx, dnw, dw) = (h.input(&p.x)?, h.input(&p.norm_w)?, h.input(&p.w16)?);
        let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let out = h.output(t * ffn * 4)?;
        h.run(&[launch::gemv(h.dev, st, dx.ptr(), gn, dw.ptr(), 2 * ffn, k, t, GemvOut::SwiGlu { out: out.ptr() })], tag)?;
        let g = h.read_f32(&out, t * ffn)?;
        let mut c = vec![0f32; t * ffn];
        cpu::swiglu(&p.y, ffn, t, &mut c);
        let mut bound = vec![0f32; t * ffn];
        for row in 0..t {
            for i in 0..ffn {
                let (gi, ui) = (row * 2 * ffn + i, row * 2 * ffn + ffn + i);
                let (eg, eu) = (p.bound[gi], p.bound[ui]);
                bound[row * ffn + i] = 1.1 * eg * p.y[ui].abs() + cpu::silu(p.y[gi]).abs() * eu + eg * eu + 8.0 * U32 * c[row * ffn + i].abs();
            }
        }
        h.record_bounded(format!("{tag}_swiglu [{}x{k}]", 2 * ffn), &g, &c, &bound);

        // ---- bias + RoPE + KV write epilogue on a packed qkv product ----
        let sh = cpu::AttnShape { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: s.head_dim };
        let (ql, kl, d) = (sh.q_len(), sh.kv_len(), s.head_dim);
        let row = ql + 2 * kl;
        let p = problem(rng, t, row, k, norm);
        let bias = rng.vec(row, 4.0);
        let (dx, dnw, dw, db) = (h.input(&p.x)?, h.input(&p.norm_w)?, h.input(&p.w16)?, h.input(&bias)?);
        let gn = norm.then_some(GemvNorm { weight: dnw.ptr(), eps: EPS });
        let inv = h.input(&inv_freq_table(s.rope_theta, d))?;
        let max_seq = s.pos + t + 3;
        let q_out = h.output(t * ql * 4)?;
        let kc = h.output(max_seq * kl * 2)?;
        let vc = h.output(max_seq * kl * 2)?;
        let heads = Heads { n_heads: s.n_heads, n_kv_heads: s.n_kv_heads, head_dim: d };
        let epi = GemvOut::Rope(RopeArgs { bias: db.ptr(), inv_freq: inv.ptr(), q_out: q_out.ptr(), k_cache: kc.ptr(), v_cache: vc.ptr(), heads });
        h.run(&[launch::gemv(h.dev, st, dx.ptr(), gn, dw.ptr(), row, k, t, epi)], tag)?;
        let gq = h.read_f32(&q_out, t * ql)?;
        let gk = h.read_f16(&kc, max_seq * kl)?;
        let gv = h.read_f16(&vc, max_seq * kl)?;
        let (mut cq, mut ck, mut cv) = (vec![0f32; t * ql], vec![f32::NAN; max_seq * kl], vec![f32::NAN; max_seq * kl]);
        cpu::bias_rope_kv_write(&p.y, &bias, sh, s.rope_theta, s.pos, t, &mut ck, &mut cv, &mut cq);
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
                    let c = ck[pos * kl + e - ql];
                    bk[pos * kl + e - ql] = be + bp + (ye(e) + ye(partner)) / 524_288.0 + U16 * c.abs();
                } else {
                    let c = cv[pos * kl + e - ql - kl];
                    bv[pos * kl + e - ql - kl] = be + U16 * c.abs();
                }
            }
        }
        h.record_bounded(format!("{tag}_rope_kv_write/q"), &gq, &cq, &bq);
        let written = s.pos * kl..(s.pos + t) * kl;
        h.record_bounded(format!("{tag}_rope_kv_write/k_cache"), &gk[written.clone()], &ck[written.clone()], &bk[written.clone()]);
        h.record_bounded(format!("{tag}_rope_kv_write/v_cache"), &gv[written.clone()], &cv[written.clone()], &bv[written.clone()]);
        // Other cache positions keep their poison (NaN on both sides counts as equal).
        let untouched = |v: &[f32]| v[..written.start].iter().chain(&v[written.end..]).all(|x| x.is_nan());
        h.record_flag(format!("{tag}_rope_kv_write: other positions untouched"), untouched(&gk) && untouched(&gv));
    }
    Ok(())
}
