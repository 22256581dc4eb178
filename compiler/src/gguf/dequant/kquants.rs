//! The k-quants: 256-element super-blocks of 16 or 8 sub-blocks with quantized scales, as laid
//! out by ggml (`ggml-common.h`) and decoded as in ggml's `dequantize_row_q*_K`:
//!
//! | type | bytes | layout |
//! |---|---|---|
//! | Q2_K | 84  | u8 scales[16] (4-bit scale, 4-bit min), u8 qs[64] (2-bit), f16 d, f16 dmin |
//! | Q3_K | 110 | u8 hmask[32] (3rd bit), u8 qs[64] (2-bit), u8 scales[12] (6-bit), f16 d |
//! | Q4_K | 144 | f16 d, f16 dmin, u8 scales[12] (6-bit scales and mins), u8 qs[128] (4-bit) |
//! | Q5_K | 176 | f16 d, f16 dmin, u8 scales[12], u8 qh[32] (5th bit), u8 qs[128] |
//! | Q6_K | 210 | u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), i8 scales[16], f16 d |
use super::f16_at;
use crate::gguf::dtype::QK_K;

pub(super) fn q2_k_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(84).zip(out.chunks_exact_mut(QK_K)) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_at(b, 80);
        let min = f16_at(b, 82);
        let mut yi = 0;
        let mut is = 0;
        for n in 0..QK_K / 128 {
            let q = &qs[n * 32..n * 32 + 32];
            for shift in (0..8).step_by(2) {
                for half in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * (sc & 0x0f) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for &ql in &q[half * 16..half * 16 + 16] {
                        y[yi] = dl * ((ql >> shift) & 3) as f32 - ml;
                        yi += 1;
                    }
                }
            }
        }
    }
}

/// Q3_K's 16 scales (bytes 96..108 of a block) as unsigned 6-bit values 0..63, unpacked exactly as
/// ggml does (four u32 words, little-endian); a scale's value is `s - 32`. Shared with the
/// repacker (compiler/src/repack.rs), which stores them unpacked.
pub(crate) fn q3_k_scales(sb: &[u8]) -> [u8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| u32::from_le_bytes([sb[4 * i], sb[4 * i + 1], sb[4 * i + 2], sb[4 * i + 3]]);
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    std::array::from_fn(|i| aux[i / 4].to_le_bytes()[i % 4])
}

pub(super) fn q3_k_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(110).zip(out.chunks_exact_mut(QK_K)) {
        let hmask = &b[0..32];
        let qs = &b[32..96];
        let sb = &b[96..108];
        let d_all = f16_at(b, 108);

        let scales = q3_k_scales(sb);

        let mut yi = 0;
        let mut is = 0;
        let mut m: u8 = 1;
        for n in 0..QK_K / 128 {
            let q = &qs[n * 32..n * 32 + 32];
            for shift in (0..8).step_by(2) {
                for half in 0..2 {
                    let dl = d_all * (scales[is] as i32 - 32) as f32;
                    is += 1;
                    for l in half * 16..half * 16 + 16 {
                        let lo = ((q[l] >> shift) & 3) as i32;
                        let hi = if hmask[l] & m != 0 { 0 } else { 4 };
                        y[yi] = dl * (lo - hi) as f32;
                        yi += 1;
                    }
                }
                m = m.wrapping_shl(1);
            }
        }
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

pub(super) fn q4_k_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for (j, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * j, scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub(super) fn q5_k_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(176).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        for (j, (ql, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * j, scales);
            let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let u1 = 1u8 << (2 * j);
            let u2 = 2u8 << (2 * j);
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - m1;
                y[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
        }
    }
}

pub(super) fn q6_k_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        for n in 0..QK_K / 128 {
            let ql = &b[n * 64..n * 64 + 64];
            let qh = &b[128 + n * 32..128 + n * 32 + 32];
            let sc = &b[192 + n * 8..192 + n * 8 + 8];
            let y = &mut y[n * 128..n * 128 + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}
