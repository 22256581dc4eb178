//! Random weights for the kernel checks, in every format: f16 matrices (the f16 kernels) and
//! canonical parts of every [`WeightFormat`] (the quantized kernels), with their values as the
//! CPU reference dequantises them.
//!
//! Quantized parts get random bits everywhere, with their scale fields overwritten by finite
//! values sized so that |w| is around `0.05`, except for a few groups with extreme scales: the
//! f16 maximum (65504), a subnormal (2^-24) and zero -- the kernels must get those right too.
use half::f16;

use super::{from_f16, to_f16, Harness, Rng};
use crate::cuda::device::DevBuf;
use crate::cuda::launch::QParts;
use crate::error::RuntimeError;
use crate::plan::{WeightInfo, WeightPart};
use crate::quant::{part_layout, PartView, WeightFormat, GROUP, SUPER};

/// A matrix `[n, k]` under test.
pub(super) struct TestWeight {
    pub n: usize,
    pub k: usize,
    /// Values as the CPU twin sees them, `[n, k]`.
    pub values: Vec<f32>,
    /// Per element, an upper bound of the magnitudes the kernels add up for it: |w| for floats,
    /// |dl * (q - z)| + |ml| for formats with a min (computed by flipping the min's sign: one of
    /// w and w' then equals that sum). Rounding bounds are in terms of these.
    pub mags: Vec<f32>,
    pub kind: Kind,
}

pub(super) enum Kind {
    F16(Vec<f16>),
    /// Canonical bytes of the parts, back to back, and the plan's description of them (offsets
    /// from 0).
    Quant {
        bytes: Vec<u8>,
        info: WeightInfo,
    },
}

/// The weight on the device: an f16 matrix or quantized parts.
pub(super) enum DevWeight {
    F16(DevBuf),
    /// The buffer the parts point into (kept alive) and the parts.
    Quant {
        _bytes: DevBuf,
        parts: QParts,
    },
}

impl DevWeight {
    pub fn f16_ptr(&self) -> Option<u64> {
        match self {
            DevWeight::F16(b) => Some(b.ptr()),
            DevWeight::Quant { .. } => None,
        }
    }
    pub fn parts(&self) -> Option<QParts> {
        match self {
            DevWeight::Quant { parts, .. } => Some(*parts),
            DevWeight::F16(_) => None,
        }
    }
}

impl TestWeight {
    /// A random f16 matrix (values uniform in +-0.05, f16-exact).
    pub fn f16(rng: &mut Rng, n: usize, k: usize) -> TestWeight {
        let w16 = to_f16(&rng.vec(n * k, 0.05));
        let values = from_f16(&w16);
        let mags = values.iter().map(|v| v.abs()).collect();
        TestWeight { n, k, values, mags, kind: Kind::F16(w16) }
    }

    /// Random parts `(format, rows)` of `k` columns (k must suit every format), with a few
    /// groups at extreme scales (`extreme`: the f16 maximum too; else only subnormal and zero --
    /// for paths that store values in f16, where both sides would overflow differently).
    pub fn quant(rng: &mut Rng, parts: &[(WeightFormat, usize)], k: usize, extreme: bool) -> TestWeight {
        let mut bytes = Vec::new();
        let mut infos = Vec::new();
        let (mut values, mut mags) = (Vec::new(), Vec::new());
        for &(format, rows) in parts {
            let mut b = random_part(rng, format, rows, k, extreme);
            let v = dequant(format, rows, k, &b);
            flip_min_sign(format, rows, k, &mut b);
            let v2 = dequant(format, rows, k, &b);
            flip_min_sign(format, rows, k, &mut b);
            mags.extend(v.iter().zip(&v2).map(|(a, c)| a.abs().max(c.abs())));
            values.extend(v);
            infos.push(WeightPart { rows, format, offset: bytes.len() as u64, bytes: b.len() as u64 });
            bytes.extend(b);
        }
        let n = parts.iter().map(|p| p.1).sum();
        let info =
            WeightInfo { name: "check".into(), shape: vec![n, k], offset: 0, bytes: bytes.len() as u64, parts: infos };
        TestWeight { n, k, values, mags, kind: Kind::Quant { bytes, info } }
    }

    pub fn upload(&self, h: &Harness) -> Result<DevWeight, RuntimeError> {
        Ok(match &self.kind {
            Kind::F16(w) => DevWeight::F16(h.input(w)?),
            Kind::Quant { bytes, info } => {
                let b = h.input(bytes)?;
                let parts = QParts::of(info, b.ptr());
                DevWeight::Quant { _bytes: b, parts }
            }
        })
    }

    /// A short description for check rows, e.g. "Q5_0" or "Q5_0+Q8_0".
    pub fn label(&self) -> String {
        match &self.kind {
            Kind::F16(_) => "f16".into(),
            Kind::Quant { info, .. } => info.parts.iter().map(|p| p.format.name()).collect::<Vec<_>>().join("+"),
        }
    }
}

/// The row length to test format `f` at, near `k`: the next multiple of its block (32 for the
/// legacy and float formats, 256 for the k-quants).
pub(super) fn k_for(f: WeightFormat, k: usize) -> usize {
    k.next_multiple_of(f.row_multiple().max(GROUP))
}

fn dequant(format: WeightFormat, rows: usize, k: usize, bytes: &[u8]) -> Vec<f32> {
    let view = PartView::new(format, rows, k, bytes).expect("a part of the layout's size");
    let mut out = vec![0f32; rows * k];
    for (r, row) in out.chunks_exact_mut(k).enumerate() {
        view.dequant_row(r, row);
    }
    out
}

/// (largest |q - z|, largest sub-scale) of a format: |w| ~ d * both.
fn code_range(f: WeightFormat) -> (f32, f32) {
    match f {
        WeightFormat::Q4_0 => (8.0, 1.0),
        WeightFormat::Q4_1 => (15.0, 1.0),
        WeightFormat::Q5_0 => (16.0, 1.0),
        WeightFormat::Q5_1 => (31.0, 1.0),
        WeightFormat::Q8_0 => (128.0, 1.0),
        WeightFormat::Q2_K => (3.0, 15.0),
        WeightFormat::Q3_K => (4.0, 32.0),
        WeightFormat::Q4_K => (15.0, 63.0),
        WeightFormat::Q5_K => (31.0, 63.0),
        WeightFormat::Q6_K => (32.0, 128.0),
        _ => (1.0, 1.0),
    }
}

/// A random f16 scale of about `typical` (sign random), extreme for a few group indices (the
/// f16 maximum only when `extreme`).
fn scale(rng: &mut Rng, i: usize, typical: f32, signed: bool, extreme: bool) -> [u8; 2] {
    let v = match i % 61 {
        7 if extreme => 65504.0,
        19 => 5.960_464_5e-8, // the smallest f16 subnormal
        31 => 0.0,
        _ => {
            let u = rng.uniform(1.0);
            let m = typical * (0.25 + 0.75 * u.abs());
            if signed && u < 0.0 {
                -m
            } else {
                m
            }
        }
    };
    f16::from_f32(v).to_le_bytes()
}

fn random_part(rng: &mut Rng, f: WeightFormat, rows: usize, k: usize, extreme: bool) -> Vec<u8> {
    let l = part_layout(f, rows, k).expect("k suits the format");
    let mut b = vec![0u8; l.bytes as usize];
    if f.is_float() {
        let v = rng.vec(rows * k, 0.05);
        let data: Vec<u8> = match f {
            WeightFormat::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            WeightFormat::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        };
        b[..data.len()].copy_from_slice(&data);
        return b;
    }
    for byte in b.iter_mut() {
        *byte = rng.next_u64() as u8;
    }
    let (code, sub) = code_range(f);
    let typical = 0.05 / (code * sub);
    let (sc, sup) = (l.sc as usize, l.sup as usize);
    let groups = rows * k / GROUP;
    match f {
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => {
            for g in 0..groups {
                b[sc + 2 * g..sc + 2 * g + 2].copy_from_slice(&scale(rng, g, typical, true, extreme));
            }
        }
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => {
            for g in 0..groups {
                b[sc + 4 * g..sc + 4 * g + 2].copy_from_slice(&scale(rng, g, typical, true, extreme));
                b[sc + 4 * g + 2..sc + 4 * g + 4].copy_from_slice(&scale(
                    rng,
                    g + 3,
                    0.5 * code * typical,
                    true,
                    extreme,
                ));
            }
        }
        _ => {
            // k-quants: 6-bit sub-scales where the format has them; d (and dmin) per super-block.
            if matches!(f, WeightFormat::Q3_K | WeightFormat::Q4_K | WeightFormat::Q5_K) {
                for v in &mut b[sc..sc + 2 * groups] {
                    *v &= 63;
                }
            }
            let with_min = matches!(f, WeightFormat::Q2_K | WeightFormat::Q4_K | WeightFormat::Q5_K);
            for s in 0..rows * k / SUPER {
                let at = sup + s * if with_min { 4 } else { 2 };
                b[at..at + 2].copy_from_slice(&scale(rng, s, typical, true, extreme));
                if with_min {
                    b[at + 2..at + 4].copy_from_slice(&scale(rng, s + 5, 0.5 * code * typical, true, extreme));
                }
            }
        }
    }
    b
}

/// Negates every min of a part in place (formats without a min: unchanged).
fn flip_min_sign(f: WeightFormat, rows: usize, k: usize, b: &mut [u8]) {
    let l = part_layout(f, rows, k).expect("k suits the format");
    let (sc, sup) = (l.sc as usize, l.sup as usize);
    match f {
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => {
            for g in 0..rows * k / GROUP {
                b[sc + 4 * g + 3] ^= 0x80;
            }
        }
        WeightFormat::Q2_K | WeightFormat::Q4_K | WeightFormat::Q5_K => {
            for s in 0..rows * k / SUPER {
                b[sup + 4 * s + 3] ^= 0x80;
            }
        }
        _ => {}
    }
}
