//! The digits and the integer dot: digits worked out by hand, the AVX2 quantisation bit for bit
//! against the scalar definition, the reconstruction within its bound, and the dot (both paths)
//! against the f64 dot of the reference row on hand-made and random groups of every quantized
//! format, extreme weight scales and extreme or all-zero input blocks.
use half::f16;

use super::check::{int_dot_error, ks, random_part, Rng};
use super::digits::{element_error_bound, quantize_block, Digits, BLOCK_BYTES};
use super::tests::extreme_scale_row;
use super::*;
use crate::quant::{part_layout, ALL_FORMATS};

trait Bits {
    fn map_bits(&self) -> Vec<u32>;
}

impl Bits for Vec<f32> {
    fn map_bits(&self) -> Vec<u32> {
        self.iter().map(|v| v.to_bits()).collect()
    }
}

fn digits_of(v: &[f32]) -> (f32, Vec<i8>) {
    let mut d = vec![0i8; BLOCK_BYTES];
    let s = quantize_block(v, &mut d);
    (s, d)
}

/// Asserts both integer dots, on three digits and on two, are within [`int_dot_error`]'s bound
/// for their digits, and returns the fast three-digit one.
fn check_int(v: &PartView, r: usize, x: &[f32], what: &str) -> f32 {
    let d = Digits::quantize(x);
    for n in [IntDigits::Two, IntDigits::Three] {
        let fast = dot_row_int(v, r, &d, n);
        for (path, got) in [("dot_row_int", fast), ("dot_int_portable", dot_int_portable(v, r, &d, n))] {
            let (err, tol) = int_dot_error(got, v, r, x, n);
            let f = v.format.name();
            assert!(err <= tol, "{what} {path} {n:?}: {f} k={} row {r}: got {got}, err {err} > tol {tol}", v.k);
        }
    }
    dot_row_int(v, r, &d, IntDigits::Three)
}

#[test]
fn digits_worked_out_by_hand() {
    // amax = 127: inv = s = 1, so u = v.
    let mut v = [0.0f32; 32];
    v[..6].copy_from_slice(&[127.0, 1.0, 0.5, 2.5, -63.5, 0.75]);
    let (s, d) = digits_of(&v);
    assert_eq!(s, 1.0);
    let (d0, d1, d2) = (&d[..32], &d[32..64], &d[64..]);
    // 0.5 and 2.5 round to even (0, 2) and leave 0.5 * 254 = 127 for d1; -63.5 rounds to -64 and
    // leaves +0.5; 0.75 -> 1, then -0.25 * 254 = -63.5 -> -64 (even), then 0.5 * 254 = 127.
    assert_eq!(&d0[..6], &[127, 1, 0, 2, -64, 1]);
    assert_eq!(&d1[..6], &[0, 0, 127, 127, 127, -64]);
    assert_eq!(&d2[..6], &[0, 0, 0, 0, 0, 127]);
    assert!(d0[6..].iter().chain(&d1[6..]).chain(&d2[6..]).all(|&x| x == 0));
    // 1 - 64/254 + 127/254^2 = 0.75 exactly.
    assert_eq!(1.0 - 64.0 / 254.0 + 127.0 / (254.0f64 * 254.0), 0.75);

    // All zero: s = 0, every digit 0. A NaN or an infinity: s = NaN (the dot stays NaN).
    assert_eq!(digits_of(&[0.0; 32]), (0.0, vec![0; BLOCK_BYTES]));
    let mut bad = [1.0f32; 32];
    bad[7] = f32::INFINITY;
    assert!(digits_of(&bad).0.is_nan());
    bad[7] = f32::NAN;
    assert!(digits_of(&bad).0.is_nan());
}

/// Random rows with every kind of block: ordinary, all zero, ties, tiny, large, a single nonzero
/// element, coarse values; and one block below the smallest amax (a zero block, see `digits`).
fn nasty_row(k: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
    for (b, block) in x.chunks_exact_mut(32).enumerate() {
        match b % 7 {
            1 => block.fill(0.0),
            // Halves with amax = 127 (inv = 1): every first digit a tie.
            2 => block.iter_mut().enumerate().for_each(|(i, v)| *v = if i == 0 { 127.0 } else { i as f32 - 16.5 }),
            3 => block.iter_mut().for_each(|v| *v *= 1e-30),
            // Large, but no f32 dot with 65504 scales and k <= 4864 overflows.
            4 => block.iter_mut().for_each(|v| *v *= 1e25),
            5 => {
                block.fill(0.0);
                block[13] = -2.5e-3;
            }
            6 => block.iter_mut().for_each(|v| *v = (*v * 8.0).round() / 8.0 * 127.0 / 4.0),
            _ => {}
        }
    }
    if k >= 64 {
        x[32..64].iter_mut().for_each(|v| *v *= 1e-38);
    }
    x
}

#[test]
fn fast_digits_equal_the_definition_and_reconstruct_within_the_bound() {
    let mut rng = Rng(3);
    for k in [32, 896, 4864] {
        let x = nasty_row(k, &mut rng);
        let got = Digits::quantize(&x);
        let mut portable = Digits::default();
        portable.fill_on(&x, false);
        for (b, v) in x.chunks_exact(32).enumerate() {
            let (s, d) = digits_of(v);
            for (path, got) in [("fast", &got), ("portable", &portable)] {
                let (gs, gd) = got.block(b);
                assert_eq!((gs.to_bits(), gd), (s.to_bits(), &d[..]), "{path}: k={k} block {b}");
                // The 16-bit operands and the per-16 scale, from the digits.
                for e in 0..32 {
                    let i = 32 * b + e;
                    assert_eq!(got.x01[i], 254 * d[e] as i16 + d[32 + e] as i16, "{path}: k={k} element {i}");
                    assert_eq!(got.x2[i], d[64 + e] as i16, "{path}: k={k} element {i}");
                }
                let s16 = s / (254.0 * 254.0);
                assert!(got.s16[2 * b..2 * b + 2].iter().all(|v| v.to_bits() == s16.to_bits()));
                // The sums per 16 (the AVX2 path adds in another order).
                for h in 0..2 {
                    let half = &v[16 * h..16 * h + 16];
                    let exact: f64 = half.iter().map(|&v| v as f64).sum();
                    let mag: f64 = half.iter().map(|&v| v.abs() as f64).sum();
                    let err = (got.sum16(2 * b + h) as f64 - exact).abs();
                    assert!(err <= 16.0 * f32::EPSILON as f64 * mag, "{path}: k={k} half {}", 2 * b + h);
                }
            }
            let amax = v.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, &x) in v.iter().enumerate() {
                assert!(d[i] != -128 && d[32 + i] != -128 && d[64 + i] != -128);
                let back = s as f64 * (d[i] as f64 + d[32 + i] as f64 / 254.0 + d[64 + i] as f64 / (254.0 * 254.0));
                let err = (back - x as f64).abs();
                assert!(
                    err <= element_error_bound(IntDigits::Three, amax, x),
                    "k={k} block {b} element {i}: {x} -> {back}"
                );
            }
        }
    }
}

/// Refilling with a shorter row leaves the padding the kernels read past the row zero.
#[test]
fn refilled_digits_keep_zero_padding() {
    let mut d = Digits::quantize(&vec![1.5f32; 4864]);
    d.fill(&[2.0f32; 64]);
    assert_eq!(d.k(), 64);
    assert!(d.s16[4..].iter().chain(&d.sx16[4..]).all(|&v| v == 0.0));
    assert_eq!(d.s16.len(), 4 + 16);
    // The multi-input operands: each block's x01, x2 in PAIRS order, gone after a plain refill.
    let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.37).sin()).collect();
    d.fill_multi(&x);
    assert!(d.has_multi());
    for (i, (&a, &b)) in d.x01p.iter().zip(d.x2p.iter()).enumerate() {
        let e = 32 * (i / 32) + super::digits::PAIRS[i % 32];
        assert_eq!((a, b), (d.x01[e], d.x2[e]), "element {i}");
    }
    assert_eq!(&super::digits::PAIRS[..6], &[0, 1, 4, 5, 8, 9]);
    assert_eq!(&super::digits::PAIRS[16..20], &[2, 3, 6, 7]);
    d.fill(&x);
    assert!(!d.has_multi());
}

#[test]
fn integer_dot_matches_the_reference_for_every_quantized_format() {
    let mut rng = Rng(21);
    for f in ALL_FORMATS.into_iter().filter(|f| !f.is_float()) {
        // Two digits are measurably less exact than three somewhere (d2 is not all zeros).
        let mut differs = false;
        for &k in ks(f) {
            for rows in [1, 3, 6] {
                let bytes = random_part(f, rows, k, &mut rng);
                let v = PartView::new(f, rows, k, &bytes).unwrap();
                for x in [(0..k).map(|_| rng.unit()).collect::<Vec<f32>>(), nasty_row(k, &mut rng)] {
                    let one: Vec<f32> = (0..rows).map(|r| check_int(&v, r, &x, "random")).collect();
                    // Several rows at once (the AVX2 path shares the digits): the same bits.
                    let mut all = vec![f32::NAN; rows];
                    dot_rows_int(&v, 0, &Digits::quantize(&x), &mut all, IntDigits::Three);
                    assert_eq!(all.map_bits(), one.map_bits(), "{} k={k}: rows at once", f.name());
                    // Two digits: the same bits whether rows go one at a time or together.
                    let d = Digits::quantize(&x);
                    let two: Vec<f32> = (0..rows).map(|r| dot_row_int(&v, r, &d, IntDigits::Two)).collect();
                    let mut all2 = vec![f32::NAN; rows];
                    dot_rows_int(&v, 0, &d, &mut all2, IntDigits::Two);
                    assert_eq!(all2.map_bits(), two.map_bits(), "{} k={k}: two digits, rows at once", f.name());
                    differs |= two.map_bits() != one.map_bits();
                }
            }
        }
        assert!(differs, "{}: two digits always equal three", f.name());
    }
}

/// Several inputs at once (a short prefill, [`dot_rows_int_multi`]) against the one-row dot: for
/// every quantized format (the default model's Q5_0, Q6_K, Q8_0 among them), 1..=8 inputs (whole
/// and partial blocks of the AVX2 path's four), two and three digits, rows from an offset, the
/// same bits as each input alone through [`dot_rows_int`] (the AVX2 path where the CPU has it)
/// and, for the portable twin, through [`dot_int_portable`]; and each result within
/// [`int_dot_error`]'s bound of the reference row's f64 dot.
#[test]
fn multi_input_integer_dot_is_the_one_row_dot_bit_for_bit() {
    let mut rng = Rng(77);
    for f in ALL_FORMATS.into_iter().filter(|f| !f.is_float()) {
        for &k in ks(f) {
            let rows = 5;
            let bytes = random_part(f, rows, k, &mut rng);
            let v = PartView::new(f, rows, k, &bytes).unwrap();
            for m in 1..=8 {
                // Ordinary and nasty inputs alternate (zero, tiny, huge and tied blocks).
                let xs: Vec<Vec<f32>> = (0..m)
                    .map(|t| if t % 2 == 0 { (0..k).map(|_| rng.unit()).collect() } else { nasty_row(k, &mut rng) })
                    .collect();
                let ds: Vec<Digits> = xs.iter().map(|x| Digits::quantize_multi(x)).collect();
                for n in [IntDigits::Two, IntDigits::Three] {
                    let what = format!("{} k={k} inputs {m} {n:?}", f.name());
                    // Rows 1..5 (from an offset), all inputs at once: out[i * m + t].
                    let (r0, nr) = (1, rows - 1);
                    let mut got = vec![f32::NAN; nr * m];
                    dot_rows_int_multi(&v, r0, &ds, &mut got, n);
                    for (t, (d, x)) in ds.iter().zip(&xs).enumerate() {
                        let mut one = vec![f32::NAN; nr];
                        dot_rows_int(&v, r0, d, &mut one, n);
                        let col: Vec<f32> = (0..nr).map(|i| got[i * m + t]).collect();
                        assert_eq!(col.map_bits(), one.map_bits(), "{what}: input {t}");
                        for (i, &g) in col.iter().enumerate() {
                            let (err, tol) = int_dot_error(g, &v, r0 + i, x, n);
                            assert!(err <= tol, "{what}: input {t} row {}: got {g}, err {err} > tol {tol}", r0 + i);
                        }
                    }
                    // The portable twin, one row against every input.
                    for r in 0..rows {
                        let mut got = vec![f32::NAN; m];
                        dot_int_portable_multi(&v, r, &ds, &mut got, n);
                        let want: Vec<f32> = ds.iter().map(|d| dot_int_portable(&v, r, d, n)).collect();
                        assert_eq!(got.map_bits(), want.map_bits(), "{what}: portable row {r}");
                    }
                }
            }
        }
    }
}

/// On a CPU with AVX512-VNNI, the one-row dot's VNNI kernel (what [`dot_rows_int`] runs there)
/// gives the plain AVX2 kernel's bits for every quantized format, both digit counts, ordinary and
/// nasty inputs (it sums the same integers; only the instructions differ). Elsewhere: nothing
/// to compare, said on stderr.
#[test]
fn vnni_integer_dot_is_the_avx2_dot_bit_for_bit() {
    #[cfg(target_arch = "x86_64")]
    {
        if !has_vnni() {
            eprintln!("no AVX512-VNNI here (or QWEN_AOT_CPU_VNNI=0): nothing to compare");
            return;
        }
        let mut rng = Rng(91);
        let mut compared = 0;
        for f in ALL_FORMATS.into_iter().filter(|f| !f.is_float()) {
            for &k in ks(f) {
                let rows = 6;
                let bytes = random_part(f, rows, k, &mut rng);
                let v = PartView::new(f, rows, k, &bytes).unwrap();
                for x in [(0..k).map(|_| rng.unit()).collect(), nasty_row(k, &mut rng)] {
                    let d = Digits::quantize(&x);
                    for n in [IntDigits::Two, IntDigits::Three] {
                        let (mut plain, mut vnni) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
                        // SAFETY: both kernels' features were detected (has_vnni implies
                        // has_avx2); every row exists, the digits have k = v.k, f is quantized.
                        unsafe {
                            super::avx2_int::dot(&v, 0, &d, &mut plain, n);
                            super::avx2_int::dot_vnni(&v, 0, &d, &mut vnni, n);
                        }
                        assert_eq!(vnni.map_bits(), plain.map_bits(), "{} k={k} {n:?}", f.name());
                        assert!(plain.iter().all(|p| !p.is_nan()));
                        compared += 1;
                        // The multi-input kernels, one to eight inputs (blocks of up to four).
                        let xs: Vec<Digits> = (0..8)
                            .map(|t| {
                                let row: Vec<f32> = (0..k).map(|i| x[(i + 7 * t) % k] * (1.0 + t as f32)).collect();
                                Digits::quantize_multi(&row)
                            })
                            .collect();
                        for m in 1..=8 {
                            let (mut plain, mut vnni) = (vec![f32::NAN; rows * m], vec![f32::NAN; rows * m]);
                            // SAFETY: as above; every input has k = v.k and its multi arrays.
                            unsafe {
                                super::avx2_int::dot_multi(&v, 0, &xs[..m], &mut plain, n);
                                super::avx2_int::dot_multi_vnni(&v, 0, &xs[..m], &mut vnni, n);
                            }
                            assert_eq!(vnni.map_bits(), plain.map_bits(), "{} k={k} {n:?} inputs {m}", f.name());
                            assert!(plain.iter().all(|p| !p.is_nan()));
                        }
                    }
                }
            }
        }
        assert!(compared >= 40, "{compared} comparisons");
    }
}

/// Every f16 scale extreme (as in the f32 dot's test) for formats with and without a minimum.
#[test]
fn integer_dot_is_bounded_at_extreme_scales() {
    let k = 32 * 6;
    for f in [WeightFormat::Q8_0, WeightFormat::Q4_1, WeightFormat::Q5_0, WeightFormat::Q4_0] {
        let mut rng = Rng(9);
        let bytes = extreme_scale_row(f, &mut rng);
        let v = PartView::new(f, 1, k, &bytes).unwrap();
        let x = nasty_row(k, &mut rng);
        assert!(check_int(&v, 0, &x, "extremes").is_finite());
    }
    // k-quants with the super-block's d and dmin at +-65504 and subnormal.
    for f in [WeightFormat::Q4_K, WeightFormat::Q6_K, WeightFormat::Q2_K] {
        let mut rng = Rng(10);
        let mut bytes = random_part(f, 2, 512, &mut rng);
        let l = part_layout(f, 2, 512).unwrap();
        for (i, s) in [0x7bffu16, 0x0001, 0xfbff, 0x83ff].iter().enumerate() {
            let at = l.sup as usize + i * f.planes().sup;
            bytes[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
        let v = PartView::new(f, 2, 512, &bytes).unwrap();
        let x = nasty_row(512, &mut rng);
        for r in 0..2 {
            assert!(check_int(&v, r, &x, "k-quant extremes").is_finite());
        }
    }
}

fn put_f16(b: &mut [u8], at: usize, x: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
}

#[test]
fn hand_made_q8_0_at_the_extreme_codes() {
    // Two groups, d = 0.5. Group 0: every code -128 against x = -1 (d0 = -127): each element
    // 64, the group 2048. Group 1: codes 127 (63.5) against x = 127 once (amax 127: inv = s = 1)
    // and 126.5 otherwise (d0 = 126 by ties to even, d1 = 127: the largest 254 d0 + d1, 32,131):
    // 63.5 * (127 + 31 * 126.5) = 257,079.75.
    let l = part_layout(WeightFormat::Q8_0, 1, 64).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    b[..32].fill(0x80);
    b[32..64].fill(0x7f);
    put_f16(&mut b, l.sc as usize, 0.5);
    put_f16(&mut b, l.sc as usize + 2, 0.5);
    let v = PartView::new(WeightFormat::Q8_0, 1, 64, &b).unwrap();
    let mut x = vec![-1.0f32; 64];
    x[32..].fill(126.5);
    x[32] = 127.0;
    let (_, d) = digits_of(&x[32..]);
    assert_eq!((d[1], d[33], d[65]), (126, 127, 0), "the second group's digits");
    let got = check_int(&v, 0, &x, "q8_0 extremes");
    assert!((got - (2048.0 + 257_079.75)).abs() <= 0.05, "{got}");
    // An all-zero block contributes nothing.
    x[..32].fill(0.0);
    let got = check_int(&v, 0, &x, "q8_0 zero block");
    assert!((got - 257_079.75).abs() <= 0.05, "{got}");
}

#[test]
fn hand_made_q4_0_q4_k_and_q6_k() {
    // Q4_0, d = 2; byte i holds code i (element i) and 15 - i (element 16 + i), x = 127 (s = 1):
    // sum (q - 8) = -16 over the group, so the dot is 2 * 127 * -16 = -4064. The integer dot
    // forms it as 2 * 127 * 240 - 16 * 4064 = 60,960 - 65,024: rounding at 65,024's scale.
    let l = part_layout(WeightFormat::Q4_0, 1, 32).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    for (i, byte) in b[..16].iter_mut().enumerate() {
        *byte = i as u8 | ((15 - i as u8) << 4);
    }
    put_f16(&mut b, l.sc as usize, 2.0);
    let v = PartView::new(WeightFormat::Q4_0, 1, 32, &b).unwrap();
    let got = check_int(&v, 0, &[127.0; 32], "q4_0");
    assert!((got + 4064.0).abs() <= 65_024.0 * 2.0 * f32::EPSILON, "{got}");

    // Q4_K, one super-block: d = 1, dmin = 0.5; group 0 scale 3, min 4 (element 3 q - 2), codes
    // 15 (elements 43); other groups scale 0 and min 0. x = 0.25 on group 0: 32 * 43 * 0.25 = 344.
    let l = part_layout(WeightFormat::Q4_K, 1, 256).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    b[..16].fill(0xff);
    b[l.sc as usize..l.sc as usize + 2].copy_from_slice(&[3, 4]);
    put_f16(&mut b, l.sup as usize, 1.0);
    put_f16(&mut b, l.sup as usize + 2, 0.5);
    let v = PartView::new(WeightFormat::Q4_K, 1, 256, &b).unwrap();
    let x: Vec<f32> = (0..256).map(|e| if e < 32 { 0.25 } else { (e as f32).sin() }).collect();
    assert!((check_int(&v, 0, &x, "q4_k") - 344.0).abs() <= 1e-4);

    // Q6_K: d = 1, group 0's sub-scales 1 and -1, code 48 (value 16): elements 0..16 are 16 and
    // 16..32 are -16; other groups scale 0. x = 1 on 0..16 and 0.5 on 16..32: 256 - 128 = 128.
    let l = part_layout(WeightFormat::Q6_K, 1, 256).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    b[l.qh as usize..(l.qh + l.qh_bytes) as usize].fill(0xff);
    b[l.sc as usize] = 1;
    b[l.sc as usize + 1] = 0xff;
    put_f16(&mut b, l.sup as usize, 1.0);
    let v = PartView::new(WeightFormat::Q6_K, 1, 256, &b).unwrap();
    let x: Vec<f32> = (0..256).map(|e| if e < 16 { 1.0 } else { 0.5 }).collect();
    assert!((check_int(&v, 0, &x, "q6_k") - 128.0).abs() <= 1e-4);
}

#[test]
fn a_non_finite_input_makes_the_dot_nan() {
    let mut rng = Rng(5);
    let bytes = random_part(WeightFormat::Q5_0, 1, 64, &mut rng);
    let v = PartView::new(WeightFormat::Q5_0, 1, 64, &bytes).unwrap();
    let mut x = vec![0.5f32; 64];
    x[40] = f32::NAN;
    let d = Digits::quantize(&x);
    assert!(
        dot_row_int(&v, 0, &d, IntDigits::Three).is_nan() && dot_int_portable(&v, 0, &d, IntDigits::Three).is_nan()
    );
}

/// This thread's time on a CPU so far (Linux: /proc/thread-self/schedstat), if known.
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

/// Throughput of the integer dot per format at the decode shapes beside the f32 dot: one thread
/// (best of 5 windows of its own CPU time, as the machine may be shared) and all threads (best of
/// 5 wall-clock windows), over a part larger than the caches (`QWEN_AOT_BENCH_BYTES` as f32 to
/// change that; `QWEN_AOT_BENCH_FORMATS=Q5_0,Q8_0` to pick formats).
/// `cargo test --release -p qwen-aot-runtime --no-default-features --lib int_dot_bench -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark (prints throughput, asserts nothing timing-dependent); run with --ignored --nocapture"]
fn int_dot_bench() {
    use rayon::prelude::*;
    let env = |name: &str| std::env::var(name).ok();
    let size: usize = env("QWEN_AOT_BENCH_BYTES").map_or(256 << 20, |v| v.parse().expect("a byte count"));
    let formats = env("QWEN_AOT_BENCH_FORMATS").unwrap_or_default();
    let mut rng = Rng(1);
    println!("format     k  1 thread (CPU time): int8x3 Gelem/s  f32 | all threads (wall): int8x3  f32");
    let picked = |f: WeightFormat| !f.is_float() && (formats.is_empty() || formats.split(',').any(|n| n == f.name()));
    for_each_bench_part(size, &mut rng, picked, |f, k, rows, v, rng| {
        let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        let (sx, d) = (sums16(&x), Digits::quantize(&x));
        let mut out = vec![0.0f32; rows];
        let mut time = |par: bool, int: bool| {
            let dots = |r0: usize, o: &mut [f32]| {
                if int {
                    dot_rows_int(v, r0, &d, o, IntDigits::Three)
                } else {
                    o.iter_mut().enumerate().for_each(|(i, o)| *o = dot_row(v, r0 + i, &x, &sx))
                }
            };
            let mut best = 0.0f64;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let c = thread_cpu_secs();
                let mut reps = 0;
                while reps < 2 || t.elapsed().as_secs_f64() < 0.1 {
                    reps += 1;
                    if par {
                        out.par_chunks_mut(16).enumerate().for_each(|(c, o)| dots(c * 16, o));
                    } else {
                        out.chunks_mut(16).enumerate().for_each(|(c, o)| dots(c * 16, o));
                    }
                }
                let secs = match (par, c) {
                    (false, Some(c)) => thread_cpu_secs().unwrap_or(0.0) - c,
                    _ => t.elapsed().as_secs_f64(),
                };
                best = best.max((rows * k) as f64 / (secs / reps as f64) / 1e9);
            }
            best
        };
        let (i1, f1, ia, fa) = (time(false, true), time(false, false), time(true, true), time(true, false));
        println!("{:5} {k:5} {i1:33.2} {f1:4.2} | {ia:26.2} {fa:5.2}", f.name());
        std::hint::black_box(&out);
    });
}

/// The benchmarks' weights: for each format `picked` keeps and each decode row length (896,
/// 4,864) it divides, a random part of `size / (4 k)` rows, handed to `run(format, k, rows,
/// view, rng)` and dropped before the next (a part is as large as the caches or more).
fn for_each_bench_part(
    size: usize,
    rng: &mut Rng,
    picked: impl Fn(WeightFormat) -> bool,
    mut run: impl FnMut(WeightFormat, usize, usize, &PartView, &mut Rng),
) {
    for f in ALL_FORMATS.into_iter().filter(|&f| picked(f)) {
        for k in [896usize, 4864].into_iter().filter(|k| k.is_multiple_of(f.row_multiple())) {
            let rows = size / (k * 4);
            let bytes = random_part(f, rows, k, rng);
            let v = PartView::new(f, rows, k, &bytes).expect("random_part writes the format's layout");
            run(f, k, rows, &v, rng);
        }
    }
}

/// The multi-input dot against the one-row dot run once per input, per format at the decode
/// shapes, for 1..=8 inputs: one thread's CPU time (best of 5 windows) per input row and weight
/// element, over a part larger than the caches (`QWEN_AOT_BENCH_BYTES` as f32 to change that,
/// `QWEN_AOT_BENCH_FORMATS=Q5_0,Q8_0` to pick formats).
/// `cargo test --release -p qwen-aot-runtime --no-default-features --lib multi_dot_bench -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark (prints throughput, asserts nothing timing-dependent); run with --ignored --nocapture"]
fn multi_dot_bench() {
    let env = |name: &str| std::env::var(name).ok();
    let size: usize = env("QWEN_AOT_BENCH_BYTES").map_or(64 << 20, |v| v.parse().expect("a byte count"));
    let formats = env("QWEN_AOT_BENCH_FORMATS").unwrap_or_else(|| "Q5_0,Q6_K,Q8_0".into());
    let mut rng = Rng(2);
    println!("format     k  inputs  row by row  multi (ms per 1e9 weight elements x inputs, 1 thread)  speed-up");
    let picked = |f: WeightFormat| formats.split(',').any(|n| n == f.name());
    for_each_bench_part(size, &mut rng, picked, |f, k, rows, v, rng| {
        for m in [1usize, 2, 3, 4, 5, 8] {
            let ds: Vec<Digits> =
                (0..m).map(|_| Digits::quantize_multi(&(0..k).map(|_| rng.unit()).collect::<Vec<f32>>())).collect();
            let mut out = vec![0.0f32; rows * m];
            let mut time = |multi: bool| {
                let mut best = f64::INFINITY;
                for _ in 0..5 {
                    let c = thread_cpu_secs().unwrap_or(0.0);
                    let t = std::time::Instant::now();
                    let mut reps = 0;
                    while reps < 2 || t.elapsed().as_secs_f64() < 0.1 {
                        reps += 1;
                        for (c, o) in out.chunks_mut(16 * m).enumerate() {
                            if multi {
                                dot_rows_int_multi(v, 16 * c, &ds, o, IntDigits::Two);
                            } else {
                                for (i, d) in ds.iter().enumerate() {
                                    let mut one = [0.0f32; 16];
                                    let nr = o.len() / m;
                                    dot_rows_int(v, 16 * c, d, &mut one[..nr], IntDigits::Two);
                                    o[i] = one[0];
                                }
                            }
                        }
                    }
                    let secs = thread_cpu_secs().map_or(t.elapsed().as_secs_f64(), |e| e - c);
                    best = best.min(secs / reps as f64 / (rows * k * m) as f64 * 1e12);
                }
                best
            };
            let (one, multi) = (time(false), time(true));
            println!("{:5} {k:5} {m:7} {one:11.2} {multi:6.2} {:62.2}", f.name(), one / multi);
            std::hint::black_box(&out);
        }
    });
}
