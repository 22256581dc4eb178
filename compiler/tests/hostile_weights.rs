//! GGUF files whose metadata or weights are wrong in ways that used to compile and then print
//! garbage or were reported misleadingly: NaN/Inf weights, a `block_count` below the blocks the
//! file holds, a tensor with transposed or shrunk dims, a vocabulary that disagrees between
//! `token_embd`, `output` and the tokenizer. Each must be refused at compile time with one message
//! naming the GGUF tensor (and block) at fault, with its shape and the one the metadata implies. The files are
//! small random Qwen2 models written by `GgufBuilder`, so these run in milliseconds.
use std::error::Error;

use half::f16;
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::gguf::{GgmlType, GgufBuilder, GgufFile, GgufValue};
use qwen_aot_compiler::hparams::ModelConfig;
use qwen_aot_compiler::source::{MemData, MemorySource};
use qwen_aot_compiler::synthetic::gguf_file::{gguf_builder, tiny_hparams};
use qwen_aot_compiler::synthetic::{random_blocks, random_model_mix, FormatMix};
use qwen_aot_plan::HyperParams;

fn tiny() -> HyperParams {
    tiny_hparams()
}

/// The tiny model as a GGUF file with Q5_0 matrices and F32 vectors, `block_count` as given.
fn gguf(src: &MemorySource, hp: &HyperParams, block_count: u32) -> GgufFile {
    parse(gguf_builder(src, hp, "tiny").set("qwen2.block_count", GgufValue::U32(block_count)))
}

/// [`gguf`] (all blocks declared) with `tokens` entries in `tokenizer.ggml.tokens`.
fn gguf_with_tokens(src: &MemorySource, hp: &HyperParams, tokens: usize) -> GgufFile {
    let vocab = (0..tokens).map(|i| GgufValue::String(format!("t{i}"))).collect();
    parse(gguf_builder(src, hp, "tiny").set("tokenizer.ggml.tokens", GgufValue::Array(vocab)))
}

fn parse(b: GgufBuilder) -> GgufFile {
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
    let opts = CompileOptions { architecture: cfg.architecture, ..CompileOptions::default() };
    let mut c = build(&cfg.hparams, file, "test", &opts).map_err(|e| chain(&e))?;
    write_dir(&mut c, file, None, &dir.path().join("out"), |_| {}).map_err(|e| chain(&e))
}

#[test]
fn the_unmodified_model_compiles() {
    let file = gguf(&model(), &tiny(), 2);
    compile(&file).expect("a finite model compiles");
    qwen_aot_compiler::tokenizer_from_gguf::tokenizer_json_from_gguf(&file).expect("its tokenizer is valid");
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

/// `src` with `name` replaced by Q5_0 blocks of GGUF dims `dims` (random values).
fn with_matrix(mut src: MemorySource, name: &str, dims: [u64; 2]) -> MemorySource {
    let bytes = random_blocks(GgmlType::Q5_0, dims[1] as usize, dims[0] as usize, 0.05, 3);
    src.insert_blocks(name, dims.to_vec(), GgmlType::Q5_0, bytes);
    src
}

/// `ffn_gate` is one half of the fused gate|up weight; a fault in it is reported under its own
/// name with the shape the metadata gives it: [embedding_length 64, feed_forward_length 128].
#[test]
fn a_transposed_or_shrunk_matrix_is_named_with_its_expected_shape() {
    let name = "blk.0.ffn_gate.weight";
    let err = compile(&gguf(&with_matrix(model(), name, [128, 64]), &tiny(), 2)).unwrap_err();
    assert_eq!(err, "tensor `blk.0.ffn_gate.weight` has shape [128, 64], expected [64, 128] from the model's metadata");
    let err = compile(&gguf(&with_matrix(model(), name, [64, 96]), &tiny(), 2)).unwrap_err();
    assert_eq!(err, "tensor `blk.0.ffn_gate.weight` has shape [64, 96], expected [64, 128] from the model's metadata");
    // A q projection of k's size: attn_q is [64, n_heads 2 * head_dim 32].
    let err = compile(&gguf(&with_matrix(model(), "blk.1.attn_q.weight", [64, 32]), &tiny(), 2)).unwrap_err();
    assert_eq!(err, "tensor `blk.1.attn_q.weight` has shape [64, 32], expected [64, 64] from the model's metadata");
}

/// The tokenizer's 288 entries are the vocabulary (llama.cpp sizes both tables by it): whichever
/// of `token_embd` and `output` disagrees is the one named.
#[test]
fn a_vocabulary_that_disagrees_names_the_tensor_that_differs() {
    let err = compile(&gguf(&with_matrix(model(), "token_embd.weight", [64, 287]), &tiny(), 2)).unwrap_err();
    assert_eq!(
        err,
        "tensor `token_embd.weight` has shape [64, 287], expected [64, 288] \
         (qwen2.embedding_length, then the 288 entries of tokenizer.ggml.tokens)"
    );
    let err = compile(&gguf(&with_matrix(model(), "output.weight", [64, 287]), &tiny(), 2)).unwrap_err();
    assert_eq!(
        err,
        "tensor `output.weight` has shape [64, 287], expected [64, 288] \
         (qwen2.embedding_length, then the vocabulary of tokenizer.ggml.tokens)"
    );
    // Both tables agree, the tokenizer does not.
    let err = compile(&gguf_with_tokens(&model(), &tiny(), 289)).unwrap_err();
    assert_eq!(
        err,
        "tensor `token_embd.weight` has shape [64, 288], expected [64, 289] \
         (qwen2.embedding_length, then the 289 entries of tokenizer.ggml.tokens)"
    );
}
