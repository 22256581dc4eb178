//! Hyperparameters from GGUF metadata: the real default model (path from `QWEN_AOT_MODEL`, failing
//! when missing), and small synthetic GGUFs for defaults, tied embeddings and every rejection.

use qwen_aot_compiler::gguf::{GgufBuilder, GgufFile, GgufValue};
use qwen_aot_compiler::hparams::{HParamsError, ModelConfig};

mod common;

#[test]
fn real_model_hparams() {
    let path = common::model_path();
    let g = GgufFile::open(&path).unwrap();
    let c = ModelConfig::from_gguf(&g).unwrap();
    let h = &c.hparams;
    assert_eq!(h.n_layers, 24);
    assert_eq!(h.hidden, 896);
    assert_eq!((h.n_heads, h.n_kv_heads, h.head_dim), (14, 2, 64));
    assert_eq!(h.ffn, 4864);
    assert_eq!(h.vocab, 151936);
    assert_eq!(h.rms_eps, 1e-6);
    assert_eq!(h.rope_theta, 1e6);
    assert_eq!(h.context_length, 32768);
    assert!(!c.tied_embeddings);
}

const HIDDEN: u64 = 16;
const VOCAB: u64 = 10;

/// A minimal qwen2 GGUF: every key, `token_embd.weight`, and `output.weight` unless tied; `edit`
/// replaces (or, with `None`, removes) metadata values.
fn synth(tied: bool, edit: &[(&str, Option<GgufValue>)]) -> GgufFile {
    let mut kv: Vec<(&str, GgufValue)> = vec![
        ("general.architecture", GgufValue::String("qwen2".into())),
        ("qwen2.block_count", GgufValue::U32(2)),
        ("qwen2.context_length", GgufValue::U32(128)),
        ("qwen2.embedding_length", GgufValue::U32(HIDDEN as u32)),
        ("qwen2.feed_forward_length", GgufValue::U32(40)),
        ("qwen2.attention.head_count", GgufValue::U32(4)),
        ("qwen2.attention.head_count_kv", GgufValue::U32(2)),
        ("qwen2.rope.freq_base", GgufValue::F32(500_000.0)),
        ("qwen2.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-5)),
    ];
    for (key, value) in edit {
        kv.retain(|(k, _)| k != key);
        if let Some(v) = value {
            kv.push((key, v.clone()));
        }
    }
    let mut b = GgufBuilder::new();
    for (k, v) in kv {
        b = b.kv(k, v);
    }
    let embd = vec![0.0; (HIDDEN * VOCAB) as usize];
    b = b.tensor_f32("token_embd.weight", &[HIDDEN, VOCAB], &embd);
    if !tied {
        b = b.tensor_f32("output.weight", &[HIDDEN, VOCAB], &embd);
    }
    GgufFile::parse_bytes(b.build().unwrap()).unwrap()
}

fn config_err(tied: bool, edit: &[(&str, Option<GgufValue>)]) -> HParamsError {
    ModelConfig::from_gguf(&synth(tied, edit)).unwrap_err()
}

#[test]
fn synthetic_untied_and_tied() {
    let c = ModelConfig::from_gguf(&synth(false, &[])).unwrap();
    let h = &c.hparams;
    assert_eq!((h.n_layers, h.hidden, h.ffn, h.vocab, h.context_length), (2, 16, 40, 10, 128));
    assert_eq!((h.n_heads, h.n_kv_heads, h.head_dim), (4, 2, 4));
    assert_eq!((h.rms_eps, h.rope_theta), (1e-5, 500_000.0));
    assert!(!c.tied_embeddings);
    assert!(ModelConfig::from_gguf(&synth(true, &[])).unwrap().tied_embeddings);
}

#[test]
fn defaults_for_kv_heads_and_rope_theta() {
    let c = ModelConfig::from_gguf(&synth(
        true,
        &[("qwen2.attention.head_count_kv", None), ("qwen2.rope.freq_base", None)],
    ))
    .unwrap();
    assert_eq!(c.hparams.n_kv_heads, 4);
    assert_eq!(c.hparams.rope_theta, 10_000.0);
}

#[test]
fn other_integer_and_float_types_are_accepted() {
    let c = ModelConfig::from_gguf(&synth(
        true,
        &[
            ("qwen2.block_count", Some(GgufValue::U64(3))),
            ("qwen2.context_length", Some(GgufValue::I32(64))),
            ("qwen2.attention.layer_norm_rms_epsilon", Some(GgufValue::F64(1e-6))),
        ],
    ))
    .unwrap();
    assert_eq!((c.hparams.n_layers, c.hparams.context_length, c.hparams.rms_eps), (3, 64, 1e-6));
}

#[test]
fn other_architecture_is_rejected() {
    let e = config_err(true, &[("general.architecture", Some(GgufValue::String("llama".into())))]);
    assert_eq!(e.to_string(), "unsupported architecture llama (qwen-aot supports qwen2)");
}

#[test]
fn missing_keys_are_named() {
    for key in [
        "general.architecture",
        "qwen2.block_count",
        "qwen2.embedding_length",
        "qwen2.feed_forward_length",
        "qwen2.attention.head_count",
        "qwen2.attention.layer_norm_rms_epsilon",
        "qwen2.context_length",
    ] {
        let e = config_err(true, &[(key, None)]);
        assert!(matches!(e, HParamsError::Gguf(_)), "{key}: {e}");
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
}

#[test]
fn wrong_types_are_named() {
    let e = config_err(true, &[("qwen2.block_count", Some(GgufValue::String("24".into())))]);
    assert!(e.to_string().contains("qwen2.block_count") && e.to_string().contains("string"), "{e}");
    let e = config_err(true, &[("qwen2.rope.freq_base", Some(GgufValue::U32(10000)))]);
    assert!(e.to_string().contains("qwen2.rope.freq_base"), "{e}");
    let e = config_err(true, &[("qwen2.block_count", Some(GgufValue::I32(-1)))]);
    assert!(e.to_string().contains("-1"), "{e}");
}

#[test]
fn insane_sizes_are_rejected() {
    for (key, v) in [
        ("qwen2.block_count", 0u64),
        ("qwen2.embedding_length", 1 << 20),
        ("qwen2.feed_forward_length", 0),
        ("qwen2.attention.head_count", 0),
        ("qwen2.attention.head_count_kv", 0),
        ("qwen2.context_length", 1 << 40),
    ] {
        let e = config_err(true, &[(key, Some(GgufValue::U64(v)))]);
        assert!(matches!(e, HParamsError::OutOfRange { .. }), "{key}: {e}");
        assert!(e.to_string().contains(key) && e.to_string().contains(&v.to_string()), "{e}");
    }
    for (key, v) in [
        ("qwen2.attention.layer_norm_rms_epsilon", 0.0),
        ("qwen2.rope.freq_base", -1.0),
        ("qwen2.attention.layer_norm_rms_epsilon", f32::NAN),
        ("qwen2.rope.freq_base", f32::INFINITY),
    ] {
        let e = config_err(true, &[(key, Some(GgufValue::F32(v)))]);
        assert!(matches!(e, HParamsError::BadFloat { .. }), "{key}: {e}");
    }
}

#[test]
fn inconsistent_head_counts() {
    // 16 / 3 heads: not divisible.
    let e = config_err(
        true,
        &[("qwen2.attention.head_count", Some(GgufValue::U32(3))), ("qwen2.attention.head_count_kv", None)],
    );
    assert!(matches!(e, HParamsError::Inconsistent { .. }), "{e}");
    assert!(e.to_string().contains("not divisible"), "{e}");
    // 4 heads, 3 KV heads.
    let e = config_err(true, &[("qwen2.attention.head_count_kv", Some(GgufValue::U32(3)))]);
    assert!(e.to_string().contains("not a multiple"), "{e}");
    // More KV heads than heads.
    let e = config_err(true, &[("qwen2.attention.head_count_kv", Some(GgufValue::U32(8)))]);
    assert!(matches!(e, HParamsError::Inconsistent { .. }), "{e}");
    // head_dim = 16 / 16 = 1 is odd.
    let e = config_err(
        true,
        &[
            ("qwen2.attention.head_count", Some(GgufValue::U32(16))),
            ("qwen2.attention.head_count_kv", Some(GgufValue::U32(16))),
        ],
    );
    assert!(e.to_string().contains("odd"), "{e}");
}

#[test]
fn embedding_shape_is_checked() {
    let e = config_err(true, &[("qwen2.embedding_length", Some(GgufValue::U32(32)))]);
    assert!(matches!(e, HParamsError::TensorShape { name: "token_embd.weight", .. }), "{e}");
    let g = GgufFile::parse_bytes(
        GgufBuilder::new()
            .kv("general.architecture", GgufValue::String("qwen2".into()))
            .kv("qwen2.block_count", GgufValue::U32(1))
            .kv("qwen2.context_length", GgufValue::U32(8))
            .kv("qwen2.embedding_length", GgufValue::U32(4))
            .kv("qwen2.feed_forward_length", GgufValue::U32(8))
            .kv("qwen2.attention.head_count", GgufValue::U32(2))
            .kv("qwen2.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-6))
            .build()
            .unwrap(),
    )
    .unwrap();
    let e = ModelConfig::from_gguf(&g).unwrap_err();
    assert!(matches!(e, HParamsError::MissingTensor("token_embd.weight")), "{e}");
}
