//! The decode GEMV's dot on integer products: a quantized weight row against a [`Digits`] row.
//!
//! For a group of 32 with canonical unsigned codes `q` (Q8_0: its signed codes) and the block's
//! digits, `C_j = sum_i q_i * d_j,i` is computed exactly in integers, and
//! `sum_i q_i v_i ~= s * (C0 + C1 / 254 + C2 / 254^2)`. The format's arithmetic then applies per
//! group (per 16 elements for Q2_K, Q3_K, Q6_K) in f32, as in [`affine_at`]: the element is
//! `a * (q - offset) + b`, so the group's dot is `a * s * (C0 + ...) + (b - offset * a) * sum v`
//! with `sum v` the f32 sum of the 16 inputs (the zero point and the minimum terms).
//!
//! The AVX2 path (`avx2_int.rs`) forms `C` with `_mm256_maddubs_epi16` (codes u8 x digits s8:
//! pairs at most 2 * 63 * 127 = 16,002, no saturation) and `_mm256_madd_epi16`, or for Q4_0,
//! Q4_1, Q4_K and Q8_0 with `_mm256_madd_epi16` on 16-bit codes against `254 d0 + d1` and `d2`
//! (Q8_0's -128 code needs no sign trick there); per 8-lane part of a group it has `254 C0 + C1`
//! and `C2` exactly (below 2^24), scales both by the group's `a s / 254^2` into two f32
//! accumulators and returns `254 acc01 + acc2`. [`dot_int_portable`] is its scalar twin,
//! literally the formula above.
//!
//! A short prefill's rows take [`dot_rows_int_multi`]: each weight group loaded and unpacked once
//! for up to four inputs, then per input the one-row dot's exact lane sums and f32 operations in
//! its order (the same bits). On AVX2 every format goes the 16-bit way there: the 8-bit route's
//! codes split into elements `4l, 4l + 1` and `4l + 2, 4l + 3` of each 4 (two `vpshufb`), against
//! the digits' 16-bit operands in that order ([`Digits::fill_multi`]), leave in 32-bit lane `l`
//! exactly the 8-bit route's `254 C0 + C1` for elements `4l..4l + 4`, with two multiply-adds per
//! input instead of four.
use half::f16;

use super::digits::Digits;
use super::{affine_at, offset};
use crate::quant::reference::{qh1, qh2, qs2, qs4};
use crate::quant::{PartView, WeightFormat, GROUP};

/// How many of the input's digits the integer dot multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntDigits {
    /// `d0, d1`: the input within `amax * 1.6e-5` per element (`0.5 / (127 * 254)`), a dot a
    /// third cheaper (one digit vector fewer per group). On the default model the decoded top-5
    /// logits move by at most 0.0022 against the float32 reference (the `--weights f16` plan's
    /// CPU error: 0.0046).
    Two,
    /// `d0, d1, d2`: the input at f32's accuracy (`amax * 6.1e-8`); top-5 logits within 0.00002.
    Three,
}

/// Which dot a one-row (decode) matmul of quantized weights uses on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotPath {
    /// [`dot_rows_int`] against the input's [`Digits`], that many of them (the default: two; see
    /// `benches/NOTES.md`).
    Int(IntDigits),
    /// [`super::dot_row`] against the f32 input (the dequantisation's own arithmetic).
    F32,
}

impl DotPath {
    /// The digits an integer path multiplies (None: the f32 path).
    pub fn int_digits(self) -> Option<IntDigits> {
        match self {
            DotPath::Int(n) => Some(n),
            DotPath::F32 => None,
        }
    }
}

/// The decode path: `QWEN_AOT_CPU_DOT=f32` selects [`DotPath::F32`] (for comparison), `int3` the
/// integer dot on all three digits, anything else on two. Read once.
pub fn decode_path() -> DotPath {
    static PATH: std::sync::OnceLock<DotPath> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| match std::env::var("QWEN_AOT_CPU_DOT").as_deref() {
        Ok("f32") => DotPath::F32,
        Ok("int3") => DotPath::Int(IntDigits::Three),
        _ => DotPath::Int(IntDigits::Two),
    })
}

/// The canonical unsigned codes of group `g` of row `r` (Q8_0: signed), offset not subtracted.
pub fn ucodes(v: &PartView, r: usize, g: usize, q: &mut [i32; GROUP]) {
    let p = v.format.planes();
    let gi = r * (v.k / GROUP) + g;
    let (qs, qh) = (&v.qs[gi * p.qs..(gi + 1) * p.qs], &v.qh[gi * p.qh..(gi + 1) * p.qh]);
    for (e, q) in q.iter_mut().enumerate() {
        *q = match v.format {
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q4_K => qs4(qs, e) as i32,
            WeightFormat::Q5_0 | WeightFormat::Q5_1 | WeightFormat::Q5_K => (qs4(qs, e) | qh1(qh, e) << 4) as i32,
            WeightFormat::Q8_0 => qs[e] as i8 as i32,
            WeightFormat::Q2_K => qs2(qs, e) as i32,
            WeightFormat::Q3_K => (qs2(qs, e) | qh1(qh, e) << 2) as i32,
            WeightFormat::Q6_K => (qs4(qs, e) | qh2(qh, e) << 4) as i32,
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => unreachable!("float formats have no codes"),
        };
    }
}

/// `sum_e w[r, e] * x[e]` for row `r` of a quantized part, `x` given as its digits (`n` of them
/// multiplied).
pub fn dot_row_int(v: &PartView, r: usize, x: &Digits, n: IntDigits) -> f32 {
    let mut out = [0.0f32];
    dot_rows_int(v, r, x, &mut out, n);
    out[0]
}

/// [`dot_row_int`] for rows `r0..r0 + out.len()` into `out` (the AVX2 path shares each block's
/// digits between rows).
pub fn dot_rows_int(v: &PartView, r0: usize, x: &Digits, out: &mut [f32], n: IntDigits) {
    assert!(
        r0 + out.len() <= v.rows && x.k() == v.k && !v.format.is_float(),
        "dot_rows_int: rows {r0}+{} of {}, digits of {} for k {}, format {}",
        out.len(),
        v.rows,
        x.k(),
        v.k,
        v.format.name()
    );
    #[cfg(target_arch = "x86_64")]
    if super::has_vnni() {
        // SAFETY: the CPU features were detected; the assert above is the callee's contract.
        return unsafe { super::avx2_int::dot_vnni(v, r0, x, out, n) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU features were detected; the assert above is the callee's contract.
        return unsafe { super::avx2_int::dot(v, r0, x, out, n) };
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_int_portable(v, r0 + i, x, n);
    }
}

/// [`dot_rows_int`] against several inputs at once (a short prefill's rows): rows
/// `r0..r0 + out.len() / xs.len()` of `v`, `out[i * xs.len() + t]` the dot of row `r0 + i` with
/// input `t`, bit for bit what [`dot_rows_int`] gives each input alone. Each weight group is
/// loaded and unpacked once for all the inputs (the AVX2 path: in blocks of up to four inputs),
/// so the weight is streamed once rather than once per input.
pub fn dot_rows_int_multi(v: &PartView, r0: usize, xs: &[Digits], out: &mut [f32], n: IntDigits) {
    let m = xs.len();
    assert!(
        m > 0
            && out.len().is_multiple_of(m)
            && r0 + out.len() / m <= v.rows
            && xs.iter().all(|x| x.k() == v.k && x.has_multi())
            && !v.format.is_float(),
        "dot_rows_int_multi: rows {r0}+{}/{m} of {}, k {}, format {}",
        out.len(),
        v.rows,
        v.k,
        v.format.name()
    );
    #[cfg(target_arch = "x86_64")]
    if super::has_vnni() {
        // SAFETY: the CPU features were detected; the assert above is the callee's contract.
        return unsafe { super::avx2_int::dot_multi_vnni(v, r0, xs, out, n) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU features were detected; the assert above is the callee's contract.
        return unsafe { super::avx2_int::dot_multi(v, r0, xs, out, n) };
    }
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        dot_int_portable_multi(v, r0 + i, xs, o, n);
    }
}

/// [`dot_int_portable`] of row `r` against every input of `xs` into `out[..xs.len()]`: each
/// group's codes and scales once, then per input the same operations in the same order (the same
/// bits as one input at a time).
pub fn dot_int_portable_multi(v: &PartView, r: usize, xs: &[Digits], out: &mut [f32], n: IntDigits) {
    assert!(
        r < v.rows && out.len() == xs.len() && xs.iter().all(|x| x.k() == v.k) && !v.format.is_float(),
        "dot_int_portable_multi: shapes"
    );
    let off = offset(v.format) as f32;
    let mut q = [0i32; GROUP];
    let mut acc = vec![(0.0f32, 0.0f32); xs.len()];
    for g in 0..v.k / GROUP {
        ucodes(v, r, g, &mut q);
        let (a, b) = affine_at(v, r, g, |bits| f16::from_bits(bits).to_f32());
        for (x, (acc, accm)) in xs.iter().zip(&mut acc) {
            let (s, d) = x.block(g);
            for h in 0..2 {
                let c = |j: usize| (16 * h..16 * h + 16).map(|e| q[e] * d[GROUP * j + e] as i32).sum::<i32>();
                let c2 = if n == IntDigits::Three { c(2) as f32 / (254.0 * 254.0) } else { 0.0 };
                let sq = s * (c(0) as f32 + c(1) as f32 / 254.0 + c2);
                *acc += a[h] * sq;
                *accm += (b[h] - off * a[h]) * x.sum16(2 * g + h);
            }
        }
    }
    for (o, (acc, accm)) in out.iter_mut().zip(acc) {
        *o = acc + accm;
    }
}

/// The scalar twin of the integer dot: per half group, exact `C0, C1, C2` (two digits: `C2` left
/// out), then the module doc's f32 formula.
pub fn dot_int_portable(v: &PartView, r: usize, x: &Digits, n: IntDigits) -> f32 {
    assert!(r < v.rows && x.k() == v.k && !v.format.is_float(), "dot_int_portable: shapes");
    let off = offset(v.format) as f32;
    let mut q = [0i32; GROUP];
    let (mut acc, mut accm) = (0.0f32, 0.0f32);
    for g in 0..v.k / GROUP {
        ucodes(v, r, g, &mut q);
        let (a, b) = affine_at(v, r, g, |bits| f16::from_bits(bits).to_f32());
        let (s, d) = x.block(g);
        for h in 0..2 {
            let c = |j: usize| (16 * h..16 * h + 16).map(|e| q[e] * d[GROUP * j + e] as i32).sum::<i32>();
            let c2 = if n == IntDigits::Three { c(2) as f32 / (254.0 * 254.0) } else { 0.0 };
            let sq = s * (c(0) as f32 + c(1) as f32 / 254.0 + c2);
            acc += a[h] * sq;
            accm += (b[h] - off * a[h]) * x.sum16(2 * g + h);
        }
    }
    acc + accm
}
