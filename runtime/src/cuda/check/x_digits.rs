//! x's int8 digits (kernels/int8_mma.cuh: `digit_scale`, `pack_digits4`), the B operand of every
//! tensor-core GEMV, against their definition derived here on the host without the kernel's bit
//! tricks: per group of 32, amax = max |x|, s = amax * (65536 / X_DIGIT_RANGE), inv =
//! X_DIGIT_RANGE / amax (both f32), v = rint(x * inv) (half to even, from the exact product), and
//! v = 65536 d0 + 256 d1 + d2 with d1, d2 in [-128, 127]. Every digit byte and scale must be equal
//! bit for bit, and the digits must give back x within amax * 0.5 / X_DIGIT_RANGE (plus s's own
//! rounding).
use super::{CheckRow, Harness, Rng};
use crate::cuda::test_kernels;
use crate::error::RuntimeError;
use crate::kernel_constants::X_DIGIT_RANGE;

/// Elements per group (one digit scale each).
const GROUP: usize = 32;

/// Below this amax a group's digits and scale are zero (int8_mma.cuh `DIGIT_MIN_AMAX`, 2^-100).
const MIN_AMAX: f32 = f32::from_bits((127 - 100) << 23);

/// One group's digits by the definition: `(digits[d][i], s)`, d0 the most significant.
pub(crate) fn group_digits(x: &[f32]) -> ([[i8; GROUP]; 3], f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut digits = [[0i8; GROUP]; 3];
    if amax < MIN_AMAX {
        return (digits, 0.0);
    }
    let range = X_DIGIT_RANGE as f32;
    let (s, inv) = (amax * (65536.0 / range), range / amax);
    for (i, &e) in x.iter().enumerate() {
        // The product of two f32 is exact in f64; the kernel's FFMA rounds it once, to an integer.
        let v = (e as f64 * inv as f64).round_ties_even() as i64;
        let d2 = (v + 128).rem_euclid(256) - 128;
        let v1 = (v - d2) / 256;
        let d1 = (v1 + 128).rem_euclid(256) - 128;
        let d0 = (v1 - d1) / 256;
        for (d, value) in [d0, d1, d2].into_iter().enumerate() {
            digits[d][i] = i8::try_from(value).expect("a digit outside int8");
        }
    }
    (digits, s)
}

/// The value digits `d` of element `i` at scale `s` stand for (f64).
fn digit_value(d: &[[i8; GROUP]; 3], i: usize, s: f32) -> f64 {
    s as f64 * (d[0][i] as f64 + d[1][i] as f64 / 256.0 + d[2][i] as f64 / 65536.0)
}

/// Test groups: random rows at magnitudes from 1e-30 to 1e30, ties of the rounding at scale 1,
/// the extremes +-amax, zeros, signed zeros, subnormals and groups below `MIN_AMAX`.
fn test_groups(rng: &mut Rng) -> Vec<f32> {
    let mut x = Vec::new();
    for scale in [1e-30f32, 1e-6, 0.01, 1.0, 3.0, 1234.5, 3e4, 1e30] {
        for _ in 0..16 {
            x.extend(rng.vec(GROUP, scale));
        }
    }
    // amax = X_DIGIT_RANGE: inv = 1, so v = rint(x): halves round to even, 127.5 -> 128 (d2 = -128).
    let range = X_DIGIT_RANGE as f32;
    let mut ties = vec![range, -range, 0.5, 1.5, 2.5, -0.5, -1.5, 127.5, -128.5, 32767.5, -32768.5, 65535.5];
    ties.extend((0..GROUP - ties.len()).map(|i| i as f32 * 1013.25 - 7000.5));
    x.extend(ties);
    let mut spikes = vec![0f32; GROUP];
    spikes[7] = -3.25; // one element carries the scale: every other digit is 0
    x.extend(spikes);
    x.extend([0f32; GROUP]);
    x.extend((0..GROUP).map(|i| if i % 2 == 0 { -0.0 } else { f32::from_bits(1 + i as u32) })); // subnormals
    x.extend((0..GROUP).map(|i| f32::from_bits(0x0040_0000 + i as u32) * 1e-10)); // below MIN_AMAX
    x.extend((0..GROUP).map(|i| if i == 3 { MIN_AMAX } else { MIN_AMAX * (i as f32 / 40.0) }));
    x
}

pub(super) fn x_digit_checks(h: &mut Harness, seed: u64) -> Result<(), RuntimeError> {
    let mut rng = Rng(seed ^ 0xD161_7500);
    let x = test_groups(&mut rng);
    let groups = x.len() / GROUP;
    let d_x = h.input(&x)?;
    let d_words = h.output(groups * 24 * 4)?;
    let d_scale = h.output(groups * 4)?;
    // SAFETY: d_x holds groups * 32 f32, d_words groups * 24 u32 and d_scale groups f32
    // (allocated just above), as x_digits_test reads and writes them.
    unsafe { h.tests.run(h.dev, &test_kernels::x_digits(d_x.ptr(), d_words.ptr(), d_scale.ptr(), groups))? };
    let mut words = vec![0u32; groups * 24];
    h.dev.dtoh(d_words.ptr(), &mut words, "check read")?;
    let scales = h.read_f32(&d_scale, groups)?;

    let (mut bad_bytes, mut bad_scales) = (0usize, 0usize);
    let (mut back, mut want, mut bound) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..groups {
        let xg = &x[GROUP * g..GROUP * (g + 1)];
        let (digits, s) = group_digits(xg);
        bad_scales += usize::from(s.to_bits() != scales[g].to_bits());
        let mut gpu = [[0i8; GROUP]; 3];
        for (d, plane) in gpu.iter_mut().enumerate() {
            for (i, digit) in plane.iter_mut().enumerate() {
                let word = words[24 * g + 8 * d + i / 4];
                *digit = (word >> (8 * (i % 4))) as u8 as i8;
                bad_bytes += usize::from(*digit != digits[d][i]);
            }
        }
        let amax = xg.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, &e) in xg.iter().enumerate() {
            back.push(digit_value(&gpu, i, scales[g]) as f32);
            want.push(e);
            // The digits' rounding, inv's and s's own (2^-24 of the value each), the f32 read-back.
            let b =
                if amax < MIN_AMAX { amax } else { amax * (0.5 / X_DIGIT_RANGE as f32 + 4.0 / (1u64 << 24) as f32) };
            bound.push(b);
        }
    }
    let shape = format!("{groups} groups of {GROUP}");
    h.rows.push(CheckRow {
        name: "x digits (int8_mma.cuh) vs their definition: bytes and scales".into(),
        shape: shape.clone(),
        max_abs: (bad_bytes + bad_scales) as f32,
        max_rel: 0.0,
        tol: 0.0,
        pass: bad_bytes == 0 && bad_scales == 0,
    });
    // The row takes the harness's shape label: this check's own, for this row only.
    let kernel_shape = std::mem::replace(&mut h.shape, shape);
    h.record_bounded("x digits give back x within amax * 0.5 / X_DIGIT_RANGE", &back, &want, &bound);
    h.shape = kernel_shape;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(values: &[f32]) -> Vec<f32> {
        let mut x = values.to_vec();
        x.resize(GROUP, 0.0);
        x
    }

    /// amax = X_DIGIT_RANGE makes inv 1: v = rint(x), and the digits are v's balanced base-256 ones.
    #[test]
    fn digits_of_known_integers() {
        let range = X_DIGIT_RANGE as f32;
        let (d, s) = group_digits(&group(&[range, 2.5, 127.5, -128.5, -1.0, 65535.5]));
        assert!((s - 65536.0).abs() <= 65536.0 * f32::EPSILON, "{s}");
        // 4,161,280 = 63 * 65536 + 127 * 256 + 0 (0x3F7F00).
        assert_eq!((d[0][0], d[1][0], d[2][0]), (63, 127, 0));
        assert_eq!((d[0][1], d[1][1], d[2][1]), (0, 0, 2), "2.5 rounds to even");
        assert_eq!((d[0][2], d[1][2], d[2][2]), (0, 1, -128), "128 = 256 - 128");
        assert_eq!((d[0][3], d[1][3], d[2][3]), (0, 0, -128), "-128.5 rounds to -128");
        assert_eq!((d[0][4], d[1][4], d[2][4]), (0, 0, -1));
        assert_eq!((d[0][5], d[1][5], d[2][5]), (1, 0, 0), "65535.5 rounds to 65536");
    }

    /// The most negative element: v = -X_DIGIT_RANGE = -(63 * 65536 + 127 * 256).
    #[test]
    fn digits_of_minus_amax() {
        let (d, _) = group_digits(&group(&[-3.0, 1.0]));
        assert_eq!((d[0][0], d[1][0], d[2][0]), (-63, -127, 0));
        // 1/3 of the range: 1,387,093.33 -> 1,387,093 = 21 * 65536 + 42 * 256 + 85 (0x152A55).
        assert_eq!((d[0][1], d[1][1], d[2][1]), (21, 42, 85));
    }

    #[test]
    fn digits_give_back_x_within_the_bound() {
        let mut rng = Rng(7);
        for scale in [1e-20f32, 0.3, 5.0, 1e25] {
            let x = rng.vec(GROUP, scale);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (d, s) = group_digits(&x);
            for (i, &e) in x.iter().enumerate() {
                let err = (digit_value(&d, i, s) - e as f64).abs();
                assert!(err <= amax as f64 * (0.5 / X_DIGIT_RANGE as f64 + 1.2e-7), "{e} at scale {scale}: {err}");
            }
        }
    }

    #[test]
    fn tiny_groups_have_zero_digits() {
        let (d, s) = group_digits(&group(&[1e-31, -5e-32]));
        assert_eq!(s, 0.0);
        assert!(d.iter().all(|p| p.iter().all(|&v| v == 0)));
        assert_eq!(MIN_AMAX, 2f32.powi(-100));
    }
}
