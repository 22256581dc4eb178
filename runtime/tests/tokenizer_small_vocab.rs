//! The tokenizer's public API on a small hand-made vocabulary (no model needed): the 256 GPT-2
//! byte tokens, a few merges spelling "hello" and " world", and added tokens of every GGUF type.
//! Covers encoding with inline added tokens, lossless decoding, streaming, the JSON contract and
//! every validation error of `Tokenizer::from_data`. Parity with the real Qwen2 vocabulary is
//! tested in `tests/tokenizer_refs.rs`.
use qwen_aot_runtime::tokenizer::{TokenType, Tokenizer, TokenizerData, TokenizerError};

/// GPT-2 byte-level spelling of each byte.
fn byte_chars() -> Vec<char> {
    let mut n = 0u32;
    (0..=255u8)
        .map(|b| {
            let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
            if printable {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(255 + n).expect("valid char")
            }
        })
        .collect()
}

const MERGES: [&str; 9] = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"];
const ADDED: [(&str, i32); 5] =
    [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<tool_call>", 4), ("[PAD0]", 5)];

/// Vocabulary: ids 0..256 are the byte tokens (in byte order), then one token per merge result,
/// then the added tokens.
fn data() -> TokenizerData {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    let mut token_types = vec![1; 256];
    for m in MERGES {
        let joined = m.replace(' ', "");
        tokens.push(joined);
        token_types.push(1);
    }
    for (t, ty) in ADDED {
        tokens.push(t.to_string());
        token_types.push(ty);
    }
    let id = |t: &str| tokens.iter().position(|x| x == t).expect("token") as u32;
    let eos = id("<|im_end|>");
    let bos = id("<|endoftext|>");
    TokenizerData {
        model: "gpt2".into(),
        tokens: tokens.clone(),
        token_types,
        merges: MERGES.iter().map(|s| s.to_string()).collect(),
        pre: "qwen2".into(),
        bos_id: Some(bos),
        eos_id: Some(eos),
        pad_id: Some(bos),
        add_bos: false,
        chat_template: Some("{{ messages }}".into()),
    }
}

fn tok() -> Tokenizer {
    Tokenizer::from_data(data()).expect("valid tokenizer")
}

fn id(t: &Tokenizer, s: &str) -> u32 {
    t.token_to_id(s).unwrap_or_else(|| panic!("token {s:?}"))
}

#[test]
fn encodes_with_merges_and_inline_added_tokens() {
    let t = tok();
    assert_eq!(t.encode("hello world"), vec![id(&t, "hello"), id(&t, "Ġworld")]);
    assert_eq!(t.encode(""), Vec::<u32>::new());
    let ids = t.encode("<|im_start|>hello<|im_end|>\n<tool_call>");
    assert_eq!(
        ids,
        vec![id(&t, "<|im_start|>"), id(&t, "hello"), id(&t, "<|im_end|>"), u32::from(b'\n'), id(&t, "<tool_call>")]
    );
    // Partial and unused ("[PAD0]", type 5) tokens are plain text.
    let partial = t.encode("<|im_start");
    assert!(!partial.contains(&id(&t, "<|im_start|>")));
    assert_eq!(partial.len(), "<|im_start".len());
    assert!(!t.encode("[PAD0]").contains(&id(&t, "[PAD0]")));
    // No BOS/EOS is ever added.
    assert_eq!(t.encode("h"), vec![u32::from(b'h')]);
}

#[test]
fn decode_is_lossless_on_arbitrary_text() {
    let t = tok();
    let alphabet: Vec<char> = "helo wrd\n\t\r  '’sLL中文😀👨‍👩é\u{301}\u{0}\u{7f}\u{ad}\u{a0}<|>_[]".chars().collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 40) as usize;
        let mut s = String::new();
        let mut x = state;
        for _ in 0..len {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s.push(alphabet[(x >> 33) as usize % alphabet.len()]);
        }
        if state.is_multiple_of(7) {
            s.push_str("<|endoftext|>");
        }
        let ids = t.encode(&s);
        assert_eq!(t.decode(&ids).expect("decodes"), s);
        assert_eq!(t.decode_bytes(&ids).expect("decodes"), s.as_bytes());
    }
}

#[test]
fn decode_errors_and_lossy_bytes() {
    let t = tok();
    let vocab = t.vocab_size() as u32;
    assert!(matches!(t.decode(&[vocab]), Err(TokenizerError::UnknownId { .. })));
    assert!(t.token_bytes(u32::MAX).is_err());
    // The first byte of "中" alone is not UTF-8: decode replaces it, as HF does.
    let first = "中".as_bytes()[0];
    assert_eq!(t.decode(&[u32::from(first)]).expect("known id"), "\u{FFFD}");
}

#[test]
fn stream_decoder_emits_only_complete_characters() {
    let t = tok();
    let text = "hello 中文😀 world";
    let ids = t.encode(text);
    let mut dec = t.stream_decoder();
    let mut pieces = Vec::new();
    for &i in &ids {
        pieces.push(dec.push(i).expect("known id"));
    }
    pieces.push(dec.finish());
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    // Byte tokens of a 3-byte character: nothing, nothing, the character.
    assert_eq!(&pieces[2..5], ["", "", "中"]);
    // Unknown ids are errors; an unfinished character is flushed as U+FFFD.
    let mut dec = t.stream_decoder();
    assert!(dec.push(u32::MAX).is_err());
    assert_eq!(dec.push(u32::from("😀".as_bytes()[0])).expect("known"), "");
    assert!(dec.has_pending());
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert!(!dec.has_pending());
}

#[test]
fn vocabulary_accessors() {
    let t = tok();
    assert_eq!(t.vocab_size(), 256 + MERGES.len() + ADDED.len());
    assert_eq!(t.id_to_token(u32::from(b' ')), Some("Ġ"));
    assert_eq!(t.token_to_id("Ġworld").and_then(|i| t.id_to_token(i)), Some("Ġworld"));
    assert_eq!(t.id_to_token(u32::MAX), None);
    assert_eq!(t.token_type(id(&t, "<tool_call>")), Some(TokenType::UserDefined));
    assert_eq!(t.token_type(id(&t, "<|im_end|>")), Some(TokenType::Control));
    assert_eq!(t.eos_ids(), vec![id(&t, "<|im_end|>"), id(&t, "<|endoftext|>")]);
    assert_eq!(t.bos_id(), Some(id(&t, "<|endoftext|>")));
    assert_eq!(t.eos_id(), Some(id(&t, "<|im_end|>")));
    assert_eq!(t.pad_id(), Some(id(&t, "<|endoftext|>")));
    assert!(!t.add_bos());
    assert_eq!(t.chat_template(), Some("{{ messages }}"));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
}

#[test]
fn json_contract_round_trips() {
    let d = data();
    let json = d.to_json().expect("serialises");
    assert_eq!(TokenizerData::from_json(&json).expect("parses"), d);
    let path = std::env::temp_dir().join(format!("qwen-aot-tokenizer-test-{}.json", std::process::id()));
    std::fs::write(&path, &json).expect("writes");
    let loaded = Tokenizer::load(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.expect("loads").encode("hello world"), tok().encode("hello world"));
    assert!(matches!(
        Tokenizer::load(std::path::Path::new("/nonexistent/tokenizer.json")),
        Err(TokenizerError::Io { .. })
    ));
    assert!(matches!(TokenizerData::from_json("{\"tokens\": 3}"), Err(TokenizerError::Json(_))));
}

#[test]
fn long_inputs_are_linear() {
    let t = tok();
    // One 200 000-byte pre-token (a white-space run) and one long letter word.
    let spaces = " ".repeat(200_000);
    let start = std::time::Instant::now();
    assert_eq!(t.decode(&t.encode(&spaces)).expect("decodes"), spaces);
    let word = "hel".repeat(70_000);
    assert_eq!(t.decode(&t.encode(&word)).expect("decodes"), word);
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

fn err(mut f: impl FnMut(&mut TokenizerData)) -> TokenizerError {
    let mut d = data();
    f(&mut d);
    Tokenizer::from_data(d).expect_err("invalid data must be rejected")
}

#[test]
fn validation_rejects_inconsistent_data() {
    assert!(matches!(
        err(|d| {
            d.token_types.pop();
        }),
        TokenizerError::TypeCountMismatch { .. }
    ));
    assert!(matches!(
        err(|d| {
            d.tokens.clear();
            d.token_types.clear();
        }),
        TokenizerError::VocabSize(0)
    ));
    assert!(matches!(err(|d| d.token_types[265] = 9), TokenizerError::TokenType { ty: 9, .. }));
    assert!(matches!(err(|d| d.merges.push("hello".into())), TokenizerError::MalformedMerge { .. }));
    assert!(matches!(err(|d| d.merges.push("a b c".into())), TokenizerError::MalformedMerge { .. }));
    assert!(matches!(err(|d| d.merges.push("x yz".into())), TokenizerError::MergeUnknownToken { .. }));
    // Both sides known but the result is not in the vocabulary.
    assert!(matches!(err(|d| d.merges.push("x y".into())), TokenizerError::MergeUnknownToken { .. }));
    assert!(matches!(err(|d| d.tokens[b'a' as usize] = "aa".into()), TokenizerError::MissingByteToken(b'a')));
    assert!(matches!(err(|d| d.tokens[260] = "hello".into()), TokenizerError::DuplicateToken { .. }));
    assert!(matches!(err(|d| d.tokens[260] = String::new()), TokenizerError::TokenLength { .. }));
    assert!(matches!(err(|d| d.tokens[260] = "x".repeat(5000)), TokenizerError::TokenLength { .. }));
    assert!(matches!(err(|d| d.pre = "llama3".into()), TokenizerError::UnsupportedPreTokenizer(_)));
    assert!(matches!(err(|d| d.model = "llama".into()), TokenizerError::UnsupportedModel(_)));
    assert!(matches!(err(|d| d.eos_id = Some(1 << 20)), TokenizerError::SpecialIdOutOfRange { which: "eos", .. }));
    // Many merges (validated in parallel chunks of 8,192): the first bad one in file order is the
    // error, whichever chunk finishes first.
    let many = |d: &mut TokenizerData| {
        let good = d.merges[0].clone();
        d.merges.resize(30_000, good);
        d.merges[25_000] = "hello".into();
        d.merges[9_000] = "x yz".into();
    };
    for _ in 0..4 {
        assert!(matches!(err(many), TokenizerError::MergeUnknownToken { index: 9_000, .. }));
    }
    // Every error explains itself.
    let msg = err(|d| d.merges.push("x yz".into())).to_string();
    assert!(msg.contains("\"yz\""), "{msg}");
}
