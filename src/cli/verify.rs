//! `qwen-aot verify`: the full integrity check of a compiled model. A load samples a few windows
//! of `weights.bin` (runtime `integrity`) and a few frames of each derived weight; this hashes
//! every byte and names each damaged window, then rebuilds every derived weight and checks every
//! frame of it against the compiler's hashes.
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use qwen_aot_runtime::compiled::CompiledModel;
use qwen_aot_runtime::derived::{self, FrameCheck};
use qwen_aot_runtime::integrity;
use qwen_aot_runtime::plan::WEIGHTS_FILE;
use qwen_aot_runtime::tokenizer::Tokenizer;

use qwen_aot::model;

/// Damaged windows listed one per line before the summary.
const LISTED: usize = 20;

pub fn run(target: Option<&Path>, quiet: bool) -> Result<()> {
    let dir = model::compiled_model(target, quiet)?;
    let start = Instant::now();
    let fail = |why: String| anyhow::anyhow!("{} FAILED verification: {why}", dir.display());
    // Plan (parsed, sealed, valid) and the file size: the errors already say what is wrong.
    let (plan, weights) =
        CompiledModel::open_unchecked(&dir).map_err(|e| fail(format!("{:#}", anyhow::Error::from(e))))?;
    let windows = integrity::windows(&plan);
    let report = integrity::check_full(&plan, &weights, &windows);
    for d in report.damaged.iter().take(LISTED) {
        eprintln!("damaged: {}", d.describe(&plan));
    }
    if report.damaged.len() > LISTED {
        eprintln!("damaged: ... and {} more windows", report.damaged.len() - LISTED);
    }
    if !report.damaged.is_empty() || !report.sha256_ok {
        let where_ = if report.damaged.is_empty() {
            "the plan's window table was altered".to_string()
        } else {
            format!("{} of {} windows differ", report.damaged.len(), windows.len())
        };
        let fix = if model::is_cache_entry(&dir) {
            "it is a cache entry: the next use of the model compiles it again".to_string()
        } else {
            "recompile it with `qwen-aot compile`".to_string()
        };
        bail!(fail(format!(
            "{WEIGHTS_FILE} is corrupt ({where_}; sha256 {} where the plan has {}); {fix}",
            report.sha256, plan.weights_sha256
        )));
    }
    // The derived weights (the embedding rebuilt from the LM head): every frame, as `check` does.
    let derived_note = if plan.derived.is_empty() {
        String::new()
    } else {
        derived::rebuild(&plan, &weights, FrameCheck::All).map_err(|e| fail(e.to_string()))?;
        let frames: usize = plan.derived.iter().map(|d| d.frames.len()).sum();
        format!("{} derived weight(s) rebuilt, all {frames} frames match; ", plan.derived.len())
    };
    let tokenizer = dir.join(qwen_aot_runtime::plan::TOKENIZER_FILE);
    // exists(), not is_file(): a tokenizer.json that is not a regular file (a link to a device)
    // is a damaged model, which the load below reports, not a model without a tokenizer.
    let tokenizer_note = if tokenizer.exists() {
        let t = Tokenizer::load(&tokenizer)
            .map_err(|e| fail(format!("{}: {:#}", tokenizer.display(), anyhow::Error::from(e))))?;
        qwen_aot_runtime::plan::tokenizer::check_model_vocab(t.vocab_size(), plan.hparams.vocab)
            .map_err(|e| fail(format!("{}: {e}", tokenizer.display())))?;
        "tokenizer.json loads and matches the model's vocabulary"
    } else {
        "no tokenizer.json"
    };
    qwen_aot::outln!(
        "{}: OK: plan.json sealed and valid; {WEIGHTS_FILE} {} bytes, every byte matches (sha256 {}, {} windows); \
         {derived_note}{tokenizer_note} ({:.2} s)",
        dir.display(),
        weights.len(),
        report.sha256,
        windows.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
