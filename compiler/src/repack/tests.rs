//! The repacker against the GGUF dequantiser: random ggml blocks of every format, several
//! shapes, bit-for-bit equality of every row; plus hand-made blocks whose values are worked out
//! by hand from ggml's definitions, so the layout itself (not only the round trip) is pinned.
use half::f16;
use qwen_aot_plan::quant::{part_layout, PartView, WeightFormat};

use super::*;
use crate::gguf::dequantize;
use crate::synthetic::Rng;

/// Byte offsets of the f16 scale fields (d, dmin, m) in one ggml block.
fn f16_fields(dtype: GgmlType) -> &'static [usize] {
    match dtype {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    }
}

/// A finite f16: mostly extremes (largest, smallest subnormal, largest subnormal, zeros,
/// negatives), otherwise random finite bits.
fn scale_bits(rng: &mut Rng) -> u16 {
    const SPECIAL: [u16; 8] = [
        0x7bff, /* 65504 */
        0xfbff, /* -65504 */
        0x0001, /* 6e-8 */
        0x03ff, 0x0000, 0x8000, 0x3c00, 0xb400, /* -0.25 */
    ];
    let r = rng.next_u64();
    if r.is_multiple_of(3) {
        SPECIAL[(r >> 8) as usize % SPECIAL.len()]
    } else {
        // Exponent 31 (inf/NaN) excluded: scales in real files are finite.
        let bits = (r >> 16) as u16;
        if (bits >> 10) & 0x1f == 0x1f {
            bits & !0x4000
        } else {
            bits
        }
    }
}

fn random_blocks(dtype: GgmlType, rows: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let n = dtype.bytes_for((rows * k) as u64).unwrap() as usize;
    let mut b: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    let size = dtype.type_size() as usize;
    for block in b.chunks_exact_mut(size) {
        for &at in f16_fields(dtype) {
            block[at..at + 2].copy_from_slice(&scale_bits(rng).to_le_bytes());
        }
    }
    b
}

/// Repacks `src`, then checks every row of the part against the GGUF dequantiser, bit for bit,
/// and that the padding between and after the planes is zero.
fn check_round_trip(dtype: GgmlType, src: &[u8], rows: usize, k: usize) {
    let (format, part) = repack(dtype, src, rows, k).unwrap();
    assert_eq!(format, format_of(dtype).unwrap());
    let l = part_layout(format, rows, k).unwrap();
    assert_eq!(part.len() as u64, l.bytes);
    let ends = [
        (l.qs + l.qs_bytes, l.qh),
        (l.qh + l.qh_bytes, l.sc),
        (l.sc + l.sc_bytes, l.sup),
        (l.sup + l.sup_bytes, l.bytes),
    ];
    for (from, to) in ends {
        let from = from.max(l.qs + l.qs_bytes).min(to);
        assert!(part[from as usize..to as usize].iter().all(|&b| b == 0), "{dtype} padding {from}..{to}");
    }
    let want = dequantize(dtype, src, rows * k).unwrap();
    let view = PartView::new(format, rows, k, &part).unwrap();
    let mut row = vec![0f32; k];
    for r in 0..rows {
        view.dequant_row(r, &mut row);
        for (i, (a, b)) in row.iter().zip(&want[r * k..(r + 1) * k]).enumerate() {
            // NaN payloads (F16/BF16 NaN inputs) are no contract: NaN on both sides is enough.
            let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            assert!(same, "{dtype} rows {rows} k {k}: row {r} element {i}: {a} vs {b}");
        }
    }
}

const LEGACY: [GgmlType; 5] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0];
const KQUANTS: [GgmlType; 5] = [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];

#[test]
fn every_legacy_format_round_trips_bit_exactly() {
    let mut rng = Rng::new(1);
    for dtype in LEGACY {
        for rows in [1, 3, 17] {
            for k in [32, 256, 512, 896] {
                check_round_trip(dtype, &random_blocks(dtype, rows, k, &mut rng), rows, k);
            }
        }
    }
}

#[test]
fn every_k_quant_round_trips_bit_exactly() {
    let mut rng = Rng::new(2);
    for dtype in KQUANTS {
        for rows in [1, 3, 17] {
            for k in [256, 512] {
                check_round_trip(dtype, &random_blocks(dtype, rows, k, &mut rng), rows, k);
            }
        }
    }
}

#[test]
fn float_formats_are_row_major_copies() {
    let mut rng = Rng::new(3);
    for dtype in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for rows in [1, 3, 17] {
            for k in [1, 7, 32, 896] {
                let src = random_blocks(dtype, rows, k, &mut rng);
                check_round_trip(dtype, &src, rows, k);
                let (_, part) = repack(dtype, &src, rows, k).unwrap();
                assert_eq!(&part[..src.len()], &src[..], "{dtype}: the bytes themselves");
            }
        }
    }
}

#[test]
fn big_tensors_take_the_parallel_path_and_stay_exact() {
    // More than TASK_BYTES of source: several row batches on the thread pool.
    let mut rng = Rng::new(4);
    for (dtype, rows, k) in [(GgmlType::Q8_0, 97, 4096), (GgmlType::Q4_K, 200, 4096), (GgmlType::Q6_K, 61, 8960)] {
        let src = random_blocks(dtype, rows, k, &mut rng);
        assert!(src.len() > TASK_BYTES);
        check_round_trip(dtype, &src, rows, k);
    }
}

#[test]
fn adjacent_tensors_fill_one_part() {
    // q (3 rows) then k (5 rows) written into one 8-row part equal the part of their
    // concatenation (ggml rows are whole blocks, so concatenated bytes are concatenated rows).
    let mut rng = Rng::new(5);
    for dtype in [GgmlType::Q5_0, GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::F16] {
        let k = 512;
        let (a, b) = (random_blocks(dtype, 3, k, &mut rng), random_blocks(dtype, 5, k, &mut rng));
        let format = format_of(dtype).unwrap();
        let mut part = vec![0u8; part_layout(format, 8, k).unwrap().bytes as usize];
        repack_into(dtype, &a, 3, k, &mut part, 8, 0).unwrap();
        repack_into(dtype, &b, 5, k, &mut part, 8, 3).unwrap();
        let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
        assert_eq!(part, repack(dtype, &whole, 8, k).unwrap().1, "{dtype}");
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let q = vec![0u8; 22 * 8];
    assert_eq!(
        repack(GgmlType::IQ2_XXS, &q, 1, 256).unwrap_err(),
        RepackError::Unsupported { dtype: GgmlType::IQ2_XXS }
    );
    assert!(matches!(repack(GgmlType::Q5_0, &q, 1, 255), Err(RepackError::RowLength { .. })));
    assert!(matches!(repack(GgmlType::Q4_K, &q, 1, 288), Err(RepackError::RowLength { .. })));
    assert!(matches!(repack(GgmlType::Q5_0, &q[1..], 1, 256), Err(RepackError::SourceSize { .. })));
    assert!(matches!(repack(GgmlType::Q5_0, &q, 2, 256), Err(RepackError::SourceSize { .. })));
    let mut part = vec![0u8; part_layout(WeightFormat::Q5_0, 2, 256).unwrap().bytes as usize];
    assert!(matches!(repack_into(GgmlType::Q5_0, &q, 1, 256, &mut part, 2, 2), Err(RepackError::Destination { .. })));
    assert!(matches!(
        repack_into(GgmlType::Q5_0, &q, 1, 256, &mut part[1..], 2, 0),
        Err(RepackError::Destination { .. })
    ));
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

fn row0(format: WeightFormat, k: usize, part: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; k];
    PartView::new(format, 1, k, part).unwrap().dequant_row(0, &mut out);
    out
}

#[test]
fn hand_made_f16_row() {
    let src: Vec<u8> = [1.0f32, -2.0, 0.5].iter().flat_map(|&x| h(x)).collect();
    let (format, part) = repack(GgmlType::F16, &src, 1, 3).unwrap();
    assert_eq!((format, part.len()), (WeightFormat::F16, 256));
    assert_eq!(row0(format, 3, &part), [1.0, -2.0, 0.5]);
}

#[test]
fn hand_made_q5_0_block() {
    // d = 0.5; qh = 0x8000_0001 (elements 0 and 31 have their fifth bit); qs[0] = 0x3f
    // (element 0: 0xf, element 16: 3), qs[15] = 0xa0 (element 15: 0, element 31: 0xa), the rest
    // 0x88 (8). x = d * (q - 16):
    //   e0: q = 0xf | 0x10 = 31 -> 7.5;  e16: q = 3 -> -6.5;  e15: q = 0 -> -8;
    //   e31: q = 0xa | 0x10 = 26 -> 5;   e1, e17: q = 8 -> -4.
    let mut b = vec![0u8; 22];
    b[0..2].copy_from_slice(&h(0.5));
    b[2..6].copy_from_slice(&0x8000_0001u32.to_le_bytes());
    b[6..22].fill(0x88);
    b[6] = 0x3f;
    b[21] = 0xa0;
    let (format, part) = repack(GgmlType::Q5_0, &b, 1, 32).unwrap();
    let y = row0(format, 32, &part);
    assert_eq!([y[0], y[16], y[15], y[31], y[1], y[17]], [7.5, -6.5, -8.0, 5.0, -4.0, -4.0]);
    // Canonical planes: qh byte e % 4 bit e / 4 -> e0: byte 0 bit 0, e31: byte 3 bit 7.
    let l = part_layout(format, 1, 32).unwrap();
    assert_eq!(&part[l.qh as usize..l.qh as usize + 4], &[0x01, 0, 0, 0x80]);
    assert_eq!(&part[l.sc as usize..l.sc as usize + 2], &h(0.5));
    assert_eq!(&part[..16], &b[6..22], "Q5_0's low nibbles are ggml's qs");
}

#[test]
fn hand_made_q2_k_block() {
    // d = 1, dmin = 1. Group 1 (n = 0, shift j = 1), element 17 (second half): scale byte
    // scales[2 * 1 + 1] = 0x25 -> dl = 5, ml = 2; code = (qs[17] >> 2) & 3 = 3 (qs[17] = 0b1100)
    // -> 5 * 3 - 2 = 13. ggml's order: y[j * 32 + 16 + 1] = y[49].
    let mut b = vec![0u8; 84];
    b[3] = 0x25;
    b[16 + 17] = 0b1100;
    b[80..82].copy_from_slice(&h(1.0));
    b[82..84].copy_from_slice(&h(1.0));
    let (format, part) = repack(GgmlType::Q2_K, &b, 1, 256).unwrap();
    let y = row0(format, 256, &part);
    assert_eq!(y[49], 13.0);
    assert_eq!(y[48], -2.0, "code 0 in the same half: 5 * 0 - 2");
    let l = part_layout(format, 1, 256).unwrap();
    assert_eq!(&part[l.sc as usize + 2..l.sc as usize + 4], &[0, 0x25], "group 1's half scales");
}

#[test]
fn hand_made_q3_k_block() {
    // d = 2. Scale 0 = (sb[0] & 0xf) | ((sb[8] & 3) << 4) = 5 | 32 = 37 -> dl = 2 * (37 - 32) = 10.
    // Element 0: low bits qs[0] & 3 = 3, hmask[0] bit 0 set -> q = 3 -> 30; element 1: low 0,
    // no high bit -> q = -4 -> -40.
    // Scale 13 = (sb[5] >> 4) | (((sb[9] >> 6) & 3) << 4) = 10 | 48 = 58 -> dl = 52. It is group 6
    // (n = 1, shift j = 2), second half; element 20 of the group (row element 212): low bits
    // (qs[32 + 20] >> 4) & 3 = 2, hmask[20] bit 6 set -> q = 2 -> 104.
    let mut b = vec![0u8; 110];
    let (hmask, qs, sb) = (0, 32, 96);
    b[hmask] = 0x01;
    b[hmask + 20] = 0x40;
    b[qs] = 0x03;
    b[qs + 52] = 0x20;
    b[sb] = 0x05;
    b[sb + 8] = 0x02;
    b[sb + 5] = 0xa0;
    b[sb + 9] = 0xc0;
    b[108..110].copy_from_slice(&h(2.0));
    let (format, part) = repack(GgmlType::Q3_K, &b, 1, 256).unwrap();
    let y = row0(format, 256, &part);
    assert_eq!([y[0], y[1], y[212]], [30.0, -40.0, 104.0]);
    let l = part_layout(format, 1, 256).unwrap();
    let sc = &part[l.sc as usize..];
    assert_eq!([sc[0], sc[1], sc[12], sc[13]], [37, 0, 0, 58], "unsigned 6-bit scales");
}

#[test]
fn hand_made_q4_k_block() {
    // d = 1, dmin = 0.5. Packed scales: scales[0] = 3, scales[4] = 2 -> group 0: sc 3, m 2.
    // scales[1] = 0xc1 -> group 1: sc 1 and the top bits 3 of group 5's scale;
    // scales[5] = 0x40 -> group 1: m 0 and the top bits 1 of group 5's min;
    // scales[9] = 0x52 -> group 5: sc = 2 | 3 << 4 = 50, m = 5 | 1 << 4 = 21.
    // Group 0 takes low nibbles of qs[0..32]: qs[0] = 0x0f -> e0 = 1*3*15 - 0.5*2 = 44,
    // e1 = 0 - 1 = -1. Group 5 takes high nibbles of qs[64..96]: qs[64 + 7] = 0xe0 -> element
    // 5 * 32 + 7 = 167 = 1*50*14 - 0.5*21 = 689.5. Group 1 (high nibbles of qs[0..32]) is 0.
    let mut b = vec![0u8; 144];
    b[0..2].copy_from_slice(&h(1.0));
    b[2..4].copy_from_slice(&h(0.5));
    let s = 4;
    b[s] = 3;
    b[s + 4] = 2;
    b[s + 1] = 0xc1;
    b[s + 5] = 0x40;
    b[s + 9] = 0x52;
    b[16] = 0x0f;
    b[16 + 64 + 7] = 0xe0;
    let (format, part) = repack(GgmlType::Q4_K, &b, 1, 256).unwrap();
    let y = row0(format, 256, &part);
    assert_eq!([y[0], y[1], y[167], y[32]], [44.0, -1.0, 689.5, 0.0]);
    let l = part_layout(format, 1, 256).unwrap();
    let sc = &part[l.sc as usize..];
    assert_eq!([sc[0], sc[1], sc[2], sc[3], sc[10], sc[11]], [3, 2, 1, 0, 50, 21], "[sc, m] per group");
    assert_eq!(&part[l.sup as usize..l.sup as usize + 4], &b[0..4], "sup = d, dmin");
}

#[test]
fn hand_made_q6_k_block() {
    // d = 0.25. Row element 163 is ggml's n = 1, y[l + 32] with l = 3: low nibble of
    // ql[64 + 32 + 3] = 7, bits 2..4 of qh[32 + 3] = 2, scale scales[8 + 0 + 2] = -3:
    // q = 7 | 2 << 4 = 39 -> 0.25 * -3 * (39 - 32) = -5.25. It is group 5 (n = 1, i = 1),
    // element 3: canonical qs byte 3 low nibble 7, qh byte 3 bits 0..2 = 2, sc [-3, scales[11]].
    let mut b = vec![0u8; 210];
    b[99] = 0x07;
    b[128 + 35] = 0b1000;
    b[192 + 10] = (-3i8) as u8;
    b[192 + 11] = 9;
    b[208..210].copy_from_slice(&h(0.25));
    let (format, part) = repack(GgmlType::Q6_K, &b, 1, 256).unwrap();
    let y = row0(format, 256, &part);
    assert_eq!(y[163], -5.25);
    assert_eq!(y[176], 0.25 * 9.0 * -32.0, "element 16 of group 5 uses the second half's scale");
    let l = part_layout(format, 1, 256).unwrap();
    assert_eq!(part[l.qs as usize + 16 * 5 + 3], 0x07);
    assert_eq!(part[l.qh as usize + 8 * 5 + 3], 2);
    assert_eq!(&part[l.sc as usize + 10..l.sc as usize + 12], &[0xfd, 9]);
}
