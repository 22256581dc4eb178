//! Shared by the benchmarks: the real Qwen2.5 vocabulary.
use std::path::Path;

use qwen_aot_compiler::gguf::GgufFile;
use qwen_aot_compiler::tokenizer_from_gguf::tokenizer_data_from_gguf;
use qwen_aot_runtime::tokenizer::Tokenizer;

const DEFAULT_MODEL: &str = "/root/.cache/qwen-aot/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// The tokenizer of `QWEN_AOT_TOKENIZER` (a compiled directory's `tokenizer.json`), else of the
/// GGUF at `QWEN_AOT_MODEL` (default: the default model in the cache).
pub fn load_tokenizer() -> Tokenizer {
    if let Ok(path) = std::env::var("QWEN_AOT_TOKENIZER") {
        return Tokenizer::load(Path::new(&path)).unwrap_or_else(|e| panic!("QWEN_AOT_TOKENIZER={path}: {e}"));
    }
    let model = std::env::var("QWEN_AOT_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.to_string());
    let g = GgufFile::open(Path::new(&model))
        .unwrap_or_else(|e| panic!("{model}: {e} (set QWEN_AOT_MODEL or QWEN_AOT_TOKENIZER)"));
    let data = tokenizer_data_from_gguf(&g).unwrap_or_else(|e| panic!("{model}: {e}"));
    Tokenizer::from_data(data).unwrap_or_else(|e| panic!("{model}: {e}"))
}
