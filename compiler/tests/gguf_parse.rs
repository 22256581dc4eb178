//! GGUF reader: valid files round-trip through [`GgufBuilder`] and the Python `gguf` writer's
//! fixture, and every kind of malformed input yields the matching clear error (never a panic,
//! never a huge allocation). Malformed files are made with the tiny byte writer [`Raw`] below.
use qwen_aot_compiler::gguf::{dequantize, GgmlType, GgufBuilder, GgufError, GgufFile, GgufValue, MAX_ARRAY_DEPTH};

/// Little-endian byte writer for hand-made (often broken) GGUF files.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default().bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u8(self, v: u8) -> Raw {
        self.bytes(&[v])
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A metadata key followed by a value type id.
    fn key(self, key: &str, type_id: u32) -> Raw {
        self.str(key.as_bytes()).u32(type_id)
    }
    fn tensor_info(self, name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(type_id).u64(offset)
    }
    /// Pads to `align` and appends `n` bytes of tensor data.
    fn data(mut self, align: usize, n: usize) -> Raw {
        let start = self.0.len().div_ceil(align) * align;
        self.0.resize(start + n, 0);
        self
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::parse_bytes(self.0)
    }
}

fn err(r: Raw) -> GgufError {
    match r.parse() {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e,
    }
}

fn all_types_builder(version: u32) -> GgufBuilder {
    GgufBuilder::new()
        .version(version)
        .kv("general.architecture", GgufValue::String("qwen2".into()))
        .kv("t.u8", GgufValue::U8(200))
        .kv("t.i8", GgufValue::I8(-100))
        .kv("t.u16", GgufValue::U16(60000))
        .kv("t.i16", GgufValue::I16(-30000))
        .kv("t.u32", GgufValue::U32(4_000_000_000))
        .kv("t.i32", GgufValue::I32(-2_000_000_000))
        .kv("t.u64", GgufValue::U64(u64::MAX))
        .kv("t.i64", GgufValue::I64(i64::MIN))
        .kv("t.f32", GgufValue::F32(1.5))
        .kv("t.f64", GgufValue::F64(-2.25))
        .kv("t.bool", GgufValue::Bool(true))
        .kv("t.str", GgufValue::String("héllo ✓".into()))
        .kv("t.empty_str", GgufValue::String(String::new()))
        .kv("t.arr", GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-2)]))
        .kv(
            "t.nested",
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("bc".into())]),
                GgufValue::Array(vec![]),
            ]),
        )
        .kv("t.empty_arr", GgufValue::Array(vec![]))
        .tensor_f32("w", &[4, 3], &(0..12).map(|i| i as f32).collect::<Vec<_>>())
        .tensor_f32("b", &[5], &[1.0, 2.0, 3.0, 4.0, 5.0])
        .tensor("scalar", GgmlType::F32, &[], 7.5f32.to_le_bytes().to_vec())
        .tensor("empty", GgmlType::F32, &[0, 3], vec![])
}

// ---------------------------------------------------------------------------------------------
// Valid files
// ---------------------------------------------------------------------------------------------

#[test]
fn roundtrip_every_value_type_v2_and_v3() {
    for version in [2, 3] {
        let b = all_types_builder(version);
        let g = GgufFile::parse_bytes(b.build().unwrap()).unwrap();
        assert_eq!(g.version(), version);
        let keys: Vec<&str> = g.metadata().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[0], "general.architecture");
        assert_eq!(keys[1], "t.u8");
        assert_eq!(*keys.last().unwrap(), "t.empty_arr", "metadata keeps file order");
        assert_eq!(g.get("t.u8"), Some(&GgufValue::U8(200)));
        assert_eq!(g.get("t.i8"), Some(&GgufValue::I8(-100)));
        assert_eq!(g.get("t.u16"), Some(&GgufValue::U16(60000)));
        assert_eq!(g.get("t.i16"), Some(&GgufValue::I16(-30000)));
        assert_eq!(g.get("t.u32"), Some(&GgufValue::U32(4_000_000_000)));
        assert_eq!(g.get("t.i32"), Some(&GgufValue::I32(-2_000_000_000)));
        assert_eq!(g.get_u64("t.u64").unwrap(), u64::MAX);
        assert_eq!(g.get("t.i64").and_then(GgufValue::as_i64), Some(i64::MIN));
        assert_eq!(g.get_f32("t.f32").unwrap(), 1.5);
        assert_eq!(g.get_f32("t.f64").unwrap(), -2.25);
        assert!(g.get_bool("t.bool").unwrap());
        assert_eq!(g.get_str("t.str").unwrap(), "héllo ✓");
        assert_eq!(g.get_str("t.empty_str").unwrap(), "");
        assert_eq!(g.get_array("t.arr").unwrap(), &[GgufValue::I32(1), GgufValue::I32(-2)]);
        let nested = g.get_array("t.nested").unwrap();
        assert_eq!(nested[0].as_array().unwrap()[1].as_str(), Some("bc"));
        assert_eq!(nested[1].as_array().unwrap().len(), 0);
        assert!(g.get_array("t.empty_arr").unwrap().is_empty());

        assert_eq!(g.tensors().len(), 4);
        let w = g.tensor("w").unwrap();
        assert_eq!((w.dtype, w.dims.clone(), w.n_elements, w.n_bytes), (GgmlType::F32, vec![4, 3], 12, 48));
        assert_eq!(w.shape(), vec![3, 4]);
        assert_eq!(g.dequantize(w).unwrap(), (0..12).map(|i| i as f32).collect::<Vec<_>>());
        let b = g.tensor("b").unwrap();
        assert_eq!(b.offset % 32, 0);
        assert_eq!(g.dequantize(b).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(g.dequantize(g.tensor("scalar").unwrap()).unwrap(), vec![7.5]);
        let e = g.tensor("empty").unwrap();
        assert_eq!((e.n_elements, e.n_bytes), (0, 0));
        assert!(g.dequantize(e).unwrap().is_empty());
        assert_eq!(g.data_offset() % 32, 0);
        assert!(g.tensor("missing").is_none());
    }
}

#[test]
fn typed_getters_report_missing_and_wrong_types() {
    let g = GgufFile::parse_bytes(all_types_builder(3).build().unwrap()).unwrap();
    let e = g.get_str("nope").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { ref key } if key == "nope"));
    assert_eq!(e.to_string(), "metadata key \"nope\" is missing");
    let e = g.get_str("t.u8").unwrap_err();
    assert!(matches!(e, GgufError::WrongType { expected: "string", found: "u8", .. }), "{e}");
    assert!(e.to_string().contains("t.u8"));
    assert!(matches!(g.get_u64("t.i8"), Err(GgufError::OutOfRange { .. })));
    assert!(matches!(g.get_u64("t.f32"), Err(GgufError::WrongType { .. })));
    assert_eq!(g.get_u64("t.u16").unwrap(), 60000);
    assert!(matches!(g.get_f32("t.u32"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_array("t.str"), Err(GgufError::WrongType { found: "string", .. })));
    assert_eq!(GgufValue::I32(-1).as_u64(), None);
    assert_eq!(GgufValue::I32(5).as_u64(), Some(5));
    assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
    assert_eq!(GgufValue::F32(0.5).as_f64(), Some(0.5));
    assert_eq!(GgufValue::Bool(true).type_name(), "bool");
}

#[test]
fn custom_alignment_places_data_on_that_boundary() {
    for align in [1u32, 8, 64, 4096] {
        let g = GgufBuilder::new()
            .kv("general.alignment", GgufValue::U32(align))
            .tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
            .tensor_f32("b", &[2], &[4.0, 5.0])
            .build()
            .unwrap();
        let g = GgufFile::parse_bytes(g).unwrap();
        assert_eq!(g.alignment(), align as u64);
        assert_eq!(g.data_offset() % align as u64, 0);
        for t in g.tensors() {
            assert_eq!(t.offset % align as u64, 0);
        }
        assert_eq!(g.dequantize(g.tensor("b").unwrap()).unwrap(), vec![4.0, 5.0]);
    }
}

#[test]
fn empty_file_list_and_no_data_section() {
    let g = GgufFile::parse_bytes(Raw::header(3, 0, 0).0).unwrap();
    assert!(g.metadata().is_empty() && g.tensors().is_empty());
    // A zero-byte tensor needs no data section even if the file ends before the padding.
    let g = Raw::header(3, 1, 0).tensor_info(b"z", &[0], 0, 0).parse().unwrap();
    assert!(g.tensor_bytes(&g.tensors()[0]).is_empty());
}

/// A file written by the reference Python writer (`gguf.GGUFWriter`, see
/// scripts/gen-dequant-fixtures.py): every metadata type, nested arrays, alignment 64, and F32,
/// F16 and Q8_0 tensors.
#[test]
fn reads_file_written_by_python_gguf() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gguf/pywriter.gguf.bin");
    let g = GgufFile::open(std::path::Path::new(path)).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.get_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.get("t.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(g.get("t.i8"), Some(&GgufValue::I8(-100)));
    assert_eq!(g.get("t.u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(g.get("t.i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(g.get("t.u32"), Some(&GgufValue::U32(4_000_000_000)));
    assert_eq!(g.get("t.i32"), Some(&GgufValue::I32(-2_000_000_000)));
    assert_eq!(g.get("t.u64"), Some(&GgufValue::U64(18_000_000_000_000_000_000)));
    assert_eq!(g.get("t.i64"), Some(&GgufValue::I64(-9_000_000_000_000_000_000)));
    assert_eq!(g.get("t.f32"), Some(&GgufValue::F32(1.5)));
    assert_eq!(g.get("t.f64"), Some(&GgufValue::F64(-2.25)));
    assert_eq!(g.get("t.bool"), Some(&GgufValue::Bool(true)));
    assert_eq!(g.get_str("t.str").unwrap(), "héllo ✓");
    assert_eq!(g.get_array("t.arr_i32").unwrap(), &[GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)]);
    let strs: Vec<_> = g.get_array("t.arr_str").unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(strs, ["a", "", "ccc"]);
    let nested = g.get_array("t.arr_nested").unwrap();
    assert_eq!(
        nested,
        &[GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]), GgufValue::Array(vec![GgufValue::I32(3)])]
    );

    let a = g.tensor("a.f32").unwrap();
    assert_eq!(a.dims, vec![4, 3]);
    assert_eq!(g.dequantize(a).unwrap(), (0..12).map(|i| i as f32).collect::<Vec<_>>());
    let b = g.tensor("b.f16").unwrap();
    assert_eq!((b.dtype, b.dims.clone()), (GgmlType::F16, vec![32, 2]));
    assert_eq!(g.dequantize(b).unwrap(), (0..64).map(|i| i as f32 / 8.0).collect::<Vec<_>>());
    let c = g.tensor("c.q8_0").unwrap();
    assert_eq!((c.dtype, c.dims.clone(), c.n_bytes), (GgmlType::Q8_0, vec![32, 2], 68));
    let v = g.dequantize(c).unwrap();
    // Q8_0 of linspace(-1, 1, 64): error at most half a quantisation step (d/2 ≈ 1/254) plus the
    // f16 rounding of d.
    for (i, x) in v.iter().enumerate() {
        let want = -1.0 + 2.0 * i as f32 / 63.0;
        assert!((x - want).abs() < 0.005, "element {i}: {x} vs {want}");
    }
}

#[test]
fn builder_rejects_mixed_arrays() {
    let b = GgufBuilder::new().kv("x", GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]));
    assert!(matches!(b.build(), Err(GgufError::Unencodable { .. })));
}

// ---------------------------------------------------------------------------------------------
// Malformed files: one test per kind of problem
// ---------------------------------------------------------------------------------------------

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = all_types_builder(3).build().unwrap();
    // The builder pads the data section: the file's meaningful bytes end with the last tensor data.
    let g = GgufFile::parse_bytes(bytes.clone()).unwrap();
    let end =
        g.tensors().iter().filter(|t| t.n_bytes > 0).map(|t| g.data_offset() + t.offset + t.n_bytes).max().unwrap();
    for len in 0..end as usize {
        match GgufFile::parse_bytes(bytes[..len].to_vec()) {
            Err(
                GgufError::Truncated { .. } | GgufError::CountTooLarge { .. } | GgufError::TensorOutOfBounds { .. },
            ) => {}
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
    assert!(GgufFile::parse_bytes(bytes).is_ok());
}

#[test]
fn truncated_header() {
    let e = err(Raw::default().bytes(b"GGUF\x03\0"));
    assert!(matches!(e, GgufError::Truncated { offset: 4, needed: 4, available: 2, .. }), "{e}");
    assert!(e.to_string().contains("version"), "{e}");
    assert!(matches!(err(Raw::default()), GgufError::Truncated { .. }));
    assert!(matches!(err(Raw::default().bytes(b"GG")), GgufError::Truncated { .. }));
}

#[test]
fn wrong_magic() {
    let e = err(Raw::default().bytes(b"GGML\x03\0\0\0"));
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
    assert!(matches!(err(Raw::default().bytes(b"\x7fELF")), GgufError::BadMagic { .. }));
    assert!(matches!(err(Raw::default().bytes(b"X")), GgufError::BadMagic { .. }));
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, 1000] {
        let e = err(Raw::header(v, 0, 0));
        assert!(matches!(e, GgufError::UnsupportedVersion { version } if version == v), "{e}");
        assert!(e.to_string().contains(&format!("version {v}")), "{e}");
    }
    let e = err(Raw::header(3u32.swap_bytes(), 0, 0));
    assert!(matches!(e, GgufError::BigEndian { .. }), "{e}");
}

#[test]
fn absurd_tensor_and_kv_counts() {
    let e = err(Raw::header(3, 1 << 60, 0));
    assert!(matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 60), "{e}");
    assert!(e.to_string().contains("tensor count"), "{e}");
    let e = err(Raw::header(3, 0, u64::MAX));
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("metadata count"), "{e}");
}

#[test]
fn absurd_string_length_is_checked_before_allocating() {
    let e = err(Raw::header(3, 0, 1).u64(1 << 40).bytes(b"abcdefghijklmnop"));
    assert!(matches!(e, GgufError::Truncated { needed, offset: 32, .. } if needed == 1 << 40), "{e}");
    assert!(e.to_string().contains("metadata key"), "{e}");
    let e = err(Raw::header(3, 0, 1).key("k", 8).u64(u64::MAX));
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn absurd_array_length() {
    let e = err(Raw::header(3, 0, 1).key("k", 9).u32(10).u64(1 << 60).u64(0));
    assert!(matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 60), "{e}");
    assert!(e.to_string().contains("array length"), "{e}");
    // Arrays of arrays: each element needs at least 12 bytes.
    let e = err(Raw::header(3, 0, 1).key("k", 9).u32(9).u64(3).bytes(&[0; 30]));
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
}

#[test]
fn non_utf8_key_string_and_tensor_name() {
    let e = err(Raw::header(3, 0, 1).str(b"k\xff").u32(4).u32(1));
    assert!(matches!(e, GgufError::InvalidUtf8 { offset: 24, .. }), "{e}");
    assert!(e.to_string().contains("metadata key"), "{e}");
    let e = err(Raw::header(3, 0, 1).key("k", 8).str(b"\xc3\x28"));
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    let e = err(Raw::header(3, 1, 0).tensor_info(b"\x80", &[1], 0, 0).data(32, 4));
    assert!(matches!(e, GgufError::InvalidUtf8 { .. }), "{e}");
    assert!(e.to_string().contains("tensor name"), "{e}");
}

#[test]
fn unknown_value_type() {
    let e = err(Raw::header(3, 0, 1).key("k", 13).u32(0));
    assert!(matches!(e, GgufError::UnknownValueType { type_id: 13, offset: 33, .. }), "{e}");
    let e = err(Raw::header(3, 0, 1).key("k", 9).u32(77).u64(0));
    assert!(matches!(e, GgufError::UnknownValueType { type_id: 77, .. }), "{e}");
}

#[test]
fn invalid_bool() {
    let e = err(Raw::header(3, 0, 1).key("flag", 7).u8(2));
    assert!(matches!(e, GgufError::InvalidBool { value: 2, .. }), "{e}");
    assert!(e.to_string().contains("flag"), "{e}");
}

#[test]
fn array_nesting_depth_is_limited() {
    let nest = |depth: usize| {
        let mut r = Raw::header(3, 0, 1).key("deep", 9);
        for _ in 1..depth {
            r = r.u32(9).u64(1);
        }
        r.u32(0).u64(1).u8(42)
    };
    let g = nest(MAX_ARRAY_DEPTH).parse().unwrap();
    let mut v = g.get("deep").unwrap();
    for _ in 0..MAX_ARRAY_DEPTH {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &GgufValue::U8(42));
    let e = err(nest(MAX_ARRAY_DEPTH + 1));
    assert!(matches!(e, GgufError::ArrayTooDeep { .. }), "{e}");
    // Very deep nesting must not overflow the stack either.
    let e = err(nest(100_000));
    assert!(matches!(e, GgufError::ArrayTooDeep { .. }), "{e}");
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let e = err(Raw::header(3, 0, 2).key("k", 0).u8(1).key("k", 0).u8(2));
    assert!(matches!(e, GgufError::DuplicateKey { ref key, .. } if key == "k"), "{e}");
    let e = err(Raw::header(3, 2, 0).tensor_info(b"t", &[1], 0, 0).tensor_info(b"t", &[1], 0, 32).data(32, 64));
    assert!(matches!(e, GgufError::DuplicateTensor { ref name, .. } if name == "t"), "{e}");
}

#[test]
fn bad_alignment_values() {
    for (type_id, payload) in
        [(4u32, 0u32.to_le_bytes().to_vec()), (4, 3u32.to_le_bytes().to_vec()), (4, 48u32.to_le_bytes().to_vec())]
    {
        let e = err(Raw::header(3, 0, 1).key("general.alignment", type_id).bytes(&payload));
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{e}");
    }
    let e = err(Raw::header(3, 0, 1).key("general.alignment", 8).str(b"32"));
    assert!(matches!(e, GgufError::BadAlignment { .. }), "{e}");
    assert!(e.to_string().contains("of type string"), "{e}");
    let e = err(Raw::header(3, 0, 1).key("general.alignment", 4).u32(48));
    assert!(e.to_string().contains("alignment 48"), "{e}");
    let e = err(Raw::header(3, 0, 1).key("general.alignment", 10).u64(1 << 40));
    assert!(matches!(e, GgufError::BadAlignment { .. }), "{e}");
    // Any unsigned type with a power of two is accepted.
    let g = Raw::header(3, 0, 1).key("general.alignment", 10).u64(16).parse().unwrap();
    assert_eq!(g.alignment(), 16);
}

#[test]
fn too_many_dims() {
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[1, 1, 1, 1, 1], 0, 0).data(32, 4));
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");
    let e = err(Raw::header(3, 1, 0).str(b"t").u32(u32::MAX).bytes(&[0; 32]));
    assert!(matches!(e, GgufError::TooManyDims { .. }), "{e}");
}

#[test]
fn element_count_overflow() {
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[1 << 32, 1 << 32, 1 << 32], 0, 0));
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");
    // A zero dim makes the element count 0, but the other dims must still be sane.
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[0, 1 << 40, 1 << 40], 0, 0));
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[1 << 63], 24, 0));
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");
}

#[test]
fn unknown_dtype_ids() {
    for id in [4u32, 5, 31, 41, 1000, u32::MAX] {
        let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[32], id, 0).data(32, 64));
        assert!(matches!(e, GgufError::UnknownDtype { type_id, .. } if type_id == id), "{e}");
        assert!(e.to_string().contains("\"t\""), "{e}");
    }
}

#[test]
fn row_not_multiple_of_block() {
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[16, 2], GgmlType::Q4_0.id(), 0).data(32, 64));
    assert!(matches!(e, GgufError::RowNotBlockMultiple { row: 16, block: 32, .. }), "{e}");
}

#[test]
fn tensor_data_out_of_bounds() {
    // 8 f32 = 32 bytes, but only 31 bytes of data.
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[8], 0, 0).data(32, 31));
    assert!(matches!(e, GgufError::TensorOutOfBounds { ref name, .. } if name == "t"), "{e}");
    // Offset far past the end (and offset + size overflowing u64).
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[8], 0, u64::MAX - 31).data(32, 32));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    // Exactly fitting is fine.
    let g = Raw::header(3, 1, 0).tensor_info(b"t", &[8], 0, 0).data(32, 32).parse().unwrap();
    assert_eq!(g.tensor_bytes(&g.tensors()[0]).len(), 32);
}

#[test]
fn misaligned_tensor_offset() {
    let e = err(Raw::header(3, 1, 0).tensor_info(b"t", &[1], 0, 4).data(32, 64));
    assert!(matches!(e, GgufError::MisalignedTensor { data_offset: 4, alignment: 32, .. }), "{e}");
}

#[test]
fn overlapping_tensors_are_allowed() {
    let g =
        Raw::header(3, 2, 0).tensor_info(b"a", &[8], 0, 0).tensor_info(b"b", &[4], 0, 0).data(32, 32).parse().unwrap();
    assert_eq!(g.tensor_bytes(g.tensor("b").unwrap()), &g.tensor_bytes(g.tensor("a").unwrap())[..16]);
}

#[test]
fn unsupported_dequant_type_and_size_mismatch() {
    let g = Raw::header(3, 1, 0).tensor_info(b"t", &[256], GgmlType::IQ2_XXS.id(), 0).data(32, 66).parse().unwrap();
    let t = &g.tensors()[0];
    assert_eq!(t.n_bytes, 66);
    let e = g.dequantize(t).unwrap_err();
    assert!(matches!(e, GgufError::UnsupportedDequant { dtype: GgmlType::IQ2_XXS }), "{e}");
    assert!(matches!(dequantize(GgmlType::Q4_K, &[0; 143], 256), Err(GgufError::DequantSize { .. })));
    assert!(matches!(dequantize(GgmlType::Q4_0, &[0; 18], 31), Err(GgufError::DequantNotBlockMultiple { .. })));
    assert!(matches!(dequantize(GgmlType::F32, &[0; 8], usize::MAX), Err(GgufError::DequantSize { .. })));
}

#[test]
fn io_error_names_the_path() {
    let e = GgufFile::open(std::path::Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}

/// Writes the valid files above as fuzzing seeds when `QWEN_AOT_FUZZ_SEEDS` names a directory
/// (see fuzz/README.md); otherwise does nothing.
#[test]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("QWEN_AOT_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let q = |t: GgmlType, blocks: usize| vec![0x11u8; t.type_size() as usize * blocks];
    let quant = GgufBuilder::new()
        .kv("general.alignment", GgufValue::U32(16))
        .tensor("q4k", GgmlType::Q4_K, &[256, 1], q(GgmlType::Q4_K, 1))
        .tensor("q5_0", GgmlType::Q5_0, &[32, 2], q(GgmlType::Q5_0, 2))
        .tensor("q6k", GgmlType::Q6_K, &[256], q(GgmlType::Q6_K, 1))
        .tensor("q2k", GgmlType::Q2_K, &[256], q(GgmlType::Q2_K, 1))
        .tensor("bf16", GgmlType::BF16, &[4], q(GgmlType::BF16, 4));
    let files = [
        ("all_types_v3.gguf", all_types_builder(3).build().unwrap()),
        ("all_types_v2.gguf", all_types_builder(2).build().unwrap()),
        ("quant.gguf", quant.build().unwrap()),
        ("empty.gguf", Raw::header(3, 0, 0).0),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
