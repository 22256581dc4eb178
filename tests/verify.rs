//! `qwen-aot verify`: every byte of a compiled model checked, by the real binary. A random-weight
//! model large enough that a load only samples it, so a single flipped byte anywhere must be found
//! by the full check and by nothing less.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{compile_random, multi_window_hparams, FormatMix};
use qwen_aot_runtime::integrity::{windows, SAMPLED_WINDOWS};
use qwen_aot_runtime::plan::{PLAN_FILE, WEIGHTS_FILE};

fn compiled(tmp: &Path) -> PathBuf {
    let hp = multi_window_hparams();
    let dir = tmp.join("m");
    compile_random(
        &hp,
        false,
        11,
        &FormatMix::f16(),
        &CompileOptions { prefill_tokens: 8, ..Default::default() },
        &dir,
    )
    .unwrap();
    dir
}

fn verify(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qwen-aot")).arg("verify").arg(dir).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn verify_passes_a_good_model_and_finds_one_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = compiled(tmp.path());
    let out = verify(&dir);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ok = text(&out.stdout);
    assert!(ok.contains(": OK:") && ok.contains("every byte matches"), "{ok}");

    let plan = qwen_aot_runtime::compiled::parse_plan(&std::fs::read_to_string(dir.join(PLAN_FILE)).unwrap()).unwrap();
    let w = windows(&plan);
    assert!(w.len() > 4 * SAMPLED_WINDOWS, "{} windows: a load samples a quarter at most", w.len());
    // A byte in the middle of a middle window.
    let target = &w[w.len() / 2];
    let at = (target.range.start + target.range.end) / 2;
    let path = dir.join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at as usize] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let out = verify(&dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let name = &plan.weights[target.weight].name;
    let want = format!(
        "damaged: bytes {}..{} (window {}, in weight {name})",
        target.range.start,
        target.range.end,
        w.len() / 2
    );
    assert!(err.contains(&want), "expected `{want}` in: {err}");
    assert!(err.contains("FAILED verification") && err.contains("1 of") && err.contains("recompile"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    bytes.truncate(bytes.len() - 256);
    std::fs::write(&path, &bytes).unwrap();
    let out = verify(&dir);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("FAILED verification") && err.contains("truncated"), "{err}");
}
