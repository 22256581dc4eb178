//! `qwen-aot refcheck`: [`qwen_aot::refcheck`] on a chosen backend, as a command (the GPU has no
//! test harness of its own for it; `tests/reference_model.rs` runs the CPU).
use std::path::Path;

use anyhow::{bail, Result};
use qwen_aot::backend::BackendChoice;
use qwen_aot::model;
use qwen_aot::refcheck::{check_against_reference, load_refs};

pub fn run(target: Option<&Path>, refs: &Path, backend: BackendChoice, quiet: bool) -> Result<()> {
    let refs = load_refs(refs)?;
    let dir = model::compiled_model(target, quiet)?;
    let report = check_against_reference(&dir, backend, &refs)?;
    qwen_aot::outln!("{}", report.render());
    let (prefill, decode) = report.worst_top5();
    qwen_aot::outln!("max |Δtop5 logit| over {} cases: prefill {prefill:.5}, decoded {decode:.5}", report.cases.len());
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("{} reference checks failed:\n{}", failures.len(), failures.join("\n"));
    }
    qwen_aot::outln!("refcheck PASS");
    Ok(())
}
