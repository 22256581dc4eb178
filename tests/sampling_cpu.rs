//! Seeded sampling through the CPU executor: same seed and prompt give the same ids; another seed
//! gives others; temperature 0 equals the plan's greedy argmax.
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, one_layer_hparams, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::sampler::SamplingParams;
use qwen_aot_runtime::session::Session;

fn run(model: &CompiledModel, p: &SamplingParams, n: usize) -> Vec<u32> {
    let mut s = Session::new(Box::new(CpuExecutor::new(model, 64).unwrap()));
    s.set_sampling(p).unwrap();
    let mut next = s.prefill(&[1, 2, 3], LogitsWanted::None).unwrap().next_token;
    let mut ids = vec![next];
    for _ in 1..n {
        next = s.decode(next, false).unwrap().next_token;
        ids.push(next);
    }
    ids
}

/// A one-layer random-weight model (vocabulary 300) of `seed`, compiled into a temporary folder
/// (kept alive with the model).
fn random_model(seed: u64) -> (tempfile::TempDir, CompiledModel) {
    let hp = one_layer_hparams(300, 64);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(
        &hp,
        true,
        seed,
        &FormatMix::f16(),
        &CompileOptions { prefill_tokens: 8, ..Default::default() },
        &dir,
    )
    .unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    (tmp, model)
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let (_tmp, model) = random_model(11);
    let hot = |seed| SamplingParams { temperature: 2.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..Default::default() };
    let a = run(&model, &hot(5), 24);
    assert_eq!(a, run(&model, &hot(5), 24), "same seed, same ids");
    assert_ne!(a, run(&model, &hot(6), 24), "another seed, other ids");
    let greedy = run(&model, &SamplingParams::default(), 24);
    let cold = run(&model, &SamplingParams { temperature: 0.0, seed: 9, ..Default::default() }, 24);
    assert_eq!(greedy, cold);
    // Heavy penalties stop a greedy loop from repeating the same id back to back.
    let penalised = run(
        &model,
        &SamplingParams { repeat_penalty: 50.0, presence_penalty: 100.0, penalty_window: 4, ..Default::default() },
        24,
    );
    assert!(penalised.windows(2).all(|w| w[0] != w[1]), "{penalised:?}");
}

/// The row fetched after a decode step that brought none back (`last_decode_logits`, what a
/// grammar's refused greedy choice fetches) is that step's row, bit for bit; after any other
/// call it is refused rather than another step's row.
#[test]
fn the_last_decode_logits_are_the_step_row() {
    let (_tmp, model) = random_model(12);
    let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
    let first = s.prefill(&[1, 2], LogitsWanted::None).unwrap().next_token;
    assert!(s.last_decode_logits().is_err(), "before any decode");
    s.decode(first, false).unwrap();
    assert!(s.last_decode_logits().is_ok(), "right after a decode");
    s.rewind(0);
    let next = s.prefill(&[1, 2, 3], LogitsWanted::None).unwrap().next_token;
    assert!(s.last_decode_logits().is_err(), "after a prefill");
    let with_row = s.decode(next, true).unwrap();
    assert_eq!(with_row.logits.len(), 300);
    s.rewind(3);
    assert!(s.last_decode_logits().is_err(), "after a rewind");
    let without = s.decode(next, false).unwrap();
    assert!(without.logits.is_empty());
    assert_eq!(without.next_token, with_row.next_token);
    let fetched = s.last_decode_logits().unwrap();
    assert_eq!(
        fetched.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        with_row.logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // The row differs from the next step's (the check is not of a constant row).
    let after = s.decode(without.next_token, true).unwrap();
    assert_ne!(after.logits, fetched);
    // A step with work beside it runs that work once and is the same step.
    s.rewind(4);
    let mut calls = 0;
    let beside = s.decode_beside(without.next_token, true, &mut || calls += 1).unwrap();
    assert_eq!(calls, 1);
    assert_eq!(beside.next_token, after.next_token);
    assert_eq!(beside.logits, after.logits);
}
