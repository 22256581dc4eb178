//! The architecture comes from `general.architecture` through `qwen_aot_compiler::architecture`:
//! an unknown one is refused by name, `<prefix>.attention.key_length` sets head_dim, and the q/k/v
//! biases are optional (all or none per layer). The files are small random Qwen2 models written by
//! the synthetic GGUF tools, so these run in milliseconds.
use qwen_aot_compiler::compile::{build, CompileOptions};
use qwen_aot_compiler::gguf::{GgmlType, GgufBuilder, GgufFile, GgufValue};
use qwen_aot_compiler::hparams::ModelConfig;
use qwen_aot_compiler::source::MemorySource;
use qwen_aot_compiler::synthetic::gguf_file::{gguf_builder, tiny_hparams};
use qwen_aot_compiler::synthetic::{random_model_mix, remove_qkv_bias, FormatMix};
use qwen_aot_plan::HyperParams;

fn parse(b: GgufBuilder) -> GgufFile {
    GgufFile::parse_bytes(b.build().expect("GGUF builds")).expect("GGUF parses")
}

fn model(hp: &HyperParams) -> MemorySource {
    random_model_mix(hp, false, 5, &FormatMix::all(GgmlType::Q8_0))
}

/// Reads the hyperparameters and compiles the plan (no weights written); the error as text.
fn compile(file: &GgufFile) -> Result<ModelConfig, String> {
    let cfg = ModelConfig::from_gguf(file).map_err(|e| e.to_string())?;
    let opts = CompileOptions { architecture: cfg.architecture, ..CompileOptions::default() };
    build(&cfg.hparams, file, "test", &opts).map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn qwen2_is_chosen_from_general_architecture() {
    let hp = tiny_hparams();
    let cfg = compile(&parse(gguf_builder(&model(&hp), &hp, "tiny"))).unwrap();
    assert_eq!(cfg.architecture.name, "qwen2");
    assert_eq!(cfg.hparams.head_dim, 32, "hidden 64 / 2 heads without key_length");
}

#[test]
fn an_unknown_architecture_is_refused_by_name() {
    let hp = tiny_hparams();
    let b = gguf_builder(&model(&hp), &hp, "tiny").set("general.architecture", GgufValue::String("llama".into()));
    assert_eq!(compile(&parse(b)).unwrap_err(), "unsupported architecture llama (qwen-aot supports qwen2)");
}

/// Heads narrower than hidden / head_count: only `attention.key_length` says so. Without it the
/// projections' shapes disagree with the derived head_dim and the model is refused; with it the
/// model compiles with that head_dim.
#[test]
fn key_length_sets_head_dim() {
    let hp = HyperParams { head_dim: 16, ..tiny_hparams() };
    assert_ne!(hp.head_dim, hp.hidden / hp.n_heads);
    let src = model(&hp);
    let without = compile(&parse(gguf_builder(&src, &hp, "tiny"))).unwrap_err();
    assert!(without.contains("blk.0.attn_q.weight"), "{without}");
    let with = gguf_builder(&src, &hp, "tiny").set("qwen2.attention.key_length", GgufValue::U32(16));
    let cfg = compile(&parse(with)).unwrap();
    assert_eq!((cfg.hparams.head_dim, cfg.hparams.n_heads, cfg.hparams.hidden), (16, 2, 64));
    // Values as wide as keys: anything else is refused.
    let b = gguf_builder(&src, &hp, "tiny")
        .set("qwen2.attention.key_length", GgufValue::U32(16))
        .set("qwen2.attention.value_length", GgufValue::U32(32));
    assert_eq!(
        compile(&parse(b)).unwrap_err(),
        "qwen2.attention.value_length = 32 differs from head_dim = 16: unsupported"
    );
}

/// Without q/k/v biases (Llama-style attention) a model compiles, with no bias in its plan; a
/// layer with only some of them is refused naming the layer and what it lacks.
#[test]
fn qkv_biases_are_optional_but_all_or_none() {
    let hp = tiny_hparams();
    let mut src = model(&hp);
    remove_qkv_bias(&mut src);
    let file = parse(gguf_builder(&src, &hp, "tiny"));
    let cfg = ModelConfig::from_gguf(&file).unwrap();
    let opts = CompileOptions { architecture: cfg.architecture, ..CompileOptions::default() };
    let plan = build(&cfg.hparams, &file, "test", &opts).unwrap().plan;
    assert!(!plan.weights.iter().any(|w| w.name.contains(".bias")), "{:?}", plan.weights);

    let mut src = model(&hp);
    assert!(src.tensors.remove("blk.1.attn_k.bias").is_some());
    let err = compile(&parse(gguf_builder(&src, &hp, "tiny"))).unwrap_err();
    assert_eq!(
        err,
        "layer 1: k has no bias while blk.1.attn_q.bias and blk.1.attn_v.bias do: the fused bias+RoPE+KV \
         write adds one packed q|k|v bias, so a layer's q, k and v biases must all be present or all absent"
    );
}
