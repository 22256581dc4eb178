//! The interactive chat (`generate -i`, stdin a pipe) on a tiny random model: the banner names the
//! model, a message continued with `\` is one turn, `/help` lists every command, a conversation
//! that fills the context suggests `/reset` (and `/reset` frees it), Ctrl-C at the prompt exits.
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn chat(model: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_generate"));
    c.env("QWEN_AOT_CACHE", model.parent().unwrap().join("cache"))
        .args(["-m", model.to_str().unwrap(), "--backend", "cpu", "-i"])
        .args(args);
    c
}

/// Runs the chat on `input`; returns stderr (the banner, notes and per-turn lines).
fn session(model: &std::path::Path, args: &[&str], input: &str) -> String {
    let mut child =
        chat(model, args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

/// Answers given: each ends with its `[N tokens, ..., C cached, reused R]` line.
fn turns(stderr: &str) -> usize {
    let tail = " cached, reused ";
    stderr
        .match_indices(tail)
        .filter(|(i, _)| stderr[i + tail.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .count()
}

fn tiny() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 9, "Tiny Chat Model");
    (tmp, model)
}

#[test]
fn banner_help_and_a_continued_message() {
    let (_tmp, model) = tiny();
    let err = session(&model, &["-n", "2"], "first line\\\nsecond line\n/help\n/quit\n");
    let banner = err.lines().find(|l| l.starts_with("chat with")).expect("a banner");
    assert!(banner.starts_with("chat with Tiny Chat Model (cpu backend, context 256 tokens)"), "{banner}");
    assert_eq!(turns(&err), 1, "two lines joined by \\ are one turn: {err}");
    for word in ["/reset", "/exit", "/quit", "/help", "cached", "reused"] {
        assert!(err.contains(word), "/help lacks {word}: {err}");
    }
    // Without the backslash: two turns.
    assert_eq!(turns(&session(&model, &["-n", "2"], "first line\nsecond line\n")), 2);
}

#[test]
fn a_full_context_suggests_reset() {
    let (_tmp, model) = tiny();
    // Each message renders to 3 special tokens + "user\n" + 20 bytes + "\n" + "assistant\n" = 39
    // tokens (the byte-level vocabulary has one token per byte here), so the second cannot join
    // the first in a 48-token context, but fits alone after /reset.
    let (a, b) = ("a".repeat(20), "b".repeat(20));
    let long = "c".repeat(60);
    let err = session(&model, &["-n", "4", "-c", "48"], &format!("{a}\n{b}\n/reset\n{b}\n{long}\n"));
    assert!(err.contains("but the context holds 48: /reset to start over)"), "{err}");
    assert!(err.contains("(conversation cleared)"), "{err}");
    assert_eq!(turns(&err), 2, "the first message and the second after /reset: {err}");
    assert!(
        err.contains(
            "(this message needs 79 tokens but the context holds 48: shorten it, or raise --ctx-size (up to 256))"
        ),
        "{err}"
    );
}

#[test]
fn ctrl_c_at_the_prompt_exits_cleanly() {
    let (_tmp, model) = tiny();
    let mut child =
        chat(&model, &[]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let _stdin = child.stdin.take(); // kept open: the chat waits at its prompt
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("> ") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "the chat ended before its prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: kill only sends SIGINT to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C at the prompt exits with 0");
}

#[test]
fn speculative_decoding_gives_the_same_conversation_and_is_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    // Seed 3's answers repeat themselves, so drafts are checked and kept.
    common::write_tiny_model(&model, 3, "Tiny Chat Model");
    let run = |extra: &[&str]| {
        let mut args = vec!["-n", "40"];
        args.extend_from_slice(extra);
        let out =
            chat(&model, &args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut child = out;
        child.stdin.take().unwrap().write_all(b"abcabcabc abc\nabc abcabc\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        // Each turn's `[..., C cached, reused R]`: what the cache holds after it.
        let cached: Vec<String> = err
            .lines()
            .filter_map(|l| {
                l.find(" cached, reused ").map(|at| l[..at].rsplit(", ").next().unwrap().to_string() + &l[at..])
            })
            .collect();
        (out.stdout, cached, err)
    };
    let (plain_out, plain_cached, _) = run(&["--draft-max", "0"]);
    let (spec_out, spec_cached, spec_err) = run(&["--draft-max", "6", "--draft-ngram-min", "1"]);
    assert_eq!(plain_cached.len(), 2, "two turns");
    assert_eq!(spec_out, plain_out, "the answers");
    assert_eq!(spec_cached, plain_cached, "the cache after each turn");
    assert!(spec_err.contains(" accepted"), "drafts were checked: {spec_err}");
    // Speculation is the default (--draft-max 8, n-grams of 2 to 4 tokens): the same again.
    let (default_out, default_cached, default_err) = run(&[]);
    assert_eq!((default_out, default_cached), (plain_out, plain_cached));
    assert!(default_err.contains(" accepted"), "drafts were checked by default: {default_err}");
}
