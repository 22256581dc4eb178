//! Weight formats of the plan and their canonical packed layout (the contract between the
//! compiler's repacker, the CPU twins and the CUDA kernels).
//!
//! A matrix `[n, k]` is stored in one or more row-range *parts* ([`crate::WeightPart`]),
//! each in one [`WeightFormat`]. Float formats (F32, F16, BF16) are plain row-major. Quantized
//! formats keep the GGUF's bits exactly -- never widened to floats -- but regrouped so that the
//! GPU reads them with aligned vector loads: a row is cut into *groups* of 32 elements, and each
//! group's bytes are split into up to four *planes*, each plane one contiguous array over all
//! groups of the part (group `gi = row * (k / 32) + g`), each plane starting at a multiple of
//! [`crate::ALIGNMENT`] from the part's start:
//!
//! | plane | bytes per group | holds |
//! |---|---|---|
//! | `qs` | 8 (2-bit), 16 (4-bit), 32 (8-bit) | the low bits of every element |
//! | `qh` | 4 (1 extra bit), 8 (2 extra bits) | the high bits (5-bit, 3-bit and 6-bit formats) |
//! | `sc` | 2 or 4 | the group's scales (legacy: f16 d [and f16 m]; k-quants: 6/8-bit sub-scales) |
//! | `sup` | 2 or 4 per *super-block* of 256 elements (index `row * (k / 256) + g / 8`) | k-quants' f16 d [and dmin] |
//!
//! Bit layouts inside a group (element `e` in `0..32`, `q` its unsigned integer code):
//! - `qs` 4-bit: byte `e % 16` holds `e` in its low nibble when `e < 16`, in its high nibble otherwise.
//! - `qs` 2-bit: byte `e % 8`, bits `2 * (e / 8)`.
//! - `qs` 8-bit: byte `e` (Q8_0: the signed code, two's complement).
//! - `qh` 1 bit: byte `e % 4`, bit `e / 4` (the extra bit is bit 4 of `q` for Q5_*, Q5_K and bit 2 for Q3_K).
//! - `qh` 2 bits: u32 word `e / 16`, byte `e % 4`, bits `2 * ((e / 4) % 4)` (bits 4-5 of Q6_K's code).
//!   These layouts let a kernel turn four elements `4m..4m+3` into four bytes with a shift and a
//!   mask (kernels/quant.cuh).
//!
//! Element values (all in f32, the same arithmetic as ggml's `dequantize_row_*`, so the CPU
//! reference is bit-exact with ggml): see [`reference::dequant_group`].
pub mod pack;
pub mod reference;

use serde::{Deserialize, Serialize};

use crate::ALIGNMENT;

/// Elements per group (the unit of every quantized layout).
pub const GROUP: usize = 32;
/// Elements per k-quant super-block.
pub const SUPER: usize = 256;

/// Storage format of one weight part. The discriminants are the codes the CUDA kernels use
/// (`QFmt` in kernels/quant.cuh; a test keeps them equal).
#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightFormat {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    Q4_0 = 3,
    Q4_1 = 4,
    Q5_0 = 5,
    Q5_1 = 6,
    Q8_0 = 7,
    Q2_K = 8,
    Q3_K = 9,
    Q4_K = 10,
    Q5_K = 11,
    Q6_K = 12,
}

/// Every format, in code order.
pub const ALL_FORMATS: [WeightFormat; 13] = [
    WeightFormat::F32,
    WeightFormat::F16,
    WeightFormat::BF16,
    WeightFormat::Q4_0,
    WeightFormat::Q4_1,
    WeightFormat::Q5_0,
    WeightFormat::Q5_1,
    WeightFormat::Q8_0,
    WeightFormat::Q2_K,
    WeightFormat::Q3_K,
    WeightFormat::Q4_K,
    WeightFormat::Q5_K,
    WeightFormat::Q6_K,
];

/// Bytes per group in each plane (0: no such plane); `sup` is per super-block of 256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneBytes {
    pub qs: usize,
    pub qh: usize,
    pub sc: usize,
    pub sup: usize,
}

impl WeightFormat {
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "F32",
            WeightFormat::F16 => "F16",
            WeightFormat::BF16 => "BF16",
            WeightFormat::Q4_0 => "Q4_0",
            WeightFormat::Q4_1 => "Q4_1",
            WeightFormat::Q5_0 => "Q5_0",
            WeightFormat::Q5_1 => "Q5_1",
            WeightFormat::Q8_0 => "Q8_0",
            WeightFormat::Q2_K => "Q2_K",
            WeightFormat::Q3_K => "Q3_K",
            WeightFormat::Q4_K => "Q4_K",
            WeightFormat::Q5_K => "Q5_K",
            WeightFormat::Q6_K => "Q6_K",
        }
    }

    /// Plain row-major floats (no groups needed).
    pub fn is_float(self) -> bool {
        matches!(self, WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16)
    }

    /// Bytes per element of a float format.
    pub fn float_bytes(self) -> Option<usize> {
        match self {
            WeightFormat::F32 => Some(4),
            WeightFormat::F16 | WeightFormat::BF16 => Some(2),
            _ => None,
        }
    }

    /// A row length this format can hold: any for floats, a multiple of 32 (legacy) or 256
    /// (k-quants) for quantized formats.
    pub fn row_multiple(self) -> usize {
        match self {
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => 1,
            WeightFormat::Q4_0 | WeightFormat::Q4_1 | WeightFormat::Q5_0 | WeightFormat::Q5_1 | WeightFormat::Q8_0 => {
                GROUP
            }
            _ => SUPER,
        }
    }

    /// Plane sizes of a quantized format (floats: `qs` is the row-major data, 32 elements a group).
    pub fn planes(self) -> PlaneBytes {
        let p = |qs, qh, sc, sup| PlaneBytes { qs, qh, sc, sup };
        match self {
            WeightFormat::F32 => p(128, 0, 0, 0),
            WeightFormat::F16 | WeightFormat::BF16 => p(64, 0, 0, 0),
            WeightFormat::Q4_0 => p(16, 0, 2, 0),
            WeightFormat::Q4_1 => p(16, 0, 4, 0),
            WeightFormat::Q5_0 => p(16, 4, 2, 0),
            WeightFormat::Q5_1 => p(16, 4, 4, 0),
            WeightFormat::Q8_0 => p(32, 0, 2, 0),
            WeightFormat::Q2_K => p(8, 0, 2, 4),
            WeightFormat::Q3_K => p(8, 4, 2, 2),
            WeightFormat::Q4_K => p(16, 0, 2, 4),
            WeightFormat::Q5_K => p(16, 4, 2, 4),
            WeightFormat::Q6_K => p(16, 8, 2, 2),
        }
    }

    /// Bytes per element as stored (planes included; alignment padding excluded), for reports.
    pub fn bits_per_element(self) -> f64 {
        let p = self.planes();
        ((p.qs + p.qh + p.sc) as f64 + p.sup as f64 / 8.0) * 8.0 / GROUP as f64
    }
}

/// Byte offsets of a part's planes relative to the part's start, and its total size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartLayout {
    pub qs: u64,
    pub qh: u64,
    pub sc: u64,
    pub sup: u64,
    /// Bytes of each plane (0 when absent).
    pub qs_bytes: u64,
    pub qh_bytes: u64,
    pub sc_bytes: u64,
    pub sup_bytes: u64,
    /// Total bytes of the part (the last plane padded to [`ALIGNMENT`]).
    pub bytes: u64,
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The layout of `rows` rows of `k` elements in `format`, or `None` when `k` is not a multiple
/// of the format's block (see [`WeightFormat::row_multiple`]) or the size overflows.
pub fn part_layout(format: WeightFormat, rows: usize, k: usize) -> Option<PartLayout> {
    if !k.is_multiple_of(format.row_multiple()) {
        return None;
    }
    let (rows, k) = (rows as u64, k as u64);
    if let Some(eb) = format.float_bytes() {
        let qs_bytes = rows.checked_mul(k)?.checked_mul(eb as u64)?;
        return Some(PartLayout {
            qs: 0,
            qh: 0,
            sc: 0,
            sup: 0,
            qs_bytes,
            qh_bytes: 0,
            sc_bytes: 0,
            sup_bytes: 0,
            bytes: align(qs_bytes),
        });
    }
    let p = format.planes();
    let groups = rows.checked_mul(k / GROUP as u64)?;
    let supers = rows.checked_mul(k / SUPER as u64)?;
    let qs_bytes = groups.checked_mul(p.qs as u64)?;
    let qh_bytes = groups * p.qh as u64;
    let sc_bytes = groups * p.sc as u64;
    let sup_bytes = supers * p.sup as u64;
    let qs = 0;
    let qh = align(qs + qs_bytes);
    let sc = align(qh + qh_bytes);
    let sup = align(sc + sc_bytes);
    let bytes = align(sup + sup_bytes);
    Some(PartLayout { qs, qh, sc, sup, qs_bytes, qh_bytes, sc_bytes, sup_bytes, bytes })
}

/// One part's bytes viewed through its layout: what the CPU twins read.
#[derive(Clone, Copy, Debug)]
pub struct PartView<'a> {
    pub format: WeightFormat,
    pub rows: usize,
    pub k: usize,
    pub qs: &'a [u8],
    pub qh: &'a [u8],
    pub sc: &'a [u8],
    pub sup: &'a [u8],
}

impl<'a> PartView<'a> {
    /// Views `bytes` (exactly the part, as laid out by [`part_layout`]); `None` if the size or the
    /// row length does not fit the format.
    pub fn new(format: WeightFormat, rows: usize, k: usize, bytes: &'a [u8]) -> Option<PartView<'a>> {
        let l = part_layout(format, rows, k)?;
        if bytes.len() as u64 != l.bytes {
            return None;
        }
        let s = |o: u64, n: u64| &bytes[o as usize..(o + n) as usize];
        Some(PartView {
            format,
            rows,
            k,
            qs: s(l.qs, l.qs_bytes),
            qh: s(l.qh, l.qh_bytes),
            sc: s(l.sc, l.sc_bytes),
            sup: s(l.sup, l.sup_bytes),
        })
    }

    /// Dequantises row `r` into `out[..k]` (the reference: bit-exact with ggml).
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        reference::dequant_row(self, r, out)
    }
}
