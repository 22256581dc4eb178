//! Fuzz target for the GGUF reader: arbitrary bytes must parse or fail with an error, never panic
//! or allocate without bound. On success it checks the reader's invariants: every tensor's bytes
//! are in bounds and exactly `n_bytes` long, small supported tensors dequantize, and re-writing the
//! parsed file with `GgufBuilder` and parsing it again gives the same metadata and tensors.
//! The same input also drives the free `dequantize` function directly (first byte picks the type).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qwen_aot_compiler::gguf::{dequantize, GgmlType, GgufBuilder, GgufFile};

/// Dequantize only tensors up to this many elements, to keep executions fast.
const MAX_DEQUANT_ELEMS: u64 = 1 << 16;

const SUPPORTED: [GgmlType; 13] = GgmlType::DEQUANTIZABLE;

fuzz_target!(|data: &[u8]| {
    check_dequant(data);
    let Ok(g) = GgufFile::parse_bytes(data.to_vec()) else {
        return;
    };
    assert!(matches!(g.version(), 2 | 3));
    assert!(g.alignment().is_power_of_two());
    assert_eq!(g.data_offset() % g.alignment(), 0);

    for (key, value) in g.metadata() {
        // The same object (not just an equal one: NaN floats are not equal to themselves).
        assert!(g.get(key).is_some_and(|v| std::ptr::eq(v, value)));
        let _ = (
            value.type_name(),
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_str(),
        );
        let _ = (
            g.get_u64(key),
            g.get_f32(key),
            g.get_str(key),
            g.get_array(key),
        );
    }

    let mut builder = GgufBuilder::new().version(g.version());
    for (key, value) in g.metadata() {
        builder = builder.kv(key, value.clone());
    }
    for t in g.tensors() {
        assert_eq!(g.tensor(&t.name), Some(t));
        assert_eq!(t.offset % g.alignment(), 0);
        let bytes = g.tensor_bytes(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        if t.dtype.can_dequantize() && t.n_elements <= MAX_DEQUANT_ELEMS {
            let v = g
                .dequantize(t)
                .expect("in-bounds tensor of a supported type dequantizes");
            assert_eq!(v.len() as u64, t.n_elements);
        }
        builder = builder.tensor(&t.name, t.dtype, &t.dims, bytes.to_vec());
    }

    // Round trip: what we parsed, written back and parsed again, is the same file.
    let rebuilt = builder.build().expect("parsed arrays are homogeneous");
    let g2 = GgufFile::parse_bytes(rebuilt).expect("re-written file parses");
    assert_eq!(g2.version(), g.version());
    // Compare via Debug so that NaN floats compare equal to themselves.
    assert_eq!(
        format!("{:?}", g2.metadata()),
        format!("{:?}", g.metadata())
    );
    assert_eq!(g2.tensors().len(), g.tensors().len());
    for (a, b) in g.tensors().iter().zip(g2.tensors()) {
        assert_eq!(
            (&a.name, a.dtype, &a.dims, a.n_bytes),
            (&b.name, b.dtype, &b.dims, b.n_bytes)
        );
        assert_eq!(g.tensor_bytes(a), g2.tensor_bytes(b));
    }
});

/// Dequantizes the input's tail as whole blocks of the type picked by its first byte.
fn check_dequant(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let dtype = SUPPORTED[sel as usize % SUPPORTED.len()];
    let ts = dtype.type_size() as usize;
    let n_blocks = rest.len() / ts;
    let n = n_blocks * dtype.block_size() as usize;
    let v = dequantize(dtype, &rest[..n_blocks * ts], n).expect("whole blocks dequantize");
    assert_eq!(v.len(), n);
    // A wrong size is an error, not a panic.
    assert!(dequantize(dtype, rest, n + dtype.block_size() as usize).is_err());
}
