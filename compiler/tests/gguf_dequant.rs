//! Dequantisation against an independent implementation: the fixtures under
//! tests/fixtures/gguf/dequant/ hold raw ggml blocks and what the `gguf` Python package's
//! `gguf.quants.dequantize` makes of them (scripts/gen-dequant-fixtures.py says how they were made:
//! quantized data of many magnitudes, random blocks, extreme and subnormal f16 scales).
//!
//! Tolerance: none, the comparison is bit-exact. Both implementations follow ggml's formulas
//! operation for operation in f32 (widen the f16 scale, multiply, then subtract or add the min,
//! with separate roundings: numpy evaluates one ufunc at a time and Rust does not contract `a*b-c`
//! into an FMA), so IEEE 754 gives identical bits. NaNs (from F16/BF16 NaN inputs) only need to be
//! NaN on both sides, since NaN payloads are not part of any contract.
use qwen_aot_compiler::gguf::{dequantize, GgmlType, GgufBuilder, GgufFile};

/// Every type with a fixture (tests/fixtures/gguf/dequant/<name>.raw / .f32).
const TYPES: [GgmlType; 13] = GgmlType::DEQUANTIZABLE;

fn fixture(t: GgmlType) -> (Vec<u8>, Vec<f32>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf/dequant");
    let read = |ext: &str| {
        let path = format!("{dir}/{}.{ext}", t.name());
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let expected = read("f32").chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    (read("raw"), expected)
}

fn assert_same(t: GgmlType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{t}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(
            same,
            "{t}: element {i} (block {}): got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            i as u64 / t.block_size(),
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn every_type_matches_python_gguf_bit_exactly() {
    for t in TYPES {
        let (raw, want) = fixture(t);
        assert!((raw.len() as u64).is_multiple_of(t.type_size()), "{t}: fixture is whole blocks");
        let got = dequantize(t, &raw, want.len()).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_same(t, &got, &want);
        // The fixtures exercise what they should: varied, non-trivial values.
        let distinct: std::collections::BTreeSet<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert!(distinct.len() > want.len() / 8, "{t}: only {} distinct values", distinct.len());
    }
}

/// The list under test is the list the fixtures were made for, and `dequantize` agrees with it:
/// every other known type is refused, not decoded into garbage.
#[test]
fn dequantizable_types_are_exactly_the_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf/dequant");
    let mut with_fixture: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".raw").map(str::to_string))
        .collect();
    with_fixture.sort();
    let mut listed: Vec<String> = TYPES.iter().map(|t| t.name().to_string()).collect();
    listed.sort();
    assert_eq!(listed, with_fixture);
    for t in GgmlType::all() {
        let n = t.block_size() as usize;
        let block = vec![0u8; t.type_size() as usize];
        assert_eq!(dequantize(t, &block, n).is_ok(), t.can_dequantize(), "{t}");
    }
}

/// Big inputs are split over threads: the result must not depend on the split.
#[test]
fn parallel_path_matches() {
    for t in TYPES {
        let (raw, want) = fixture(t);
        let reps = (3 << 16) / want.len() + 1; // > 3 parallel chunks
        let raw: Vec<u8> = raw.iter().copied().cycle().take(raw.len() * reps).collect();
        let want: Vec<f32> = want.iter().copied().cycle().take(want.len() * reps).collect();
        let got = dequantize(t, &raw, want.len()).unwrap();
        assert_same(t, &got, &want);
    }
}

/// Through a GGUF file: a 2-row tensor of each type comes back in GGUF element order.
#[test]
fn through_gguf_file() {
    let mut b = GgufBuilder::new();
    let mut expected = Vec::new();
    for t in TYPES {
        let (raw, want) = fixture(t);
        let row = t.block_size() * if t.block_size() == 1 { 64 } else { 2 };
        let n = 2 * row;
        let bytes = (n / t.block_size() * t.type_size()) as usize;
        b = b.tensor(t.name(), t, &[row, 2], raw[..bytes].to_vec());
        expected.push((t, want[..n as usize].to_vec()));
    }
    let g = GgufFile::parse_bytes(b.build().unwrap()).unwrap();
    for (t, want) in expected {
        let info = g.tensor(t.name()).unwrap();
        assert_eq!(info.dtype, t);
        assert_same(t, &g.dequantize(info).unwrap(), &want);
    }
}

/// Hand-checked blocks, independent of the fixtures.
#[test]
fn hand_made_blocks() {
    // Q8_0: d = 0.5, q = 0..32 - 16.
    let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    b.extend((0..32).map(|i| (i as i8 - 16) as u8));
    let v = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
    assert_eq!(v, (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect::<Vec<_>>());

    // Q4_0: d = 2, nibbles: low = j % 16, high = 15 - j % 16 -> x = d * (q - 8).
    let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(v[j], 2.0 * (j as f32 - 8.0));
        assert_eq!(v[j + 16], 2.0 * (7.0 - j as f32));
    }

    // Q5_0: all high bits set -> q = nibble + 16 - 16 = nibble.
    let mut b = half::f16::from_f32(1.0).to_le_bytes().to_vec();
    b.extend(u32::MAX.to_le_bytes());
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let v = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
    for j in 0..16 {
        assert_eq!((v[j], v[j + 16]), (j as f32, j as f32));
    }

    // BF16 and F16 specials.
    let v = dequantize(GgmlType::BF16, &[0x80, 0x3f, 0x80, 0xff], 2).unwrap();
    assert_eq!(v[0], 1.0);
    assert_eq!(v[1], f32::NEG_INFINITY);
    let v = dequantize(GgmlType::F16, &[0x01, 0x00, 0x00, 0x7c], 2).unwrap();
    assert_eq!(v[0], 2f32.powi(-24));
    assert_eq!(v[1], f32::INFINITY);

    // Q6_K with all-zero bytes but d = 1 and scales = 1: every q is -32.
    let mut b = vec![0u8; 210];
    b[192..208].fill(1);
    b[208..210].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    assert!(dequantize(GgmlType::Q6_K, &b, 256).unwrap().iter().all(|&x| x == -32.0));
}
