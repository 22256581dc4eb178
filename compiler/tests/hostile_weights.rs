//! GGUF files whose metadata or weights are wrong in ways that used to compile and then print
//! garbage: NaN/Inf weights, and a `block_count` below the blocks the file holds. Each must be
//! refused at compile time with one message naming the tensor (and block) at fault. The files are
//! small random Qwen2 models written by `GgufBuilder`, so these run in milliseconds.
use std::error::Error;

use half::f16;
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::gguf::{GgmlType, GgufBuilder, GgufFile, GgufValue};
use qwen_aot_compiler::hparams::ModelConfig;
use qwen_aot_compiler::source::{MemData, MemorySource};
use qwen_aot_compiler::synthetic::{random_model_mix, FormatMix};
use qwen_aot_runtime::plan::HyperParams;

fn tiny() -> HyperParams {
    HyperParams {
        n_layers: 2,
        hidden: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 32,
        ffn: 128,
        vocab: 96,
        rms_eps: 1e-6,
        rope_theta: 1e6,
        context_length: 256,
    }
}

/// The tiny model as GGUF bytes with Q5_0 matrices and F32 vectors, `block_count` as given.
fn gguf(src: &MemorySource, hp: &HyperParams, block_count: u32) -> GgufFile {
    let mut b = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("qwen2".into()))
        .kv("qwen2.block_count", GgufValue::U32(block_count))
        .kv("qwen2.embedding_length", GgufValue::U32(hp.hidden as u32))
        .kv("qwen2.feed_forward_length", GgufValue::U32(hp.ffn as u32))
        .kv("qwen2.attention.head_count", GgufValue::U32(hp.n_heads as u32))
        .kv("qwen2.attention.head_count_kv", GgufValue::U32(hp.n_kv_heads as u32))
        .kv("qwen2.rope.freq_base", GgufValue::F32(hp.rope_theta))
        .kv("qwen2.attention.layer_norm_rms_epsilon", GgufValue::F32(hp.rms_eps))
        .kv("qwen2.context_length", GgufValue::U32(hp.context_length as u32));
    for (name, t) in &src.tensors {
        b = match &t.data {
            MemData::F32(v) => b.tensor_f32(name, &t.dims, v),
            MemData::Blocks { dtype, bytes } => b.tensor(name, *dtype, &t.dims, bytes.clone()),
        };
    }
    GgufFile::parse_bytes(b.build().expect("GGUF builds")).expect("GGUF parses")
}

fn model() -> MemorySource {
    random_model_mix(&tiny(), false, 7, &FormatMix::all(GgmlType::Q5_0))
}

/// Compiles `file` into a temporary directory; the error with its causes, one line.
fn compile(file: &GgufFile) -> Result<(), String> {
    let chain = |e: &dyn Error| {
        let mut s = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            s += &format!(": {c}");
            cause = c.source();
        }
        s
    };
    let cfg = ModelConfig::from_gguf(file).map_err(|e| chain(&e))?;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = build(&cfg.hparams, file, "test", &CompileOptions::default()).map_err(|e| chain(&e))?;
    write_dir(&mut c, file, None, &dir.path().join("out"), |_| {}).map_err(|e| chain(&e))
}

#[test]
fn the_unmodified_model_compiles() {
    compile(&gguf(&model(), &tiny(), 2)).expect("a finite model compiles");
}

#[test]
fn a_nan_block_scale_is_refused_naming_tensor_and_block() {
    let mut src = model();
    let name = "blk.1.ffn_up.weight";
    let Some(MemData::Blocks { dtype: GgmlType::Q5_0, bytes }) = src.tensors.get_mut(name).map(|t| &mut t.data) else {
        panic!("{name} is Q5_0 blocks");
    };
    // Q5_0 blocks are 22 bytes, `d` first: block 5 covers elements 160..192.
    bytes[5 * 22..5 * 22 + 2].copy_from_slice(&f16::NAN.to_le_bytes());
    let err = compile(&gguf(&src, &tiny(), 2)).unwrap_err();
    assert_eq!(
        err,
        "tensor `blk.1.ffn_up.weight`: block 5 (elements 160..192) has scale `d` = NaN (weights must be finite numbers)"
    );
}

#[test]
fn an_inf_in_an_f32_norm_is_refused_naming_tensor_and_element() {
    let mut src = model();
    let name = "blk.0.ffn_norm.weight";
    let Some(MemData::F32(v)) = src.tensors.get_mut(name).map(|t| &mut t.data) else {
        panic!("{name} is F32");
    };
    v[17] = f32::INFINITY;
    let err = compile(&gguf(&src, &tiny(), 2)).unwrap_err();
    assert_eq!(err, "tensor `blk.0.ffn_norm.weight`: element 17 is inf (weights must be finite numbers)");
}

#[test]
fn a_block_count_below_the_blocks_in_the_file_is_refused() {
    let err = compile(&gguf(&model(), &tiny(), 1)).unwrap_err();
    assert_eq!(
        err,
        "qwen2.block_count = 1, but the file holds tensors of 2 blocks (`blk.1.attn_k.bias`, ...): \
         the metadata does not describe this model"
    );
}

/// Finite weights can still overflow: an output norm of f32::MAX passes the compile-time check,
/// and the LM head's logits come out Inf/NaN. The CPU executor stops with an error instead of
/// choosing a token from them, greedy and sampled alike.
#[test]
fn logits_that_overflow_stop_generation_with_an_error() {
    use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
    use qwen_aot_runtime::cpu::CpuExecutor;
    use qwen_aot_runtime::error::RuntimeError;
    use qwen_aot_runtime::executor::LogitsWanted;
    use qwen_aot_runtime::sampler::SamplingParams;
    use qwen_aot_runtime::session::Session;

    let hp = tiny();
    let mut src = model();
    src.insert_f32("output_norm.weight", vec![hp.hidden as u64], vec![f32::MAX; hp.hidden]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let mut c = build(&hp, &src, "overflow", &CompileOptions::default()).expect("finite weights compile");
    write_dir(&mut c, &src, None, &dir, |_| {}).expect("written");
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    for sampling in [SamplingParams::default(), SamplingParams { temperature: 0.7, ..Default::default() }] {
        let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
        s.set_sampling(&sampling).unwrap();
        let err = s.prefill(&[1, 2, 3], LogitsWanted::None).unwrap_err();
        let RuntimeError::NonFiniteLogit { pos, token, value } = &err else { panic!("not a logit error: {err}") };
        assert_eq!(*pos, 2, "the last prompt position's logits");
        assert!(*token < hp.vocab && !value.is_finite(), "token {token} value {value}");
        assert!(err.to_string().starts_with("the model produced a non-finite logit"), "{err}");
    }
}
