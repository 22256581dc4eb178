//! The whole model against an independent implementation (`qwen_aot::refcheck`, whose module doc
//! lists the checks): `tests/refs/generation-*.json` was produced by HF transformers (float32, CPU)
//! from the default model's GGUF dequantised to f32 (see `tests/refs/README.md`). We run the
//! compiled plan on the CPU executor (the GGUF's own quantized weights, dequantised exactly; f32
//! compute) and check every case, then, against the same checks on the `--weights f16` plan (every
//! matrix rounded to f16), that the native plan's largest top-5 logit error is no larger, both for
//! the teacher-forced prefill (53 to 78 rows: up to `INT_PREFILL_MAX_ROWS`, 64, the quantized
//! weights' integer dot, past it the weights dequantised bit for bit and SGEMM) and for the
//! continuation fed one token at a time through decode (the integer dot against the input as int8
//! digits per element, two by default, `qdot::int`): keeping the file's quantization loses nothing
//! against widening it.
//!
//! Needs the default model (CI fetches it); `QWEN_AOT_MODEL` overrides its path.
mod common;

use qwen_aot::backend::BackendChoice;
use qwen_aot::refcheck::{check_against_reference, RefReport};

#[test]
fn cpu_executor_matches_the_reference_implementation() {
    let native = qwen_aot::model::compiled_model(Some(&common::model()), true).expect("compile the default model");
    let f16_dir = std::env::temp_dir().join(format!("qwen-aot-reference-f16-{}", std::process::id()));
    let opts = qwen_aot_compiler::compile::CompileOptions {
        weights: qwen_aot_compiler::pack::WeightMode::F16,
        ..Default::default()
    };
    let sha = qwen_aot::model::model_sha256(&common::model()).expect("the model's sha256");
    qwen_aot::model::compile_gguf(&common::model(), &f16_dir, &opts, Some(&sha), true).expect("compile the f16 plan");
    let refs = common::refs("generation-qwen2.5-coder-0.5b.json");
    let run = |dir: &std::path::Path| -> RefReport {
        check_against_reference(dir, BackendChoice::Cpu, &refs).expect("run the reference cases on the CPU")
    };
    let (native_report, f16_report) = (run(&native), run(&f16_dir));
    let _ = std::fs::remove_dir_all(&f16_dir);
    eprintln!("native plan:\n{}\nf16 plan:\n{}", native_report.render(), f16_report.render());
    for report in [&native_report, &f16_report] {
        let failures = report.failures();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
    assert_eq!(native_report.cases.len(), 4, "every reference case ran");
    // Speculative decoding ran on every case (same ids: checked in failures) and its drafts were
    // both kept and refused somewhere, so both of the verify's outcomes were exercised.
    let runs: Vec<_> = native_report.cases.iter().map(|c| c.speculative.expect("the CPU verifies drafts")).collect();
    let (drafted, accepted) = runs.iter().fold((0, 0), |(d, a), r| (d + r.drafted, a + r.accepted));
    assert!(accepted > 0 && accepted < drafted, "drafts {accepted}/{drafted} accepted");
    let (native_prefill, native_decode) = native_report.worst_top5();
    let (f16_prefill, f16_decode) = f16_report.worst_top5();
    eprintln!(
        "max |Δtop5 logit| over all cases: prefill: native {native_prefill:.5}, f16 {f16_prefill:.5}; decode: native \
         {native_decode:.5}, f16 {f16_decode:.5}"
    );
    assert!(
        native_prefill <= f16_prefill,
        "the native plan's top-5 logits ({native_prefill}) are further from the reference than the f16 plan's \
         ({f16_prefill})"
    );
    assert!(
        native_decode <= f16_decode,
        "the native plan's decoded top-5 logits ({native_decode}) are further from the reference than the f16 \
         plan's ({f16_decode})"
    );
}
