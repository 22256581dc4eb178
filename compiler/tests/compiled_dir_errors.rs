//! Bad compiled directories and bad calls give one clear error, never a panic or wrong output:
//! another plan format version, garbage JSON, truncated or corrupted weights, a plan whose
//! references point outside its arena, prompts that do not fit the context.
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, FormatMix};
use qwen_aot_runtime::compiled::CompiledModel;
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::error::RuntimeError;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::plan::{HyperParams, Plan, PLAN_FILE, WEIGHTS_FILE};
use qwen_aot_runtime::session::Session;

fn compiled() -> (tempfile::TempDir, std::path::PathBuf, HyperParams) {
    let hp = HyperParams {
        n_layers: 1,
        hidden: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn: 32,
        vocab: 40,
        rms_eps: 1e-6,
        rope_theta: 1e4,
        context_length: 32,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    compile_random(&hp, false, 7, &FormatMix::f16(), &CompileOptions { prefill_tokens: 8, ..Default::default() }, &dir)
        .unwrap();
    (tmp, dir, hp)
}

fn open_err(dir: &std::path::Path) -> String {
    match CompiledModel::open(dir, true) {
        Ok(_) => panic!("opening {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_plan(dir: &std::path::Path, f: impl FnOnce(&mut Plan)) {
    let p = dir.join(PLAN_FILE);
    let mut plan: Plan = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut plan);
    std::fs::write(p, serde_json::to_string(&plan).unwrap()).unwrap();
}

#[test]
fn a_plan_from_another_format_version_asks_to_recompile() {
    let (_t, dir, _) = compiled();
    edit_plan(&dir, |p| p.format_version = 999);
    let e = open_err(&dir);
    assert!(e.contains("version 999") && e.contains("recompile"), "{e}");
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

#[test]
fn prompts_that_do_not_fit_and_bad_ids_are_errors() {
    let (_t, dir, hp) = compiled();
    let model = CompiledModel::open(&dir, true).unwrap();
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
