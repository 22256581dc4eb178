//! The weight table's parts (formats, merging, offsets) and `weights.bin` read back through the
//! plan's layout against the source tensors.
use qwen_aot_plan::quant::PartView;
use qwen_aot_plan::HyperParams;

use super::*;
use crate::compile::{build, CompileOptions};
use crate::source::MemorySource;
use crate::synthetic::{default_model_mix, q4_k_m_1_5b_mix, random_model, random_model_mix, FormatMix};

/// One layer, every row length a multiple of 256 (k-quants fit).
fn hp() -> HyperParams {
    HyperParams {
        n_layers: 1,
        hidden: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        ffn: 512,
        vocab: 50,
        rms_eps: 1e-6,
        rope_theta: 1e4,
        context_length: 32,
    }
}

fn table(src: &MemorySource, hp: &HyperParams, weights: WeightMode) -> WeightTable {
    build(hp, src, "test", &CompileOptions { prefill_tokens: 4, weights, ..Default::default() }).unwrap().weights
}

fn info<'a>(t: &'a WeightTable, name: &str) -> &'a WeightInfo {
    t.infos
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no weight {name}: {:?}", t.infos.iter().map(|w| &w.name).collect::<Vec<_>>()))
}

fn formats(w: &WeightInfo) -> Vec<(usize, WeightFormat)> {
    w.parts.iter().map(|p| (p.rows, p.format)).collect()
}

const QKV: &str = "blk.0.attn_q.weight+blk.0.attn_k.weight+blk.0.attn_v.weight";
const GATE_UP: &str = "blk.0.ffn_gate.weight+blk.0.ffn_up.weight";

/// Offsets aligned, parts back to back, sizes from `part_layout`, the total their sum.
fn check_layout(t: &WeightTable) {
    let mut at = 0;
    for w in &t.infos {
        assert_eq!(w.offset, at, "{}", w.name);
        let k = *w.shape.last().unwrap();
        for p in &w.parts {
            assert_eq!(p.offset, at);
            assert_eq!(p.offset % ALIGNMENT, 0);
            assert_eq!(p.bytes, part_layout(p.format, p.rows, k).unwrap().bytes, "{}", w.name);
            at += p.bytes;
        }
        assert_eq!(w.bytes, at - w.offset);
        let rows = if w.shape.len() == 2 { w.shape[0] } else { 1 };
        assert_eq!(w.parts.iter().map(|p| p.rows).sum::<usize>(), rows);
    }
    assert_eq!(t.total_bytes, at);
}

#[test]
fn native_parts_keep_the_gguf_types_and_merge_neighbours() {
    let t = table(&random_model_mix(&hp(), false, 1, &default_model_mix()), &hp(), WeightMode::Native);
    check_layout(&t);
    // q (256 rows) and k (128) are Q5_0 and share a part; v (128) is Q8_0.
    assert_eq!(formats(info(&t, QKV)), [(384, WeightFormat::Q5_0), (128, WeightFormat::Q8_0)]);
    assert_eq!(formats(info(&t, GATE_UP)), [(1024, WeightFormat::Q5_0)]);
    assert_eq!(formats(info(&t, "blk.0.ffn_down.weight")), [(256, WeightFormat::Q6_K)]);
    assert_eq!(formats(info(&t, "blk.0.attn_output.weight")), [(256, WeightFormat::Q5_0)]);
    assert_eq!(formats(info(&t, "token_embd.weight")), [(50, WeightFormat::Q5_0)]);
    assert_eq!(formats(info(&t, "output.weight")), [(50, WeightFormat::Q8_0)]);
    assert_eq!(formats(info(&t, "blk.0.attn_norm.weight")), [(1, WeightFormat::F32)]);
    assert_eq!(info(&t, "blk.0.attn_norm.weight").shape, [256]);
    assert_eq!(info(&t, QKV).shape, [512, 256]);
    // Three formats in one concatenation: three parts.
    let mix = FormatMix { qk: GgmlType::Q4_K, v: GgmlType::Q6_K, ..q4_k_m_1_5b_mix() };
    let src = random_model_mix(&hp(), false, 2, &mix);
    let mut src3 = src.clone();
    let k = src.tensors["blk.0.attn_k.weight"].clone();
    let bytes = crate::synthetic::random_blocks(GgmlType::Q8_0, 128, 256, 0.06, 1);
    src3.insert_blocks("blk.0.attn_k.weight", k.dims, GgmlType::Q8_0, bytes);
    let t = table(&src3, &hp(), WeightMode::Native);
    assert_eq!(
        formats(info(&t, QKV)),
        [(256, WeightFormat::Q4_K), (128, WeightFormat::Q8_0), (128, WeightFormat::Q6_K)]
    );
    check_layout(&t);
}

#[test]
fn f16_mode_stores_every_matrix_as_one_f16_part() {
    let t = table(&random_model_mix(&hp(), false, 1, &default_model_mix()), &hp(), WeightMode::F16);
    check_layout(&t);
    for w in &t.infos {
        let want = if w.shape.len() == 2 { WeightFormat::F16 } else { WeightFormat::F32 };
        assert_eq!(w.parts.len(), 1, "{}", w.name);
        assert!(w.all_parts(want), "{}: {:?}", w.name, w.parts);
        // The pre-plan-5 sizes, padded to the alignment.
        let elems = w.shape.iter().product::<usize>() as u64;
        assert_eq!(w.bytes, (elems * if w.shape.len() == 2 { 2 } else { 4 }).div_ceil(ALIGNMENT) * ALIGNMENT);
    }
}

#[test]
fn f32_matrices_stay_f32_unless_rows_are_not_whole_groups() {
    // ffn 40: ffn_down's rows (k = 40) are not whole 32-element groups, so it becomes F16; the
    // gate|up rows (k = 64) stay F32.
    let hp = HyperParams { hidden: 64, n_heads: 4, head_dim: 16, ffn: 40, ..hp() };
    let t = table(&random_model(&hp, true, 3), &hp, WeightMode::Native);
    check_layout(&t);
    assert_eq!(formats(info(&t, GATE_UP)), [(80, WeightFormat::F32)]);
    assert_eq!(formats(info(&t, "blk.0.ffn_down.weight")), [(64, WeightFormat::F16)]);
    assert_eq!(formats(info(&t, "token_embd.weight")), [(50, WeightFormat::F32)]);
    // The F16 mix keeps F16 (the plan random-model callers had before).
    let t = table(&random_model_mix(&hp, true, 3, &FormatMix::f16()), &hp, WeightMode::Native);
    assert!(t.infos.iter().filter(|w| w.shape.len() == 2).all(|w| w.single_format() == Some(WeightFormat::F16)));
}

/// Writes the weights, then reads every row back through the plan's layout and compares it with
/// the source tensors (dequantised by the GGUF dequantiser; rounded to f16 where stored as F16).
fn check_written(src: &MemorySource, hp: &HyperParams, mode: WeightMode) {
    let t = table(src, hp, mode);
    let mut file = tempfile::tempfile().unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let digest = write_weights(&t, &[], src, &file, |n| seen.lock().unwrap().push(n)).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    assert_eq!(bytes.len() as u64, t.total_bytes);
    // The digest is the windows' over the bytes as written (the windows are each part's own).
    let windows: Vec<[u8; 32]> = t
        .infos
        .iter()
        .flat_map(|w| &w.parts)
        .flat_map(|p| integrity::part_windows(p.offset, p.bytes))
        .map(|r| integrity::window_digest(&bytes[r.start as usize..r.end as usize]))
        .collect();
    let (sha256, short) = integrity::summarize(&windows);
    assert_eq!(digest, WeightsDigest { sha256, windows: short });
    // Parts finish in any order; the count each reports only grows, up to the whole file.
    let mut seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), t.infos.iter().map(|w| w.parts.len()).sum::<usize>());
    seen.sort_unstable();
    assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&t.total_bytes), "progress {seen:?}");
    for (w, r) in t.infos.iter().zip(&t.refs) {
        let want: Vec<f32> = r.parts().iter().flat_map(|n| src.load_f32(n).unwrap()).collect();
        let k = *w.shape.last().unwrap();
        let mut got = Vec::new();
        for p in &w.parts {
            let view =
                PartView::new(p.format, p.rows, k, &bytes[p.offset as usize..(p.offset + p.bytes) as usize]).unwrap();
            let mut row = vec![0f32; k];
            for i in 0..p.rows {
                view.dequant_row(i, &mut row);
                got.extend_from_slice(&row);
            }
        }
        let want: Vec<f32> = if w.all_parts(WeightFormat::F16) {
            want.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
        } else {
            want
        };
        assert_eq!(got.len(), want.len(), "{}", w.name);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} ({:?})", w.name, w.parts);
    }
}

#[test]
fn written_weights_read_back_exactly() {
    let hp = hp();
    for mix in [
        default_model_mix(),
        q4_k_m_1_5b_mix(),
        FormatMix::all(GgmlType::Q2_K),
        FormatMix::all(GgmlType::Q4_1),
        FormatMix::all(GgmlType::BF16),
    ] {
        let src = random_model_mix(&hp, false, 4, &mix);
        check_written(&src, &hp, WeightMode::Native);
        check_written(&src, &hp, WeightMode::F16);
    }
    let hp = HyperParams { hidden: 64, n_heads: 4, head_dim: 16, ffn: 40, ..hp };
    check_written(&random_model(&hp, true, 3), &hp, WeightMode::Native);
}

#[test]
fn bytes_by_format_sums_the_parts() {
    let t = table(&random_model_mix(&hp(), false, 1, &default_model_mix()), &hp(), WeightMode::Native);
    let by = bytes_by_format(&t.infos);
    assert_eq!(
        by.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        [WeightFormat::F32, WeightFormat::Q5_0, WeightFormat::Q8_0, WeightFormat::Q6_K]
    );
    assert_eq!(by.iter().map(|(_, b)| b).sum::<u64>(), t.total_bytes);
}

#[test]
fn an_unsupported_tensor_type_is_named_before_packing() {
    let mut src = random_model_mix(&hp(), false, 1, &default_model_mix());
    src.insert_blocks("blk.0.ffn_down.weight", vec![512, 256], GgmlType::IQ2_XXS, vec![0u8; 512 * 256 / 256 * 66]);
    for weights in [WeightMode::Native, WeightMode::F16] {
        let e = build(&hp(), &src, "t", &CompileOptions { prefill_tokens: 4, weights, ..Default::default() })
            .err()
            .expect("IQ2_XXS is refused");
        let chain = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
        assert_eq!(chain, "tensor `blk.0.ffn_down.weight`: dequantisation of IQ2_XXS is not supported");
    }
}

#[test]
fn a_wrong_row_length_is_named_with_the_expected_shape() {
    let mut src = random_model_mix(&hp(), false, 1, &default_model_mix());
    let bytes = crate::synthetic::random_blocks(GgmlType::Q5_0, 128, 512, 0.05, 1);
    src.insert_blocks("blk.0.attn_k.weight", vec![512, 128], GgmlType::Q5_0, bytes);
    let e = build(&hp(), &src, "t", &CompileOptions::default()).err().expect("wrong k");
    // attn_k is [hidden 256, n_kv_heads 2 * head_dim 64].
    assert_eq!(
        e.to_string(),
        "tensor `blk.0.attn_k.weight` has shape [512, 128], expected [256, 128] from the model's metadata"
    );
}
