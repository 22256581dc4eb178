//! Tokenizer throughput on the real Qwen2.5 vocabulary: encode and decode of a few hundred KB of
//! mixed prose, code and non-Latin text, single-threaded, reported by criterion in bytes/s of
//! UTF-8 input (target: ≥ 5 MB/s encode).
//!
//! The vocabulary comes from `QWEN_AOT_TOKENIZER` (a compiled directory's `tokenizer.json`) or
//! else from the GGUF at `QWEN_AOT_MODEL` (default
//! `/root/.cache/qwen-aot/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf`). The corpus is the GPL-3 text
//! (when the system has it), the workspace's own Rust sources and a multilingual paragraph,
//! repeated to at least 300 KB.
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
mod common;
use common::load_tokenizer;

const MIN_CORPUS_BYTES: usize = 300_000;
const MULTILINGUAL: &str = "用中文介绍一下你自己。日本語のテキストです。Привет мир. مرحبا بالعالم. \
                            Γειά σου κόσμε. café naïve 👨‍👩‍👧‍👦 🇫🇷🇯🇵 — “quotes” and ½ ² Ⅻ.\n";

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn corpus() -> String {
    let mut text = std::fs::read_to_string("/usr/share/common-licenses/GPL-3").unwrap_or_default();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["runtime/src", "compiler/src", "src"] {
        rust_sources(&root.join(dir), &mut files);
    }
    files.sort();
    for f in files {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    text.push_str(MULTILINGUAL);
    let base = text.clone();
    while text.len() < MIN_CORPUS_BYTES {
        text.push_str(&base);
    }
    text
}

fn bench_tokenizer(c: &mut Criterion) {
    let tok = load_tokenizer();
    let text = corpus();
    let ids = tok.encode(&text);
    assert_eq!(tok.decode(&ids).expect("decodes"), text, "round trip");
    eprintln!(
        "corpus: {} bytes, {} tokens ({:.2} bytes/token)",
        text.len(),
        ids.len(),
        text.len() as f64 / ids.len() as f64
    );

    let mut group = c.benchmark_group("tokenizer");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("encode", |b| b.iter(|| tok.encode(std::hint::black_box(&text))));
    group.bench_function("decode", |b| b.iter(|| tok.decode(std::hint::black_box(&ids))));
    group.bench_function("stream_decode", |b| {
        b.iter(|| {
            let mut dec = tok.stream_decoder();
            let mut n = 0;
            for &id in &ids {
                n += dec.push(id).map(|s| s.len()).unwrap_or(0);
            }
            n + dec.finish().len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tokenizer);
criterion_main!(benches);
