//! The GGUF reader on the real default model (Qwen2.5-Coder-0.5B-Instruct Q4_K_M, GGUF v3): its
//! metadata, tensor table, and one tensor of each of its types (Q5_0, Q8_0, Q4_K, Q6_K, F32)
//! dequantized and compared with reference values.
//!
//! The model path comes from `QWEN_AOT_MODEL` (default below); the tests fail, not skip, when it is
//! missing, because CI fetches it first.
//!
//! Reference values were produced once with the `gguf` Python package (0.19.0), independently of
//! this crate:
//! ```python
//! r = gguf.GGUFReader(path); t = <tensor by name>
//! x = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)
//! samples: (i, x[i].view(np.uint32)); sums in float64: x.sum(), abs(x).sum(), (x * (arange(N) % 251)).sum()
//! ```
//! Samples are compared bit-exactly (same ggml formulas, see tests/gguf_dequant.rs). The f64 sums
//! are compared within 1e-9 × abs_sum: numpy sums pairwise, this test sequentially, and both
//! orders' rounding error is far below that bound (≈ √N · 2⁻⁵³ · abs_sum), while any wrong element
//! bigger than ~1e-5 would show.
use std::time::Instant;

use qwen_aot_compiler::gguf::{GgmlType, GgufFile, GgufValue};

mod common;

fn model() -> GgufFile {
    let path = common::model_path();
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Ref {
    name: &'static str,
    dtype: GgmlType,
    dims: &'static [u64],
    n_elements: u64,
    samples: &'static [(usize, u32)],
    sum: f64,
    abs_sum: f64,
    weighted_sum: f64,
}

#[rustfmt::skip]
const REFS: &[Ref] = &[
    Ref { name: "blk.0.attn_q.weight", dtype: GgmlType::Q5_0, dims: &[896, 896], n_elements: 802816,
        samples: &[(0, 0xbc31a000), (1, 0xbcb1a000), (31, 0x3c47d400), (32, 0x3c3e1800), (255, 0xbc692800), (256, 0xbaac8000), (267610, 0xbcf88000), (401415, 0x3c7f6000), (802815, 0xbd0d8000)],
        sum: -40.741597175598145, abs_sum: 23411.351831436157, weighted_sum: -5695.585023164749 },
    Ref { name: "blk.0.attn_v.weight", dtype: GgmlType::Q8_0, dims: &[896, 128], n_elements: 114688,
        samples: &[(0, 0x3c1b7c00), (1, 0x3c388c00), (31, 0x3c35a400), (32, 0x3b148f00), (255, 0xba232000), (256, 0x3bc28800), (38234, 0x39a1e000), (57351, 0x3c4e8000), (114687, 0xbbf7df00)],
        sum: -0.7520554661750793, abs_sum: 735.560242831707, weighted_sum: -445.92147505283356 },
    Ref { name: "blk.11.ffn_down.weight", dtype: GgmlType::Q4_K, dims: &[4864, 896], n_elements: 4358144,
        samples: &[(0, 0x3a89e400), (1, 0xbaf11800), (31, 0x3b434600), (32, 0x3b212c00), (255, 0xbaec4000), (256, 0x3ab10000), (1452719, 0x3c0b8200), (2179079, 0xbc43e400), (4358143, 0xb9d36800)],
        sum: -21.5957590341568, abs_sum: 31623.616562485695, weighted_sum: -5900.471244692802 },
    Ref { name: "blk.0.ffn_down.weight", dtype: GgmlType::Q6_K, dims: &[4864, 896], n_elements: 4358144,
        samples: &[(0, 0xbaf15000), (1, 0xbaf15000), (31, 0xbc441100), (32, 0x3bb7ba00), (255, 0x3c16d200), (256, 0x00000000), (1452719, 0xbb541000), (2179079, 0xbc95ec00), (4358143, 0x3b4c4b00)],
        sum: 27.406931698322296, abs_sum: 43436.01161056757, weighted_sum: 2789.583982229233 },
    Ref { name: "blk.0.attn_q.bias", dtype: GgmlType::F32, dims: &[896], n_elements: 896,
        samples: &[(0, 0xbcf50000), (1, 0xbc020000), (31, 0x3f640000), (32, 0x3cf10000), (255, 0x3f8e0000), (256, 0xbf020000), (303, 0x3fb60000), (455, 0x40660000), (895, 0xbef60000)],
        sum: -158.64008903503418, abs_sum: 3525.616258621216, weighted_sum: 15956.859579086304 },
];

#[test]
fn real_model_metadata_and_tensor_table() {
    let g = model();
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata().len(), 26);
    assert_eq!(g.metadata()[0].0, "general.architecture");
    assert_eq!(g.get_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(g.get_u64("qwen2.block_count").unwrap(), 24);
    assert_eq!(g.get_u64("general.file_type").unwrap(), 15);
    assert_eq!(g.get_f32("qwen2.rope.freq_base").unwrap(), 1_000_000.0);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(g.get("tokenizer.ggml.add_bos_token"), Some(&GgufValue::Bool(false)));
    assert_eq!(g.get_u64("tokenizer.ggml.eos_token_id").unwrap(), 151645);
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 151936);
    assert_eq!(tokens[0].as_str(), Some("!"));
    assert_eq!(tokens[151645].as_str(), Some("<|im_end|>"));
    assert_eq!(g.get_array("tokenizer.ggml.merges").unwrap().len(), 151387);
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), 151936);
    assert!(matches!(types[0], GgufValue::I32(_)));
    assert!(g.get_str("tokenizer.chat_template").unwrap().starts_with("{%- if tools %}"));

    assert_eq!(g.tensors().len(), 291);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_offset(), 5_947_776);
    let count = |t: GgmlType| g.tensors().iter().filter(|i| i.dtype == t).count();
    assert_eq!(
        [
            count(GgmlType::Q5_0),
            count(GgmlType::F32),
            count(GgmlType::Q8_0),
            count(GgmlType::Q6_K),
            count(GgmlType::Q4_K)
        ],
        [133, 121, 13, 12, 12]
    );
    let out = g.tensor("output.weight").unwrap();
    assert_eq!((out.dtype, out.dims.clone(), out.offset), (GgmlType::Q8_0, vec![896, 151936], 0));
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.dtype, embd.dims.clone(), embd.offset), (GgmlType::Q5_0, vec![896, 151936], 144_643_072));
    let last = g.tensors().iter().map(|t| g.data_offset() + t.offset + t.n_bytes).max().unwrap();
    assert!(last <= g.as_bytes().len() as u64);
}

#[test]
fn real_model_tensors_match_python_gguf() {
    let g = model();
    for r in REFS {
        let t = g.tensor(r.name).unwrap_or_else(|| panic!("no tensor {}", r.name));
        assert_eq!((t.dtype, t.dims.as_slice(), t.n_elements), (r.dtype, r.dims, r.n_elements), "{}", r.name);
        let x = g.dequantize(t).unwrap();
        assert_eq!(x.len() as u64, r.n_elements);
        for &(i, bits) in r.samples {
            assert_eq!(x[i].to_bits(), bits, "{} [{i}]: got {}, want {}", r.name, x[i], f32::from_bits(bits));
        }
        let (mut sum, mut abs_sum, mut weighted) = (0f64, 0f64, 0f64);
        for (i, &v) in x.iter().enumerate() {
            let v = v as f64;
            sum += v;
            abs_sum += v.abs();
            weighted += v * (i % 251) as f64;
        }
        let tol = 1e-9 * r.abs_sum;
        assert!((sum - r.sum).abs() <= tol, "{}: sum {sum} vs {}", r.name, r.sum);
        assert!((abs_sum - r.abs_sum).abs() <= tol, "{}: abs sum {abs_sum} vs {}", r.name, r.abs_sum);
        assert!(
            (weighted - r.weighted_sum).abs() <= tol * 251.0,
            "{}: weighted {weighted} vs {}",
            r.name,
            r.weighted_sum
        );
    }
}

/// Every tensor of the model dequantizes to finite values (and, as a smoke benchmark, prints how
/// long the whole model takes).
#[test]
fn real_model_dequantizes_completely() {
    let g = model();
    let start = Instant::now();
    let mut total = 0u64;
    for t in g.tensors() {
        let x = g.dequantize(t).unwrap_or_else(|e| panic!("{}: {e}", t.name));
        assert_eq!(x.len() as u64, t.n_elements);
        assert!(x.iter().all(|v| v.is_finite()), "{}: non-finite value", t.name);
        total += t.n_elements;
    }
    // 494M parameters plus the untied 896 x 151936 output matrix.
    assert_eq!(total, 630_167_424);
    eprintln!("dequantized {total} elements in {:.2?}", start.elapsed());
}
