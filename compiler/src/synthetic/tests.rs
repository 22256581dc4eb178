//! Random quantized blocks have the f32 random model's statistics (mean 0, variance 1/k), so a
//! quantized random model keeps its activations in range through its layers.
use super::*;
use crate::source::TensorSource;

const QUANTS: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn random_blocks_have_the_variance_of_the_f32_model() {
    for t in QUANTS {
        for k in [1536usize, 8960] {
            let rows = 64;
            let bytes = random_blocks(t, rows, k, (1.0 / k as f32).sqrt(), 9);
            let x = dequantize(t, &bytes, rows * k).unwrap();
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            let want = 1.0 / (k as f64).sqrt();
            assert!((std / want - 1.0).abs() < 0.1, "{t} k {k}: std {std:e}, want {want:e}");
            // Q4_0's codes q - 8 run from -8 to 7 (mean -0.5, 0.11 std), as in ggml.
            assert!(mean.abs() < 0.12 * want, "{t} k {k}: mean {mean:e} (std {want:e})");
            assert!(x.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn random_blocks_are_deterministic() {
    let a = random_blocks(GgmlType::Q4_K, 200, 512, 0.05, 3);
    assert_eq!(a, random_blocks(GgmlType::Q4_K, 200, 512, 0.05, 3));
    assert_ne!(a, random_blocks(GgmlType::Q4_K, 200, 512, 0.05, 4));
}

#[test]
fn the_f16_mix_holds_random_model_values_rounded() {
    let hp = one_layer_hparams(40, 32);
    let f32s = random_model(&hp, false, 5);
    let f16s = random_model_mix(&hp, false, 5, &FormatMix::f16());
    for name in f32s.tensors.keys() {
        assert_eq!(f16s.dims(name), f32s.dims(name));
        let (a, b) = (f32s.load_f32(name).unwrap(), f16s.load_f32(name).unwrap());
        let rounded: Vec<f32> = if f32s.dims(name).unwrap().len() == 2 {
            a.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        } else {
            a
        };
        assert_eq!(rounded, b, "{name}");
    }
}

#[test]
fn mixes_give_each_role_its_type() {
    let hp = HyperParams {
        n_layers: 2,
        hidden: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        ffn: 512,
        vocab: 50,
        rms_eps: 1e-6,
        rope_theta: 1e4,
        context_length: 32,
    };
    let src = random_model_mix(&hp, false, 1, &default_model_mix());
    let ty = |n: &str| src.ggml_type(n).unwrap();
    assert_eq!(ty("token_embd.weight"), GgmlType::Q5_0);
    assert_eq!(ty("output.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.1.attn_q.weight"), GgmlType::Q5_0);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.1.attn_norm.weight"), GgmlType::F32);
    let src = random_model_mix(&hp, true, 1, &q4_k_m_1_5b_mix());
    assert!(src.dims("output.weight").is_none(), "tied");
    assert_eq!(ty_of(&src, "blk.0.ffn_gate.weight"), GgmlType::Q4_K);
    assert_eq!(ty_of(&src, "blk.0.ffn_down.weight"), GgmlType::Q6_K);
    let hp15 = qwen15b_hparams();
    assert_eq!(
        (hp15.n_layers, hp15.hidden, hp15.n_heads, hp15.n_kv_heads, hp15.head_dim, hp15.ffn, hp15.vocab),
        (28, 1536, 12, 2, 128, 8960, 151936)
    );
}

fn ty_of(src: &MemorySource, n: &str) -> GgmlType {
    src.ggml_type(n).unwrap()
}

/// The larger random shapes are Qwen2.5's: their parameter counts are the released models' (as
/// Hugging Face counts their safetensors: 0.5B, 1.5B and 3B tie the embedding), and
/// `parameter_count` counts what `random_model_mix` writes.
#[test]
fn the_random_shapes_have_qwen25s_parameter_counts() {
    assert_eq!(parameter_count(&qwen05b_hparams(24), true), 494_032_768);
    assert_eq!(parameter_count(&qwen15b_hparams(), true), 1_543_714_304);
    assert_eq!(parameter_count(&qwen3b_hparams(), true), 3_085_938_688);
    assert_eq!(parameter_count(&qwen7b_hparams(), false), 7_615_616_512);
    let hp = HyperParams { n_layers: 2, vocab: 300, ..qwen05b_hparams(2) };
    for tied in [false, true] {
        let src = random_model_mix(&hp, tied, 3, &FormatMix::all(GgmlType::Q8_0));
        let written: u64 = src.tensors.values().map(|t| t.dims.iter().product::<u64>()).sum();
        assert_eq!(written, parameter_count(&hp, tied), "tied {tied}");
    }
    let mix = q4_k_m_tied_mix();
    assert_eq!((mix.embed, mix.qk, mix.down), (GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q6_K));
}
