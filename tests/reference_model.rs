//! The whole model against an independent implementation: `tests/refs/generation-*.json` was
//! produced by HF transformers (float32, CPU) from the default model's GGUF dequantised to f32
//! (see `tests/refs/README.md`). We run the compiled plan on the CPU executor (the GGUF's own
//! quantized weights, dequantised exactly; f32 compute) and check, for every case:
//! - the prompt ids equal the reference's `input_ids` (tokenizer + chat template);
//! - greedy ids equal the reference's up to the first position whose top-1/top-2 margin is
//!   below 0.1 (past that, a correct engine may take the other branch);
//! - teacher-forced log-probs of the reference continuation: mean |Δ| <= 0.02;
//! - the top-5 logits of the first 16 positions agree within 0.05 (0.05 catches real errors, which
//!   move them by whole units);
//! - and, against the same checks on the `--weights f16` plan (every matrix rounded to f16), the
//!   native plan's largest top-5 logit error is no larger: keeping the file's quantization loses
//!   nothing against widening it.
//!
//! The teacher-forced logits above come from one multi-row prefill (the exact f32 path: weights
//! dequantised bit for bit, SGEMM). Decode runs other code: one row at a time, the quantized
//! weights' integer dot against the input as three int8 digits per element (`qdot::int`). So the
//! same continuation is also fed one token at a time through `decode` and checked the same way
//! (top-5 logits of the first 16 positions, mean |Δlogprob|), and its top-5 error must not exceed
//! the f16 plan's decoded the same way.
//!
//! Needs the default model (CI fetches it); `QWEN_AOT_MODEL` overrides its path.
mod common;

use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::generation::generate;
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};
use qwen_aot_runtime::executor::LogitsWanted;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id array").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn log_softmax_at(row: &[f32], id: u32) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[id as usize] as f64 - max - z.ln()
}

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
    let (native_err, native_report) = check_against_reference(&native);
    let (f16_err, f16_report) = check_against_reference(&f16_dir);
    let _ = std::fs::remove_dir_all(&f16_dir);
    eprintln!("native plan:\n{native_report}\nf16 plan:\n{f16_report}");
    eprintln!(
        "max |Δtop5 logit| over all cases: prefill: native {:.5}, f16 {:.5}; decode: native {:.5}, f16 {:.5}",
        native_err.prefill, f16_err.prefill, native_err.decode, f16_err.decode
    );
    assert!(
        native_err.prefill <= f16_err.prefill,
        "the native plan's top-5 logits ({}) are further from the reference than the f16 plan's ({})",
        native_err.prefill,
        f16_err.prefill
    );
    assert!(
        native_err.decode <= f16_err.decode,
        "the native plan's decoded top-5 logits ({}) are further from the reference than the f16 plan's ({})",
        native_err.decode,
        f16_err.decode
    );
}

/// The largest top-5 logit error over every case, from the teacher-forced prefill and from the
/// same tokens decoded one at a time.
struct Top5Errors {
    prefill: f64,
    decode: f64,
}

/// Largest |Δ| of the reference's top-5 logits over its first 16 positions (`row(j)`: the logits
/// after the prompt and `j` reference tokens), and the mean |Δlogprob| of the reference tokens.
fn compare<'a>(case: &Value, want: &[u32], row: impl Fn(usize) -> &'a [f32]) -> (f64, f64) {
    let ref_lp: Vec<f64> = case["teacher_forced"]["token_logprobs"]
        .as_array()
        .expect("logprobs")
        .iter()
        .map(|x| x.as_f64().expect("lp"))
        .collect();
    assert_eq!(ref_lp.len(), want.len());
    let mean_abs: f64 =
        want.iter().enumerate().map(|(j, &t)| (log_softmax_at(row(j), t) - ref_lp[j]).abs()).sum::<f64>()
            / want.len() as f64;
    let mut top5_err = 0.0f64;
    for (j, pairs) in case["top5_first16"].as_array().expect("top5").iter().enumerate() {
        let r = row(j);
        for pair in pairs.as_array().expect("pairs") {
            let (tid, val) = (pair[0].as_u64().expect("tid") as usize, pair[1].as_f64().expect("logit"));
            top5_err = top5_err.max((r[tid] as f64 - val).abs());
        }
    }
    (top5_err, mean_abs)
}

/// Runs every reference case on the CPU executor over the plan in `dir` (asserting the checks of
/// the module doc); returns the largest top-5 logit errors and a report.
fn check_against_reference(dir: &std::path::Path) -> (Top5Errors, String) {
    let refs = common::refs("generation-qwen2.5-coder-0.5b.json");
    let mut worst = Top5Errors { prefill: 0.0, decode: 0.0 };
    let mut loaded = backend::load(dir, BackendChoice::Cpu, Some(1024), true).expect("load on the CPU");
    let vocab = loaded.model.plan.hparams.vocab;
    let template =
        ChatTemplate::new(loaded.tokenizer.chat_template().expect("chat template")).expect("template parses");
    let mut report = Vec::new();
    for case in refs["cases"].as_array().expect("cases") {
        let id = case["id"].as_str().expect("case id");
        let input_text = case["input_text"].as_str().expect("input_text");
        if case["kind"] == "chat" {
            let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).expect("messages");
            assert_eq!(template.render(&messages, true).expect("render"), input_text, "case {id}: chat template");
        }
        let prompt = loaded.tokenizer.encode(input_text);
        assert_eq!(prompt, ids(&case["input_ids"]), "case {id}: prompt ids");

        // Greedy continuation.
        let want = ids(&case["output_ids"]);
        let margins: Vec<f64> =
            case["margins"].as_array().expect("margins").iter().map(|m| m.as_f64().expect("margin")).collect();
        let decided = margins.iter().position(|&m| m < 0.1).unwrap_or(want.len());
        loaded.session.reset();
        let opts = qwen_aot::generation::GenOptions { max_tokens: want.len(), ..Default::default() };
        let gen = generate(&mut loaded.session, &loaded.tokenizer, &prompt, &opts, |_| {}).expect("generate");
        assert!(
            gen.ids.len() >= decided,
            "case {id}: generated {} ids, reference is decided for {decided}",
            gen.ids.len()
        );
        assert_eq!(
            gen.ids[..decided],
            want[..decided],
            "case {id}: greedy ids differ within the decided prefix ({decided} tokens)"
        );

        // Teacher-forced log-probs and top-5 logits of the reference continuation: one prefill.
        loaded.session.reset();
        let full: Vec<u32> = prompt.iter().chain(&want).copied().collect();
        let logits = loaded.session.prefill(&full, LogitsWanted::All).expect("teacher-forced prefill").logits;
        let row = |j: usize| &logits[(prompt.len() - 1 + j) * vocab..(prompt.len() + j) * vocab];
        let (top5_err, mean_abs) = compare(case, &want, row);

        // The same, one token at a time through decode (the prompt but its last token prefilled).
        loaded.session.reset();
        let (head, last) = prompt.split_at(prompt.len() - 1);
        if !head.is_empty() {
            loaded.session.prefill(head, LogitsWanted::None).expect("prompt prefill");
        }
        let mut rows = Vec::with_capacity(want.len());
        for &t in last.iter().chain(&want[..want.len() - 1]) {
            rows.push(loaded.session.decode(t, true).expect("teacher-forced decode").logits);
        }
        let (dec_top5_err, dec_mean_abs) = compare(case, &want, |j| rows[j].as_slice());

        report.push(format!(
            "case {id}: decided {decided}/{} ids equal; mean |Δlogprob| {mean_abs:.4} (decoded {dec_mean_abs:.4}); \
             max |Δtop5 logit| {top5_err:.5} (decoded {dec_top5_err:.5})",
            want.len()
        ));
        for (what, mean_abs, top5_err) in [("", mean_abs, top5_err), ("decoded: ", dec_mean_abs, dec_top5_err)] {
            assert!(mean_abs <= 0.02, "case {id}: {what}teacher-forced mean |Δlogprob| = {mean_abs}");
            assert!(top5_err <= 0.05, "case {id}: {what}top-5 logits differ by {top5_err}");
        }
        worst.prefill = worst.prefill.max(top5_err);
        worst.decode = worst.decode.max(dec_top5_err);
    }
    (worst, report.join("\n"))
}
