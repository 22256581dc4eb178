//! `qwen-aot cache` and `qwen-aot cache clean [--all]` on a temporary `QWEN_AOT_CACHE`, filled by
//! the real binaries: `generate` compiles two tiny model files into it, then one file changes.
mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(cache: &Path, bin: &str, args: &[&str]) -> String {
    let exe = match bin {
        "generate" => env!("CARGO_BIN_EXE_generate"),
        _ => env!("CARGO_BIN_EXE_qwen-aot"),
    };
    let out = Command::new(exe).env("QWEN_AOT_CACHE", cache).args(args).output().unwrap();
    assert!(out.status.success(), "{bin} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The entries as `qwen-aot cache --json` gives them, by name.
fn entries(cache: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&run(cache, "qwen-aot", &["cache", "--json"])).expect("one JSON object");
    v["entries"].as_array().expect("entries").clone()
}

/// Bytes of the files in `dir`, measured here rather than trusted from the command.
fn bytes_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn lists_entries_with_sizes_and_sources_and_cleans_the_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    common::write_tiny_model(&a, 1, "tiny a");
    common::write_tiny_model(&b, 2, "tiny b");
    for m in [&a, &b] {
        run(&cache, "generate", &["-m", m.to_str().unwrap(), "--backend", "cpu", "-p", "hi", "-n", "1", "--quiet"]);
    }
    // An entry of an older plan format, as an earlier binary left it.
    let old = cache.join("compiled/00112233aabbccdd-v0.0.9-p1");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("weights.bin"), vec![0u8; 1000]).unwrap();

    let listed = entries(&cache);
    assert_eq!(listed.len(), 3, "{listed:?}");
    for e in &listed {
        assert_eq!(e["bytes"].as_u64(), Some(bytes_of(Path::new(e["path"].as_str().unwrap()))), "{e}");
    }
    let source = |e: &Value| e["source"].as_str().map(|s| std::fs::canonicalize(s).unwrap());
    let by_source = |m: &Path| listed.iter().find(|e| source(e) == Some(std::fs::canonicalize(m).unwrap())).cloned();
    let (ea, eb) = (by_source(&a).expect("a's entry"), by_source(&b).expect("b's entry"));
    assert!(ea["stale"].is_null() && eb["stale"].is_null(), "{ea} {eb}");
    let eo = listed.iter().find(|e| e["name"] == "00112233aabbccdd-v0.0.9-p1").expect("the old entry");
    assert!(eo["stale"].as_str().unwrap().starts_with("compiled for plan format 1"), "{eo}");

    // b changes: its entry can never be used again.
    common::write_tiny_model(&b, 3, "tiny b, retrained");
    let listed = entries(&cache);
    let eb = listed.iter().find(|e| e["name"] == eb["name"]).expect("b's entry is still there");
    assert_eq!(eb["stale"].as_str(), Some(format!("its source {} changed or is gone", b.display()).as_str()));
    let text = run(&cache, "qwen-aot", &["cache"]);
    assert!(text.contains("3 entries") && text.contains("2 stale") && text.contains("qwen-aot cache clean"), "{text}");

    let text = run(&cache, "qwen-aot", &["cache", "clean"]);
    assert!(text.contains("removed 2 entries"), "{text}");
    let left: Vec<_> = entries(&cache).iter().map(|e| e["name"].clone()).collect();
    assert_eq!(left, [ea["name"].clone()], "only a's entry is left");
    // The index no longer holds b's old line (the file changed since it was hashed).
    let index = std::fs::read_to_string(cache.join("sha256-index.tsv")).unwrap();
    assert_eq!(index.lines().count(), 1, "{index}");

    let text = run(&cache, "qwen-aot", &["cache", "clean", "--all"]);
    assert!(text.contains("removed 1 entry"), "{text}");
    assert!(entries(&cache).is_empty());
    assert!(run(&cache, "qwen-aot", &["cache"]).contains("(none)"));
}
