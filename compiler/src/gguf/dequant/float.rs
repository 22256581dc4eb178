//! Plain floating-point tensors: F32 (copied), F16 and BF16 (widened exactly to f32).
use super::f16_at;

pub(super) fn f32_blocks(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(super) fn f16_blocks(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16_at(b, 0);
    }
}

/// bf16 is the top half of an f32: widening is a shift.
pub(super) fn bf16_blocks(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
}
