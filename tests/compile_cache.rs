//! First use of a GGUF compiles it into the cache. Several processes doing that at once (parallel
//! tests, two terminals) must all succeed and leave one complete cache entry: each compiles into
//! its own staging directory and renames it into place (see `model::compiled_model`).
mod common;

use common::model;
use std::process::Command;

#[test]
fn concurrent_first_use_compiles_safely() {
    let cache = tempfile::tempdir().expect("temp dir");
    let model = model();
    let procs: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_generate"))
                .env("QWEN_AOT_CACHE", cache.path())
                .args(["--model", model.to_str().unwrap(), "--backend", "cpu", "--prompt", "1, 2, 3,", "--max-tokens", "1", "--json", "--quiet"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn generate")
        })
        .collect();
    let mut texts = Vec::new();
    for p in procs {
        let out = p.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent first use failed: {err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        texts.push(v["ids"].clone());
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "same greedy ids from every process: {texts:?}");
    let entries: Vec<String> = std::fs::read_dir(cache.path().join("compiled")).expect("cache dir").map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries.len(), 1, "one cache entry, no staging leftovers: {entries:?}");
}
