//! AVX2 + FMA + F16C twins of [`super`]'s row dot and row dequantisation, one generic body per
//! format family (monomorphised per format code, so every `match F` below is resolved at compile
//! time). Callers must have detected the three features (see [`super::has_avx2`]).
//!
//! A quantized group is turned into 32 signed byte codes in one register (the format's offset
//! already subtracted), then into four 8-lane f32 vectors. The element value is
//! `a[h] * code + b[h]` (`h` = which 16 elements; see [`super::affine`]), so:
//! - dequantisation computes exactly that (mul then add, never fused: bit-exact with the reference);
//! - the dot factors the scale out: `sum_h a[h] * sum_e code_e x_e + b[h] * sum_e x_e`, with the
//!   sums of `x` per 16 elements (`sx16`) computed once per GEMV input. One FMA per 8 elements.
use std::arch::x86_64::*;

use super::{has_min, offset, sub16};
use crate::quant::{PartView, WeightFormat, GROUP, SUPER};

pub(super) const Q4_0: u8 = WeightFormat::Q4_0 as u8;
pub(super) const Q4_1: u8 = WeightFormat::Q4_1 as u8;
pub(super) const Q5_0: u8 = WeightFormat::Q5_0 as u8;
pub(super) const Q5_1: u8 = WeightFormat::Q5_1 as u8;
pub(super) const Q8_0: u8 = WeightFormat::Q8_0 as u8;
pub(super) const Q2_K: u8 = WeightFormat::Q2_K as u8;
pub(super) const Q3_K: u8 = WeightFormat::Q3_K as u8;
pub(super) const Q4_K: u8 = WeightFormat::Q4_K as u8;
pub(super) const Q5_K: u8 = WeightFormat::Q5_K as u8;
pub(super) const Q6_K: u8 = WeightFormat::Q6_K as u8;

/// Low nibbles of 16 bytes are elements 0..16, high nibbles 16..32: the 16 bytes in both
/// 128-bit lanes, the upper lane's shifted right by 4.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn nibbles(qs: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to a group's 16 `qs` bytes.
    let q = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(qs as *const __m128i) });
    _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f))
}

/// 2-bit codes: byte `e % 8`, bits `2 * (e / 8)`. Broadcasting the 8 bytes puts `qs[e % 8]` in
/// byte `e` already; each 64-bit lane `e / 8` is then shifted by `2 * (e / 8)`. Bits shifted in
/// from the neighbouring byte land above bit 1 and are masked off.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn twobit(qs: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to a group's 8 `qs` bytes.
    let u = unsafe { (qs as *const i64).read_unaligned() };
    let v = _mm256_srlv_epi64(_mm256_set1_epi64x(u), _mm256_setr_epi64x(0, 2, 4, 6));
    _mm256_and_si256(v, _mm256_set1_epi8(3))
}

/// `lo` with the 1 extra bit added: byte `e % 4`, bit `e / 4` of `qh` set adds `bit_value` to
/// byte `e`. Broadcasting the 4 bytes puts `qh[e % 4]` in byte `e`; shifting dword `l` (bytes
/// `4l..4l + 4`, whose bit is `l`) left by `7 - l` moves that bit to bit 7 of the same byte (bits
/// from the byte below land lower), which selects the blend.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn with_onebit(lo: __m256i, qh: *const u8, bit_value: i8) -> __m256i {
    // SAFETY: the caller passes a pointer to a group's 4 `qh` bytes.
    let w = unsafe { (qh as *const i32).read_unaligned() };
    let sel = _mm256_sllv_epi32(_mm256_set1_epi32(w), _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0));
    let with = _mm256_or_si256(lo, _mm256_set1_epi8(bit_value));
    let out: __m256i;
    // SAFETY: one byte blend (AVX2, enabled): written out because LLVM otherwise expands the
    // blend into a shift, a mask and an or.
    unsafe {
        std::arch::asm!("vpblendvb {o}, {a}, {b}, {m}", o = lateout(ymm_reg) out, a = in(ymm_reg) lo,
            b = in(ymm_reg) with, m = in(ymm_reg) sel, options(pure, nomem, nostack, preserves_flags));
    }
    out
}

/// 2 extra bits (Q6_K): u32 word `e / 16`, byte `e % 4`, bits `2 * ((e / 4) % 4)`, returned
/// already shifted to bits 4-5. Word `e / 16` broadcast over 128-bit lane `e / 16` puts the right
/// byte in byte `e`; dword `e / 4` is shifted by `2 * ((e / 4) % 4)`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn twobit_high(qh: *const u8) -> __m256i {
    // SAFETY: the caller passes a pointer to a group's 8 `qh` bytes.
    let w = unsafe { (qh as *const i64).read_unaligned() };
    // The 8 bytes in every qword, then word 0 repeated in the low lane and word 1 in the high
    // one (an in-lane byte shuffle: cheaper than a cross-lane permute).
    let idx = _mm256_setr_epi8(
        0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7,
    );
    let b = _mm256_set1_epi64x(w);
    let v: __m256i;
    // SAFETY: one in-lane byte shuffle (AVX2, enabled): written out because LLVM otherwise turns
    // broadcast + vpshufb into a costlier cross-lane permute.
    unsafe {
        std::arch::asm!("vpshufb {v}, {b}, {i}", v = lateout(ymm_reg) v, b = in(ymm_reg) b, i = in(ymm_reg) idx,
            options(pure, nomem, nostack, preserves_flags));
    }
    let s = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
    // Values are <= 3, so a 16-bit shift by 4 cannot carry into the next byte.
    _mm256_slli_epi16(_mm256_and_si256(s, _mm256_set1_epi8(3)), 4)
}

/// The 32 canonical codes of group `gi` as bytes: unsigned, the format's offset not subtracted
/// (see the module doc of [`crate::quant`]); Q8_0's are its signed bytes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn ucodes<const F: u8>(v: &PartView, gi: usize) -> __m256i {
    let p = v.format.planes();
    // SAFETY: `gi` is a group of the part (the caller checked the row), so each plane holds
    // `(gi + 1) * bytes_per_group` bytes.
    let (qs, qh) = unsafe { (v.qs.as_ptr().add(gi * p.qs), v.qh.as_ptr().add(gi * p.qh)) };
    // SAFETY: the plane pointers above point at this group's bytes of each plane.
    unsafe {
        match F {
            Q4_0 | Q4_1 | Q4_K => nibbles(qs),
            Q5_0 | Q5_1 | Q5_K => with_onebit(nibbles(qs), qh, 0x10),
            Q8_0 => _mm256_loadu_si256(qs as *const __m256i),
            Q2_K => twobit(qs),
            Q3_K => with_onebit(twobit(qs), qh, 0x04),
            Q6_K => _mm256_or_si256(nibbles(qs), twobit_high(qh)),
            _ => unreachable!("float formats have no codes"),
        }
    }
}

/// The 32 signed codes of group `gi` (the format's offset subtracted: see
/// [`crate::quant::reference::dequant_group`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn codes<const F: u8>(v: &PartView, gi: usize) -> __m256i {
    // SAFETY: the caller's contract is ucodes' own.
    let u = unsafe { ucodes::<F>(v, gi) };
    match offset(v.format) {
        0 => u,
        off => _mm256_sub_epi8(u, _mm256_set1_epi8(off as i8)),
    }
}

/// The four 8-lane f32 vectors of 32 byte codes.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn widen(c: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(c);
    let hi = _mm256_extracti128_si256(c, 1);
    [
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
}

/// `a` and `b` (see [`super::affine_at`]) of the 16 halves of groups `g0..g0 + 8` of row `r`, computed
/// eight at a time from the scale planes (the same f32 operations as the reference, so the same
/// bits). `sc` points at the 8 groups' `sc` bytes (in the plane, or a copy); for k-quants `g0` is
/// a multiple of 8 (one super-block), whose `sup` bytes the part holds.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn affine8<const F: u8>(v: &PartView, r: usize, g0: usize, sc: *const u8, a: &mut [f32; 16], b: &mut [f32; 16]) {
    let p = v.format.planes();
    let sup = || {
        let si = r * (v.k / SUPER) + g0 / 8;
        // SAFETY: see above; reads the super-block's d and, where present, dmin.
        let s = unsafe { v.sup.as_ptr().add(si * p.sup) };
        let bits = |i: usize| u16::from_le_bytes(unsafe { [*s.add(i), *s.add(i + 1)] });
        (f16c(bits(0)), if p.sup == 4 { f16c(bits(2)) } else { 0.0 })
    };
    // Lanes of (x0, x1) repeated per half: [x0 x0 x1 x1 | x2 x2 x3 x3] from [x0 . x1 . | x2 . x3 .].
    let neg = _mm256_set1_ps(-0.0);
    // SAFETY: `a` and `b` hold 16 floats each; the stores write 8 at 0 and 8 at 8.
    let store = |dst: &mut [f32; 16], lo: __m256, hi: __m256| unsafe {
        _mm256_storeu_ps(dst.as_mut_ptr(), lo);
        _mm256_storeu_ps(dst.as_mut_ptr().add(8), hi);
    };
    // 16 bytes -> two vectors of 8 f32 (signed or unsigned bytes).
    // SAFETY: every read below is of the 8 groups' sc bytes (16 for 2-byte sc, 32 for 4-byte).
    unsafe {
        let bytes16 = || _mm_loadu_si128(sc as *const __m128i);
        match F {
            Q4_0 | Q5_0 | Q8_0 => {
                let d = _mm256_cvtph_ps(bytes16());
                let (lo, hi) = (_mm256_unpacklo_ps(d, d), _mm256_unpackhi_ps(d, d));
                store(a, _mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
            }
            Q4_1 | Q5_1 => {
                let x0 = _mm256_cvtph_ps(_mm_loadu_si128(sc as *const __m128i));
                let x1 = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16) as *const __m128i));
                store(a, _mm256_shuffle_ps(x0, x0, 0b10_10_00_00), _mm256_shuffle_ps(x1, x1, 0b10_10_00_00));
                store(b, _mm256_shuffle_ps(x0, x0, 0b11_11_01_01), _mm256_shuffle_ps(x1, x1, 0b11_11_01_01));
            }
            Q2_K => {
                let (d, dmin) = sup();
                let s = bytes16();
                let u = |s: __m128i| _mm256_cvtepu8_epi32(s);
                let (s0, s1) = (u(s), u(_mm_srli_si128(s, 8)));
                let m15 = _mm256_set1_epi32(15);
                let sc_f = |x: __m256i| _mm256_cvtepi32_ps(_mm256_and_si256(x, m15));
                let mn_f = |x: __m256i| _mm256_cvtepi32_ps(_mm256_srli_epi32(x, 4));
                let (vd, vm) = (_mm256_set1_ps(d), _mm256_set1_ps(dmin));
                store(a, _mm256_mul_ps(vd, sc_f(s0)), _mm256_mul_ps(vd, sc_f(s1)));
                store(
                    b,
                    _mm256_xor_ps(neg, _mm256_mul_ps(vm, mn_f(s0))),
                    _mm256_xor_ps(neg, _mm256_mul_ps(vm, mn_f(s1))),
                );
            }
            Q3_K => {
                let (d, _) = sup();
                let s = bytes16();
                let off = _mm256_set1_epi32(32);
                let f = |x: __m128i| _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(x), off));
                let vd = _mm256_set1_ps(d);
                store(a, _mm256_mul_ps(vd, f(s)), _mm256_mul_ps(vd, f(_mm_srli_si128(s, 8))));
            }
            Q4_K | Q5_K => {
                let (d, dmin) = sup();
                let s = bytes16();
                let f = |x: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
                let (x0, x1) = (f(s), f(_mm_srli_si128(s, 8)));
                let (vd, vm) = (_mm256_set1_ps(d), _mm256_set1_ps(dmin));
                let sc_of = |x: __m256| _mm256_mul_ps(vd, _mm256_shuffle_ps(x, x, 0b10_10_00_00));
                let mn_of = |x: __m256| _mm256_xor_ps(neg, _mm256_mul_ps(vm, _mm256_shuffle_ps(x, x, 0b11_11_01_01)));
                store(a, sc_of(x0), sc_of(x1));
                store(b, mn_of(x0), mn_of(x1));
            }
            Q6_K => {
                let (d, _) = sup();
                let s = bytes16();
                let f = |x: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x));
                let vd = _mm256_set1_ps(d);
                store(a, _mm256_mul_ps(vd, f(s)), _mm256_mul_ps(vd, f(_mm_srli_si128(s, 8))));
            }
            _ => unreachable!("float formats have no scales"),
        }
    }
}

/// `a`/`b` of the groups `g0..g0 + n` (any n <= 8; a partial block only at the end of a legacy
/// format's row, whose k / 32 need not be a multiple of 8): the scale bytes of a partial block go
/// from the plane when the part holds 8 groups from `g0`, else through a zeroed copy. Unused
/// entries are zero; formats without a minimum leave `b` as it was (but for zeroed entries).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn affine<const F: u8>(
    v: &PartView,
    r: usize,
    g0: usize,
    n: usize,
    a: &mut [f32; 16],
    b: &mut [f32; 16],
) {
    let per = v.format.planes().sc;
    let gi0 = r * (v.k / GROUP) + g0;
    if (gi0 + 8) * per <= v.sc.len() {
        // SAFETY: the sc plane holds the 8 groups' bytes (those past the row's n groups belong
        // to the next row: their entries are cleared below).
        unsafe { affine8::<F>(v, r, g0, v.sc.as_ptr().add(gi0 * per), a, b) };
    } else {
        // The part's last groups (only legacy formats: k-quant rows are whole super-blocks, so
        // there n = 8 and the bytes are in the plane): through a zeroed copy.
        let mut copy = [0u8; 32];
        let sc = &v.sc[gi0 * per..(gi0 + n) * per];
        for (i, c) in copy.iter_mut().enumerate().take(8 * per) {
            if i < sc.len() {
                *c = sc[i];
            }
        }
        // SAFETY: the copy holds 8 groups' sc bytes (at most 4 each).
        unsafe { affine8::<F>(v, r, g0, copy.as_ptr(), a, b) };
    }
    if n < 8 {
        // Entries 2n.. are zero (a lane mask: the same for any bits they held).
        let lim = _mm256_set1_epi32(2 * n as i32);
        for first in [0usize, 8] {
            let iota = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(first as i32));
            let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lim, iota));
            for x in [&mut *a, &mut *b] {
                // SAFETY: 8 floats at `first` (0 or 8) of 16.
                unsafe {
                    let p = x.as_mut_ptr().add(first);
                    _mm256_storeu_ps(p, _mm256_and_ps(_mm256_loadu_ps(p), keep));
                }
            }
        }
    }
}

/// `sum_e w[r, e] * x[e]` for a quantized part. `x` holds `k` floats, `sx16` the sums of `x` per
/// 16 elements.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_q<const F: u8>(v: &PartView, r: usize, x: &[f32], sx16: &[f32]) -> f32 {
    let fmt = v.format;
    let (groups, min, s16) = (v.k / GROUP, has_min(fmt), sub16(fmt));
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut accm = _mm256_setzero_ps();
    // The scales of a chunk of groups first, then the groups: the scale step (not inlined: it
    // is large) then costs one call per chunk instead of spilling the accumulators every 8 groups.
    const CHUNK: usize = 64;
    let (mut a, mut b) = ([0.0f32; 2 * CHUNK], [0.0f32; 2 * CHUNK]);
    for c0 in (0..groups).step_by(CHUNK) {
        let nc = CHUNK.min(groups - c0);
        for (i, g0) in (c0..c0 + nc).step_by(8).enumerate() {
            let (ab, bb) = (&mut a[16 * i..16 * i + 16], &mut b[16 * i..16 * i + 16]);
            // SAFETY: g0 + min(8, ..) <= groups; the sub-slices are 16 long.
            unsafe { affine::<F>(v, r, g0, 8.min(c0 + nc - g0), ab.try_into().unwrap(), bb.try_into().unwrap()) };
        }
        for j in 0..nc {
            let g = c0 + j;
            // SAFETY: the group is in the part (r < rows checked by the caller) and `x` holds k
            // floats, so the four 8-float loads at `32 * g` are in bounds.
            let (c, xs) = unsafe {
                let xp = x.as_ptr().add(g * GROUP);
                let xs = [
                    _mm256_loadu_ps(xp),
                    _mm256_loadu_ps(xp.add(8)),
                    _mm256_loadu_ps(xp.add(16)),
                    _mm256_loadu_ps(xp.add(24)),
                ];
                (widen(codes::<F>(v, r * groups + g)), xs)
            };
            let p0 = _mm256_fmadd_ps(c[1], xs[1], _mm256_mul_ps(c[0], xs[0]));
            let p1 = _mm256_fmadd_ps(c[3], xs[3], _mm256_mul_ps(c[2], xs[2]));
            if s16 {
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(a[2 * j]), p0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(a[2 * j + 1]), p1, acc1);
            } else if j % 2 == 0 {
                // Two accumulators over alternate groups: half the FMA latency chain.
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(a[2 * j]), _mm256_add_ps(p0, p1), acc0);
            } else {
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(a[2 * j]), _mm256_add_ps(p0, p1), acc1);
            }
        }
        if min {
            let halves = 2 * nc;
            let full = halves / 8 * 8;
            for h in (0..full).step_by(8) {
                // SAFETY: h + 8 <= 2 * nc, so `b` has the 8 and sx16 (k / 16 sums) has the 8 at
                // 2 * c0 + h.
                accm = unsafe {
                    _mm256_fmadd_ps(
                        _mm256_loadu_ps(b.as_ptr().add(h)),
                        _mm256_loadu_ps(sx16.as_ptr().add(2 * c0 + h)),
                        accm,
                    )
                };
            }
            let m: f32 = (full..halves).map(|h| b[h] * sx16[2 * c0 + h]).sum();
            accm = _mm256_add_ps(accm, _mm256_setr_ps(m, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0));
        }
    }
    hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), accm))
}

/// One f16 to f32 with the F16C instruction (the `half` crate's software path costs more than a
/// whole group's arithmetic).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) fn f16c(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_f32(a: &[f32], w: &[u8]) -> f32 {
    let n = a.len();
    let wp = w.as_ptr() as *const f32;
    let mut acc = [_mm256_setzero_ps(); 4];
    let chunks = n / 32;
    for c in 0..chunks {
        for (l, acc) in acc.iter_mut().enumerate() {
            let i = c * 32 + 8 * l;
            // SAFETY: i + 8 <= n and `w` holds 4 * n bytes (unaligned loads).
            *acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(wp.add(i)), *acc) };
        }
    }
    let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (i, &ai) in a.iter().enumerate().skip(chunks * 32) {
        // SAFETY: i < n.
        s += ai * unsafe { wp.add(i).read_unaligned() };
    }
    s
}

/// Eight 16-bit floats at `p` widened; `BF` selects bfloat16 (the high half of an f32).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_half<const BF: bool>(p: *const u16) -> __m256 {
    // SAFETY: the caller passes a pointer to 8 readable 16-bit values.
    let h = unsafe { _mm_loadu_si128(p as *const __m128i) };
    if BF {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    } else {
        _mm256_cvtph_ps(h)
    }
}

/// Dot with 16-bit floats; `BF` selects bfloat16 (the high half of an f32) over IEEE f16.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_half<const BF: bool>(a: &[f32], w: &[u8]) -> f32 {
    let n = a.len();
    let wp = w.as_ptr() as *const u16;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let chunks = n / 16;
    for c in 0..chunks {
        let i = c * 16;
        // SAFETY: i + 16 <= n; `a` holds n floats and `w` n 16-bit values.
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), load_half::<BF>(wp.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), load_half::<BF>(wp.add(i + 8)), acc1);
        }
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    for (i, &ai) in a.iter().enumerate().skip(chunks * 16) {
        // SAFETY: i < n.
        let bits = unsafe { wp.add(i).read_unaligned() };
        s += ai * if BF { f32::from_bits((bits as u32) << 16) } else { f16c(bits) };
    }
    s
}

/// Row `r` of `v` dotted with `x[..k]`. The caller checked `r < v.rows`, `x.len() >= k` and
/// `sx16.len() >= k / 16` (when `k` is a multiple of 16).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(v: &PartView, r: usize, x: &[f32], sx16: &[f32]) -> f32 {
    let k = v.k;
    let x = &x[..k];
    // SAFETY (every arm): the caller's checks above are exactly what the bodies assume; float
    // rows are sliced here, in bounds because the view holds `rows * k` elements.
    unsafe {
        match v.format {
            WeightFormat::F32 => dot_f32(x, &v.qs[r * k * 4..(r + 1) * k * 4]),
            WeightFormat::F16 => dot_half::<false>(x, &v.qs[r * k * 2..(r + 1) * k * 2]),
            WeightFormat::BF16 => dot_half::<true>(x, &v.qs[r * k * 2..(r + 1) * k * 2]),
            WeightFormat::Q4_0 => dot_q::<Q4_0>(v, r, x, sx16),
            WeightFormat::Q4_1 => dot_q::<Q4_1>(v, r, x, sx16),
            WeightFormat::Q5_0 => dot_q::<Q5_0>(v, r, x, sx16),
            WeightFormat::Q5_1 => dot_q::<Q5_1>(v, r, x, sx16),
            WeightFormat::Q8_0 => dot_q::<Q8_0>(v, r, x, sx16),
            WeightFormat::Q2_K => dot_q::<Q2_K>(v, r, x, sx16),
            WeightFormat::Q3_K => dot_q::<Q3_K>(v, r, x, sx16),
            WeightFormat::Q4_K => dot_q::<Q4_K>(v, r, x, sx16),
            WeightFormat::Q5_K => dot_q::<Q5_K>(v, r, x, sx16),
            WeightFormat::Q6_K => dot_q::<Q6_K>(v, r, x, sx16),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dequant_q<const F: u8>(v: &PartView, r: usize, out: &mut [f32]) {
    let groups = v.k / GROUP;
    let min = has_min(v.format);
    let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
    for g0 in (0..groups).step_by(8) {
        let n = 8.min(groups - g0);
        // SAFETY: g0 + n <= groups.
        unsafe { affine::<F>(v, r, g0, n, &mut a, &mut b) };
        for j in 0..n {
            let g = g0 + j;
            // SAFETY: the group is in the part (r < rows checked by the caller).
            let c = widen(unsafe { codes::<F>(v, r * groups + g) });
            let o = &mut out[g * GROUP..(g + 1) * GROUP];
            for (i, c) in c.iter().enumerate() {
                let h = 2 * j + i / 2;
                // Mul then add, as the reference does (no FMA: bit-exact).
                let mut y = _mm256_mul_ps(_mm256_set1_ps(a[h]), *c);
                if min {
                    y = _mm256_add_ps(y, _mm256_set1_ps(b[h]));
                }
                // SAFETY: `o` holds 32 floats; this stores 8 at 8 * i.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), y) };
            }
        }
    }
}

/// Row `r` of `v` into `out[..k]`, bit-exact with [`crate::quant::reference::dequant_row`].
/// The caller checked `r < v.rows`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dequant_row(v: &PartView, r: usize, out: &mut [f32]) {
    let k = v.k;
    let out = &mut out[..k];
    // SAFETY (every arm): as for `dot`; the float arms index checked slices.
    unsafe {
        match v.format {
            WeightFormat::F32 => {
                for (o, b) in out.iter_mut().zip(v.qs[r * k * 4..(r + 1) * k * 4].chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            WeightFormat::F16 | WeightFormat::BF16 => {
                let src = &v.qs[r * k * 2..(r + 1) * k * 2];
                let bf = v.format == WeightFormat::BF16;
                let chunks = k / 8;
                for c in 0..chunks {
                    let h = _mm_loadu_si128(src.as_ptr().add(16 * c) as *const __m128i);
                    let y = if bf {
                        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                    } else {
                        _mm256_cvtph_ps(h)
                    };
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), y);
                }
                for (i, o) in out.iter_mut().enumerate().skip(chunks * 8) {
                    let bits = u16::from_le_bytes([src[2 * i], src[2 * i + 1]]);
                    *o = if bf { f32::from_bits((bits as u32) << 16) } else { f16c(bits) };
                }
            }
            WeightFormat::Q4_0 => dequant_q::<Q4_0>(v, r, out),
            WeightFormat::Q4_1 => dequant_q::<Q4_1>(v, r, out),
            WeightFormat::Q5_0 => dequant_q::<Q5_0>(v, r, out),
            WeightFormat::Q5_1 => dequant_q::<Q5_1>(v, r, out),
            WeightFormat::Q8_0 => dequant_q::<Q8_0>(v, r, out),
            WeightFormat::Q2_K => dequant_q::<Q2_K>(v, r, out),
            WeightFormat::Q3_K => dequant_q::<Q3_K>(v, r, out),
            WeightFormat::Q4_K => dequant_q::<Q4_K>(v, r, out),
            WeightFormat::Q5_K => dequant_q::<Q5_K>(v, r, out),
            WeightFormat::Q6_K => dequant_q::<Q6_K>(v, r, out),
        }
    }
}
