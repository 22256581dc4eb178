//! The 32-element block quants, as laid out by ggml (`ggml-common.h`):
//!
//! | type | bytes | layout |
//! |---|---|---|
//! | Q4_0 | 18 | f16 d, u8 qs[16] (low nibbles: elements 0..16, high: 16..32); x = d·(q − 8) |
//! | Q4_1 | 20 | f16 d, f16 m, u8 qs[16]; x = d·q + m |
//! | Q5_0 | 22 | f16 d, u32 qh (5th bits), u8 qs[16]; x = d·(q − 16) |
//! | Q5_1 | 24 | f16 d, f16 m, u32 qh, u8 qs[16]; x = d·q + m |
//! | Q8_0 | 34 | f16 d, i8 qs[32]; x = d·q |
use super::f16_at;

const QK: usize = 32;

pub(super) fn q4_0_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..QK / 2 {
            let x0 = (qs[j] & 0x0f) as i32 - 8;
            let x1 = (qs[j] >> 4) as i32 - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

pub(super) fn q4_1_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        for j in 0..QK / 2 {
            y[j] = (qs[j] & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub(super) fn q5_0_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((qs[j] & 0x0f) | xh0) as i32 - 16;
            let x1 = ((qs[j] >> 4) | xh1) as i32 - 16;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
    }
}

pub(super) fn q5_1_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(24).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = (qs[j] & 0x0f) | xh0;
            let x1 = (qs[j] >> 4) | xh1;
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

pub(super) fn q8_0_blocks(bytes: &[u8], out: &mut [f32]) {
    for (b, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
            *yj = q as i8 as f32 * d;
        }
    }
}
