//! First use of a GGUF compiles it into the cache. Several processes doing that at once (parallel
//! tests, two terminals) must all succeed and leave one complete cache entry: each compiles into
//! its own staging directory and renames it into place (see `model::compiled_model`). The compile
//! also removes the model's entries of older plan formats (a full copy of the weights each), and
//! nothing else (so does any later use).
mod common;

use common::model;
use std::process::Command;

#[test]
fn concurrent_first_use_compiles_safely() {
    let cache = tempfile::tempdir().expect("temp dir");
    let model = model();
    // Entries a compile must remove (this model, older plan format) and keep (a newer format; another model).
    let sha = qwen_aot_compiler::compile::sha256_file(&model).expect("hashing the model");
    let version = qwen_aot_compiler::compile::COMPILER_VERSION;
    let format = qwen_aot_runtime::plan::PLAN_FORMAT_VERSION;
    let outdated = format!("{}-v{version}-p{}", &sha[..16], format - 1);
    let newer = format!("{}-v{version}-p{}", &sha[..16], format + 1);
    let other_model = format!("0123456789abcdef-v{version}-p{}", format - 1);
    // Staging directories: of a compile whose process is gone (removed), of a running one (kept).
    let current = format!("{}-v{version}-p{format}", &sha[..16]);
    let gone_pid = {
        let mut c = Command::new("true").spawn().expect("spawn true");
        let pid = c.id();
        c.wait().expect("wait");
        pid
    };
    let abandoned = format!("{current}.staging-{gone_pid}.tmp");
    let running = format!("{current}.staging-{}", std::process::id());
    for name in [&outdated, &newer, &other_model, &abandoned, &running] {
        let d = cache.path().join("compiled").join(name);
        std::fs::create_dir_all(&d).expect("fake cache entry");
        std::fs::write(d.join("weights.bin"), [0u8; 64]).expect("fake weights");
    }
    let procs: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_generate"))
                .env("QWEN_AOT_CACHE", cache.path())
                .args([
                    "--model",
                    model.to_str().unwrap(),
                    "--backend",
                    "cpu",
                    "--prompt",
                    "1, 2, 3,",
                    "--max-tokens",
                    "1",
                    "--json",
                    "--quiet",
                ])
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
    let mut entries: Vec<String> = std::fs::read_dir(cache.path().join("compiled"))
        .expect("cache dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let want_current = current.clone();
    let mut want = vec![current, newer, other_model, running];
    want.sort();
    assert_eq!(entries, want, "the new entry, the newer format, the other model's entry and the running compile's staging; no {outdated}, no {abandoned}");

    // A later use of the cached model removes an outdated entry too.
    let stale = cache.path().join("compiled").join(&outdated);
    std::fs::create_dir_all(&stale).expect("fake cache entry");
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .env("QWEN_AOT_CACHE", cache.path())
        .args([
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            "--prompt",
            "1, 2, 3,",
            "--max-tokens",
            "1",
            "--quiet",
        ])
        .output()
        .expect("run generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stale.exists(), "{outdated} survived a use of the cached model");

    // A damaged weights.bin in the cache is removed and compiled again (with a note), not an
    // error on every later run. --json is quiet: the note shows in the second, plain run.
    let weights = cache.path().join("compiled").join(&want_current).join("weights.bin");
    // In the first window, which every load hashes (a load samples the file: runtime integrity).
    let damage = || {
        let mut bytes = std::fs::read(&weights).expect("cached weights");
        bytes[100] ^= 0xff;
        std::fs::write(&weights, bytes).expect("damaging the weights");
    };
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_generate"))
            .env("QWEN_AOT_CACHE", cache.path())
            .args(["--model", model.to_str().unwrap(), "--backend", "cpu", "--prompt", "1, 2, 3,", "-n", "1"])
            .args(extra)
            .output()
            .expect("run generate")
    };
    damage();
    let out = run(&["--json"]);
    assert!(out.status.success(), "a damaged cache entry is repaired: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["ids"], texts[0], "the recompiled model gives the same greedy ids");
    damage();
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("is damaged")
            // Window 0: the first stored weight's first 64 KiB (or all of it, when smaller: with
            // the embedding derived, the default model's file starts with a 3.5 KB norm).
            && err.contains("is corrupt: bytes 0..")
            && err.contains("(window 0, in weight ")
            && err.contains("compiling it again"),
        "{err}"
    );
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("damaged"), "repaired for good: {err}");
}
