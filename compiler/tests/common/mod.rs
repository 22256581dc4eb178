//! Shared by the integration tests that need the default model or the reference outputs.
//! The model: `QWEN_AOT_MODEL`, else the fetch script's location (`$QWEN_AOT_CACHE` or
//! `~/.cache/qwen-aot`). The refs: `QWEN_AOT_REFS`, else the vendored copy in `<repo>/tests/refs`. A missing file
//! fails the test with a message saying what to do.
#![allow(dead_code)]
use std::path::PathBuf;

use serde_json::Value;

pub fn model_path() -> PathBuf {
    let path = std::env::var_os("QWEN_AOT_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("QWEN_AOT_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/qwen-aot"));
        cache.join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    assert!(
        path.is_file(),
        "model GGUF not found at {} (run scripts/fetch-model.sh or set QWEN_AOT_MODEL)",
        path.display()
    );
    path
}

pub fn refs(file: &str) -> Value {
    let dir = std::env::var_os("QWEN_AOT_REFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/refs"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reference file {} not readable ({e}); set QWEN_AOT_REFS", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
