//! Shared by the root crate's integration tests: where the default model and the reference
//! outputs are.
use std::path::PathBuf;

pub mod server;

#[allow(dead_code)]
/// `QWEN_AOT_MODEL`, else the fetch script's location in the cache; fails the test saying what to
/// run when it is missing.
pub fn model() -> PathBuf {
    let p = std::env::var_os("QWEN_AOT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| qwen_aot::model::cache_dir().join(qwen_aot::model::DEFAULT_MODEL_FILE));
    assert!(p.is_file(), "default model missing at {} (run scripts/fetch-model.sh)", p.display());
    p
}

/// Writes a seeded random tiny Qwen2 model (two layers, hidden 64, a byte-level tokenizer and a
/// ChatML template, `general.name` = `name`) as a GGUF file of about 200 kB: a whole command runs
/// on it in well under a second.
#[allow(dead_code)]
pub fn write_tiny_model(path: &std::path::Path, seed: u64, name: &str) {
    use qwen_aot_compiler::gguf::GgmlType;
    use qwen_aot_compiler::synthetic::gguf_file::{gguf_builder, tiny_hparams};
    use qwen_aot_compiler::synthetic::{random_model_mix, FormatMix};
    let hp = tiny_hparams();
    let src = random_model_mix(&hp, false, seed, &FormatMix::all(GgmlType::Q8_0));
    std::fs::write(path, gguf_builder(&src, &hp, name).build().expect("GGUF builds")).expect("writing the model");
}

/// A reference output file: from `QWEN_AOT_REFS`, else the vendored copy in `tests/refs`; a
/// missing or unreadable file fails the test saying what to set.
#[allow(dead_code)]
pub fn refs(file: &str) -> serde_json::Value {
    let dir = std::env::var_os("QWEN_AOT_REFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/refs"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reference file {} not readable ({e}); set QWEN_AOT_REFS", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
