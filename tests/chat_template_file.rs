//! `--chat-template-file` replaces the model's chat template in `generate --chat`, the
//! interactive chat and `qwen-aot serve`; a template that does not parse is an error before the
//! model loads. Runs on the project's tiny random model (its own template is ChatML) and, for the
//! server, the default model.
mod common;

use std::process::{Command, Output, Stdio};

/// A template unlike the model's ChatML, starting with the model's end-of-text token by name (as
/// templates written for other engines start with `{{ bos_token }}`).
const TEMPLATE: &str = "{{ eos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";

fn generate(model: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--backend", "cpu", "-m", model.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run generate");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn prompt_ids(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("--json")["prompt_ids"].clone()
}

#[test]
fn the_file_replaces_the_models_template() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&model, 5, "tiny");
    let file = tmp.path().join("plain.jinja");
    std::fs::write(&file, TEMPLATE).unwrap();
    let with_file = ["--chat", "hi", "--chat-template-file", file.to_str().unwrap(), "-n", "1", "--json"];
    let rendered = prompt_ids(&generate(&model, &with_file, ""));
    let by_hand = prompt_ids(&generate(&model, &["-p", "<|im_end|>[user] hi\n[assistant] ", "-n", "1", "--json"], ""));
    assert_eq!(rendered, by_hand);
    let chatml = prompt_ids(&generate(&model, &["--chat", "hi", "-n", "1", "--json"], ""));
    assert_ne!(rendered, chatml, "without the flag: the model's own template");

    // The interactive chat renders with it too: the first turn's prompt is the by-hand one.
    let out = generate(&model, &["-i", "--chat-template-file", file.to_str().unwrap(), "-n", "1"], "hi\n");
    let err = String::from_utf8_lossy(&out.stderr);
    let n = by_hand.as_array().unwrap().len();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{n} cached, reused 0")),
        "the first turn caches the by-hand prompt's {n} tokens: {err}"
    );
    assert_ne!(chatml.as_array().unwrap().len(), n, "the counts tell the templates apart");

    let broken = tmp.path().join("broken.jinja");
    std::fs::write(&broken, "{% for m in messages %}{{ m.content }}").unwrap();
    let misspelt = tmp.path().join("misspelt.jinja");
    std::fs::write(&misspelt, "{{ messages | tojsn }}").unwrap();
    for (path, needle) in [
        (broken.to_str().unwrap(), "does not parse"),
        (misspelt.to_str().unwrap(), "does not render a one-message chat"),
        ("/nonexistent.jinja", "reading /nonexistent.jinja"),
    ] {
        let out = generate(&model, &["--chat", "hi", "--chat-template-file", path], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }

    // A raw prompt takes no template: the flag with -p is a usage error, not silently ignored.
    let out = generate(&model, &["-p", "x", "--chat-template-file", file.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
