//! The quantized weights' other kernels (kernels/qlookup.cu) for every format:
//! - `dequant_q_f16` (a slice of rows to f16, the prefill GEMM's input) and `dequant_q_f16_x4`
//!   (whole weights, several per launch): equal, bit for bit, to the CPU reference's values
//!   rounded to f16 (both round the same f32 value once);
//! - `embed_q` (rows of a table to f32): equal, bit for bit, to the reference's rows;
//! - the prefill matmul on cuBLAS over dequantised slices (scratch smaller than W, so W goes in
//!   several slices written into column ranges of out), and over a whole dequantised copy at a
//!   padded row count (`launch::gemm_rows`): x and W are each rounded to f16 once
//!   (2^-11 relative each) and the GEMM sums in f32: |g - c| <= (2 * 2^-11 + 2k * 2^-24) * S_j
//!   + the residual add's rounding, S_j = sum_i |x_i| m_ji (m: magnitudes, check/weights.rs).
use super::weights::{k_for, TestWeight};
use super::{cpu, CheckShape, Harness, Rng, U16, U32};
use crate::cuda::launch::{self, DequantJob, Dequantised, GemmScratch, MatMulMode};
use crate::error::RuntimeError;
use crate::quant::ALL_FORMATS;

pub(super) fn check_qprefill(h: &mut Harness, rng: &mut Rng, s: &CheckShape) -> Result<(), RuntimeError> {
    let t = s.n_tokens;
    let st = h.state.ptr();
    for f in ALL_FORMATS {
        let k = k_for(f, s.hidden);
        let n = 301;
        let tw = TestWeight::quant(rng, &[(f, n)], k, true);
        let dw = tw.upload(h)?;
        let parts = dw.parts().expect("a quantized weight");
        // The cuBLAS path rounds W to f16: weights beyond its range (65504) are not representable
        // there (as in an f16 plan), so that check uses scales within range.
        let tw16 = TestWeight::quant(rng, &[(f, n)], k, false);
        let dw16 = tw16.upload(h)?;
        let parts16 = dw16.parts().expect("a quantized weight");

        // ---- dequant_q_f16 of rows 7..107 ----
        let (r0, rows) = (7, 100);
        let out = h.output(rows * k * 2)?;
        h.run(&[launch::dequant_q_f16(parts, r0, rows, k, out.ptr())], "dequant_q_f16")?;
        let g = h.read_f16(&out, rows * k)?;
        let c: Vec<f32> = tw.values[r0 * k..(r0 + rows) * k].iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
        let same = g.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        // (The f16 maximum scale overflows f16 on both sides: compared by bits, not by difference.)
        h.record_flag(format!("dequant_q_f16 {} [{rows}x{k}] from row {r0}: bit-exact", f.name()), same);

        // ---- dequant_q_f16_x4: whole weights, three in one launch ----
        let outs = [h.output(n * k * 2)?, h.output(n * k * 2)?, h.output(n * k * 2)?];
        let sources = [(&tw, parts), (&tw16, parts16), (&tw, parts)];
        let jobs: Vec<DequantJob> =
            sources.iter().zip(&outs).map(|(&(_, parts), o)| DequantJob { parts, n, k, out: o.ptr() }).collect();
        h.run(&launch::dequant_q_f16_batch(&jobs), "dequant_q_f16_x4")?;
        let mut same = true;
        for (&(w, _), o) in sources.iter().zip(&outs) {
            let g = h.read_f16(o, n * k)?;
            let c = w.values.iter().map(|v| half::f16::from_f32(*v).to_f32());
            same &= g.iter().zip(c).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        }
        h.record_flag(format!("dequant_q_f16_x4 {} 3 x [{n}x{k}]: bit-exact", f.name()), same);
        let w16_ready = &outs[1]; // tw16's f16 copy, for the GEMM below

        // ---- embed_q: random rows (ids < n) ----
        let ids: Vec<i32> = (0..t).map(|_| rng.below(n) as i32).collect();
        let dids = h.input(&ids)?;
        let out = h.output(t * k * 4)?;
        let key = h.output(8)?; // as the f16 embed's check
        h.run(&[launch::embed_q(st, dids.ptr(), parts, out.ptr(), k, n, t, key.ptr())], "embed_q")?;
        let mut kv = [u64::MAX];
        h.dev.dtoh(key.ptr(), &mut kv, "argmax key read")?;
        h.record_flag(format!("embed_q {}: zeroes the argmax key", f.name()), kv[0] == 0);
        let g = h.read_f32(&out, t * k)?;
        let c: Vec<f32> =
            ids.iter().flat_map(|&id| tw.values[id as usize * k..(id as usize + 1) * k].iter().copied()).collect();
        let same = g.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits());
        h.record_flag(format!("embed_q {} [{t} rows of {n}x{k}]: bit-exact", f.name()), same);

        // ---- prefill matmul on cuBLAS, W in slices of 64 rows (+ residual) ----
        if t > 1 && h.dev.has_cublas() {
            let x = rng.vec(t * k, 2.0);
            let r = rng.vec(t * n, 1.0);
            let mut c = vec![0f32; t * n];
            cpu::matmul(&x, &tw16.values, t, n, k, Some(&r), &mut c);
            let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let mut sabs = vec![0f32; t * n];
            cpu::matmul(&xa, &tw16.mags, t, n, k, None, &mut sabs);
            let (dx, dr) = (h.input(&x)?, h.input(&r)?);
            let factor = 2.0 * U16 + 2.0 * k as f32 * U32;
            let bound: Vec<f32> = sabs.iter().zip(&c).map(|(s, o)| factor * s + 2.0 * U32 * o.abs()).collect();
            // In 64-row slices through a small scratch; then from the copy dequantised above, with
            // scratch for more rows than t, so the GEMM runs at a padded row count (gemm_rows).
            let wscratch = h.output(200 * k * 2)?;
            let variants = [
                ("64-row slices", Dequantised::Slices { scratch: wscratch.ptr(), bytes: 64 * k * 2 }, t),
                (
                    "200-row scratch, 128-row slices",
                    Dequantised::Slices { scratch: wscratch.ptr(), bytes: 200 * k * 2 },
                    t,
                ),
                ("dequantised whole, padded rows", Dequantised::At(w16_ready.ptr()), t.next_multiple_of(64)),
            ];
            for (what, w16, cap) in variants {
                // Scratch buffers live until the run below has synchronised.
                let x16 = h.output(cap * k * 2)?;
                let scale = h.output(cap * 4)?;
                let gs = GemmScratch { x16: x16.ptr(), scale: scale.ptr(), rows: cap };
                let out = h.output(cap * n * 4)?;
                let (x, r, mode) = (dx.ptr(), Some(dr.ptr()), MatMulMode::Gemm);
                let ops = launch::matmul_q(h.dev, st, x, parts16, out.ptr(), r, n, k, t, mode, gs, w16);
                h.run(&ops, "matmul_q cublas")?;
                let g = h.read_f32(&out, t * n)?;
                let rows = launch::gemm_rows(t, cap);
                h.record_bounded(
                    format!("matmul_q {} [{n}x{k}] cublas, {what} ({rows} rows)", f.name()),
                    &g,
                    &c,
                    &bound,
                );
            }
        }
    }
    check_mixed_parts(h, rng, s)
}

/// A weight of three parts in different formats (as a fused qkv of Q5_0 q|k and Q8_0 v, plus a
/// K-quant), dequantised by `dequant_q_f16` in slices that cross the part boundaries and by
/// `dequant_q_f16_x4` beside a weight of another shape: bit-exact, like the single-format rows.
fn check_mixed_parts(h: &mut Harness, rng: &mut Rng, s: &CheckShape) -> Result<(), RuntimeError> {
    use crate::quant::WeightFormat::{Q4_K, Q5_0, Q6_K, Q8_0};
    let k = k_for(Q6_K, s.hidden);
    let mixed = TestWeight::quant(rng, &[(Q5_0, 40), (Q8_0, 37), (Q6_K, 50)], k, true);
    let other = TestWeight::quant(rng, &[(Q4_K, 19)], k, true);
    let (dm, dother) = (mixed.upload(h)?, other.upload(h)?);
    let (pm, pother) = (dm.parts().expect("quantized"), dother.parts().expect("quantized"));
    let bit_exact = |g: &[f32], values: &[f32]| {
        g.iter().zip(values).all(|(a, b)| {
            let c = half::f16::from_f32(*b).to_f32();
            a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan())
        })
    };
    // Slices of 16 rows from row 30: 30..46 crosses the Q5_0 | Q8_0 boundary at 40, 62..78 the
    // Q8_0 | Q6_K one at 77.
    let mut same = true;
    for r0 in (30..127).step_by(16) {
        let rows = 16.min(127 - r0);
        let out = h.output(rows * k * 2)?;
        h.run(&[launch::dequant_q_f16(pm, r0, rows, k, out.ptr())], "dequant_q_f16 mixed")?;
        same &= bit_exact(&h.read_f16(&out, rows * k)?, &mixed.values[r0 * k..(r0 + rows) * k]);
    }
    h.record_flag(format!("dequant_q_f16 Q5_0|Q8_0|Q6_K [127x{k}] in 16-row slices: bit-exact"), same);
    let (om, oo) = (h.output(127 * k * 2)?, h.output(19 * k * 2)?);
    let jobs =
        [DequantJob { parts: pm, n: 127, k, out: om.ptr() }, DequantJob { parts: pother, n: 19, k, out: oo.ptr() }];
    h.run(&launch::dequant_q_f16_batch(&jobs), "dequant_q_f16_x4 mixed")?;
    let same =
        bit_exact(&h.read_f16(&om, 127 * k)?, &mixed.values) && bit_exact(&h.read_f16(&oo, 19 * k)?, &other.values);
    h.record_flag(format!("dequant_q_f16_x4 Q5_0|Q8_0|Q6_K [127x{k}] + Q4_K [19x{k}]: bit-exact"), same);
    Ok(())
}
