//! The CPU executor's quantized dot products checked against the reference dequantisation, as a
//! library: the unit tests use it, and so does `qwen-aot check` on a machine without a GPU (the
//! CPU checks it falls back to), so a user can see the fast paths this machine takes (AVX2 or
//! portable) are right on their CPU.
use half::f16;

use super::digits::{element_error_bound, Digits};
use super::int::ucodes;
use super::int::IntDigits;
use super::{affine_at, dequant_row, dot_int_portable, dot_portable, dot_row, dot_row_int, offset, sums16};
use crate::quant::{part_layout, reference, PartView, WeightFormat, ALL_FORMATS, GROUP, SUPER};

/// splitmix64: deterministic random bits without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        crate::rng::splitmix64(&mut self.0)
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// A finite f16 scale: mostly random finite bits, sometimes +-65504, a subnormal or zero.
    pub fn f16_scale(&mut self) -> u16 {
        let sign = (self.next_u64() as u16 & 1) << 15;
        match self.next_u64() % 16 {
            0 => sign | 0x7bff,                               // +-65504, the largest finite
            1 => sign | (1 + self.next_u64() % 0x3ff) as u16, // subnormal
            2 => sign,                                        // +-0
            _ => loop {
                let b = self.next_u64() as u16;
                if (b >> 10) & 0x1f != 0x1f {
                    break b;
                }
            },
        }
    }
}

/// Random canonical bytes of `rows x k` in `f`: random bits everywhere, then every f16 field
/// (legacy d/m in `sc`, k-quant d/dmin in `sup`, F16 elements) replaced by a finite value, and
/// float elements kept finite.
pub fn random_part(f: WeightFormat, rows: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let l = part_layout(f, rows, k).unwrap();
    let mut b: Vec<u8> = (0..l.bytes).map(|_| rng.next_u64() as u8).collect();
    let put16 = |b: &mut [u8], at: usize, rng: &mut Rng| b[at..at + 2].copy_from_slice(&rng.f16_scale().to_le_bytes());
    match f {
        WeightFormat::F32 => {
            for i in 0..rows * k {
                b[4 * i..4 * i + 4].copy_from_slice(&(rng.unit() * 100.0).to_le_bytes());
            }
        }
        WeightFormat::F16 => (0..rows * k).for_each(|i| put16(&mut b, 2 * i, rng)),
        WeightFormat::BF16 => {
            for i in 0..rows * k {
                let v = half::bf16::from_f32(rng.unit() * 1e3);
                b[2 * i..2 * i + 2].copy_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        WeightFormat::Q4_0 | WeightFormat::Q5_0 | WeightFormat::Q8_0 => {
            (0..rows * k / GROUP).for_each(|g| put16(&mut b, l.sc as usize + 2 * g, rng));
        }
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => {
            (0..2 * rows * k / GROUP).for_each(|h| put16(&mut b, l.sc as usize + 2 * h, rng));
        }
        _ => {
            let n16 = f.planes().sup / 2;
            (0..n16 * rows * k / SUPER).for_each(|h| put16(&mut b, l.sup as usize + 2 * h, rng));
        }
    }
    b
}

fn soft_f16(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}

/// Row lengths to check per format: the k-quants need multiples of 256.
pub fn ks(f: WeightFormat) -> &'static [usize] {
    match f.row_multiple() {
        1 => &[32, 896, 37],
        32 => &[32, 896],
        _ => &[256, 512, 4864],
    }
}

/// The reference row as f32 and `|b|` per element (0 for formats without a minimum).
fn reference_row(v: &PartView, r: usize) -> (Vec<f32>, Vec<f32>) {
    let mut w = vec![0.0; v.k];
    reference::dequant_row(v, r, &mut w);
    let mut b = vec![0.0f32; v.k];
    if !v.format.is_float() {
        for g in 0..v.k / GROUP {
            let (_, bb) = affine_at(v, r, g, soft_f16);
            for (e, o) in b[g * GROUP..(g + 1) * GROUP].iter_mut().enumerate() {
                *o = bb[e / 16].abs();
            }
        }
    }
    (w, b)
}

/// `(|got - exact|, bound)` for a dot product `got` of row `r` of `v` with `x`: exact is the f64
/// dot of the reference row.
///
/// Tolerance: the fast path computes `sum_h a_h * (sum_e c_e x_e) + b_h * (sum_e x_e)` in f32 and
/// the reference rounds each `w_e = a c_e + b` once; every f32 operation has relative error <=
/// eps (2^-24), and the longest chain of dependent roundings any element's term goes through is
/// at most `k / 8 + 8` (the portable path's 8 accumulators of k/8 terms each, then their sum;
/// the AVX2 path's chains are shorter: k/64 groups per accumulator plus 4 products, 3 horizontal
/// adds, and the k/16-long scalar chain of minimum terms). So the standard bound gives
/// `|err| <= (k/8 + 8) * eps * sum_e |x_e| (|a c_e| + |b|)`, and `|a c_e| <= |w_e| + |b|` (to
/// first order). No cancellation-free shortcut: random scales of 65504 with minimums make
/// `w_e` small while `a c_e` and `b` are huge, which is exactly what this bound allows for.
pub fn dot_error(got: f32, v: &PartView, r: usize, x: &[f32]) -> (f64, f64) {
    let (w, b) = reference_row(v, r);
    let exact: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
    let mag: f64 = (0..v.k).map(|e| x[e].abs() as f64 * (w[e].abs() as f64 + 2.0 * b[e] as f64)).sum();
    let tol = (v.k / 8 + 8) as f64 * f32::EPSILON as f64 / 2.0 * mag + f32::MIN_POSITIVE as f64;
    ((got as f64 - exact).abs(), tol)
}

/// `(|got - exact|, bound)` for the integer dot ([`super::int`]) of row `r` of quantized `v` with
/// `x`: exact is the f64 dot of the reference row with `x` itself (not its digits).
///
/// Tolerance: the integer dot computes `a_h * sum_e q_e v~_e + (b_h - offset * a_h) * sum_e v_e`
/// with unsigned codes `q` and the digits' value `v~` of each input; so it is [`dot_error`]'s
/// rounding bound with `|a q_e| + |b - offset a|` as each element's magnitude, plus the digits'
/// own error, `sum_e |a q_e| * e_e` with `e_e` the [`element_error_bound`] of its block for
/// the `n` digits the dot used.
pub fn int_dot_error(got: f32, v: &PartView, r: usize, x: &[f32], n: IntDigits) -> (f64, f64) {
    let (w, _) = reference_row(v, r);
    let exact: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
    let off = offset(v.format) as f64;
    let (mut mag, mut digits) = (0.0f64, 0.0f64);
    let mut q = [0i32; GROUP];
    for g in 0..v.k / GROUP {
        ucodes(v, r, g, &mut q);
        let (a, b) = affine_at(v, r, g, soft_f16);
        let block = &x[g * GROUP..(g + 1) * GROUP];
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (e, &xe) in block.iter().enumerate() {
            let (a, b) = (a[e / 16] as f64, b[e / 16] as f64);
            let aq = (a * q[e] as f64).abs();
            mag += xe.abs() as f64 * (aq + (b - off * a).abs());
            digits += aq * element_error_bound(n, amax, xe);
        }
    }
    let tol = (v.k / 8 + 8) as f64 * f32::EPSILON as f64 / 2.0 * mag + digits + f32::MIN_POSITIVE as f64;
    ((got as f64 - exact).abs(), tol)
}

/// One format's result: the worst `err / bound` over its rows and row lengths (at most 1 passes)
/// and whether the fast dequantisation matched the reference bit for bit.
pub struct FormatCheck {
    pub format: WeightFormat,
    pub ks: &'static [usize],
    pub dots: usize,
    pub worst: f64,
    pub dequant_exact: bool,
}

impl FormatCheck {
    pub fn pass(&self) -> bool {
        self.worst <= 1.0 && self.dequant_exact
    }
}

/// Every format at [`ks`]'s row lengths, on random canonical bytes from `seed`: [`dot_row`] (the
/// path this CPU takes) and [`dot_portable`] against [`dot_error`]'s bound, for quantized formats
/// also [`dot_row_int`] and [`dot_int_portable`] (the decode path) on two and on three
/// digits against [`int_dot_error`]'s,
/// [`dequant_row`] against the reference bit for bit.
pub fn check_every_format(seed: u64) -> Vec<FormatCheck> {
    let mut rng = Rng(seed);
    ALL_FORMATS
        .iter()
        .map(|&f| {
            let mut c = FormatCheck { format: f, ks: ks(f), dots: 0, worst: 0.0, dequant_exact: true };
            for &k in ks(f) {
                for rows in [1, 5] {
                    let bytes = random_part(f, rows, k, &mut rng);
                    let Some(v) = PartView::new(f, rows, k, &bytes) else { continue };
                    let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
                    let sx = sums16(&x);
                    let digits = (!f.is_float()).then(|| Digits::quantize(&x));
                    for r in 0..rows {
                        for got in [dot_row(&v, r, &x, &sx), dot_portable(&v, r, &x)] {
                            let (err, tol) = dot_error(got, &v, r, &x);
                            c.worst = c.worst.max(err / tol);
                            c.dots += 1;
                        }
                        if let Some(d) = &digits {
                            for n in [IntDigits::Two, IntDigits::Three] {
                                for got in [dot_row_int(&v, r, d, n), dot_int_portable(&v, r, d, n)] {
                                    let (err, tol) = int_dot_error(got, &v, r, &x, n);
                                    c.worst = c.worst.max(err / tol);
                                    c.dots += 1;
                                }
                            }
                        }
                        let (mut want, mut got) = (vec![0.0; k], vec![f32::NAN; k]);
                        reference::dequant_row(&v, r, &mut want);
                        dequant_row(&v, r, &mut got);
                        c.dequant_exact &= got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    }
                }
            }
            c
        })
        .collect()
}
