//! `generate --json-schema` / `--json-schema-file` / `--grammar-file`: the answer follows the
//! schema or grammar whatever the model would rather say, and a bad schema, grammar or path is
//! one error on stderr (a grammar's with llguidance's pointer to the place) and exit status 1. Runs the real binary on the default model, on the CPU.
mod common;

use std::process::{Command, Output, Stdio};

fn generate(args: &[&str]) -> Output {
    let m = common::model();
    Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--backend", "cpu", "-m", m.to_str().unwrap(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run generate")
}

fn answer(args: &[&str]) -> serde_json::Value {
    let out = generate(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// A schema the answer must follow (greedy and sampled, inline and from a file), and a Lark
/// grammar that makes a yes/no question end in exactly one of its sentences.
#[test]
fn answers_follow_the_schema_or_the_grammar() {
    let schema = r#"{"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "mood": {"enum": ["calm", "playful"]}}, "required": ["name", "age", "mood"], "additionalProperties": false}"#;
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("cat.json");
    std::fs::write(&schema_file, schema).unwrap();
    for args in [
        vec!["--chat", "Tell me a joke.", "-j", schema],
        vec![
            "--chat",
            "Describe a cat.",
            "--json-schema-file",
            schema_file.to_str().unwrap(),
            "--temp",
            "1",
            "-s",
            "4",
        ],
        vec!["-p", "def fib(n):", "-j", schema],
    ] {
        let v = answer(&[&args[..], &["-n", "80"]].concat());
        assert_eq!(v["stop_reason"], "eos", "{args:?}: {v}");
        let text = v["text"].as_str().unwrap();
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).expect(text);
        assert_eq!(obj.len(), 3, "{text}");
        assert!(obj["name"].is_string() && obj["age"].is_i64(), "{text}");
        assert!(["calm", "playful"].contains(&obj["mood"].as_str().unwrap()), "{text}");
    }
    let grammar = dir.path().join("yes_no.lark");
    std::fs::write(&grammar, "start: \"The answer is \" ANSWER \".\"\nANSWER: /(yes|no)/\n").unwrap();
    let v = answer(&["--chat", "Write a poem about the sea.", "--grammar-file", grammar.to_str().unwrap(), "-n", "20"]);
    let text = v["text"].as_str().unwrap();
    assert!(["The answer is yes.", "The answer is no."].contains(&text), "{v}");
    assert_eq!(v["stop_reason"], "eos", "{v}");
}

#[test]
fn bad_schemas_grammars_and_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_grammar = dir.path().join("bad.lark");
    std::fs::write(&bad_grammar, "start: (").unwrap();
    let binary = dir.path().join("binary.json");
    std::fs::write(&binary, [0xffu8, 0xfe, 0]).unwrap();
    for (args, needle) in [
        (vec!["-j", r#"{"type": "nonsense"}"#], "the JSON schema does not compile"),
        (vec!["-j", "{not json"], "--json-schema is not JSON"),
        (vec!["-j", "[1, 2]"], "must be a JSON Schema object"),
        (vec!["--grammar-file", bad_grammar.to_str().unwrap()], "the grammar does not compile"),
        (vec!["--grammar-file", "/nonexistent/g.lark"], "reading /nonexistent/g.lark"),
        (vec!["--json-schema-file", binary.to_str().unwrap()], "is not UTF-8 text"),
    ] {
        let out = generate(&[&args[..], &["--chat", "hi", "-n", "4"]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.lines().next().unwrap().contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = generate(&["-j", "{}", "--grammar-file", "x.lark", "--chat", "hi"]);
    assert_eq!(out.status.code(), Some(2), "two grammars are a usage error");
}
