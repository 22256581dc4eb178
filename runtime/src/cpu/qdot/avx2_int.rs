//! AVX2 twins of [`super::int`]'s integer dot and [`super::digits`]' quantisation. Callers must
//! have detected the features (see [`super::has_avx2`]).
//!
//! A group's codes meet the block's digits in one of two routes:
//! - 8-bit (Q5_*, Q2_K, Q3_K, Q6_K): the 32 unsigned codes as bytes ([`ucodes`]);
//!   `_mm256_maddubs_epi16` with each digit vector (u8 x s8 pairs, at most 2 * 63 * 127 = 16,002:
//!   no saturation), then `_mm256_madd_epi16` by 254 (d0) or 1 (d1, d2). Lane `l` of the result
//!   holds elements `4l..4l + 4`, so lanes 0-3 are the group's first 16 elements, 4-7 the rest.
//! - 16-bit (Q4_0, Q4_1, Q4_K, Q8_0): the codes as two vectors of 16 i16 (elements 0..16 and
//!   16..32), `_mm256_madd_epi16` against `254 d0 + d1` and against `d2` (Q8_0's code -128 is just
//!   an i16 here: no sign trick). Lanes mix the halves, so only formats with one scale per group.
//!
//! Either way `t01 = 254 C0 + C1` and `t2 = C2` per lane are exact (|t01| <= 4 * 128 * 32,385 <
//! 2^24, so their f32 conversions are exact too). The row accumulates `scale * t01` and
//! `scale * t2` apart (`scale` = the group's `a * s / 254^2`) and returns `254 acc01 + acc2`: two
//! short dependency chains per group rather than one long one, which this kernel (bound by how
//! many groups the out-of-order window overlaps) measured a few percent faster.
use std::arch::x86_64::*;

use super::avx2::{affine, hsum, ucodes, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use super::digits::{Digits, BASE, BLOCK_BYTES, PAD16};
use super::int::IntDigits;
use super::{has_min, offset, sub16};
use crate::quant::{PartView, WeightFormat, GROUP};

/// A group's integer sums per lane: `t01 = 254 C0 + C1` and `t2 = C2` (exact; see the module doc).
type Sums = (__m256i, __m256i);

/// The 8-bit route: `q` the group's 32 unsigned codes, `d` its block's three digit vectors
/// (`TWO`: `d[2]` unused, `t2` zero). `VNNI`: the same sums with `vpdpbusd` (u8 x s8 products
/// summed per 4 into i32 in one instruction: `maddubs` + `madd` by 1 without the i16 step, which
/// never saturates here anyway), so the same integers; only the VNNI entry points may instantiate
/// it. (`vpmulld` for the 254: 3 cycles on Zen 4, where this was measured; 10 on recent Intel
/// cores, where two shifts and a subtraction may do better -- not measured.)
#[inline(always)]
unsafe fn group8<const TWO: bool, const VNNI: bool>(q: __m256i, d: &[__m256i; 3]) -> Sums {
    if VNNI {
        let zero = _mm256_setzero_si256();
        // SAFETY: VNNI is only instantiated under the VNNI entry points (`dot_vnni`,
        // `dot_multi_vnni`), whose callers detected AVX512-F, -VNNI and -VL.
        return unsafe {
            let c0 = _mm256_dpbusd_epi32(zero, q, d[0]);
            let t01 = _mm256_dpbusd_epi32(_mm256_mullo_epi32(c0, _mm256_set1_epi32(254)), q, d[1]);
            (t01, if TWO { zero } else { _mm256_dpbusd_epi32(zero, q, d[2]) })
        };
    }
    let p0 = _mm256_maddubs_epi16(q, d[0]);
    let p1 = _mm256_maddubs_epi16(q, d[1]);
    let ones = _mm256_set1_epi16(1);
    let t01 = _mm256_add_epi32(_mm256_madd_epi16(p0, _mm256_set1_epi16(254)), _mm256_madd_epi16(p1, ones));
    if TWO {
        return (t01, _mm256_setzero_si256());
    }
    (t01, _mm256_madd_epi16(_mm256_maddubs_epi16(q, d[2]), ones))
}

/// The 16-bit route: `q` the codes of elements 0..16 and 16..32; `x` the block's `254 d0 + d1`
/// and `d2`, each as elements 0..16 and 16..32 (`TWO`: `x[2..]` unused, `t2` zero).
/// `VNNI`: the second product added by `vpdpwssd` (i16 pairs summed into i32: `madd` + add).
#[inline(always)]
unsafe fn group16<const TWO: bool, const VNNI: bool>(q: [__m256i; 2], x: &[__m256i; 4]) -> Sums {
    // SAFETY: VNNI is only instantiated under the VNNI entry points (`dot_vnni`,
    // `dot_multi_vnni`), whose callers detected AVX512-F, -VNNI and -VL.
    let madd2 = |a: __m256i, b: __m256i, c: __m256i, d: __m256i| match VNNI {
        true => unsafe { _mm256_dpwssd_epi32(_mm256_madd_epi16(a, b), c, d) },
        false => _mm256_add_epi32(_mm256_madd_epi16(a, b), _mm256_madd_epi16(c, d)),
    };
    let t01 = madd2(q[0], x[0], q[1], x[1]);
    if TWO {
        return (t01, _mm256_setzero_si256());
    }
    (t01, madd2(q[0], x[2], q[1], x[3]))
}

/// Whether format `F` takes the 16-bit route.
const fn wide<const F: u8>() -> bool {
    matches!(F, Q4_0 | Q4_1 | Q4_K | Q8_0)
}

/// The 16-bit route's codes of group `gi`: elements 0..16 and 16..32 as i16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn codes16<const F: u8>(v: &PartView, gi: usize) -> [__m256i; 2] {
    let qs = v.format.planes().qs;
    // SAFETY: `gi` is a group of the part, so the qs plane holds its `qs` bytes (16 or 32).
    unsafe {
        let p = v.qs.as_ptr().add(gi * qs);
        let lo = _mm_loadu_si128(p as *const __m128i);
        if F == Q8_0 {
            [_mm256_cvtepi8_epi16(lo), _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16) as *const __m128i))]
        } else {
            // Byte e % 16 in lane e: its low nibble is element e, its high nibble element 16 + e.
            let b = _mm256_cvtepu8_epi16(lo);
            [_mm256_and_si256(b, _mm256_set1_epi16(0x0f)), _mm256_srli_epi16(b, 4)]
        }
    }
}

/// Row `r` of a quantized part against the digits of `x` (`TWO`: `d0`, `d1` only; the d2 loads,
/// products and accumulator are left out). The caller checked the row and
/// `x.k() == v.k`. Per chunk of up to [`CHUNK`] groups: the scales (`a * s / 254^2` per half)
/// and the zero-point or minimum term first, then the groups. (Two rows at a time, sharing each
/// block's digit loads, measured no faster: the kernel is bound by its vector operations, and
/// slower at k = 4864.)
#[inline(always)]
unsafe fn dot_row<const F: u8, const TWO: bool, const VNNI: bool>(v: &PartView, r: usize, x: &Digits) -> f32 {
    let fmt = v.format;
    let groups = v.k / GROUP;
    let qs_bytes = fmt.planes().qs;
    let (halves16, zero_or_min) = (sub16(fmt), has_min(fmt) || offset(fmt) != 0);
    let off = _mm256_set1_ps(offset(fmt) as f32);
    // sum over groups of scale * t01 and of scale * t2 (apart: two short dependency chains
    // instead of one long one), then 254 * acc01 + acc2.
    let (mut acc01, mut acc2, mut accm) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
    let mut scale = [0.0f32; 2 * CHUNK];
    // Formats with a scale per 16: each group's [a0 x4 | a1 x4] vector, expanded per chunk.
    let mut scale8 = [_mm256_setzero_ps(); CHUNK];
    let (d8, x01, x2) = (x.d8.as_ptr(), x.x01.as_ptr(), x.x2.as_ptr());
    for c0 in (0..groups).step_by(CHUNK) {
        let nc = CHUNK.min(groups - c0);
        for g0 in (c0..c0 + nc).step_by(8) {
            let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
            let h0 = 2 * (g0 - c0);
            // SAFETY: g0 + min(8, ..) <= groups and the row is in the part (the caller's
            // check). The per-16 arrays hold 2 * groups + PAD16 entries, so 2 * g0 + 16 is in
            // bounds (g0 < groups), and h0 + 16 <= 2 * CHUNK.
            unsafe {
                affine::<F>(v, r, g0, 8.min(c0 + nc - g0), &mut a, &mut b);
                for hh in [0, 8] {
                    let av = _mm256_loadu_ps(a.as_ptr().add(hh));
                    if zero_or_min {
                        // b - offset * a (offset * a is exact: the offsets are powers of two).
                        let m = _mm256_fnmadd_ps(off, av, _mm256_loadu_ps(b.as_ptr().add(hh)));
                        accm = _mm256_fmadd_ps(m, _mm256_loadu_ps(x.sx16.as_ptr().add(2 * g0 + hh)), accm);
                    }
                    let s = _mm256_loadu_ps(x.s16.as_ptr().add(2 * g0 + hh));
                    let sc = _mm256_mul_ps(av, s);
                    if halves16 {
                        // Halves 2j, 2j + 1 of the 8 here are group g0 - c0 + hh / 2 + j's.
                        for j in 0..4 {
                            let (e, o) = (2 * j, 2 * j + 1);
                            let idx = _mm256_setr_epi32(e, e, e, e, o, o, o, o);
                            scale8[(h0 + hh) / 2 + j as usize] = _mm256_permutevar8x32_ps(sc, idx);
                        }
                    } else {
                        _mm256_storeu_ps(scale.as_mut_ptr().add(h0 + hh), sc);
                    }
                }
            }
        }
        // 8-bit route: each group's codes unpacked one iteration ahead (software pipelining: the
        // kernel is bound by how many groups' dependency chains the out-of-order window holds;
        // +5-8 % measured). The 16-bit route measured no faster so.
        // SAFETY (both ucodes calls): groups c0.. and gi + 1 < c0 + nc are in the part.
        let mut qn = if wide::<F>() { _mm256_setzero_si256() } else { unsafe { ucodes::<F>(v, r * groups + c0) } };
        for j in 0..nc {
            let (g, gi) = (c0 + j, r * groups + c0 + j);
            let q = qn;
            if !wide::<F>() && j + 1 < nc {
                qn = unsafe { ucodes::<F>(v, gi + 1) };
            }
            // The codes plane PREFETCH bytes ahead (a hint: any address is allowed).
            _mm_prefetch::<_MM_HINT_T0>(v.qs.as_ptr().wrapping_add(gi * qs_bytes + PREFETCH) as *const i8);
            // SAFETY: the group is in the part (the caller's check); the digit arrays hold
            // k = 32 * groups elements, so block g's are in bounds.
            let (t01, t2) = unsafe {
                if wide::<F>() {
                    let ld = |p: *const i16| _mm256_loadu_si256(p as *const __m256i);
                    let (a, b) = (x01.add(GROUP * g), x2.add(GROUP * g));
                    let zero = _mm256_setzero_si256();
                    let d2 = if TWO { [zero, zero] } else { [ld(b), ld(b.add(16))] };
                    group16::<TWO, VNNI>(codes16::<F>(v, gi), &[ld(a), ld(a.add(16)), d2[0], d2[1]])
                } else {
                    let p = d8.add(BLOCK_BYTES * g);
                    let ld = |o: usize| _mm256_loadu_si256(p.add(o) as *const __m256i);
                    let d2 = if TWO { _mm256_setzero_si256() } else { ld(2 * GROUP) };
                    group8::<TWO, VNNI>(q, &[ld(0), ld(GROUP), d2])
                }
            };
            let sc = if halves16 { scale8[j] } else { _mm256_set1_ps(scale[2 * j]) };
            acc01 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t01), sc, acc01);
            if !TWO {
                acc2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t2), sc, acc2);
            }
        }
    }
    hsum(_mm256_add_ps(_mm256_fmadd_ps(acc01, _mm256_set1_ps(BASE), acc2), accm))
}

// dot_row reads the 16 halves of a block of 8 groups from any group on.
const _: () = assert!(PAD16 >= 16);

/// How far ahead in the codes plane the group loop prefetches: the largest plane, streamed by
/// two threads, ran 5-10 % faster with it (hardware prefetch alone left part of the latency).
const PREFETCH: usize = 4096;

/// Groups per chunk of [`dot_row`]: the chunk's scales sit in a stack array.
const CHUNK: usize = 32;

/// Rows `r0..r0 + out.len()` of one format.
#[inline(always)]
unsafe fn dot_format<const F: u8, const VNNI: bool>(
    v: &PartView,
    r0: usize,
    x: &Digits,
    out: &mut [f32],
    n: IntDigits,
) {
    for (i, o) in out.iter_mut().enumerate() {
        // SAFETY: rows r0.. are in the part (the caller's check on out.len()).
        *o = unsafe {
            match n {
                IntDigits::Two => dot_row::<F, true, VNNI>(v, r0 + i, x),
                IntDigits::Three => dot_row::<F, false, VNNI>(v, r0 + i, x),
            }
        };
    }
}

/// Rows `r0..r0 + out.len()` of quantized part `v` against the digits `x`. The caller checked
/// that those rows exist, `x.k() == v.k` and that the format is quantized.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(v: &PartView, r0: usize, x: &Digits, out: &mut [f32], n: IntDigits) {
    // SAFETY: the caller's checks are what the body assumes.
    unsafe { dot_any::<false>(v, r0, x, out, n) }
}

/// [`dot`] with the integer products on AVX512-VNNI (256-bit, so AVX512-VL too): the same sums,
/// so the same bits, in fewer instructions. The caller also detected those (see
/// [`super::has_vnni`]). The whole kernel is inlined here, so the VNNI instructions compile in
/// this function's features.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn dot_vnni(v: &PartView, r0: usize, x: &Digits, out: &mut [f32], n: IntDigits) {
    // SAFETY: as for `dot`.
    unsafe { dot_any::<true>(v, r0, x, out, n) }
}

#[inline(always)]
unsafe fn dot_any<const VNNI: bool>(v: &PartView, r0: usize, x: &Digits, out: &mut [f32], n: IntDigits) {
    // SAFETY (every arm): the caller's checks are what the body assumes.
    unsafe {
        match v.format {
            WeightFormat::Q4_0 => dot_format::<Q4_0, VNNI>(v, r0, x, out, n),
            WeightFormat::Q4_1 => dot_format::<Q4_1, VNNI>(v, r0, x, out, n),
            WeightFormat::Q5_0 => dot_format::<Q5_0, VNNI>(v, r0, x, out, n),
            WeightFormat::Q5_1 => dot_format::<Q5_1, VNNI>(v, r0, x, out, n),
            WeightFormat::Q8_0 => dot_format::<Q8_0, VNNI>(v, r0, x, out, n),
            WeightFormat::Q2_K => dot_format::<Q2_K, VNNI>(v, r0, x, out, n),
            WeightFormat::Q3_K => dot_format::<Q3_K, VNNI>(v, r0, x, out, n),
            WeightFormat::Q4_K => dot_format::<Q4_K, VNNI>(v, r0, x, out, n),
            WeightFormat::Q5_K => dot_format::<Q5_K, VNNI>(v, r0, x, out, n),
            WeightFormat::Q6_K => dot_format::<Q6_K, VNNI>(v, r0, x, out, n),
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => unreachable!("float formats have no codes"),
        }
    }
}

/// Row `r` of a quantized part against `R` inputs' digits at once (`xs`, `R` of them), into
/// `out[..R]`: [`dot_row`]'s f32 operations in [`dot_row`]'s order for each input (so each result
/// has the bits [`dot_row`] gives it), with what does not depend on the input done once: the
/// group's codes unpacked (and, 16-bit route, widened), the chunk's `a`, `b` and `b - offset a`.
/// A prefill's few rows then stream the weight once instead of once per row. The caller checked
/// the row and that every input has `k = v.k`.
#[inline(always)]
unsafe fn dot_row_multi<const F: u8, const TWO: bool, const R: usize, const VNNI: bool>(
    v: &PartView,
    r: usize,
    xs: &[Digits],
    out: &mut [f32],
) {
    let (xs, out) = (&xs[..R], &mut out[..R]);
    let fmt = v.format;
    let groups = v.k / GROUP;
    let qs_bytes = fmt.planes().qs;
    let (halves16, zero_or_min) = (sub16(fmt), has_min(fmt) || offset(fmt) != 0);
    let off = _mm256_set1_ps(offset(fmt) as f32);
    let mut acc01 = [_mm256_setzero_ps(); R];
    let mut acc2 = [_mm256_setzero_ps(); R];
    let mut accm = [_mm256_setzero_ps(); R];
    let mut scale = [[0.0f32; 2 * CHUNK]; R];
    let mut scale8 = [[_mm256_setzero_ps(); CHUNK]; R];
    // The 16-bit operands: as stored for the 16-bit route, in PAIRS order for the 8-bit one.
    let x01: [*const i16; R] =
        std::array::from_fn(|t| if wide::<F>() { xs[t].x01.as_ptr() } else { xs[t].x01p.as_ptr() });
    let x2: [*const i16; R] = std::array::from_fn(|t| if wide::<F>() { xs[t].x2.as_ptr() } else { xs[t].x2p.as_ptr() });
    // Bytes 4l, 4l + 1 (then 4l + 2, 4l + 3) of each 128-bit lane zero-extended to i16.
    let z = -1i8;
    let pairs = [
        _mm256_setr_epi8(
            0, z, 1, z, 4, z, 5, z, 8, z, 9, z, 12, z, 13, z, 0, z, 1, z, 4, z, 5, z, 8, z, 9, z, 12, z, 13, z,
        ),
        _mm256_setr_epi8(
            2, z, 3, z, 6, z, 7, z, 10, z, 11, z, 14, z, 15, z, 2, z, 3, z, 6, z, 7, z, 10, z, 11, z, 14, z, 15, z,
        ),
    ];
    let s16: [*const f32; R] = std::array::from_fn(|t| xs[t].s16.as_ptr());
    let sx16: [*const f32; R] = std::array::from_fn(|t| xs[t].sx16.as_ptr());
    for c0 in (0..groups).step_by(CHUNK) {
        let nc = CHUNK.min(groups - c0);
        for g0 in (c0..c0 + nc).step_by(8) {
            let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
            let h0 = 2 * (g0 - c0);
            // SAFETY: as in dot_row, for every input (each has the per-16 arrays of k = v.k).
            unsafe {
                affine::<F>(v, r, g0, 8.min(c0 + nc - g0), &mut a, &mut b);
                for hh in [0, 8] {
                    let av = _mm256_loadu_ps(a.as_ptr().add(hh));
                    // b - offset * a, as dot_row has it (unused without a zero point or minimum).
                    let m = _mm256_fnmadd_ps(off, av, _mm256_loadu_ps(b.as_ptr().add(hh)));
                    for t in 0..R {
                        if zero_or_min {
                            accm[t] = _mm256_fmadd_ps(m, _mm256_loadu_ps(sx16[t].add(2 * g0 + hh)), accm[t]);
                        }
                        let sc = _mm256_mul_ps(av, _mm256_loadu_ps(s16[t].add(2 * g0 + hh)));
                        if halves16 {
                            for j in 0..4 {
                                let (e, o) = (2 * j, 2 * j + 1);
                                let idx = _mm256_setr_epi32(e, e, e, e, o, o, o, o);
                                scale8[t][(h0 + hh) / 2 + j as usize] = _mm256_permutevar8x32_ps(sc, idx);
                            }
                        } else {
                            _mm256_storeu_ps(scale[t].as_mut_ptr().add(h0 + hh), sc);
                        }
                    }
                }
            }
        }
        // SAFETY (both ucodes calls): groups c0.. and gi + 1 < c0 + nc are in the part.
        let mut qn = if wide::<F>() { _mm256_setzero_si256() } else { unsafe { ucodes::<F>(v, r * groups + c0) } };
        for j in 0..nc {
            let (g, gi) = (c0 + j, r * groups + c0 + j);
            let q = qn;
            if !wide::<F>() && j + 1 < nc {
                qn = unsafe { ucodes::<F>(v, gi + 1) };
            }
            _mm_prefetch::<_MM_HINT_T0>(v.qs.as_ptr().wrapping_add(gi * qs_bytes + PREFETCH) as *const i8);
            // SAFETY: the group is in the part; every input's digit arrays hold k elements.
            unsafe {
                // The 16-bit route either way: its own codes, or the 8-bit route's bytes split
                // into elements 4l, 4l + 1 and 4l + 2, 4l + 3 of each 4 (as i16) against the
                // operands in PAIRS order, which leaves 32-bit lane l the 8-bit route's sums.
                let q16 = if wide::<F>() {
                    codes16::<F>(v, gi)
                } else {
                    [_mm256_shuffle_epi8(q, pairs[0]), _mm256_shuffle_epi8(q, pairs[1])]
                };
                for t in 0..R {
                    let ld = |p: *const i16| _mm256_loadu_si256(p as *const __m256i);
                    let (a, b) = (x01[t].add(GROUP * g), x2[t].add(GROUP * g));
                    let zero = _mm256_setzero_si256();
                    let d2 = if TWO { [zero, zero] } else { [ld(b), ld(b.add(16))] };
                    let (t01, t2) = group16::<TWO, VNNI>(q16, &[ld(a), ld(a.add(16)), d2[0], d2[1]]);
                    let sc = if halves16 { scale8[t][j] } else { _mm256_set1_ps(scale[t][2 * j]) };
                    acc01[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t01), sc, acc01[t]);
                    if !TWO {
                        acc2[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t2), sc, acc2[t]);
                    }
                }
            }
        }
    }
    for t in 0..R {
        out[t] = hsum(_mm256_add_ps(_mm256_fmadd_ps(acc01[t], _mm256_set1_ps(BASE), acc2[t]), accm[t]));
    }
}

/// The most inputs [`dot_row_multi`] takes at once; more go in balanced blocks. (Eight at once,
/// with their accumulators past the 16 vector registers, measured slower even at four inputs.)
pub(super) const MULTI_MAX: usize = 4;

/// Rows `r0..` of one format against every input of `xs`, `out[i * xs.len() + t]` row `r0 + i`'s
/// dot with input `t`; the inputs in blocks of at most [`MULTI_MAX`], as even as can be.
#[inline(always)]
unsafe fn dot_format_multi<const F: u8, const TWO: bool, const VNNI: bool>(
    v: &PartView,
    r0: usize,
    xs: &[Digits],
    out: &mut [f32],
) {
    let m = xs.len();
    let blocks = m.div_ceil(MULTI_MAX);
    for (i, o) in out.chunks_exact_mut(m).enumerate() {
        let mut t0 = 0;
        for b in 0..blocks {
            let nb = m / blocks + usize::from(b < m % blocks);
            let (x, o) = (&xs[t0..t0 + nb], &mut o[t0..t0 + nb]);
            // SAFETY: row r0 + i is in the part (the caller's check on out.len()).
            unsafe {
                match nb {
                    1 => dot_row_multi::<F, TWO, 1, VNNI>(v, r0 + i, x, o),
                    2 => dot_row_multi::<F, TWO, 2, VNNI>(v, r0 + i, x, o),
                    3 => dot_row_multi::<F, TWO, 3, VNNI>(v, r0 + i, x, o),
                    4 => dot_row_multi::<F, TWO, 4, VNNI>(v, r0 + i, x, o),
                    _ => unreachable!("blocks of 1..={MULTI_MAX}"),
                }
            }
            t0 += nb;
        }
    }
}

/// Rows `r0..r0 + out.len() / xs.len()` of quantized part `v` against each of the inputs `xs`:
/// `out[i * xs.len() + t]` is, bit for bit, [`dot`]'s result for row `r0 + i` and input `t`.
/// The caller checked that those rows exist, that `out.len()` is a multiple of `xs.len() > 0`,
/// that every input has `k() == v.k` and that the format is quantized.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_multi(v: &PartView, r0: usize, xs: &[Digits], out: &mut [f32], n: IntDigits) {
    // SAFETY: the caller's checks are what the body assumes.
    unsafe { dot_multi_any::<false>(v, r0, xs, out, n) }
}

/// [`dot_multi`] on AVX512-VNNI (see [`dot_vnni`]; the caller detected the features).
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub unsafe fn dot_multi_vnni(v: &PartView, r0: usize, xs: &[Digits], out: &mut [f32], n: IntDigits) {
    // SAFETY: as for `dot_multi`.
    unsafe { dot_multi_any::<true>(v, r0, xs, out, n) }
}

#[inline(always)]
unsafe fn dot_multi_any<const VNNI: bool>(v: &PartView, r0: usize, xs: &[Digits], out: &mut [f32], n: IntDigits) {
    macro_rules! by_format {
        ($two:literal) => {
            // SAFETY (every arm): the caller's checks are what the body assumes.
            unsafe {
                match v.format {
                    WeightFormat::Q4_0 => dot_format_multi::<Q4_0, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q4_1 => dot_format_multi::<Q4_1, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q5_0 => dot_format_multi::<Q5_0, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q5_1 => dot_format_multi::<Q5_1, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q8_0 => dot_format_multi::<Q8_0, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q2_K => dot_format_multi::<Q2_K, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q3_K => dot_format_multi::<Q3_K, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q4_K => dot_format_multi::<Q4_K, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q5_K => dot_format_multi::<Q5_K, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::Q6_K => dot_format_multi::<Q6_K, $two, VNNI>(v, r0, xs, out),
                    WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => {
                        unreachable!("float formats have no codes")
                    }
                }
            }
        };
    }
    match n {
        IntDigits::Two => by_format!(true),
        IntDigits::Three => by_format!(false),
    }
}

/// Four vectors of 8 integer-valued floats (elements 0..32) as 32 bytes in element order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pack_i8(d: [__m256; 4]) -> __m256i {
    let i = d.map(|x| _mm256_cvtps_epi32(x));
    // packs work per 128-bit lane: dwords come out as e0-3 e8-11 e16-19 e24-27 | e4-7 e12-15 ...
    let p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Eight integer-valued floats in each of `a`, `b` (elements 0..8, 8..16) as 16 i16 in order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn pack_i16(a: __m256, b: __m256) -> __m256i {
    // packs works per 128-bit lane: qwords come out as a0-3 b0-3 | a4-7 b4-7.
    _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b)), 0b11_01_10_00)
}

/// [`Digits::fill`] in one pass over `x` (whole blocks of 32; `d`'s buffers sized for it): per
/// block [`super::digits::quantize_block`]'s f32 operations on 8 lanes (bit-identical digits and
/// `s`), `254 d0 + d1` and `d2` as i16, `s / 254^2` and the sums of `x` per 16 (in another order
/// than the scalar sums).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_row(x: &[f32], d: &mut Digits) {
    let sign = _mm256_set1_ps(-0.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let base = _mm256_set1_ps(BASE);
    const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let (d8, x01, x2) =
        (d.d8.chunks_exact_mut(BLOCK_BYTES), d.x01.chunks_exact_mut(GROUP), d.x2.chunks_exact_mut(GROUP));
    let blocks = x.chunks_exact(GROUP).zip(d8.zip(x01.zip(x2))).zip(d.s.iter_mut().zip(d.s16.chunks_exact_mut(2)));
    for (b, ((xb, (db, (x01b, x2b))), (sb, s16b))) in blocks.enumerate() {
        // SAFETY: xb holds 32 floats (4 loads of 8), db 96 bytes (3 stores of 32), x01b and x2b
        // 32 i16 each (2 stores of 16).
        unsafe {
            let xp = xb.as_ptr();
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xp.add(8 * i)));
            d.sx16[2 * b] = hsum(_mm256_add_ps(v[0], v[1]));
            d.sx16[2 * b + 1] = hsum(_mm256_add_ps(v[2], v[3]));
            let abs = v.map(|v| _mm256_andnot_ps(sign, v));
            // Not finite: |v| >= inf, or unordered (NaN).
            let bad = abs.iter().fold(0, |m, &a| m | _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ)));
            let mx = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
            let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
            let inv = 127.0f32 / amax;
            if bad != 0 || amax == 0.0 || inv.is_infinite() {
                db.fill(0);
                x01b.fill(0);
                x2b.fill(0);
                *sb = if bad != 0 { f32::NAN } else { 0.0 };
                s16b.fill(*sb / (BASE * BASE));
                continue;
            }
            let inv = _mm256_set1_ps(inv);
            *sb = amax / 127.0f32;
            s16b.fill(*sb / (BASE * BASE));
            let u = v.map(|v| _mm256_mul_ps(v, inv));
            let d0 = u.map(|u| _mm256_round_ps::<RN>(u));
            let r1: [__m256; 4] = std::array::from_fn(|i| _mm256_mul_ps(_mm256_sub_ps(u[i], d0[i]), base));
            let d1 = r1.map(|r| _mm256_round_ps::<RN>(r));
            let d2: [__m256; 4] =
                std::array::from_fn(|i| _mm256_round_ps::<RN>(_mm256_mul_ps(_mm256_sub_ps(r1[i], d1[i]), base)));
            let dp = db.as_mut_ptr();
            for (j, d) in [d0, d1, d2].into_iter().enumerate() {
                _mm256_storeu_si256(dp.add(GROUP * j) as *mut __m256i, pack_i8(d));
            }
            // 254 d0 + d1 is exact in f32 (at most 32,385 in magnitude).
            let w: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(_mm256_mul_ps(d0[i], base), d1[i]));
            for (dst, src) in [(x01b.as_mut_ptr(), w), (x2b.as_mut_ptr(), d2)] {
                _mm256_storeu_si256(dst as *mut __m256i, pack_i16(src[0], src[1]));
                _mm256_storeu_si256(dst.add(16) as *mut __m256i, pack_i16(src[2], src[3]));
            }
        }
    }
}
