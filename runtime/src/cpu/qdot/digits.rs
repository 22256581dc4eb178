//! The input row of a decode GEMV split into three int8 *digits* per element, in blocks of 32,
//! so that the dot of a quantized weight group with it is three exact integer dot products
//! ([`super::int`]). The one definition, which the CUDA kernels share operation for operation (in
//! f32, no fused multiply-add), for each block `v[0..32]`:
//!
//! ```text
//! amax = max |v_i|;  if amax == 0: every digit 0, s = 0
//! inv = 127 / amax;  s = amax / 127
//! u_i = v_i * inv;         d0_i = rint(u_i)     (rint: round half to even)
//! r1  = (u_i - d0_i) * 254; d1_i = rint(r1)
//! r2  = (r1 - d1_i) * 254;  d2_i = rint(r2)
//! ```
//!
//! Every digit is an integer in [-127, 127] and `v_i ~= s * (d0 + d1 / 254 + d2 / 254^2)`: the
//! last digit's rounding leaves `0.5 / (127 * 254^2) * amax = 6.1e-8 * amax`, and the f32
//! roundings of `inv`, `u` and `s` at most `3 * 2^-24 * |v_i|` more ([`element_error_bound`]).
//! One int8 digit per element (llama.cpp's Q8_1) moved the default model's top-5 logits by 0.183
//! against the float32 reference; three keep them at f32's accuracy.
//!
//! Two cases the formula above leaves undefined, decided here: a block holding a NaN or an
//! infinity gets `s = NaN` (digits 0), so the dot is NaN as the f32 path's would be and the
//! executor's logit check refuses it; a block so small that `127 / amax` overflows (amax below
//! 127 / f32::MAX, about 3.7e-37) is a zero block (`s = 0`), an error of at most `|v_i|`.
use super::aligned::Aligned;
use super::int::IntDigits;
use super::sums16;
use crate::quant::GROUP;

/// The base of the second and third digits.
pub const BASE: f32 = 254.0;
/// Bytes of one block's digits in [`Digits::d8`]: `d0[32] | d1[32] | d2[32]`.
pub const BLOCK_BYTES: usize = 3 * GROUP;
/// Zeros past the end of the per-16 arrays, so that a kernel may read the 16 halves of a block
/// of 8 groups starting at any group of the row.
pub(super) const PAD16: usize = 16;

/// The order of a block's elements in [`Digits::fill_multi`]'s operands: elements `4l, 4l + 1`
/// of each 4 (`l` = 0..8), then `4l + 2, 4l + 3`. A 16-bit multiply-add of 16 codes in the first
/// half's order with the first 16 operands, plus one of the second half's, puts elements
/// `4l..4l + 4` in 32-bit lane `l`: the lanes of the 8-bit route of the one-row dot.
pub const PAIRS: [usize; GROUP] = {
    let mut p = [0; GROUP];
    let mut i = 0;
    while i < 16 {
        p[i] = 4 * (i / 2) + i % 2;
        p[16 + i] = p[i] + 2;
        i += 1;
    }
    p
};

/// `|v - s * (d0 + d1 / 254 + d2 / 254^2)|` is at most this for an element `v` of a block whose
/// largest magnitude is `amax` (see the module doc), evaluated in f64, when the dot uses all
/// three digits; with two, `|v - s (d0 + d1 / 254)|`: the dropped `s d2 / 254^2` is the rounding
/// of `d1`'s residual, at most `amax * 0.5 / (127 * 254)` as `d1`'s own rounding bounds it.
pub fn element_error_bound(n: IntDigits, amax: f32, v: f32) -> f64 {
    if (127.0f32 / amax).is_infinite() {
        return v.abs() as f64;
    }
    let eps = f32::EPSILON as f64 / 2.0;
    let last = match n {
        IntDigits::Two => 0.5 / (127.0 * 254.0),
        IntDigits::Three => 0.5 / (127.0 * 254.0 * 254.0),
    };
    amax as f64 * (last + 2.0 * eps / 127.0) + 3.0 * eps * v.abs() as f64
}

/// One block's digits into `d` (`d0[32] | d1[32] | d2[32]`, see [`BLOCK_BYTES`]); returns `s`.
/// The scalar definition (the AVX2 twin is tested bit for bit against it).
pub fn quantize_block(v: &[f32], d: &mut [i8]) -> f32 {
    let (v, d) = (&v[..GROUP], &mut d[..BLOCK_BYTES]);
    if !v.iter().all(|x| x.is_finite()) {
        d.fill(0);
        return f32::NAN;
    }
    let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let inv = 127.0f32 / amax;
    if amax == 0.0 || inv.is_infinite() {
        d.fill(0);
        return 0.0;
    }
    let s = amax / 127.0f32;
    for (i, &x) in v.iter().enumerate() {
        let u = x * inv;
        let d0 = u.round_ties_even();
        let r1 = (u - d0) * BASE;
        let d1 = r1.round_ties_even();
        let r2 = (r1 - d1) * BASE;
        let d2 = r2.round_ties_even();
        d[i] = d0 as i8;
        d[GROUP + i] = d1 as i8;
        d[2 * GROUP + i] = d2 as i8;
    }
    s
}

/// A GEMV input row as digits, with what the dot needs besides them. Built once per matmul
/// input ([`Digits::quantize`]) and read by every output row.
#[derive(Clone, Debug, Default)]
pub struct Digits {
    k: usize,
    /// Per block of 32, [`BLOCK_BYTES`]: `d0[32] | d1[32] | d2[32]` (the 8-bit route).
    pub(super) d8: Aligned<i8>,
    /// Per element `254 * d0 + d1` (at most 32,385 in magnitude) and `d2`, as i16 (the 16-bit
    /// route, [`_mm256_madd_epi16`](std::arch::x86_64::_mm256_madd_epi16) operands).
    pub(super) x01: Aligned<i16>,
    pub(super) x2: Aligned<i16>,
    /// `x01` and `x2` with each block's elements in [`PAIRS`] order (the multi-input dot's 16-bit
    /// operands for the formats whose one-row dot takes the 8-bit route), built by
    /// [`Digits::fill_multi`] only: empty after [`Digits::fill`].
    pub(super) x01p: Aligned<i16>,
    pub(super) x2p: Aligned<i16>,
    /// Per block: `s`.
    pub(super) s: Vec<f32>,
    /// Per 16 elements: its block's `s / 254^2` (the factor of `254^2 C0 + 254 C1 + C2`), then
    /// [`PAD16`] zeros.
    pub(super) s16: Vec<f32>,
    /// Per 16 elements: the f32 sum of `v` (what a zero point or minimum multiplies; the AVX2
    /// path adds in another order than the scalar one), then [`PAD16`] zeros.
    pub(super) sx16: Vec<f32>,
}

impl Digits {
    /// The digits of `x` (`x.len()` a multiple of 32: any row a quantized part can have).
    pub fn quantize(x: &[f32]) -> Digits {
        let mut d = Digits::default();
        d.fill(x);
        d
    }

    /// Refills `self` with the digits of `x`, reusing its buffers.
    pub fn fill(&mut self, x: &[f32]) {
        self.fill_on(x, super::has_avx2());
    }

    /// [`Digits::fill`], plus what the multi-input dot ([`super::dot_rows_int_multi`]) reads
    /// besides: `x01`, `x2` in [`PAIRS`] order per block.
    pub fn fill_multi(&mut self, x: &[f32]) {
        self.fill(x);
        let k = self.k;
        self.x01p.resize_zeroed(k);
        self.x2p.resize_zeroed(k);
        for (src, dst) in [(&self.x01, &mut self.x01p), (&self.x2, &mut self.x2p)] {
            for (s, d) in src.chunks_exact(GROUP).zip(dst.chunks_exact_mut(GROUP)) {
                for (d, &e) in d.iter_mut().zip(&PAIRS) {
                    *d = s[e];
                }
            }
        }
    }

    /// The digits of `x` with [`Digits::fill_multi`]'s extra.
    pub fn quantize_multi(x: &[f32]) -> Digits {
        let mut d = Digits::default();
        d.fill_multi(x);
        d
    }

    /// Whether [`Digits::fill_multi`] built the current row's `PAIRS`-ordered operands.
    pub fn has_multi(&self) -> bool {
        self.x01p.len() == self.k && self.x2p.len() == self.k
    }

    /// [`Digits::fill`] on the AVX2 path (`fast`, which the caller has detected) or the portable one.
    pub(super) fn fill_on(&mut self, x: &[f32], fast: bool) {
        let k = x.len();
        assert!(k.is_multiple_of(GROUP), "Digits: a row of {k} is not whole blocks of {GROUP}");
        let nb = k / GROUP;
        self.k = k;
        self.d8.resize_zeroed(nb * BLOCK_BYTES);
        self.x01.resize_zeroed(k);
        self.x2.resize_zeroed(k);
        self.x01p.resize_zeroed(0);
        self.x2p.resize_zeroed(0);
        self.s.resize(nb, 0.0);
        for v in [&mut self.s16, &mut self.sx16] {
            v.clear();
            v.resize(2 * nb + PAD16, 0.0);
        }
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the caller detected the CPU features; the buffers were sized above.
            return unsafe { super::avx2_int::quantize_row(x, self) };
        }
        let _ = fast;
        self.quantize_portable(x);
    }

    /// The scalar definition over the row (what a CPU without AVX2 runs), and what the kernels
    /// read besides the digits.
    fn quantize_portable(&mut self, x: &[f32]) {
        for ((v, d), s) in x.chunks_exact(GROUP).zip(self.d8.chunks_exact_mut(BLOCK_BYTES)).zip(&mut self.s) {
            *s = quantize_block(v, d);
        }
        for (b, d) in self.d8.chunks_exact(BLOCK_BYTES).enumerate() {
            let (d0, d1, d2) = (&d[..GROUP], &d[GROUP..2 * GROUP], &d[2 * GROUP..]);
            for e in 0..GROUP {
                self.x01[GROUP * b + e] = 254 * d0[e] as i16 + d1[e] as i16;
                self.x2[GROUP * b + e] = d2[e] as i16;
            }
            self.s16[2 * b..2 * b + 2].fill(self.s[b] / (BASE * BASE));
        }
        let sums = sums16(x);
        self.sx16[..sums.len()].copy_from_slice(&sums);
    }

    /// Elements of the row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Block `b`'s `s` and digits (`d0[32] | d1[32] | d2[32]`).
    pub fn block(&self, b: usize) -> (f32, &[i8]) {
        (self.s[b], &self.d8[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES])
    }

    /// The f32 sum of the row's elements `16 h .. 16 h + 16`.
    pub fn sum16(&self, h: usize) -> f32 {
        self.sx16[h]
    }
}
