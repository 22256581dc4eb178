//! Speculative decoding on the CPU executor: a verify pass over a token and its draft gives, row
//! by row, exactly the tokens decode steps would (greedy and seeded sampling with penalties; on a
//! plan of quantized weights in one pass, on an f16 plan step by step), keeps the draft up to its
//! first wrong token and leaves the cache as decode steps would; `generate` with drafts gives the
//! plain run's ids, text and cache position, also when a stop string ends it inside a draft. The
//! real model's reference cases run speculatively in `tests/reference_model.rs`.
mod common;

use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::generation::{generate, GenOptions, Generation, StopReason};
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, default_model_mix, multi_window_hparams, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::error::RuntimeError;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::sampler::SamplingParams;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::speculative::NgramDrafter;

const PROMPT: [u32; 5] = [5, 17, 300, 9, 1000];

fn session(model: &CompiledModel, sampling: &SamplingParams) -> Session {
    let mut s = Session::new(Box::new(CpuExecutor::new(model, 64).unwrap()));
    s.set_sampling(sampling).unwrap();
    s
}

/// The first token after the prompt and the next `n`, one decode step each.
fn plain(model: &CompiledModel, sampling: &SamplingParams, n: usize) -> Vec<u32> {
    let mut s = session(model, sampling);
    let mut ids = vec![s.prefill(&PROMPT, LogitsWanted::None).unwrap().next_token];
    for _ in 0..n {
        let next = s.decode(*ids.last().unwrap(), false).unwrap().next_token;
        ids.push(next);
    }
    ids
}

/// `row_cost`: what the executor should say a verify row costs (a whole step where its pass runs
/// as decode steps: then no draft is ever checked).
fn check_verify_against_decode(mix: &FormatMix, sampling: &SamplingParams, row_cost: f32) {
    let hp = multi_window_hparams();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(&hp, false, 3, mix, &CompileOptions { prefill_tokens: 16, ..Default::default() }, &dir).unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let want = plain(&model, sampling, 14);

    let mut s = session(&model, sampling);
    assert_eq!(s.verify_row_cost(), Some(row_cost));
    assert_eq!(s.prefill(&PROMPT, LogitsWanted::None).unwrap().next_token, want[0]);
    let p0 = s.pos();
    // A right draft of four: all kept, and the token after them.
    let v = s.verify_draft(want[0], &want[1..5]).unwrap();
    assert_eq!((v.accepted, v.tokens.as_slice()), (4, &want[1..6]));
    assert_eq!(s.pos(), p0 + 5);
    // Wrong at its second token: the first kept, then the model's own choice.
    let wrong = (want[7] + 1) % hp.vocab as u32;
    let v = s.verify_draft(want[5], &[want[6], wrong, want[8]]).unwrap();
    assert_eq!((v.accepted, v.tokens.as_slice()), (1, &want[6..8]));
    assert_eq!(s.pos(), p0 + 7);
    // Wrong at once: nothing kept, which is a decode step.
    let v = s.verify_draft(want[7], &[wrong]).unwrap();
    assert_eq!((v.accepted, v.tokens.as_slice()), (0, &want[8..9]));
    // Decoding on over the refused rows' K/V gives the plain run's tokens.
    let mut next = want[8];
    for &w in &want[9..] {
        next = s.decode(next, false).unwrap().next_token;
        assert_eq!(next, w);
    }
    // A pass that does not fit the cache is refused and changes nothing.
    let pos = s.pos();
    let e = s.verify_draft(next, &vec![1; 64 - pos]).unwrap_err();
    assert!(matches!(e, RuntimeError::ContextFull { .. }), "{e}");
    assert_eq!(s.pos(), pos);
}

#[test]
fn a_verify_pass_gives_the_decode_steps_tokens_on_quantized_weights() {
    check_verify_against_decode(&default_model_mix(), &SamplingParams::default(), 0.48);
}

#[test]
fn a_verify_pass_gives_the_decode_steps_tokens_when_sampling_with_penalties() {
    let sampling = SamplingParams {
        temperature: 1.5,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.3,
        presence_penalty: 0.5,
        penalty_window: 6,
        seed: 77,
    };
    check_verify_against_decode(&default_model_mix(), &sampling, 0.48);
}

#[test]
fn a_verify_pass_gives_the_decode_steps_tokens_on_an_f16_plan() {
    // The prefill's SGEMM on float weights rounds differently: the executor checks row by row.
    check_verify_against_decode(&FormatMix::f16(), &SamplingParams::default(), 1.0);
}

/// The tiny model of seed 3, compiled: it answers `abcabcabcabc abc abcabc` with four control
/// bytes and then "H" over and over, so drafts are checked and kept. (The directory lives as long
/// as the returned guard.)
fn repeating_tiny_model() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    common::write_tiny_model(&gguf, 3, "tiny");
    let dir = tmp.path().join("compiled");
    qwen_aot::model::compile_gguf(&gguf, &dir, &CompileOptions::default(), None, true).unwrap();
    (tmp, dir)
}

#[test]
fn generating_with_drafts_gives_the_plain_runs_ids_text_and_cache() {
    let (_tmp, dir) = repeating_tiny_model();
    let mut loaded = backend::load(&dir, BackendChoice::Cpu, Some(256), true).unwrap();
    let prompt = loaded.tokenizer.encode("abcabcabcabc abc abcabc");
    let mut run = |speculation: Option<NgramDrafter>, stop: &[String]| -> (Generation, usize) {
        loaded.session.reset();
        let opts = GenOptions { max_tokens: 60, stop_strings: stop.to_vec(), speculation, ..Default::default() };
        let g = generate(&mut loaded.session, &loaded.tokenizer, &prompt, &opts, |_| {}).unwrap();
        (g, loaded.session.pos())
    };
    let (plain, plain_pos) = run(None, &[]);
    assert!(plain.text.ends_with(&"H".repeat(50)), "{:?}", plain.text);
    let drafter = NgramDrafter { max_draft: 6, min_ngram: 1, max_ngram: 3 };
    let (spec, spec_pos) = run(Some(drafter), &[]);
    let same = |a: &Generation, b: &Generation| a.ids == b.ids && a.text == b.text && a.stop_reason == b.stop_reason;
    assert!(same(&spec, &plain) && spec_pos == plain_pos, "{spec:?} at {spec_pos} against {plain:?} at {plain_pos}");
    assert_eq!(plain_pos, prompt.len() + plain.ids.len() - 1);
    assert!(spec.accepted_draft_tokens >= 15, "the run of H is drafted: {spec:?}");
    assert_eq!((plain.draft_tokens, plain.accepted_draft_tokens), (0, 0));
    // Stop strings completed inside kept drafts (by the n-th H, for every n): the tokens fed past
    // the stop are dropped from the cache, which ends where the plain run's does.
    for n in 8..48 {
        let stop = vec!["H".repeat(n)];
        let (plain, plain_pos) = run(None, &stop);
        let (spec, spec_pos) = run(Some(drafter), &stop);
        assert!(
            same(&spec, &plain) && spec_pos == plain_pos,
            "{spec:?} at {spec_pos} against {plain:?} at {plain_pos}"
        );
        // The text ends before the stop string; the ids run to the token that completed it.
        assert_eq!((plain.text.as_str(), plain.ids.len()), ("\u{15}".repeat(4).as_str(), 4 + n));
    }
}

#[test]
fn generating_with_drafts_equals_plain_when_sampling_at_the_length_limit_and_at_a_full_context() {
    let (_tmp, dir) = repeating_tiny_model();
    let drafter = NgramDrafter { max_draft: 6, min_ngram: 1, max_ngram: 3 };
    // Sampled (seeded, mildly: the answer still repeats), and greedy with penalties.
    let warm = SamplingParams { temperature: 0.7, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 12, ..Default::default() };
    let penalised = SamplingParams { repeat_penalty: 1.1, penalty_window: 3, ..Default::default() };
    let mut kept = 0;
    // (sampling, KV cache size, max_tokens): the length limit or the full context (23-token
    // prompt, 48 cached tokens) ends the run while drafts are being kept.
    for (sampling, ctx, max_tokens) in [
        (&warm, 256, 60),
        (&penalised, 256, 60),
        (&SamplingParams::default(), 48, 200),
        (&SamplingParams::default(), 256, 37),
        (&warm, 48, 200),
    ] {
        let mut loaded = backend::load(&dir, BackendChoice::Cpu, Some(ctx), true).unwrap();
        loaded.session.set_sampling(sampling).unwrap();
        let prompt = loaded.tokenizer.encode("abcabcabcabc abc abcabc");
        let mut run = |speculation: Option<NgramDrafter>| -> (Generation, usize) {
            loaded.session.reset();
            let opts = GenOptions { max_tokens, speculation, ..Default::default() };
            let g = generate(&mut loaded.session, &loaded.tokenizer, &prompt, &opts, |_| {}).unwrap();
            (g, loaded.session.pos())
        };
        let (plain, plain_pos) = run(None);
        let (spec, spec_pos) = run(Some(drafter));
        let case = format!("{sampling:?}, ctx {ctx}, max_tokens {max_tokens}");
        assert_eq!(
            (&spec.ids, &spec.text, spec.stop_reason, spec_pos),
            (&plain.ids, &plain.text, plain.stop_reason, plain_pos),
            "{case}"
        );
        let want_stop = if ctx == 48 { StopReason::Context } else { StopReason::Length };
        assert_eq!(plain.stop_reason, want_stop, "{case}");
        kept += spec.accepted_draft_tokens;
    }
    assert!(kept > 0, "some drafts were kept");
}
