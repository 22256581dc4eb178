//! What `generate` prints for an answer that ends by itself: the text of the answer, without the
//! end-of-turn marker (`<|im_end|>` is a control token; its id stays in the JSON `ids`), the same
//! text streamed as in `--json`. Runs the real binary on the default model, on the CPU.
mod common;

use common::model;
use std::process::Command;

const EOS_MARKER: &str = "<|im_end|>";

fn generate(extra: &[&str]) -> String {
    generate_n("40", extra)
}

fn generate_n(max_tokens: &str, extra: &[&str]) -> String {
    let model = model();
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args([
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            "--chat",
            "Say hi.",
            "--max-tokens",
            max_tokens,
            "--quiet",
        ])
        .args(extra)
        .output()
        .expect("run generate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn an_answer_that_ends_by_itself_prints_no_end_marker() {
    let v: serde_json::Value = serde_json::from_str(&generate(&["--json"])).expect("one JSON object");
    assert_eq!(v["stop_reason"], "eos", "{v}");
    let ids = v["ids"].as_array().expect("ids");
    assert_eq!(ids.last().and_then(|i| i.as_u64()), Some(151645), "the last id is <|im_end|>: {v}");
    let text = v["text"].as_str().expect("text");
    assert!(!text.trim().is_empty() && !text.contains(EOS_MARKER), "text {text:?}");

    let rate = v["decode_tok_s"].as_f64().expect("a decode rate when several tokens were generated");
    assert!(rate > 0.0, "{v}");

    let streamed = generate(&[]);
    assert_eq!(streamed.trim_end(), text.trim_end(), "streamed and JSON text agree");
}

/// One token comes from the prefill alone: there is no decode to time, and the JSON says so (null)
/// instead of a rate of 0.
#[test]
fn one_token_has_no_decode_rate() {
    let v: serde_json::Value = serde_json::from_str(&generate_n("1", &["--json"])).expect("one JSON object");
    assert_eq!(v["ids"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v["decode_tok_s"].is_null(), "{v}");
}

/// `generate ... | head -c 10`: the reader goes away; generate must end at its next write, quietly
/// (killed by SIGPIPE like other Unix tools), not decode on and then panic on a closed stdout.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_generation_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let model = model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args([
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            "--prompt",
            "def fib(n):",
            "--max-tokens",
            "400",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn generate");
    let started = std::time::Instant::now();
    let mut first = [0u8; 10];
    child.stdout.take().expect("stdout").read_exact(&mut first).expect("10 bytes of answer"); // then dropped: the pipe closes
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "ended by the closed pipe: {:?} {err}", out.status);
    // 400 tokens take over 20 s on this CPU path; ending at the first write after the close takes
    // a few tokens' time.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "it decoded on into the closed pipe: {:?}",
        started.elapsed()
    );
}

#[test]
fn verbose_prints_the_start_up_phases_in_order() {
    let model = model();
    let out = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--model", model.to_str().unwrap(), "--backend", "cpu", "-p", "def fib(n):", "-n", "2", "--verbose"])
        .output()
        .expect("run generate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Every phase of a CPU start, in the order they run, each after the table's header. The
    // tokenizer loads on its own thread beside the executor, so its row may come before or after
    // the executor's: it is checked on its own below.
    let phases = [
        "start-up phases",
        "resolve the model",
        "open the compiled model",
        "plan.json: read, parse, check seal, validate",
        "weights.bin: hash 16 sampled windows",
        "executor: devices, weights, buffers",
        "tokenize the prompt",
        "prefill to the first token",
        "first decode step",
        "first token",
    ];
    let mut at = 0;
    for p in phases {
        let found = err[at..].find(p).unwrap_or_else(|| panic!("`{p}` missing or out of order in:\n{err}"));
        at += found + p.len();
    }
    let tokenizer = err.find("tokenizer (beside the executor)").expect("the tokenizer's row");
    assert!(
        tokenizer < err.find("tokenize the prompt").unwrap(),
        "the tokenizer loads before the prompt is tokenized:\n{err}"
    );
    // Each row: when the phase began and how long it took, in ms.
    let row = err.lines().find(|l| l.ends_with("prefill to the first token")).unwrap();
    let nums: Vec<f64> = row.split_whitespace().take(2).map(|n| n.parse().unwrap()).collect();
    assert!(nums[0] > 0.0 && nums[1] > 0.0, "{row}");
}
