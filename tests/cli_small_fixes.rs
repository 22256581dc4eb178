//! Four user-facing defects a review found, through the real binaries: each bad input is one
//! `error: ...` line (exit status 1) found before any expensive work, and flags typed after
//! `tokenize`'s text are flags. Model-free or on a tiny random model, except `tokenize`, which
//! reads the default model's tokenizer (its ids are the reference's).
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(bin: &str, args: &[&str], cache: &Path) -> Output {
    Command::new(bin).env("QWEN_AOT_CACHE", cache).args(args).stdin(Stdio::null()).output().expect("run the binary")
}

/// Asserts exit status 1 and that stderr is exactly `error: {want}` (one line: no state dumps,
/// no notes); returns nothing, the assertion is the check.
fn fails_with_exactly(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.trim_end(), format!("error: {want}"));
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap().trim_end().to_string()
}

/// A grammar with no sentence (a rule that needs itself first; rules that only name each
/// other) used to print llguidance's 23-line state dump after `NoExtensionBias`.
#[test]
fn a_grammar_that_matches_nothing_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 7, "tiny");
    for (name, text) in [("self.gbnf", "root ::= root \"a\"\n"), ("cycle.gbnf", "root ::= x\nx ::= y\ny ::= x\n")] {
        let g = tmp.path().join(name);
        std::fs::write(&g, text).unwrap();
        let args = ["--model", model.to_str().unwrap(), "--backend", "cpu", "--quiet", "-p", "x", "-n", "5"];
        let out = run(
            env!("CARGO_BIN_EXE_generate"),
            &[&args[..], &["--grammar-file", g.to_str().unwrap()]].concat(),
            tmp.path(),
        );
        fails_with_exactly(
            &out,
            "the grammar does not compile: it can match no text (every rule refers to itself without an end)",
        );
    }
}

/// `"cases": []` printed `refcheck PASS` and a case with `"top5_first16": []` passed with a
/// top-5 error of 0: nothing had been compared. Both are refused before any model is looked
/// at (the model given here does not exist).
#[test]
fn refcheck_refuses_a_file_with_nothing_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    let real: serde_json::Value = common::refs("generation-qwen2.5-coder-0.5b.json");
    let mut empty = real.clone();
    empty["cases"] = serde_json::json!([]);
    let mut no_top5 = real.clone();
    no_top5["cases"] = serde_json::json!([real["cases"][0].clone()]);
    no_top5["cases"][0]["top5_first16"] = serde_json::json!([]);
    for (name, refs, why) in [
        ("empty.json", empty, "the reference file's case list is empty: there is nothing to check"),
        ("no-top5.json", no_top5, "case a: top5_first16 is empty: the case records no top-5 logits to compare"),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, refs.to_string()).unwrap();
        let args = ["refcheck", "--model", "/nonexistent/model.gguf", "--backend", "cpu", "--quiet", "--refs"];
        let out = run(env!("CARGO_BIN_EXE_qwen-aot"), &[&args[..], &[path.to_str().unwrap()]].concat(), tmp.path());
        fails_with_exactly(&out, &format!("{}: {why}", path.display()));
    }
}

/// `--dot DIR` compiled the whole model and only then failed writing the DOT file; now it is
/// refused first (the output directory is never created), while a file path still works.
#[test]
fn compile_refuses_a_directory_as_the_dot_file_before_compiling() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny.gguf");
    common::write_tiny_model(&model, 7, "tiny");
    let out_dir = t.join("compiled");
    let compile = |dot: &Path| {
        let args = ["compile", "--quiet", "--model", model.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
        run(env!("CARGO_BIN_EXE_qwen-aot"), &[&args[..], &["--dot", dot.to_str().unwrap()]].concat(), t)
    };
    fails_with_exactly(
        &compile(t),
        &format!("cannot write {}: it is a directory (give a file name in it)", t.display()),
    );
    fails_with_exactly(
        &compile(&out_dir),
        &format!("cannot write {}: it is the output directory (--out)", out_dir.display()),
    );
    assert!(!out_dir.exists(), "refused before compiling");

    let dot = t.join("layer0.dot");
    let report = stdout(&compile(&dot));
    assert!(report.contains(&format!("written to {} (Graphviz DOT)", dot.display())), "{report}");
    assert!(std::fs::read_to_string(&dot).unwrap().starts_with("digraph"));
    assert!(out_dir.join("plan.json").is_file());
}

/// `tokenize hello --json` tokenized the text "hello --json" (14990 1177 2236): the text took every
/// word after it, options included. Flags after the text are flags now; `--` makes what follows
/// text, as for any command (text that starts with `-` needs it).
#[test]
fn tokenize_reads_flags_after_the_text() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::model();
    let tokenize = |args: &[&str]| {
        run(
            env!("CARGO_BIN_EXE_qwen-aot"),
            &[&["tokenize", "--model", m.to_str().unwrap()][..], args].concat(),
            tmp.path(),
        )
    };
    assert_eq!(stdout(&tokenize(&["hello", "--json"])), r#"{"ids":[14990]}"#);
    assert_eq!(stdout(&tokenize(&["--json", "hello"])), r#"{"ids":[14990]}"#);
    assert_eq!(stdout(&tokenize(&["--decode", "14990", "--json"])), r#"{"text":"hello"}"#);
    assert_eq!(stdout(&tokenize(&["14990", "--decode"])), "hello");
    // The literal text "--json", "hello --json" and "-5", after a `--`.
    assert_eq!(stdout(&tokenize(&["--", "--json"])), "313 2236");
    assert_eq!(stdout(&tokenize(&["--", "hello", "--json"])), "14990 1177 2236");
    assert_eq!(stdout(&tokenize(&["hello", "--", "--json"])), "14990 1177 2236");
    assert_eq!(stdout(&tokenize(&["--", "-5"])), "12 20");
    // Without it, `-5` is an unknown option, and clap says how to pass it as text.
    let out = tokenize(&["-5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'-- -5'"), "{}", String::from_utf8_lossy(&out.stderr));
}
