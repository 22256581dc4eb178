//! Shared by the root crate's integration tests: where the default model is.
use std::path::PathBuf;

/// `QWEN_AOT_MODEL`, else the fetch script's location in the cache; fails the test saying what to
/// run when it is missing.
pub fn model() -> PathBuf {
    let p = std::env::var_os("QWEN_AOT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| qwen_aot::model::cache_dir().join(qwen_aot::model::DEFAULT_MODEL_FILE));
    assert!(p.is_file(), "default model missing at {} (run scripts/fetch-model.sh)", p.display());
    p
}
