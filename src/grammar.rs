//! Structured outputs: decoding constrained by a JSON schema (the server's `response_format:
//! {"type": "json_schema"}`) or a Lark grammar (a forced `tool_choice`), through llguidance --
//! the constraint library vLLM, SGLang and llama.cpp use, rather than a schema compiler of our
//! own. Each step the logits of every token the grammar does not allow next are set to -inf
//! before the token is drawn on the host (`host_draw`). JSON mode (`json_object`) is the schema
//! `{"type": "object"}`.
//!
//! - [`GrammarEnv`]: the model's vocabulary as llguidance's token trie (control tokens marked so
//!   that no grammar text can spell them; the end-of-text ids allowed once a grammar is complete),
//!   built once per model.
//! - [`Grammar`]: one request's schema or grammar, compiled and checked before it is queued (a
//!   bad schema is the client's error); [`Grammar::start`] gives each answer its own matcher.
use std::sync::{Arc, Mutex};

use llguidance::api::{StopReason, TopLevelGrammar};
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use qwen_aot_runtime::tokenizer::{TokenType, Tokenizer};
use serde_json::Value;

/// Longest run of whitespace between JSON tokens. JSON allows any, and a model that would rather
/// write prose keeps choosing spaces when little else is allowed (as in JSON mode).
const JSON_WHITESPACE: &str = r"[\x20\x0A\x0D\x09]{1,16}";

#[derive(Debug, thiserror::Error)]
pub enum GrammarError {
    #[error("the model's vocabulary cannot be indexed for constrained decoding: {0}")]
    Vocabulary(String),
    /// The schema or grammar does not compile (the message is llguidance's).
    #[error("{0}")]
    Invalid(String),
    #[error("constrained decoding stopped: {0}")]
    Step(String),
}

/// The model's vocabulary for llguidance: its token trie. llguidance tokenizes text itself only
/// for prompts and forced tokens, which the matcher's mask and step never use; the trie's greedy
/// split answers it, flagged as not the model's own tokenization.
struct Vocabulary {
    trie: TokTrie,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// What every grammar of one model shares: the vocabulary's trie and the parser factory.
pub struct GrammarEnv {
    factory: ParserFactory,
    /// The ids that end an answer (allowed together once a grammar may end).
    eos: Vec<u32>,
}

impl GrammarEnv {
    /// Indexes `tokenizer`'s vocabulary (≈ 0.45 s for Qwen2's 151,936 tokens: benches/grammar.rs).
    pub fn new(tokenizer: &Tokenizer) -> Result<Arc<GrammarEnv>, GrammarError> {
        let eos = tokenizer.eos_ids();
        let Some(&first_eos) = eos.first() else {
            return Err(GrammarError::Vocabulary("the tokenizer has no end-of-text token".into()));
        };
        let vocab = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..vocab as u32).map(|id| token_word(tokenizer, id, eos.contains(&id))).collect();
        let info = TokRxInfo::new(vocab as u32, first_eos);
        // The trie checks itself with assertions; a vocabulary it cannot take is an error here,
        // not a panic on the server's request path.
        let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&eos))
            .map_err(|_| GrammarError::Vocabulary("llguidance refused the token trie".into()))?;
        let env: TokEnv = Arc::new(Vocabulary { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        // Warnings go into the error messages, not onto the server's stderr.
        factory.quiet();
        Ok(Arc::new(GrammarEnv { factory, eos }))
    }
}

/// Bounds the whitespace between a JSON schema's tokens to [`JSON_WHITESPACE`] unless the schema
/// sets llguidance's options itself (`x-guidance`); for schemas embedded in a Lark grammar too.
pub fn bound_whitespace(schema: &mut Value) {
    // `true` (any value) as the object that says the same, so it can carry the option.
    if *schema == Value::Bool(true) {
        *schema = serde_json::json!({});
    }
    if let Value::Object(o) = schema {
        o.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_pattern": JSON_WHITESPACE}));
    }
}

/// A token's bytes as llguidance reads them: control tokens (`<|im_end|>`) and the end-of-text
/// ids (whatever type a GGUF gives them) behind its special marker byte 0xFF, so that grammar
/// text never matches them -- an end-of-text id inside a JSON string would end the answer there;
/// unused ids empty (never allowed).
fn token_word(tok: &Tokenizer, id: u32, ends_text: bool) -> Vec<u8> {
    let bytes = tok.token_bytes(id).unwrap_or_default();
    let special = ends_text || tok.token_type(id) == Some(TokenType::Control);
    match tok.token_type(id) {
        _ if special => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], bytes].concat(),
        Some(TokenType::Unused) | None => Vec::new(),
        _ => bytes.to_vec(),
    }
}

/// One request's compiled constraint.
pub struct Grammar {
    env: Arc<GrammarEnv>,
    /// A matcher before any token; each answer steps a clone (shallow: the lexer caches are
    /// shared). In a mutex because llguidance's matcher is `Send` but not `Sync`.
    fresh: Mutex<Matcher>,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grammar")
    }
}

impl Grammar {
    /// The answer is one JSON value valid against `schema` (JSON Schema as OpenAI's structured
    /// outputs take it). Whitespace between tokens runs at most 16 bytes unless the schema sets
    /// llguidance's own options (`x-guidance`).
    pub fn json_schema(env: &Arc<GrammarEnv>, mut schema: Value) -> Result<Grammar, GrammarError> {
        bound_whitespace(&mut schema);
        Grammar::compile(env, TopLevelGrammar::from_json_schema(schema))
    }

    /// The answer is a sentence of the Lark grammar `source` (llguidance's dialect: `%json {..}`
    /// embeds a JSON schema).
    pub fn lark(env: &Arc<GrammarEnv>, source: String) -> Result<Grammar, GrammarError> {
        Grammar::compile(env, TopLevelGrammar::from_lark(source))
    }

    /// A grammar a user wrote: llama.cpp's GBNF where a rule is defined with `::=`
    /// ([`crate::gbnf`] translates it), else llguidance's Lark dialect.
    pub fn lark_or_gbnf(env: &Arc<GrammarEnv>, source: String) -> Result<Grammar, GrammarError> {
        let lark = if crate::gbnf::is_gbnf(&source) { crate::gbnf::gbnf_to_lark(&source)? } else { source };
        Grammar::lark(env, lark)
    }

    /// The answer matches the regular expression `rx` (whole).
    pub fn regex(env: &Arc<GrammarEnv>, rx: &str) -> Result<Grammar, GrammarError> {
        Grammar::compile(env, TopLevelGrammar::from_regex(rx))
    }

    /// The answer is exactly one of `choices`.
    pub fn choice(env: &Arc<GrammarEnv>, choices: &[String]) -> Result<Grammar, GrammarError> {
        let alternation: Vec<String> = choices.iter().map(|c| regex_syntax::escape(c)).collect();
        Grammar::regex(env, &format!("(?:{})", alternation.join("|")))
    }

    fn compile(env: &Arc<GrammarEnv>, grammar: TopLevelGrammar) -> Result<Grammar, GrammarError> {
        let parser = env.factory.create_parser(grammar).map_err(|e| GrammarError::Invalid(llguidance_message(e)))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Invalid(llguidance_message(e)));
        }
        // Some grammars compile and then exceed llguidance's lexer limits on their first mask, or
        // allow nothing at all (an empty language): that is the request's fault too, found here
        // rather than mid-answer.
        if let Err(e) = matcher.clone().compute_mask() {
            let why = llguidance_message(e);
            // Before any token, "no extension" means the grammar neither ends nor continues:
            // no sentence exists (`root ::= root "a"`; rules that only name each other).
            if why == StopReason::NoExtensionBias.to_string() {
                return Err(GrammarError::Invalid(MATCHES_NOTHING.into()));
            }
            return Err(GrammarError::Invalid(why));
        }
        Ok(Grammar { env: env.clone(), fresh: Mutex::new(matcher) })
    }

    /// A matcher for one answer, before its first token.
    pub fn start(&self) -> GrammarSteps<'_> {
        let matcher = self.fresh.lock().unwrap_or_else(|p| p.into_inner()).clone();
        GrammarSteps { env: &self.env, matcher, prepared: None }
    }
}

/// A [`Grammar`] through one answer.
pub struct GrammarSteps<'a> {
    env: &'a GrammarEnv,
    matcher: Matcher,
    /// The next draw's mask, computed ahead ([`GrammarSteps::prepare`]).
    prepared: Option<SimpleVob>,
}

impl GrammarSteps<'_> {
    /// Sets `logits[id]` to -inf for every token the grammar does not allow next (ids past the
    /// vocabulary -- the mask's length -- too). The dense form of [`GrammarSteps::allowed`] (the reference its tests hold it to).
    pub fn apply(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        let mask = self.take_mask()?;
        let mut any = false;
        for (id, l) in logits.iter_mut().enumerate() {
            if id < mask.len() && mask.get(id) {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        if !any {
            return Err(GrammarError::Step("no token is allowed here".into()));
        }
        Ok(())
    }

    /// The ids the grammar allows next, ascending, below `vocab` (the logits row's length). The same tokens [`GrammarSteps::apply`]
    /// leaves finite, as a list: a draw over them costs what the grammar allows (often a few
    /// tokens), not the whole row -- the dense mask and draw cost ≈ 0.33 ms per token here
    /// (benches/grammar.rs).
    pub fn allowed(&mut self, vocab: usize, out: &mut Vec<u32>) -> Result<(), GrammarError> {
        out.clear();
        self.for_each_allowed(vocab, |id| out.push(id))?;
        Ok(())
    }

    /// Calls `f` with every id the grammar allows next below `vocab`, ascending -- the ids of
    /// [`GrammarSteps::allowed`] without building the list (a draw offers each to its argmax or
    /// candidates straight from the mask). llguidance's mask already holds every end-of-text id
    /// where the grammar may end (the trie is built `with_eos_tokens`;
    /// `every_end_of_text_id_is_in_the_mask_where_the_answer_may_end` holds it to that), so its
    /// bits are the whole answer. Returns how many; none is an error.
    pub fn for_each_allowed(&mut self, vocab: usize, mut f: impl FnMut(u32)) -> Result<usize, GrammarError> {
        let mask = self.take_mask()?;
        let mut n = 0;
        mask.iter_set_entries(|id| {
            if id < vocab {
                f(id as u32);
                n += 1;
            }
        });
        if n == 0 {
            return Err(GrammarError::Step("no token is allowed here".into()));
        }
        Ok(n)
    }

    /// Whether the grammar allows `id` next (the mask is kept for the draw that may follow).
    pub fn allows(&mut self, id: u32) -> Result<bool, GrammarError> {
        let mask = self.take_mask()?;
        let ok = (id as usize) < mask.len() && mask.get(id as usize);
        self.prepared = Some(mask);
        Ok(ok)
    }

    /// The next draw's mask: the one [`GrammarSteps::prepare`] computed, else computed now.
    fn take_mask(&mut self) -> Result<SimpleVob, GrammarError> {
        match self.prepared.take() {
            Some(m) => Ok(m),
            None => self.mask(),
        }
    }

    /// Computes the next draw's mask ahead of [`GrammarSteps::allowed`] (beside the decode step).
    pub fn prepare(&mut self) -> Result<(), GrammarError> {
        self.prepared = Some(self.mask()?);
        Ok(())
    }

    fn mask(&mut self) -> Result<SimpleVob, GrammarError> {
        self.matcher.compute_mask_or_eos().map_err(|e| GrammarError::Step(llguidance_message(e)))
    }

    /// Token `id` was drawn (an end-of-text id ends the answer and is not fed to the grammar).
    pub fn advance(&mut self, id: u32) -> Result<(), GrammarError> {
        self.prepared = None;
        if self.env.eos.contains(&id) {
            return Ok(());
        }
        self.matcher.consume_token(id).map_err(|e| GrammarError::Step(llguidance_message(e)))
    }
}

/// Why a grammar that compiles is refused when its first mask allows nothing.
const MATCHES_NOTHING: &str = "it can match no text (every rule refers to itself without an end)";

/// llguidance's error text without the state dump its matcher appends (`\n<state>Tokens: ..
/// Parser: {..}</state><grammar>..</grammar>`, or `\n<non-verbose/>`): a debugging aid for
/// llguidance's authors that buried the one line a user can act on, on `generate`'s stderr and
/// in the server's 400 body alike.
fn llguidance_message(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let end = ["\n<state>", "\n<non-verbose/>"].iter().filter_map(|m| text.find(m)).min().unwrap_or(text.len());
    text[..end].trim_end().to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use qwen_aot_runtime::tokenizer::TokenizerData;

    /// A byte-level vocabulary (256 byte tokens, then `<|end|>` as a control token, which is the
    /// EOS) -- every text has one spelling, so a mask is easy to reason about.
    pub(crate) fn byte_env() -> Arc<GrammarEnv> {
        byte_env_with_eos(TokenType::Control)
    }

    fn byte_env_with_eos(eos_type: TokenType) -> Arc<GrammarEnv> {
        byte_env_with(eos_type, &[])
    }

    /// The byte vocabulary, `<|end|>` (256, the EOS) of `eos_type`, then `extra` control tokens.
    fn byte_env_with(eos_type: TokenType, extra: &[&str]) -> Arc<GrammarEnv> {
        let mut tokens = qwen_aot_compiler::synthetic::gguf_file::byte_tokens();
        let mut token_types = vec![TokenType::Normal.as_i32(); tokens.len()];
        tokens.push("<|end|>".into());
        token_types.push(eos_type.as_i32());
        for t in extra {
            tokens.push(t.to_string());
            token_types.push(TokenType::Control.as_i32());
        }
        let data = TokenizerData {
            model: "gpt2".into(),
            tokens,
            token_types,
            merges: vec![],
            pre: "qwen2".into(),
            bos_id: None,
            eos_id: Some(256),
            pad_id: None,
            add_bos: false,
            chat_template: None,
        };
        GrammarEnv::new(&Tokenizer::from_data(data).expect("tokenizer")).expect("env")
    }

    /// The tokens allowed next, from the dense mask (`apply` on a row longer than the vocabulary);
    /// the list form (`allowed`, what the host draw uses) must give the same ones.
    fn allowed(steps: &mut GrammarSteps, n: usize) -> Vec<usize> {
        let mut row = vec![0.0f32; n + 3];
        steps.apply(&mut row).unwrap();
        let dense: Vec<usize> = (0..row.len()).filter(|&i| row[i] == 0.0).collect();
        let mut list = Vec::new();
        steps.allowed(row.len(), &mut list).unwrap();
        assert_eq!(list.iter().map(|&i| i as usize).collect::<Vec<_>>(), dense, "list and dense masks");
        // A row shorter than the vocabulary: nothing past it.
        steps.allowed(n - 1, &mut list).unwrap_or_default();
        assert!(list.iter().all(|&i| (i as usize) < n - 1));
        dense
    }

    /// A schema's masks, byte by byte: an enum of two strings allows exactly their next bytes,
    /// the end-of-text id only once a value is complete, and nothing past the vocabulary.
    #[test]
    fn schema_masks_allow_exactly_the_valid_continuations() {
        let env = byte_env();
        let g = Grammar::json_schema(&env, serde_json::json!({"enum": ["ab", "ac"]})).unwrap();
        let mut s = g.start();
        assert_eq!(allowed(&mut s, 257), vec![b'"' as usize], "the value starts the answer");
        s.advance(b'"' as u32).unwrap();
        assert_eq!(allowed(&mut s, 257), vec![b'a' as usize]);
        s.advance(b'a' as u32).unwrap();
        // A mask computed ahead (beside a decode step) is the same mask.
        s.prepare().unwrap();
        assert_eq!(allowed(&mut s, 257), vec![b'b' as usize, b'c' as usize]);
        assert_eq!(allowed(&mut s, 257), vec![b'b' as usize, b'c' as usize]);
        s.advance(b'c' as u32).unwrap();
        s.advance(b'"' as u32).unwrap();
        assert!(allowed(&mut s, 257).contains(&256), "complete: the EOS is allowed");
        assert!(s.advance(b'x' as u32).is_err(), "a token the mask refused is an error");
        // Each answer starts afresh.
        assert_eq!(allowed(&mut g.start(), 257), vec![b'"' as usize]);
    }

    /// An object schema: required keys in order, typed values; a Lark grammar with an embedded
    /// schema; schemas that do not compile are errors, not panics.
    #[test]
    fn objects_lark_and_bad_schemas() {
        let env = byte_env();
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
        let g = Grammar::json_schema(&env, schema.clone()).unwrap();
        let mut s = g.start();
        for b in br#"{"n":"# {
            s.apply(&mut vec![0.0; 257]).unwrap();
            s.advance(*b as u32).unwrap();
        }
        let digits_or_minus = allowed(&mut s, 257);
        assert!(digits_or_minus.contains(&(b'7' as usize)) && digits_or_minus.contains(&(b'-' as usize)));
        assert!(!digits_or_minus.contains(&(b'"' as usize)), "an integer, not a string");

        let g = Grammar::lark(&env, format!("start: \"<call>\" obj\nobj: %json {schema}")).unwrap();
        let mut s = g.start();
        assert_eq!(allowed(&mut s, 257), vec![b'<' as usize]);

        for bad in [serde_json::json!({"type": "nonsense"}), serde_json::json!({"$ref": "#/nowhere"})] {
            assert!(matches!(Grammar::json_schema(&env, bad.clone()), Err(GrammarError::Invalid(_))), "{bad}");
        }
        assert!(matches!(Grammar::lark(&env, "start: (".into()), Err(GrammarError::Invalid(_))));
        assert!(matches!(Grammar::regex(&env, "a("), Err(GrammarError::Invalid(_))));
    }

    /// With two end-of-text ids (the GGUF's EOS and `<|im_end|>`), llguidance's mask itself holds
    /// both where the answer may end and neither where it may not: the draws read only the mask's
    /// bits (`for_each_allowed`).
    #[test]
    fn every_end_of_text_id_is_in_the_mask_where_the_answer_may_end() {
        let env = byte_env_with(TokenType::Control, &["<|im_end|>"]);
        assert_eq!(env.eos, vec![256, 257]);
        let g = Grammar::json_schema(&env, serde_json::json!({"enum": ["ab"]})).unwrap();
        let mut s = g.start();
        let bits = |s: &mut GrammarSteps| {
            let m = s.mask().unwrap();
            (m.get(256), m.get(257))
        };
        for b in br#""ab""# {
            assert_eq!(bits(&mut s), (false, false), "before the value ends");
            s.advance(*b as u32).unwrap();
        }
        assert_eq!(bits(&mut s), (true, true), "the value is complete");
        assert_eq!(allowed(&mut s, 258), vec![256, 257]);
    }

    /// The end-of-text id is never text, whatever type the GGUF gives it: inside a string it is
    /// not allowed (it would end the answer with the string open).
    #[test]
    fn the_end_of_text_is_never_string_content() {
        for ty in [TokenType::Control, TokenType::Normal, TokenType::UserDefined] {
            let env = byte_env_with_eos(ty);
            let g = Grammar::json_schema(&env, serde_json::json!({"type": "string"})).unwrap();
            let mut s = g.start();
            s.advance(b'"' as u32).unwrap();
            let ok = allowed(&mut s, 257);
            assert!(ok.contains(&(b'x' as usize)) && !ok.contains(&256), "{ty:?}");
        }
    }

    /// Feeds `text` byte by byte, each byte checked against the mask first; whether the EOS is
    /// then allowed.
    fn walk(g: &Grammar, text: &str) -> Option<bool> {
        let mut s = g.start();
        for &b in text.as_bytes() {
            if !allowed(&mut s, 257).contains(&(b as usize)) {
                return None;
            }
            s.advance(b as u32).unwrap();
        }
        Some(allowed(&mut s, 257).contains(&256))
    }

    /// llama.cpp's GBNF grammars run as written: an arithmetic grammar in its style (classes,
    /// repetition, a negated class, escapes, a multi-line group), told from Lark by its `::=`.
    #[test]
    fn gbnf_grammars_constrain_like_their_lark_translation() {
        let env = byte_env();
        let gbnf = r#"# llama.cpp style
root  ::= expr ("\n" | "=" [0-9]{1,3})
expr  ::= term (
            [-+*/] term
          )*
term  ::= [0-9]+ | "(" expr ")" | "'" [^'\\]* "'"
"#;
        let g = Grammar::lark_or_gbnf(&env, gbnf.to_string()).unwrap();
        assert_eq!(walk(&g, "12+(3*4)\n"), Some(true));
        assert_eq!(walk(&g, "7-2=5"), Some(true));
        assert_eq!(walk(&g, "7-2=5555"), None, "at most three digits");
        assert_eq!(walk(&g, "7-2"), Some(false), "not yet complete");
        assert_eq!(walk(&g, "'a b'\n"), Some(true));
        assert_eq!(walk(&g, "'a'b"), None);
        assert_eq!(walk(&g, "x"), None);
        // Lark stays Lark; a broken GBNF grammar is an error, not a panic.
        let lark = Grammar::lark_or_gbnf(&env, r#"start: "a" | "b""#.into()).unwrap();
        assert_eq!(walk(&lark, "b"), Some(true));
        assert!(matches!(Grammar::lark_or_gbnf(&env, "root ::= [a-".into()), Err(GrammarError::Invalid(_))));
        assert!(matches!(Grammar::lark_or_gbnf(&env, "root ::= missing".into()), Err(GrammarError::Invalid(_))));
    }

    /// A grammar whose language is empty (a rule that needs itself before it can end; rules that
    /// only name each other) is refused with one line that says so -- not llguidance's stop
    /// reason and state dump (`NoExtensionBias <state>... Parser: {..} </state>`), which reached
    /// `generate`'s stderr and the server's 400 body.
    #[test]
    fn a_grammar_that_matches_nothing_is_one_clear_line() {
        let env = byte_env();
        let empty = "it can match no text (every rule refers to itself without an end)";
        for src in ["root ::= root \"a\"\n", "root ::= x\nx ::= y\ny ::= x\n", "start: start \"a\"\n"] {
            let err = Grammar::lark_or_gbnf(&env, src.into()).unwrap_err();
            assert!(matches!(err, GrammarError::Invalid(_)), "{src:?}");
            assert_eq!(err.to_string(), empty, "{src:?}");
        }
        // Other compile errors keep llguidance's message (with its pointer into the source),
        // never a state dump.
        for (src, want) in [
            (
                "start: (",
                "1(9): Expected token ')', found '\\n' (at \"\\n\" ('\\n'))\n   1 | start: (\n               ^",
            ),
            (
                "root ::= missing",
                "at 2(7): unknown name: \"missing\"\n   1 | start: root\n   2 | root: missing\n             ^",
            ),
            ("root ::= [a-", "GBNF: unterminated character class"),
        ] {
            assert_eq!(Grammar::lark_or_gbnf(&env, src.into()).unwrap_err().to_string(), want, "{src:?}");
        }
    }

    /// A regex must match the whole answer; choices are literal (metacharacters escaped) and
    /// whole: a choice's prefix may continue, but ends only where a choice ends.
    #[test]
    fn regexes_and_choices() {
        let env = byte_env();
        let g = Grammar::regex(&env, r"[0-9]{2}-[a-z]+").unwrap();
        assert_eq!(walk(&g, "42-ab"), Some(true));
        assert_eq!(walk(&g, "42-"), Some(false));
        assert_eq!(walk(&g, "4x"), None);
        let g = Grammar::choice(&env, &["a.b".into(), "a+".into(), "yes".into()]).unwrap();
        assert_eq!(walk(&g, "a.b"), Some(true));
        assert_eq!(walk(&g, "a+"), Some(true));
        assert_eq!(walk(&g, "ye"), Some(false));
        assert_eq!(walk(&g, "axb"), None, "'.' is literal");
        assert_eq!(walk(&g, "aa"), None, "'+' is literal");
    }
}
