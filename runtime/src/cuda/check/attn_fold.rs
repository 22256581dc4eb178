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
        let mut left = vec![1u32; t * a.heads.n_heads];
        h.dev.dtoh(counters.ptr(), &mut left, "attention counters")?;
        h.record_flag(
            format!("attention splits={splits} fold_max={fold_max} leaves its counters zero"),
            left.iter().all(|&v| v == 0),
        );
    }
    Ok(())
}
