//! No silent start: on a terminal, a first use shows each compile stage (the model file's sha256
//! among them) and loading shows a spinner while the executor is built (on the GPU: the weights'
//! upload); `--backend cuda` without a GPU fails before compiling a new model, not after.
mod common;

use std::process::Command;

#[test]
fn loading_shows_progress_on_a_terminal() {
    // `script` runs the command on a pseudo-terminal (util-linux); without it there is no terminal
    // to draw on here.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to provide a terminal");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 4, "tiny");
    let cmd = format!(
        "QWEN_AOT_CACHE={} {} -m {} --backend cpu -p hi -n 1",
        tmp.path().join("cache").display(),
        env!("CARGO_BIN_EXE_generate"),
        model.display()
    );
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sha256 of model"), "{text}");
    assert!(text.contains("loading the model"), "{text}");
    // Without a terminal (a pipe, as here) nothing of it is printed.
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .env("QWEN_AOT_CACHE", tmp.path().join("cache"))
        .args(["-m", model.to_str().unwrap(), "--backend", "cpu", "-p", "hi", "-n", "1"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("loading the model"));
}

#[test]
fn backend_cuda_without_a_gpu_fails_before_compiling() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        return; // a GPU machine would compile and run
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 4, "tiny");
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .env("QWEN_AOT_CACHE", tmp.path().join("cache"))
        .args(["-m", model.to_str().unwrap(), "--backend", "cuda", "-p", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().is_some_and(|l| l.starts_with("error: ") && l.contains("CUDA")), "{err}");
    assert!(!err.contains("compiling"), "no compile before the GPU check: {err}");
    let entries = std::fs::read_dir(tmp.path().join("cache/compiled")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "nothing compiled into the cache");
}
