//! Fast CPU twins of the weight formats ([`crate::quant`]): the dot of one row of a part with an
//! f32 vector (decode's GEMV) and the dequantisation of one row to f32 (prefill's SGEMM input,
//! embedding rows). AVX2 + FMA + F16C where the CPU has them (detected once at run time), else a
//! portable path built on the reference.
//!
//! Every quantized element is `a[h] * code + b[h]`, `code` a small signed integer and `h` which
//! 16 elements of its group (see [`affine_at`]): that is the reference's arithmetic, reordered
//! only where it is exact, so the fast dequantisation is bit-exact with
//! [`crate::quant::reference::dequant_row`], and the dot can factor the scales out of the sums.
#[cfg(target_arch = "x86_64")]
mod aligned;
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_int;
#[cfg(feature = "harness")]
pub mod check;
pub mod digits;
pub mod int;
#[cfg(test)]
mod int_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use digits::Digits;
pub use int::{
    decode_path, dot_int_portable, dot_int_portable_multi, dot_row_int, dot_rows_int, dot_rows_int_multi, DotPath,
    IntDigits,
};

use std::sync::OnceLock;

use crate::quant::{reference, PartView, WeightFormat, GROUP, SUPER};

/// Whether the one-row integer dot runs its products on AVX512-VNNI ([`avx2_int::dot_vnni`]):
/// the AVX2 path's features plus AVX512-VNNI and -VL (Zen 4 and later, Ice Lake and later Xeons),
/// unless `QWEN_AOT_CPU_VNNI=0` (to compare). Detected once.
pub fn has_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            has_avx2()
                && std::env::var("QWEN_AOT_CPU_VNNI").as_deref() != Ok("0")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether the AVX2 path runs (detected once).
pub fn has_avx2() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Formats whose element has an additive term (`b` in [`affine_at`]).
#[inline(always)]
pub(crate) fn has_min(f: WeightFormat) -> bool {
    matches!(f, WeightFormat::Q4_1 | WeightFormat::Q5_1 | WeightFormat::Q2_K | WeightFormat::Q4_K | WeightFormat::Q5_K)
}

/// Formats whose two 16-element halves of a group have different scales.
#[inline(always)]
pub(crate) fn sub16(f: WeightFormat) -> bool {
    matches!(f, WeightFormat::Q2_K | WeightFormat::Q3_K | WeightFormat::Q6_K)
}

/// What the format subtracts from its canonical unsigned code (the zero point): element value
/// `a[h] * (q - offset) + b[h]`. Q8_0's codes are signed already.
#[inline(always)]
pub(crate) fn offset(f: WeightFormat) -> i32 {
    match f {
        WeightFormat::Q4_0 => 8,
        WeightFormat::Q5_0 => 16,
        WeightFormat::Q3_K => 4,
        WeightFormat::Q6_K => 32,
        _ => 0,
    }
}

#[inline(always)]
fn bits16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// `(a, b)` of group `g` of row `r` for each half: element value `a[h] * code + b[h]` (`b` is 0
/// and unused for formats without a minimum), each factor computed with the reference's f32
/// operations in the reference's order, so `a * code + b` rounds exactly as the reference does.
/// `f16` converts an f16 bit pattern (F16C on the fast path). Quantized formats only.
#[inline(always)]
pub(crate) fn affine_at(v: &PartView, r: usize, g: usize, f16: impl Fn(u16) -> f32) -> ([f32; 2], [f32; 2]) {
    let p = v.format.planes();
    let gi = r * (v.k / GROUP) + g;
    let sc = &v.sc[gi * p.sc..(gi + 1) * p.sc];
    let sup = || {
        let si = r * (v.k / SUPER) + g / 8;
        &v.sup[si * p.sup..(si + 1) * p.sup]
    };
    match v.format {
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => {
            let d = f16(bits16(sc, 0));
            ([d, d], [0.0; 2])
        }
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => {
            let (d, m) = (f16(bits16(sc, 0)), f16(bits16(sc, 2)));
            ([d, d], [m, m])
        }
        WeightFormat::Q2_K => {
            let s = sup();
            let (d, dmin) = (f16(bits16(s, 0)), f16(bits16(s, 2)));
            let ab = |s: u8| (d * (s & 0x0f) as f32, -(dmin * (s >> 4) as f32));
            let ((a0, b0), (a1, b1)) = (ab(sc[0]), ab(sc[1]));
            ([a0, a1], [b0, b1])
        }
        WeightFormat::Q3_K => {
            let d = f16(bits16(sup(), 0));
            ([d * (sc[0] as i32 - 32) as f32, d * (sc[1] as i32 - 32) as f32], [0.0; 2])
        }
        WeightFormat::Q4_K | WeightFormat::Q5_K => {
            let s = sup();
            let (d, dmin) = (f16(bits16(s, 0)), f16(bits16(s, 2)));
            let (a, b) = (d * sc[0] as f32, -(dmin * sc[1] as f32));
            ([a, a], [b, b])
        }
        WeightFormat::Q6_K => {
            let d = f16(bits16(sup(), 0));
            ([d * (sc[0] as i8) as f32, d * (sc[1] as i8) as f32], [0.0; 2])
        }
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => {
            unreachable!("float formats have no groups")
        }
    }
}

/// Sums of `x` over each 16 elements (the factored-out minimum term of the dot); empty when `k`
/// is not a multiple of 16 (then no quantized part can have that row length).
pub fn sums16(x: &[f32]) -> Vec<f32> {
    if !x.len().is_multiple_of(16) {
        return Vec::new();
    }
    x.chunks_exact(16).map(|c| c.iter().sum()).collect()
}

/// `sum_e w[r, e] * x[e]` for row `r` of part `v`; `sx16` is [`sums16`] of `x`.
pub fn dot_row(v: &PartView, r: usize, x: &[f32], sx16: &[f32]) -> f32 {
    assert!(r < v.rows && x.len() >= v.k, "dot_row: row {r} of {} or x of {} < {}", v.rows, x.len(), v.k);
    assert!(v.format.is_float() || sx16.len() >= v.k / 16, "dot_row: sums of x missing");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU features were detected; the asserts above are the callee's contract.
        return unsafe { avx2::dot(v, r, x, sx16) };
    }
    dot_portable(v, r, x)
}

/// Row `r` of `v` into `out[..k]`, bit-exact with the reference.
pub fn dequant_row(v: &PartView, r: usize, out: &mut [f32]) {
    assert!(r < v.rows && out.len() >= v.k, "dequant_row: row {r} of {} or out of {} < {}", v.rows, out.len(), v.k);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU features were detected; the assert above is the callee's contract.
        return unsafe { avx2::dequant_row(v, r, out) };
    }
    reference::dequant_row(v, r, out)
}

/// The portable dot: reference dequantisation a group at a time, eight f32 accumulators.
pub fn dot_portable(v: &PartView, r: usize, x: &[f32]) -> f32 {
    let k = v.k;
    let mut acc = [0.0f32; 8];
    let mut add = |w: &[f32], x: &[f32]| {
        for (i, (w, x)) in w.iter().zip(x).enumerate() {
            acc[i % 8] += w * x;
        }
    };
    if v.format.is_float() {
        // Floats may have any k: the row in chunks of 32 through a small buffer.
        let eb = v.format.float_bytes().unwrap_or(4);
        let row = &v.qs[r * k * eb..(r + 1) * k * eb];
        let mut buf = [0.0f32; GROUP];
        for (c, bytes) in row.chunks(GROUP * eb).enumerate() {
            let n = bytes.len() / eb;
            for (o, b) in buf.iter_mut().zip(bytes.chunks_exact(eb)) {
                *o = match v.format {
                    WeightFormat::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    WeightFormat::F16 => half::f16::from_bits(bits16(b, 0)).to_f32(),
                    _ => half::bf16::from_bits(bits16(b, 0)).to_f32(),
                };
            }
            add(&buf[..n], &x[c * GROUP..c * GROUP + n]);
        }
    } else {
        let mut buf = [0.0f32; GROUP];
        for g in 0..k / GROUP {
            reference::dequant_group(v, r, g, &mut buf);
            add(&buf, &x[g * GROUP..(g + 1) * GROUP]);
        }
    }
    acc.iter().sum()
}
