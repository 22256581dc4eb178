//! `qwen-aot check` and `qwen-aot bench` without a GPU: `check --backend cpu` (and `auto` when
//! there is no GPU, as its help says) checks the CPU executor's kernels; `bench --backend cpu`
//! measures the CPU executor on a tiny model file.
mod common;

use std::process::Command;

fn qwen_aot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qwen-aot"))
}

/// `qwen-aot SUBCOMMAND --backend cpu --model <tiny model> ARGS...`, the model and its cache in `tmp`.
fn on_tiny_model_cpu(tmp: &tempfile::TempDir, subcommand: &str, args: &[&str]) -> std::process::Output {
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 5, "tiny");
    qwen_aot()
        .env("QWEN_AOT_CACHE", tmp.path().join("cache"))
        .args([subcommand, "--backend", "cpu", "--model", model.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn no_gpu() -> bool {
    !std::path::Path::new("/dev/nvidia0").exists()
}

#[test]
fn check_on_the_cpu_passes_every_format_and_auto_falls_back_to_it() {
    let mut backends = vec!["cpu"];
    if no_gpu() {
        backends.push("auto");
    }
    for backend in backends {
        let out = qwen_aot().args(["check", "--backend", backend]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{backend}: {stdout}{stderr}");
        for format in
            ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
        {
            let row = stdout.lines().find(|l| l.split_whitespace().next() == Some(format));
            assert!(row.is_some_and(|r| r.ends_with("PASS")), "{backend}: no PASS row for {format}: {stdout}");
        }
        assert!(stdout.trim_end().ends_with("all checks PASS"), "{stdout}");
        if backend == "auto" {
            assert!(stderr.contains("note: no usable GPU") && stderr.contains("checking the CPU executor"), "{stderr}");
        }
    }
    if no_gpu() {
        let out = qwen_aot().args(["check", "--backend", "cuda"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--backend cuda without a GPU is an error");
    }
}

#[test]
fn check_on_the_cpu_refuses_a_model_it_would_not_check() {
    // The CPU check covers the executor's kernels; a --model there used to be ignored and the run
    // reported PASS, as if the model had been checked.
    for extra in [&["--model", "/nonexistent/model.gguf"][..], &["--model-only"][..], &["--random-shape", "7b"][..]] {
        let out = qwen_aot().args(["check", "--backend", "cpu"]).args(extra).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stdout}{stderr}");
        assert!(stderr.contains("--model, --random-shape and --model-only are the GPU's"), "{extra:?}: {stderr}");
        assert!(!stdout.contains("PASS"), "{extra:?}: {stdout}");
    }
}

#[test]
fn bench_on_the_cpu_reports_decode_and_prefill_speed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = on_tiny_model_cpu(&tmp, "bench", &["--reps", "1", "--json", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["backend"], "cpu");
    // The tiny model's context is 256: 32 decoded tokens, one 128-token prefill chunk.
    assert_eq!((v["decode_tokens"].as_u64(), v["prefill_tokens"].as_u64()), (Some(32), Some(128)), "{v}");
    for key in ["decode_tok_s", "prefill_tok_s", "decode_weight_gb_s"] {
        let x = v[key].as_f64().unwrap_or(f64::NAN);
        assert!(x.is_finite() && x > 0.0, "{key} = {x}: {v}");
    }
    // Every weight but the embedding table is read once per token, so the bytes per token are
    // between the weights without the table and the whole weights.bin.
    let entry = std::fs::read_dir(tmp.path().join("cache/compiled")).unwrap().next().unwrap().unwrap().path();
    let total = std::fs::metadata(entry.join("weights.bin")).unwrap().len();
    let per_token = v["weight_bytes_per_token"].as_u64().unwrap();
    assert!(per_token > total / 3 && per_token < total, "{per_token} of {total}: {v}");
}

#[test]
fn bench_depth_is_refused_on_the_cpu_before_any_work() {
    // `--depth` times the GPU's decode at one context length; the CPU bench has no such run, and
    // a silently ignored flag would report depth 0 as if it were the depth asked for.
    let tmp = tempfile::tempdir().unwrap();
    let out = on_tiny_model_cpu(&tmp, "bench", &["--reps", "1", "--depth", "64", "--quiet"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--depth is measured on the GPU only"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

/// `qwen-aot soak` on the CPU: generations in one process, drafting as `generate` does, on a
/// model whose context (256) is shorter than the 1,024 the soak once asked for; it passes only
/// while host memory stays flat.
#[test]
fn soak_on_the_cpu_drafts_and_holds_its_memory() {
    let out = on_tiny_model_cpu(&tempfile::tempdir().unwrap(), "soak", &["--n", "12", "--max-tokens", "24", "--quiet"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("soak: 12 generations") && stdout.contains("on cpu"), "{stdout}");
    assert!(stdout.contains("host RSS") && stdout.contains("no growth: PASS"), "{stdout}");
}
