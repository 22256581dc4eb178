//! `generate` accepts the command lines llama.cpp users type (`-m -p -n -c -s -f -t -i`,
//! `--n-predict`, `--temp`, a positional prompt) and llama.cpp's sentinels (`-n -1`, `--seed -1`,
//! `--top-k 0`) with the same meanings. Runs the real binary on the default model, on the CPU.
mod common;

use common::model;
use std::process::{Command, Output, Stdio};

fn generate(args: &[&str]) -> Output {
    let m = model();
    Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--backend", "cpu", "-m", m.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run generate")
}

/// The JSON object of a successful run.
fn json(args: &[&str]) -> serde_json::Value {
    let out = generate(&[args, &["--json"]].concat());
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// A clap usage error (exit 2) whose stderr contains `needle`.
fn usage_error(args: &[&str], needle: &str) {
    let out = generate(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in {err}");
}

const PROMPT: &str = "def fib(n):";

#[test]
fn short_flags_and_aliases_mean_the_long_ones() {
    let long = json(&["--prompt", PROMPT, "--max-tokens", "8", "--seed", "1", "--temperature", "0.7"]);
    assert_eq!(long["ids"].as_array().map(Vec::len), Some(8), "{long}");
    let short = json(&["-p", PROMPT, "-n", "8", "-s", "1", "--temp", "0.7", "-t", "2", "-c", "64"]);
    assert_eq!(short["ids"], long["ids"], "-p -n -s --temp -t -c");
    let aliases = json(&[PROMPT, "--n-predict", "8", "--seed", "1", "--temp", "0.7"]);
    assert_eq!(aliases["ids"], long["ids"], "positional prompt and --n-predict");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.txt");
    std::fs::write(&file, PROMPT).unwrap();
    for flag in ["-f", "--file"] {
        let v = json(&[flag, file.to_str().unwrap(), "-n", "8", "-s", "1", "--temp", "0.7"]);
        assert_eq!(v["ids"], long["ids"], "{flag}");
    }
}

#[test]
fn seed_minus_one_prints_a_seed_that_repeats_the_run() {
    let args = ["-p", PROMPT, "-n", "6", "--temp", "1.0", "--json"];
    let out = generate(&[&args[..], &["-s", "-1"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let seed = err
        .lines()
        .find_map(|l| l.strip_prefix("seed: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `seed: N` line in {err}"));
    seed.parse::<u64>().expect("the seed is a number");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let again = json(&["-p", PROMPT, "-n", "6", "--temp", "1.0", "-s", seed]);
    assert_eq!(again["ids"], first["ids"], "rerunning with --seed {seed}");
    // --quiet keeps stderr silent, the seed line included.
    let out = generate(&[&args[..], &["-s", "-1", "--quiet"]].concat());
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn n_minus_one_runs_until_the_context_is_full() {
    let v = json(&["-p", "1, 2, 3, 4, 5,", "-n", "-1", "-c", "16"]);
    assert_eq!(v["stop_reason"], "context", "{v}");
    let total = v["prompt_ids"].as_array().unwrap().len() + v["ids"].as_array().unwrap().len();
    assert_eq!(total, 17, "the cache's 16 tokens, plus the one sampled from the last: {v}");
}

#[test]
fn top_k_zero_is_off_which_is_the_samplers_256_cap() {
    let args = ["-p", PROMPT, "-n", "8", "-s", "3", "--temp", "1.5", "--min-p", "0", "--top-p", "1"];
    let off = json(&[&args[..], &["--top-k", "0"]].concat());
    let cap = json(&[&args[..], &["--top-k", "256"]].concat());
    assert_eq!(off["ids"], cap["ids"]);
    assert_eq!(off["ids"].as_array().map(Vec::len), Some(8));
}

#[test]
fn interactive_flag_reads_the_chat_from_stdin() {
    let m = model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--backend", "cpu", "-m", m.to_str().unwrap(), "-i", "-n", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"Say hi.\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("chat with"), "the chat banner: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty(), "an answer");
}

#[test]
fn conflicting_and_invalid_values_are_usage_errors() {
    usage_error(&[PROMPT, "-p", "other"], "cannot be used with");
    usage_error(&["-i", "-p", PROMPT], "cannot be used with");
    usage_error(&["-p", PROMPT, "-n", "-2"], "or -1 (no limit)");
    usage_error(&["-p", PROMPT, "-s", "-5"], "or -1 (random)");
    usage_error(&["-p", PROMPT, "-t", "0"], "-t");
}
