//! Shared by the integration tests that need the default model: `QWEN_AOT_MODEL`, else the fetch
//! script's location (`$QWEN_AOT_CACHE` or `~/.cache/qwen-aot`). A missing file fails the test
//! with a message saying what to do.
#![allow(dead_code)]
use std::path::PathBuf;

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
