//! The tokenizer built from the real GGUF against the reference ids in `tests/refs/`
//! (produced by Hugging Face transformers/tokenizers from the same GGUF; see
//! `tests/refs/README.md`): every case of `tokenizer-cases.json` encodes to exactly the reference
//! ids and decodes back to its text; every prompt of `generation-qwen2.5-coder-0.5b.json` encodes
//! to its `input_ids` and every reference continuation decodes to its `output_text`; the
//! streaming decoder never emits a broken character. A further 300 random strings were encoded by
//! Hugging Face `tokenizers` (the reference's library and version) built from the same vocabulary
//! (`runtime/tests/fixtures/tokenizer/hf_fuzz_cases.{json,py}`).
//!
//! Needs the model: `QWEN_AOT_MODEL` (default
//! `$QWEN_AOT_CACHE` or `~/.cache/qwen-aot`); refs from `QWEN_AOT_REFS`
//! (default: the vendored copy in `<repo>/tests/refs`). Missing files fail the test with a message saying so.
use qwen_aot_compiler::gguf::GgufFile;
use qwen_aot_compiler::tokenizer_from_gguf::{tokenizer_data_from_gguf, tokenizer_json_from_gguf};
use qwen_aot_runtime::tokenizer::{Tokenizer, TokenizerData};
use serde_json::Value;

mod common;
use common::{model, refs};
use std::path::PathBuf;

fn tokenizer() -> Tokenizer {
    let g = GgufFile::open(&model()).expect("GGUF opens");
    let data = tokenizer_data_from_gguf(&g).expect("tokenizer metadata");
    Tokenizer::from_data(data).expect("tokenizer builds")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().and_then(|u| u32::try_from(u).ok()).expect("id"))
        .collect()
}

#[test]
fn tokenizer_cases_match_reference_ids_and_round_trip() {
    let tok = tokenizer();
    let cases = refs("tokenizer-cases.json");
    let cases = cases["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 21, "tokenizer-cases.json changed size");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let text = case["text"].as_str().expect("text");
        let want = ids(&case["ids"]);
        let got = tok.encode(text);
        if got != want {
            failures.push(format!("{name}: encode gave {got:?}, reference {want:?}"));
        }
        let back = tok.decode(&got).expect("decodes");
        if back != text {
            failures.push(format!("{name}: decode(encode(text)) = {back:?}, text {text:?}"));
        }
        let tokens: Vec<&str> = want.iter().map(|&i| tok.id_to_token(i).expect("known id")).collect();
        let want_tokens: Vec<&str> =
            case["tokens"].as_array().expect("tokens").iter().map(|t| t.as_str().expect("str")).collect();
        if tokens != want_tokens {
            failures.push(format!("{name}: id_to_token gave {tokens:?}, reference {want_tokens:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn random_strings_match_hf_tokenizers() {
    let tok = tokenizer();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/tokenizer/hf_fuzz_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Value = serde_json::from_str(&text).expect("fixture parses");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 300);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let got = tok.encode(text);
        if got != ids(&case["ids"]) {
            failures.push(format!("{text:?}: got {got:?}, HF {:?}", ids(&case["ids"])));
        } else if tok.decode(&got).expect("decodes") != text {
            failures.push(format!("{text:?}: does not round-trip"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn generation_prompts_and_outputs_match_reference() {
    let tok = tokenizer();
    let gen = refs("generation-qwen2.5-coder-0.5b.json");
    let cases = gen["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let text = case["input_text"].as_str().expect("input_text");
        assert_eq!(tok.encode(text), ids(&case["input_ids"]), "case {id}: prompt ids");
        let out = ids(&case["output_ids"]);
        assert_eq!(
            tok.decode(&out).expect("decodes"),
            case["output_text"].as_str().expect("output_text"),
            "case {id}: output text"
        );
    }
    let mut eos = tok.eos_ids();
    eos.sort_unstable();
    let mut want = ids(&gen["eos_ids"]);
    want.sort_unstable();
    assert_eq!(eos, want, "stop ids");
}

#[test]
fn special_tokens_and_vocabulary_facts() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 151_936);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(151_644));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(151_645));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(151_643));
    assert_eq!(tok.id_to_token(151_645), Some("<|im_end|>"));
    assert_eq!(tok.eos_id(), Some(151_645));
    assert!(!tok.add_bos());
    // `</s>` is plain text for this vocabulary (refs README).
    assert_eq!(tok.encode("</s>"), vec![522, 82, 29]);
    assert!(tok.decode(&[151_936]).is_err(), "out-of-vocabulary id must be an error");
    assert!(tok.chat_template().is_some());
}

#[test]
fn tokenizer_json_round_trips() {
    let g = GgufFile::open(&model()).expect("GGUF opens");
    let json = tokenizer_json_from_gguf(&g).expect("valid tokenizer");
    let data = TokenizerData::from_json(&json).expect("parses");
    assert_eq!(data, tokenizer_data_from_gguf(&g).expect("extracts"));
    let tok = Tokenizer::from_data(data).expect("builds");
    assert_eq!(tok.encode("Hello world"), vec![9707, 1879]);
}

#[test]
fn stream_decoder_never_splits_characters() {
    let tok = tokenizer();
    let texts = [
        "👨‍👩‍👧‍👦 🇫🇷🇯🇵 family and flags",
        "用中文介绍一下你自己。日本語のテキストです。",
        "Привет мир. مرحبا بالعالم. Γειά σου κόσμε. café naïve",
        "emoji run 😀😃😄😁😆😅🤣😂🙂🙃 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚𝟛",
    ];
    let mut held_back = 0;
    for text in texts {
        let ids = tok.encode(text);
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            let piece = dec.push(id).expect("known id");
            assert!(!piece.contains('\u{FFFD}'), "replacement character emitted for {text:?}");
            if piece.is_empty() && dec.has_pending() {
                held_back += 1;
            }
            out.push_str(&piece);
            assert!(text.starts_with(&out), "stream output {out:?} is not a prefix of {text:?}");
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text);
    }
    // The texts split characters across tokens, so the decoder must have held bytes back.
    assert!(held_back > 0, "test texts never split a character across tokens");
    // An incomplete character at the end is flushed as U+FFFD. " 🇫" is "ĠðŁ" "ĩ" "«" (see the
    // emoji_zwj_flag reference case): the first token is a space plus half a character.
    let flag = tok.encode(" 🇫");
    assert!(flag.len() > 1, "\" 🇫\" is expected to span several tokens, got {flag:?}");
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(flag[0]).expect("known"), " ");
    assert!(dec.has_pending());
    assert_eq!(dec.finish(), "\u{FFFD}");
}
