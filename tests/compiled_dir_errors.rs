//! Bad compiled directories and bad calls give one clear error, never a panic or wrong output:
//! another plan format version, garbage JSON, truncated or corrupted weights, a plan whose
//! references point outside its arena or whose step writes in place, prompts that do not fit the
//! context, weights whose logits overflow.
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, multi_window_hparams, one_layer_hparams, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::error::RuntimeError;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::integrity::{self, seal_plan, SAMPLED_WINDOWS, WINDOW_BYTES};
use qwen_aot_runtime::plan::{HyperParams, Plan, PLAN_FILE, PLAN_FORMAT_VERSION, WEIGHTS_FILE};
use qwen_aot_runtime::session::Session;

fn compiled() -> (tempfile::TempDir, std::path::PathBuf, HyperParams) {
    let hp = one_layer_hparams(40, 32);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(&hp, false, 7, &FormatMix::f16(), &CompileOptions { prefill_tokens: 8, ..Default::default() }, &dir)
        .unwrap();
    (tmp, dir, hp)
}

fn open_err(dir: &std::path::Path) -> String {
    match CompiledModel::open(dir, Integrity::Sampled) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Edits the plan and seals it again (as if a compiler had written it), so that the load checks
/// the edit itself, not the seal.
fn edit_plan(dir: &std::path::Path, f: impl FnOnce(&mut Plan)) {
    let p = dir.join(PLAN_FILE);
    let mut plan: Plan = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut plan);
    std::fs::write(p, seal_plan(&mut plan).unwrap()).unwrap();
}

/// A random F16 model whose weights.bin has more windows than a load samples (about 4 MiB).
fn compiled_large() -> (tempfile::TempDir, std::path::PathBuf) {
    let hp = multi_window_hparams();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(&hp, false, 3, &FormatMix::f16(), &CompileOptions { prefill_tokens: 8, ..Default::default() }, &dir)
        .unwrap();
    (tmp, dir)
}

fn flip(path: &std::path::Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_plan_from_another_format_version_asks_to_recompile() {
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| p.format_version = 999);
    let e = open_err(&dir);
    assert!(e.contains("version 999") && e.contains("recompile"), "{e}");
}

#[test]
fn a_plan_of_the_previous_format_asks_to_recompile() {
    // Format 5 had no window table and no seal: the typed parse fails, the version speaks.
    let (_t, dir, _) = compiled();
    let p = dir.join(PLAN_FILE);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.insert("format_version".into(), (PLAN_FORMAT_VERSION - 1).into());
    o.remove("weights_windows");
    o.remove("plan_sha256");
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    let e = open_err(&dir);
    assert!(e.contains(&format!("version {}", PLAN_FORMAT_VERSION - 1)) && e.contains("recompile"), "{e}");
}

#[test]
fn an_edited_plan_that_still_parses_breaks_its_seal() {
    let (_t, dir, _) = compiled();
    let p = dir.join(PLAN_FILE);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    // A value no structural check can fault, the RMS epsilon; the seal is kept as it was.
    v["hparams"]["rms_eps"] = 1e-5.into();
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let e = open_err(&dir);
    assert!(e.contains("own checksum") && e.contains("recompile"), "{e}");
}

#[test]
fn a_flip_in_a_sampled_window_is_refused_at_load() {
    let (_t, dir) = compiled_large();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let n = integrity::windows(&model.plan).len();
    assert!(n > SAMPLED_WINDOWS, "{n} windows: the load samples");
    let last = model.plan.weights_bytes - 1;
    drop(model);
    // The first and the last windows are in every sample.
    let w = dir.join(WEIGHTS_FILE);
    flip(&w, 1000);
    let e = open_err(&dir);
    assert!(e.contains("corrupt") && e.contains("bytes 0..65536 (window 0, in weight token_embd.weight)"), "{e}");
    assert!(e.contains("qwen-aot verify"), "{e}");
    flip(&w, 1000);
    flip(&w, last);
    let e = open_err(&dir);
    assert!(e.contains("corrupt") && e.contains(&format!("(window {}, in weight output.weight)", n - 1)), "{e}");
}

#[test]
fn a_flip_outside_the_sample_loads_and_the_full_check_finds_it() {
    // The documented trade-off: a load hashes 16 windows, not every byte.
    let (_t, dir) = compiled_large();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let windows = integrity::windows(&model.plan);
    let seed = 7;
    let sampled = integrity::sample(windows.len(), seed);
    let (index, outside) = windows.iter().enumerate().find(|(i, _)| !sampled.contains(i)).unwrap();
    let (plan, at) = (model.plan.clone(), outside.range.start + 5);
    drop(model);
    flip(&dir.join(WEIGHTS_FILE), at);
    let (_, weights) = CompiledModel::open_unchecked(&dir).unwrap();
    assert!(integrity::check_sampled(&plan, &weights, &windows, seed).is_ok());
    let report = integrity::check_full(&plan, &weights, &windows);
    assert!(!report.sha256_ok);
    assert_eq!(report.damaged.len(), 1);
    assert_eq!((report.damaged[0].index, report.damaged[0].window.range.clone()), (index, outside.range.clone()));
    assert!(outside.range.end - outside.range.start <= WINDOW_BYTES);
    let e = match CompiledModel::open(&dir, Integrity::Full) {
        Ok(_) => panic!("the full check passes a damaged file"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&format!("window {index}, in weight {}", plan.weights[outside.weight].name)), "{e}");
}

#[test]
fn garbage_plan_json_is_an_error() {
    let (_t, dir, _) = compiled();
    std::fs::write(dir.join(PLAN_FILE), "{ not json").unwrap();
    assert!(open_err(&dir).contains("plan.json"));
    std::fs::remove_file(dir.join(PLAN_FILE)).unwrap();
    assert!(open_err(&dir).contains("cannot read"));
}

#[test]
fn truncated_or_corrupt_weights_are_detected() {
    let (_t, dir, _) = compiled();
    let w = dir.join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&w, &bytes).unwrap();
    assert!(open_err(&dir).contains("corrupt"), "flipped bit");
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&w, &bytes).unwrap();
    assert!(open_err(&dir).contains("truncated"), "short file");
}

#[test]
fn out_of_bounds_references_are_rejected_at_load() {
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| p.decode.buffers[3].offset = p.decode.arena_bytes);
    assert!(open_err(&dir).contains("does not fit"));
    let (_t2, dir2, _) = compiled();
    edit_plan(&dir2, |p| p.weights[0].bytes *= 2);
    assert!(open_err(&dir2).contains("inconsistent"));
}

/// Sizes a file claims are checked against what the plan needs before anything is allocated: an
/// arena larger than its buffers (an allocation of any size the file asks), an oversized buffer,
/// and a program without steps (which would "run" and print zeros) are refused at load.
#[test]
fn arenas_buffers_and_programs_a_file_inflates_are_rejected_at_load() {
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| p.prefill.arena_bytes = 1 << 50);
    let e = open_err(&dir);
    assert!(e.contains("prefill: an arena of 1125899906842624 bytes where its buffers end at byte"), "{e}");
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| {
        let last = p.decode.buffers.iter().map(|b| b.offset + b.bytes).max().unwrap();
        let b = p.decode.buffers.iter_mut().find(|b| b.offset + b.bytes == last).unwrap();
        b.bytes += 1 << 20;
        p.decode.arena_bytes = last + (1 << 20);
    });
    assert!(open_err(&dir).contains("does not fit the arena"));
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| p.prefill.steps.clear());
    let e = open_err(&dir);
    assert!(e.contains("prefill: the program has no steps"), "{e}");
}

/// A tokenizer that does not match the model's vocabulary, or a `tokenizer.json` that is a
/// device, is refused when the model loads (and by `verify`), not discovered mid-generation.
#[test]
fn a_tokenizer_that_does_not_fit_the_model_is_refused() {
    use qwen_aot_runtime::plan::tokenizer::{check_model_vocab, TokenizerError};
    assert!(check_model_vocab(151_936, 151_936).is_ok());
    let e = check_model_vocab(5_000, 151_936).unwrap_err();
    assert!(matches!(e, TokenizerError::ModelVocabMismatch { tokens: 5_000, model: 151_936 }));
    assert_eq!(e.to_string(), "tokenizer data: 5000 tokens, but the model's vocabulary has 151936");
    #[cfg(unix)]
    {
        let e = qwen_aot_runtime::tokenizer::Tokenizer::load(std::path::Path::new("/dev/zero")).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert!(chain.contains("tokenizer.json must be a regular file"), "{chain}");
    }
}

/// The one plan validator refuses a step that writes in place (the earlier CUDA validator allowed
/// an in-place RmsNorm/AddRmsNorm; the plan's contract and the CPU executor's borrows do not).
#[test]
fn an_in_place_step_is_rejected_at_load() {
    use qwen_aot_runtime::plan::Step;
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| {
        let step = p.prefill.steps.iter_mut().find(|s| matches!(s, Step::AddRmsNorm { .. })).expect("an add+norm");
        if let Step::AddRmsNorm { a, sum_out, .. } = step {
            *sum_out = *a;
        }
    });
    let e = open_err(&dir);
    assert!(e.contains("prefill: step add_rms_norm writes") && e.contains("which overlaps"), "{e}");
}

#[test]
fn prompts_that_do_not_fit_and_bad_ids_are_errors() {
    let (_t, dir, hp) = compiled();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let mut s = Session::new(Box::new(CpuExecutor::new(&model, 16).unwrap()));
    let long: Vec<u32> = (0..17).map(|i| i % 40).collect();
    assert!(matches!(s.prefill(&long, LogitsWanted::None), Err(RuntimeError::ContextFull { needed: 17, max_seq: 16 })));
    assert_eq!(s.pos(), 0, "a failed prefill leaves the session untouched");
    assert!(matches!(
        s.prefill(&[1, 2, hp.vocab as u32], LogitsWanted::None),
        Err(RuntimeError::TokenOutOfRange { .. })
    ));
    assert!(matches!(s.prefill(&[], LogitsWanted::None), Err(RuntimeError::InvalidCall(_))));
    s.prefill(&long[..16], LogitsWanted::None).unwrap();
    assert!(matches!(s.decode(1, false), Err(RuntimeError::ContextFull { .. })), "the cache is full");
    assert!(CpuExecutor::new(&model, hp.context_length + 1).is_err(), "cache larger than the context");
}

/// Finite weights can still overflow: an output norm of f32::MAX passes the compile-time check,
/// and the LM head's logits come out Inf/NaN. The CPU executor stops with an error instead of
/// choosing a token from them, greedy and sampled alike.
#[test]
fn logits_that_overflow_stop_generation_with_an_error() {
    use qwen_aot_compiler::compile::{build, write_dir};
    use qwen_aot_compiler::gguf::GgmlType;
    use qwen_aot_compiler::synthetic::gguf_file::tiny_hparams;
    use qwen_aot_compiler::synthetic::random_model_mix;
    use qwen_aot_runtime::sampler::SamplingParams;

    let hp = tiny_hparams();
    let mut src = random_model_mix(&hp, false, 7, &FormatMix::all(GgmlType::Q5_0));
    src.insert_f32("output_norm.weight", vec![hp.hidden as u64], vec![f32::MAX; hp.hidden]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let mut c = build(&hp, &src, "overflow", &CompileOptions::default()).expect("finite weights compile");
    write_dir(&mut c, &src, None, &dir, |_| {}).expect("written");
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    for sampling in [SamplingParams::default(), SamplingParams { temperature: 0.7, ..Default::default() }] {
        let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
        s.set_sampling(&sampling).unwrap();
        let err = s.prefill(&[1, 2, 3], LogitsWanted::None).unwrap_err();
        let RuntimeError::NonFiniteLogit { pos, token, value } = &err else { panic!("not a logit error: {err}") };
        assert_eq!(*pos, 2, "the last prompt position's logits");
        assert!(*token < hp.vocab && !value.is_finite(), "token {token} value {value}");
        assert!(err.to_string().starts_with("the model produced a non-finite logit"), "{err}");
    }
}
