//! Packing one group's 32 codes into the canonical planes ([`super`]'s module doc gives the bit
//! layouts): shared by the compiler's repacker (GGUF blocks to planes) and the derived weights'
//! recipes (`crate::derive`), which must write the same bytes.

/// 4-bit codes: byte `m` holds element `m` (low nibble) and `m + 16` (high nibble).
#[inline(always)]
pub fn pack_qs4(c: &[u8; 32], out: &mut [u8]) {
    for m in 0..16 {
        out[m] = c[m] | (c[m + 16] << 4);
    }
}

/// 2-bit codes: byte `m` holds elements `m, m + 8, m + 16, m + 24` at bits 0, 2, 4, 6.
pub fn pack_qs2(c: &[u8; 32], out: &mut [u8]) {
    for m in 0..8 {
        out[m] = c[m] | (c[m + 8] << 2) | (c[m + 16] << 4) | (c[m + 24] << 6);
    }
}

/// One extra bit per element: byte `m` holds elements `m + 4t` at bit `t`.
#[inline(always)]
pub fn pack_qh1(bit: impl Fn(usize) -> u8, out: &mut [u8]) {
    for (m, o) in out[..4].iter_mut().enumerate() {
        *o = (0..8).fold(0, |acc, t| acc | (bit(m + 4 * t) << t));
    }
}

/// Two extra bits per element: byte `4w + m` holds elements `16w + 4t + m` at bits `2t`.
pub fn pack_qh2(h: &[u8; 32], out: &mut [u8]) {
    for w in 0..2 {
        for m in 0..4 {
            out[4 * w + m] = (0..4).fold(0, |acc, t| acc | (h[16 * w + 4 * t + m] << (2 * t)));
        }
    }
}
