//! The reference dequantisation of the canonical layout ([`super`]): slow, obvious, and
//! bit-exact with ggml's `dequantize_row_*` (same f32 operations in the same order, no fused
//! multiply-add). The fast CPU twins and the CUDA kernels are tested against it, and it against
//! the GGUF dequantisers (compiler tests).
use half::f16;

use super::{PartView, WeightFormat, GROUP, SUPER};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Code of element `e` from a 4-bit `qs` group (16 bytes).
pub fn qs4(qs: &[u8], e: usize) -> u8 {
    let b = qs[e % 16];
    if e < 16 {
        b & 0x0f
    } else {
        b >> 4
    }
}

/// Code of element `e` from a 2-bit `qs` group (8 bytes).
pub fn qs2(qs: &[u8], e: usize) -> u8 {
    (qs[e % 8] >> (2 * (e / 8))) & 3
}

/// The extra bit of element `e` from a 1-bit `qh` group (4 bytes).
pub fn qh1(qh: &[u8], e: usize) -> u8 {
    (qh[e % 4] >> (e / 4)) & 1
}

/// The two extra bits of element `e` from a 2-bit `qh` group (8 bytes).
pub fn qh2(qh: &[u8], e: usize) -> u8 {
    (qh[4 * (e / 16) + e % 4] >> (2 * ((e / 4) % 4))) & 3
}

/// Dequantises group `g` of row `r` into `out[..32]`. Panics if the group is out of range.
pub fn dequant_group(v: &PartView, r: usize, g: usize, out: &mut [f32]) {
    let groups = v.k / GROUP;
    let gi = r * groups + g;
    let p = v.format.planes();
    let qs = &v.qs[gi * p.qs..(gi + 1) * p.qs];
    let qh = &v.qh[gi * p.qh..(gi + 1) * p.qh];
    let sc = &v.sc[gi * p.sc..(gi + 1) * p.sc];
    let si = r * (v.k / SUPER) + g / 8;
    let sup = if p.sup > 0 { &v.sup[si * p.sup..(si + 1) * p.sup] } else { &[][..] };
    let out = &mut out[..GROUP];
    match v.format {
        WeightFormat::F32 => {
            for (e, o) in out.iter_mut().enumerate() {
                *o = f32::from_le_bytes([qs[4 * e], qs[4 * e + 1], qs[4 * e + 2], qs[4 * e + 3]]);
            }
        }
        WeightFormat::F16 => {
            for (e, o) in out.iter_mut().enumerate() {
                *o = f16_at(qs, 2 * e);
            }
        }
        WeightFormat::BF16 => {
            for (e, o) in out.iter_mut().enumerate() {
                *o = half::bf16::from_bits(u16::from_le_bytes([qs[2 * e], qs[2 * e + 1]])).to_f32();
            }
        }
        WeightFormat::Q4_0 => {
            let d = f16_at(sc, 0);
            for (e, o) in out.iter_mut().enumerate() {
                *o = (qs4(qs, e) as i32 - 8) as f32 * d;
            }
        }
        WeightFormat::Q4_1 => {
            let (d, m) = (f16_at(sc, 0), f16_at(sc, 2));
            for (e, o) in out.iter_mut().enumerate() {
                *o = qs4(qs, e) as f32 * d + m;
            }
        }
        WeightFormat::Q5_0 => {
            let d = f16_at(sc, 0);
            for (e, o) in out.iter_mut().enumerate() {
                let q = qs4(qs, e) | (qh1(qh, e) << 4);
                *o = (q as i32 - 16) as f32 * d;
            }
        }
        WeightFormat::Q5_1 => {
            let (d, m) = (f16_at(sc, 0), f16_at(sc, 2));
            for (e, o) in out.iter_mut().enumerate() {
                let q = qs4(qs, e) | (qh1(qh, e) << 4);
                *o = q as f32 * d + m;
            }
        }
        WeightFormat::Q8_0 => {
            let d = f16_at(sc, 0);
            for (e, o) in out.iter_mut().enumerate() {
                *o = qs[e] as i8 as f32 * d;
            }
        }
        WeightFormat::Q2_K => {
            let (d, dmin) = (f16_at(sup, 0), f16_at(sup, 2));
            for (e, o) in out.iter_mut().enumerate() {
                let s = sc[e / 16];
                let dl = d * (s & 0x0f) as f32;
                let ml = dmin * (s >> 4) as f32;
                *o = dl * qs2(qs, e) as f32 - ml;
            }
        }
        WeightFormat::Q3_K => {
            let d = f16_at(sup, 0);
            for (e, o) in out.iter_mut().enumerate() {
                let dl = d * (sc[e / 16] as i32 - 32) as f32;
                let q = qs2(qs, e) as i32 - if qh1(qh, e) != 0 { 0 } else { 4 };
                *o = dl * q as f32;
            }
        }
        WeightFormat::Q4_K | WeightFormat::Q5_K => {
            let (d, dmin) = (f16_at(sup, 0), f16_at(sup, 2));
            let dl = d * sc[0] as f32;
            let ml = dmin * sc[1] as f32;
            let five = v.format == WeightFormat::Q5_K;
            for (e, o) in out.iter_mut().enumerate() {
                let q = qs4(qs, e) + if five { qh1(qh, e) << 4 } else { 0 };
                *o = dl * q as f32 - ml;
            }
        }
        WeightFormat::Q6_K => {
            let d = f16_at(sup, 0);
            for (e, o) in out.iter_mut().enumerate() {
                let q = (qs4(qs, e) | (qh2(qh, e) << 4)) as i32 - 32;
                *o = d * (sc[e / 16] as i8) as f32 * q as f32;
            }
        }
    }
}

/// Dequantises row `r` into `out[..k]`.
pub fn dequant_row(v: &PartView, r: usize, out: &mut [f32]) {
    let k = v.k;
    let out = &mut out[..k];
    match v.format {
        WeightFormat::F32 => {
            for (i, o) in out.iter_mut().enumerate() {
                let b = &v.qs[(r * k + i) * 4..];
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        WeightFormat::F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(v.qs, (r * k + i) * 2);
            }
        }
        WeightFormat::BF16 => {
            for (i, o) in out.iter_mut().enumerate() {
                let b = &v.qs[(r * k + i) * 2..];
                *o = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        _ => {
            for (g, chunk) in out.chunks_exact_mut(GROUP).enumerate() {
                dequant_group(v, r, g, chunk);
            }
        }
    }
}
