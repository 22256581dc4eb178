//! The fast twins against the reference dequantisation, on random canonical bytes of every format
//! and on hand-made groups with values worked out by hand.
use half::f16;

use super::check::{dot_error, ks, random_part, Rng};
use super::*;
use crate::quant::{part_layout, ALL_FORMATS};

/// Asserts `got` is within [`dot_error`]'s bound of the exact dot.
fn check_dot(got: f32, v: &PartView, r: usize, x: &[f32], what: &str) {
    let (err, tol) = dot_error(got, v, r, x);
    assert!(err <= tol, "{what}: {} k={} row {r}: got {got}, err {err} > tol {tol}", v.format.name(), v.k);
}

#[test]
fn fast_dot_and_dequant_match_the_reference_for_every_format() {
    let mut rng = Rng(15);
    for f in ALL_FORMATS {
        for &k in ks(f) {
            for rows in [1, 5] {
                let bytes = random_part(f, rows, k, &mut rng);
                let v = PartView::new(f, rows, k, &bytes).unwrap();
                let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
                let sx = sums16(&x);
                for r in 0..rows {
                    check_dot(dot_row(&v, r, &x, &sx), &v, r, &x, "dot_row");
                    check_dot(dot_portable(&v, r, &x), &v, r, &x, "dot_portable");
                    let (mut want, mut got) = (vec![0.0; k], vec![f32::NAN; k]);
                    reference::dequant_row(&v, r, &mut want);
                    dequant_row(&v, r, &mut got);
                    for e in 0..k {
                        assert_eq!(
                            got[e].to_bits(),
                            want[e].to_bits(),
                            "{} k={k} row {r} element {e}: {} vs {}",
                            f.name(),
                            got[e],
                            want[e]
                        );
                    }
                }
            }
        }
    }
}

/// One row of 6 groups of legacy format `f`, random but for its f16 scales (and minimums): group
/// `g` has the `g`-th of +-65504, the smallest subnormals and +-0.
pub(crate) fn extreme_scale_row(f: WeightFormat, rng: &mut Rng) -> Vec<u8> {
    let k = 32 * 6;
    let scales: [u16; 6] = [0x7bff, 0xfbff, 0x0001, 0x83ff, 0x0000, 0x8000];
    let mut bytes = random_part(f, 1, k, rng);
    let l = part_layout(f, 1, k).unwrap();
    let per = f.planes().sc;
    for (g, s) in scales.iter().enumerate() {
        for h in 0..per / 2 {
            let at = l.sc as usize + g * per + 2 * h;
            bytes[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    bytes
}

/// Every f16 scale extreme in one place: each group of a Q8_0 row gets one of them.
#[test]
fn extreme_scales_are_exact_in_dequant_and_bounded_in_dot() {
    let k = 32 * 6;
    for f in [WeightFormat::Q8_0, WeightFormat::Q4_1, WeightFormat::Q5_0] {
        let mut rng = Rng(7);
        let bytes = extreme_scale_row(f, &mut rng);
        let v = PartView::new(f, 1, k, &bytes).unwrap();
        let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        check_dot(dot_row(&v, 0, &x, &sums16(&x)), &v, 0, &x, "extremes");
        let (mut want, mut got) = (vec![0.0; k], vec![0.0; k]);
        reference::dequant_row(&v, 0, &mut want);
        dequant_row(&v, 0, &mut got);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(want.iter().all(|w| w.is_finite()));
    }
}

fn ones(k: usize) -> Vec<f32> {
    vec![1.0; k]
}

fn fast_row(v: &PartView) -> Vec<f32> {
    let mut out = vec![0.0; v.k];
    dequant_row(v, 0, &mut out);
    out
}

#[test]
fn hand_made_q4_0() {
    // d = 2; byte i holds code i (low nibble, element i) and 15 - i (high nibble, element 16 + i).
    let mut b = vec![0u8; part_layout(WeightFormat::Q4_0, 1, 32).unwrap().bytes as usize];
    for (i, byte) in b[..16].iter_mut().enumerate() {
        *byte = i as u8 | ((15 - i as u8) << 4);
    }
    let sc = part_layout(WeightFormat::Q4_0, 1, 32).unwrap().sc as usize;
    b[sc..sc + 2].copy_from_slice(&f16::from_f32(2.0).to_bits().to_le_bytes());
    let v = PartView::new(WeightFormat::Q4_0, 1, 32, &b).unwrap();
    let want: Vec<f32> =
        (0..32).map(|e| if e < 16 { (e as f32 - 8.0) * 2.0 } else { (23.0 - e as f32) * 2.0 }).collect();
    assert_eq!(fast_row(&v), want);
    // (-16 + ... + 14) + (14 + ... + -16) = -16 + -16.
    assert_eq!(dot_row(&v, 0, &ones(32), &sums16(&ones(32))), -32.0);
}

#[test]
fn hand_made_q5_1() {
    // Every code 31 (nibble 15, extra bit set), d = 0.5, m = -1: every element 14.5.
    let l = part_layout(WeightFormat::Q5_1, 1, 32).unwrap();
    let mut b = vec![0xffu8; l.bytes as usize];
    let (d, m) = (f16::from_f32(0.5).to_bits().to_le_bytes(), f16::from_f32(-1.0).to_bits().to_le_bytes());
    b[l.sc as usize..l.sc as usize + 4].copy_from_slice(&[d[0], d[1], m[0], m[1]]);
    let v = PartView::new(WeightFormat::Q5_1, 1, 32, &b).unwrap();
    assert_eq!(fast_row(&v), vec![14.5; 32]);
    assert_eq!(dot_row(&v, 0, &ones(32), &sums16(&ones(32))), 464.0);
}

#[test]
fn hand_made_q2_k_and_q6_k() {
    // Q2_K, one super-block of 256: d = dmin = 1; group 0's first half has scale 1 and min 2
    // (sc byte 0x21), its second half scale 0 and min 0; every code 3. Elements 0..16 are
    // 1 * 3 - 2 = 1, elements 16..32 are 0; every other group has sc bytes 0 (elements 0).
    let l = part_layout(WeightFormat::Q2_K, 1, 256).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    b[..l.qs_bytes as usize].fill(0xff);
    b[l.sc as usize] = 0x21;
    let one = f16::from_f32(1.0).to_bits().to_le_bytes();
    b[l.sup as usize..l.sup as usize + 4].copy_from_slice(&[one[0], one[1], one[0], one[1]]);
    let v = PartView::new(WeightFormat::Q2_K, 1, 256, &b).unwrap();
    let want: Vec<f32> = (0..256).map(|e| if e < 16 { 1.0 } else { 0.0 }).collect();
    assert_eq!(fast_row(&v), want);
    assert_eq!(dot_row(&v, 0, &ones(256), &sums16(&ones(256))), 16.0);

    // Q6_K: d = 1, group 0's sub-scales 1 and -1, low nibbles 0 and high bits 3: code 48 - 32 =
    // 16, so elements 0..16 are 16 and 16..32 are -16; other groups have scale 0.
    let l = part_layout(WeightFormat::Q6_K, 1, 256).unwrap();
    let mut b = vec![0u8; l.bytes as usize];
    b[l.qh as usize..(l.qh + l.qh_bytes) as usize].fill(0xff);
    b[l.sc as usize] = 1;
    b[l.sc as usize + 1] = 0xff; // -1 as i8
    b[l.sup as usize..l.sup as usize + 2].copy_from_slice(&one);
    let v = PartView::new(WeightFormat::Q6_K, 1, 256, &b).unwrap();
    let want: Vec<f32> = (0..256)
        .map(|e| {
            if e < 16 {
                16.0
            } else if e < 32 {
                -16.0
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(fast_row(&v), want);
    let x: Vec<f32> = (0..256).map(|e| if e < 16 { 1.0 } else { 0.5 }).collect();
    assert_eq!(dot_row(&v, 0, &x, &sums16(&x)), 256.0 - 128.0);
}

/// Throughput of the dot per format (GB/s of packed bytes, G elements/s) at k = 896 and 4864, one
/// thread and all threads, over a part larger than the caches.
/// `cargo test --release -p qwen-aot-runtime --no-default-features --lib qdot_bench -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark (prints throughput, asserts nothing timing-dependent); run with --ignored --nocapture"]
fn qdot_bench() {
    use rayon::prelude::*;
    let mut rng = Rng(1);
    println!("format     k  1 thread GB/s  Gelem/s | all threads GB/s  Gelem/s");
    for f in ALL_FORMATS {
        for k in [896usize, 4864] {
            if !k.is_multiple_of(f.row_multiple()) {
                continue;
            }
            let rows = (256 << 20) / (k * 4); // 256 MB as f32: 36-128 MB packed, beyond the 32 MB L3
            let bytes = random_part(f, rows, k, &mut rng);
            let v = PartView::new(f, rows, k, &bytes).unwrap();
            let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
            let sx = sums16(&x);
            let mut out = vec![0.0f32; rows];
            let mut time = |par: bool| {
                let t = std::time::Instant::now();
                let mut reps = 0;
                // At least 0.3 s per measurement (a pass over the part is ~1-5 ms).
                while reps < 3 || t.elapsed().as_secs_f64() < 0.3 {
                    reps += 1;
                    if par {
                        out.par_chunks_mut(16).enumerate().for_each(|(c, o)| {
                            o.iter_mut().enumerate().for_each(|(i, o)| *o = dot_row(&v, c * 16 + i, &x, &sx))
                        });
                    } else {
                        out.iter_mut().enumerate().for_each(|(r, o)| *o = dot_row(&v, r, &x, &sx));
                    }
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                (bytes.len() as f64 / s / 1e9, (rows * k) as f64 / s / 1e9)
            };
            let (b1, e1) = time(false);
            let (bn, en) = time(true);
            println!("{:5} {k:5} {b1:14.2} {e1:8.2} | {bn:16.2} {en:8.2}", f.name());
            std::hint::black_box(&out);
        }
    }
}
