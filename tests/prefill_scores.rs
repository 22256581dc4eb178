//! `Session::prefill_scores` on the CPU executor (the default path every backend without its own
//! scoring takes): across prefill chunks, each row's score equals the one computed from that
//! row's logits copied out of a plain prefill, the position advances as a prefill's does, and bad
//! calls are refused without touching the cache. The GPU's own kernel is checked against the same
//! scores by `qwen-aot check --backend cuda` (rows `row_scores …` and "scores on the device").
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, default_model_mix, multi_window_hparams};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::error::RuntimeError;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::scores::{row_score, MAX_TOP};
use qwen_aot_runtime::session::Session;

#[test]
fn scores_across_chunks_equal_the_copied_rows_scores() {
    let hp = multi_window_hparams();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    // 16-row prefill chunks: a 40-token prompt takes three.
    compile_random(
        &hp,
        false,
        5,
        &default_model_mix(),
        &CompileOptions { prefill_tokens: 16, ..Default::default() },
        &dir,
    )
    .unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let vocab = hp.vocab;
    let tokens: Vec<u32> = (0..41u32).map(|i| (i * 7919 + 3) % vocab as u32).collect();
    let (context, targets) = (&tokens[..40], &tokens[1..]);

    let mut plain = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
    let logits = plain.prefill(context, LogitsWanted::All).unwrap().logits;
    let want: Vec<_> =
        targets.iter().enumerate().map(|(r, &t)| row_score(&logits[r * vocab..(r + 1) * vocab], t, 5)).collect();

    let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
    s.prefill(&tokens[..3], LogitsWanted::None).unwrap();
    s.rewind(0);
    let got = s.prefill_scores(context, targets, 5).unwrap();
    assert_eq!(got, want);
    assert_eq!(s.pos(), 40);
    // Five alternatives, most likely first, each a token; a log-probability is at most 0 and at
    // most the top one's.
    assert!(got.iter().all(|g| g.top.len() == 5
        && g.top.windows(2).all(|p| p[0].1 >= p[1].1)
        && g.top.iter().all(|&(j, lp)| (j as usize) < vocab && lp <= 0.0)
        && g.logprob <= g.top[0].1));

    // Refused, the cache untouched: a length mismatch, a target outside the vocabulary, too many
    // alternatives, no room.
    let e = s.prefill_scores(&tokens[..2], &tokens[..3], 1).unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidCall(_)), "{e}");
    let e = s.prefill_scores(&tokens[..1], &[vocab as u32], 1).unwrap_err();
    assert!(matches!(e, RuntimeError::TokenOutOfRange { .. }), "{e}");
    let e = s.prefill_scores(&tokens[..1], &tokens[1..2], MAX_TOP + 1).unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidCall(_)), "{e}");
    let e = s.prefill_scores(&tokens[..30], &tokens[1..31], 0).unwrap_err();
    assert!(matches!(e, RuntimeError::ContextFull { .. }), "{e}");
    assert_eq!(s.pos(), 40);
}

#[test]
fn a_decode_steps_score_is_its_rows_and_only_right_after_a_decode() {
    let hp = multi_window_hparams();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(&hp, false, 6, &default_model_mix(), &CompileOptions::default(), &dir).unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
    let first = s.prefill(&[5, 17, 300], LogitsWanted::None).unwrap().next_token;
    let e = s.last_decode_score(first, 1).unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidCall(_)), "after a prefill: {e}");
    let next = s.decode(first, false).unwrap().next_token;
    let score = s.last_decode_score(next, MAX_TOP).unwrap();
    assert_eq!(score, row_score(&s.last_decode_logits().unwrap(), next, MAX_TOP));
    assert_eq!(score.top.len(), MAX_TOP);
    assert_eq!(score.top[0].0, next, "greedy: the step chose the top token");
    assert_eq!(score.logprob, score.top[0].1);
    let e = s.last_decode_score(hp.vocab as u32, 1).unwrap_err();
    assert!(matches!(e, RuntimeError::TokenOutOfRange { .. }), "{e}");
}
