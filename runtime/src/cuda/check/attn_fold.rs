//! The attention's split merge folded into o_proj (kernels/attn_fold.cuh): the attention launched
//! with a `fold_max`, then `gemv_q5_direct_store_fold` over a Q5_0 weight with a residual, against
//! the CPU twins in sequence (`attention`, `matmul`, the residual add) -- as the executor runs a
//! decode step's attention and o_proj when the fold applies. Each case at fold_max = the split
//! count (every active split merged by o_proj, in as many batches as it takes) and at the
//! executor's [`launch::ATTN_FOLD_MAX_SPLITS`] (longer rows merged by the attention, o_proj
//! reading its output).
//!
//! Bound, element by element: the attention's own bound `tol_attn` on every x_i (the merge in
//! another order and with online rescaling is within it: a convex combination, each weight a few
//! roundings off), carried through the product as tol_attn * M_j (M_j = sum_i m_ji, the
//! magnitudes of check/weights.rs), plus the quantized GEMV's (2k + 48) * 2^-24 * S_j without a
//! norm (check/gemv.rs) and the residual add's rounding (2 * 2^-24 * |out_j|).
use super::weights::TestWeight;
use super::{cpu, CheckShape, Harness, Rng, U32};
use crate::cuda::launch::{self, AttnFold, AttnScratch, GemvOut, Heads};
use crate::error::RuntimeError;
use crate::quant::WeightFormat;

/// The attention's inputs as the attention check made them, and its CPU output `c` [t, H*d] with
/// the bound `tol` of each element.
pub(super) struct AttnCase<'a> {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub heads: Heads,
    pub scale: f32,
    pub c: &'a [f32],
    pub tol: f32,
}

/// Runs the fold at `splits` splits for the one decode row of `s`: the attention, then o_proj
/// (n = 301 rows, not a multiple of the 16-row tile) merging the partials as it loads x. Shapes
/// whose row the Q5_0 direct store does not take (H*d not a multiple of 128) are skipped: the
/// executor keeps the attention's merge for them.
pub(super) fn check_attn_fold(
    h: &mut Harness,
    rng: &mut Rng,
    s: &CheckShape,
    a: &AttnCase,
    splits: usize,
) -> Result<(), RuntimeError> {
    let (t, k, n) = (s.n_tokens, a.heads.n_heads * a.heads.head_dim, 301);
    let tw = TestWeight::quant(rng, &[(WeightFormat::Q5_0, n)], k, true);
    let dw = tw.upload(h)?;
    let parts = dw.parts().expect("a quantized weight");
    let residual = rng.vec(t * n, 2.0);
    let dres = h.input(&residual)?;
    if !launch::takes_attn_fold(&parts, n, k) {
        return Ok(());
    }
    let mut fold_maxes = vec![splits, launch::ATTN_FOLD_MAX_SPLITS];
    fold_maxes.dedup();
    for fold_max in fold_maxes {
        // Poisoned (NaN): where o_proj merges the partials, the attention leaves x unwritten.
        let (x, out) = (h.output(t * k * 4)?, h.output(t * n * 4)?);
        let epi = GemvOut::Store { out: out.ptr(), residual: Some(dres.ptr()), last_row: false };
        let part_o = h.output(t * a.heads.n_heads * splits * a.heads.head_dim * 4)?;
        let part_ml = h.output(t * a.heads.n_heads * splits * 2 * 4)?;
        // Zero: the attention's merge leaves them zero, and a fold never touches them.
        let counters = h.input(&vec![0u32; t * a.heads.n_heads])?;
        let scratch = AttnScratch { part_o: part_o.ptr(), part_ml: part_ml.ptr(), counters: counters.ptr() };
        let st = h.state.ptr();
        let mut ops =
            launch::attention(st, a.q, a.k_cache, a.v_cache, x.ptr(), a.heads, a.scale, t, splits, scratch, fold_max);
        let fold = AttnFold { scratch, heads: a.heads, splits, fold_max };
        ops.push(
            launch::qgemv_attn_fold(h.dev, st, x.ptr(), parts, n, k, t, epi, fold)
                .ok_or_else(|| RuntimeError::Cuda("gemv_q5_direct_store_fold refused a shape it takes".into()))?,
        );
        h.run(&ops, "attention and o_proj, the merge folded")?;
        let g = h.read_f32(&out, t * n)?;

        let mut c = vec![0f32; t * n];
        cpu::matmul(a.c, &tw.values, t, n, k, Some(&residual), &mut c);
        let xa: Vec<f32> = a.c.iter().map(|v| v.abs()).collect();
        let mut sabs = vec![0f32; t * n];
        cpu::matmul(&xa, &tw.mags, t, n, k, None, &mut sabs);
        let ones = vec![1f32; t * k];
        let mut msum = vec![0f32; t * n];
        cpu::matmul(&ones, &tw.mags, t, n, k, None, &mut msum);
        let bound: Vec<f32> = (0..t * n)
            .map(|j| (2.0 * k as f32 + 48.0) * U32 * sabs[j] + a.tol * msum[j] + 2.0 * U32 * c[j].abs())
            .collect();
        h.record_bounded(
            format!("attention splits={splits} fold_max={fold_max}, o_proj Q5_0 [{n}x{k}] + residual"),
            &g,
            &c,
            &bound,
        );

        // Tight: against the merge of the GPU's own partials (or, for rows the attention merged,
        // its own x), so that only the fold's rounding is left -- a dropped or doubled split
        // moves the output by orders of magnitude more than this bound (asserted below).
        let dims = FoldDims { rows: t, heads: a.heads.n_heads, head_dim: a.heads.head_dim, splits, fold_max };
        let gpu_x = GpuAttention {
            x: h.read_f32(&x, t * k)?,
            part_o: h.read_f32(&part_o, t * a.heads.n_heads * splits * a.heads.head_dim)?,
            part_ml: h.read_f32(&part_ml, t * a.heads.n_heads * splits * 2)?,
        };
        let active: Vec<usize> = (0..t).map(|r| launch::attn_active_splits(s.pos + r + 1, splits)).collect();
        let merged = merge_partials(&dims, &gpu_x, &active, false);
        let (want, tight) = fold_reference(&tw, &merged, &residual, n, k);
        h.record_bounded(
            format!("attention splits={splits} fold_max={fold_max}, o_proj Q5_0 [{n}x{k}] vs the GPU's own partials"),
            &g,
            &want,
            &tight,
        );
        if active.iter().any(|&a| dims.folds(a)) {
            let dropped = merge_partials(&dims, &gpu_x, &active, true);
            let (off, _) = fold_reference(&tw, &dropped, &residual, n, k);
            h.record_flag(
                format!("attention splits={splits} fold_max={fold_max}: that bound catches a dropped split"),
                off.iter().zip(&want).zip(&tight).any(|((o, w), b)| (o - w).abs() > *b),
            );
        }
        let mut left = vec![1u32; t * a.heads.n_heads];
        h.dev.dtoh(counters.ptr(), &mut left, "attention counters")?;
        h.record_flag(
            format!("attention splits={splits} fold_max={fold_max} leaves its counters zero"),
            left.iter().all(|&v| v == 0),
        );
    }
    Ok(())
}

/// The shapes of a folded attention's output and partials.
struct FoldDims {
    rows: usize,
    heads: usize,
    head_dim: usize,
    splits: usize,
    fold_max: usize,
}

impl FoldDims {
    /// Whether o_proj merges a row of `active` splits (else the attention wrote x).
    fn folds(&self, active: usize) -> bool {
        active > 1 && active <= self.fold_max
    }
}

/// What the attention left on the device: x [rows, H*D], part_o [rows, H, splits, D], part_ml
/// [rows, H, splits, 2] (m, l).
struct GpuAttention {
    x: Vec<f32>,
    part_o: Vec<f32>,
    part_ml: Vec<f32>,
}

/// Bound of the fold's merge relative to the magnitude it sums, sum_s w_s |o_s| / L: the weights'
/// `expf` (2 ulp) of an argument rounded by up to half an ulp of |m_s - M| (<= 0.2 ulp of the
/// weight's share once multiplied by exp(-|m_s - M|)), the rescales between batches, up to 8
/// fused multiply-adds per element and as many into L, and the division: < 24 ulp; 64 leaves room.
const MERGE_ULPS: f64 = 64.0;

/// Row by row, x as o_proj is to see it (f64) and the merge's rounding bound per element: the
/// merge of the GPU's partials where o_proj folds the row (without its last active split when
/// `drop_last`), else the attention's own x with no merge term.
fn merge_partials(d: &FoldDims, g: &GpuAttention, active: &[usize], drop_last: bool) -> (Vec<f64>, Vec<f64>) {
    let k = d.heads * d.head_dim;
    let mut x: Vec<f64> = g.x.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0f64; d.rows * k];
    for (r, &act) in active.iter().enumerate().take(d.rows) {
        if !d.folds(act) {
            continue;
        }
        let used = if drop_last { act - 1 } else { act };
        for h in 0..d.heads {
            let base = (r * d.heads + h) * d.splits;
            let ml = |s: usize| (g.part_ml[2 * (base + s)] as f64, g.part_ml[2 * (base + s) + 1] as f64);
            let m_max = (0..used).map(|s| ml(s).0).fold(f64::NEG_INFINITY, f64::max);
            let l: f64 = (0..used).map(|s| (ml(s).0 - m_max).exp() * ml(s).1).sum();
            for i in 0..d.head_dim {
                let (mut acc, mut mag) = (0f64, 0f64);
                for s in 0..used {
                    let (w, o) = ((ml(s).0 - m_max).exp(), g.part_o[(base + s) * d.head_dim + i] as f64);
                    acc += w * o;
                    mag += w * o.abs();
                }
                let e = r * k + h * d.head_dim + i;
                x[e] = acc / l;
                tol[e] = MERGE_ULPS * U32 as f64 * mag / l;
            }
        }
    }
    (x, tol)
}

/// o_proj's output x W^T + residual from `merged` (x and its merge bound), and the bound of each
/// element: the merge's through |W|, the quantized GEMV's (2k + 48) * 2^-24 * S_j (check/gemv.rs)
/// and the residual add's rounding.
fn fold_reference(
    tw: &TestWeight,
    merged: &(Vec<f64>, Vec<f64>),
    residual: &[f32],
    n: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (x, tol) = merged;
    let rows = x.len() / k;
    let (mut want, mut bound) = (vec![0f32; rows * n], vec![0f32; rows * n]);
    for r in 0..rows {
        let (xr, tr) = (&x[r * k..(r + 1) * k], &tol[r * k..(r + 1) * k]);
        for j in 0..n {
            let (w, m) = (&tw.values[j * k..(j + 1) * k], &tw.mags[j * k..(j + 1) * k]);
            let (mut dot, mut sabs, mut merge) = (0f64, 0f64, 0f64);
            for i in 0..k {
                dot += w[i] as f64 * xr[i];
                sabs += m[i] as f64 * xr[i].abs();
                merge += m[i] as f64 * tr[i];
            }
            let out = dot + residual[r * n + j] as f64;
            let u = U32 as f64;
            want[r * n + j] = out as f32;
            bound[r * n + j] = (merge + (2.0 * k as f64 + 48.0) * u * sabs + 3.0 * u * out.abs()) as f32;
        }
    }
    (want, bound)
}
