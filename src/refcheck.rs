//! The whole model against an independent implementation's recorded outputs
//! (`generation-*.json`: HF transformers, float32, from the default model's GGUF dequantised to
//! f32; `tests/refs/README.md`), on any backend. For every case:
//! - the prompt ids equal the reference's `input_ids` (tokenizer + chat template);
//! - greedy ids equal the reference's up to the first position whose top-1/top-2 margin is below
//!   0.1 (past that, a correct engine may take the other branch);
//! - the reference continuation's teacher-forced log-probs (mean |Δ|) and the top-5 logits of its
//!   first 16 positions (max |Δ|), from one multi-row prefill and again fed one token at a time
//!   through decode (decode runs other code: the one-row GEMVs, the graph, the integer dot);
//! - where the backend can verify drafts, the greedy continuation again with speculative decoding
//!   (prompt lookup, drafts of up to 8 tokens): its ids must equal the plain run's, every one.
//!
//! `tests/reference_model.rs` runs it on the CPU executor; `qwen-aot refcheck` on the GPU.
use std::path::Path;

use anyhow::{bail, Context, Result};
use qwen_aot_runtime::chat_template::{ChatMessage, ChatTemplate};
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::speculative::NgramDrafter;
use serde_json::Value;

use crate::backend::{self, BackendChoice};
use crate::generation::{generate, GenOptions};
use crate::perplexity::nll;

/// Largest mean |Δlogprob| a case may show (teacher-forced, prefill or decoded).
pub const MAX_MEAN_ABS_LOGPROB: f64 = 0.02;
/// Largest |Δ| of a recorded top-5 logit (real errors move them by whole units).
pub const MAX_TOP5_LOGIT: f64 = 0.05;
/// Reference positions whose top-1/top-2 margin is below this are undecided.
const DECIDED_MARGIN: f64 = 0.1;

/// One reference case's comparison.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    /// The chat template renders the case's messages to its `input_text` (chat cases only).
    pub template_ok: bool,
    pub prompt_ok: bool,
    /// Greedy ids equal the reference within the decided prefix.
    pub greedy_ok: bool,
    pub decided: usize,
    pub n_ref: usize,
    pub mean_abs: f64,
    pub top5: f64,
    pub decoded_mean_abs: f64,
    pub decoded_top5: f64,
    /// The speculative run, where the backend has a multi-row verify.
    pub speculative: Option<SpeculativeRun>,
}

/// The greedy continuation generated with speculative decoding.
#[derive(Debug, Clone, Copy)]
pub struct SpeculativeRun {
    /// Its ids equal the plain run's (all of them).
    pub same_ids: bool,
    pub drafted: usize,
    pub accepted: usize,
}

impl CaseResult {
    /// What is wrong with this case, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let id = &self.id;
        if !self.template_ok {
            f.push(format!("case {id}: the chat template renders another input_text"));
        }
        if !self.prompt_ok {
            f.push(format!("case {id}: prompt ids differ from the reference's"));
        }
        if !self.greedy_ok {
            f.push(format!("case {id}: greedy ids differ within the decided prefix ({} tokens)", self.decided));
        }
        if self.speculative.is_some_and(|s| !s.same_ids) {
            f.push(format!("case {id}: speculative decoding generated other ids than plain decoding"));
        }
        for (what, mean_abs, top5) in
            [("", self.mean_abs, self.top5), ("decoded: ", self.decoded_mean_abs, self.decoded_top5)]
        {
            if mean_abs > MAX_MEAN_ABS_LOGPROB || mean_abs.is_nan() {
                f.push(format!("case {id}: {what}teacher-forced mean |Δlogprob| = {mean_abs}"));
            }
            if top5 > MAX_TOP5_LOGIT || top5.is_nan() {
                f.push(format!("case {id}: {what}top-5 logits differ by {top5}"));
            }
        }
        f
    }

    pub fn describe(&self) -> String {
        let speculative = match self.speculative {
            Some(s) => format!("; speculative: same ids {}, drafts {}/{} accepted", s.same_ids, s.accepted, s.drafted),
            None => String::new(),
        };
        format!(
            "case {}: decided {}/{} ids equal: {}; mean |Δlogprob| {:.4} (decoded {:.4}); max |Δtop5 logit| {:.5} \
             (decoded {:.5}){speculative}",
            self.id,
            self.decided,
            self.n_ref,
            self.greedy_ok,
            self.mean_abs,
            self.decoded_mean_abs,
            self.top5,
            self.decoded_top5
        )
    }
}

/// Every case's comparison.
#[derive(Debug, Clone)]
pub struct RefReport {
    pub cases: Vec<CaseResult>,
}

impl RefReport {
    /// The largest top-5 logit error over every case: (teacher-forced prefill, decoded).
    pub fn worst_top5(&self) -> (f64, f64) {
        self.cases.iter().fold((0.0, 0.0), |(p, d), c| (p.max(c.top5), d.max(c.decoded_top5)))
    }

    pub fn failures(&self) -> Vec<String> {
        self.cases.iter().flat_map(CaseResult::failures).collect()
    }

    pub fn render(&self) -> String {
        self.cases.iter().map(CaseResult::describe).collect::<Vec<_>>().join("\n")
    }
}

/// Reads a reference file (`generation-*.json`) and refuses one with nothing to check
/// ([`reference_cases`]) before any model is loaded.
pub fn load_refs(path: &Path) -> Result<Value> {
    let text = crate::text_file::read_utf8(path, crate::text_file::MAX_REFS_FILE_BYTES, "a reference file")?;
    let refs: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not a reference file", path.display()))?;
    reference_cases(&refs).with_context(|| path.display().to_string())?;
    Ok(refs)
}

/// The file's cases, each with something to compare. An empty list, or a case without recorded
/// top-5 logits, would otherwise pass having checked nothing (`refcheck PASS` over 0 cases; a
/// top-5 error of 0 from no comparisons), which reads as agreement with the reference.
pub fn reference_cases(refs: &Value) -> Result<&[Value]> {
    let cases = refs["cases"].as_array().context("the reference file has no cases")?;
    if cases.is_empty() {
        bail!("the reference file's case list is empty: there is nothing to check");
    }
    for (i, case) in cases.iter().enumerate() {
        let id = case["id"].as_str().map_or_else(|| format!("#{i}"), str::to_string);
        let top5 = case["top5_first16"].as_array().with_context(|| format!("case {id}: top5_first16: not an array"))?;
        if top5.is_empty() {
            bail!("case {id}: top5_first16 is empty: the case records no top-5 logits to compare");
        }
        if let Some(j) = top5.iter().position(|p| p.as_array().is_none_or(Vec::is_empty)) {
            bail!("case {id}: top5_first16[{j}] holds no [token id, logit] pairs");
        }
    }
    Ok(cases)
}

fn ids(v: &Value, what: &str) -> Result<Vec<u32>> {
    let arr = v.as_array().with_context(|| format!("{what}: not an array"))?;
    arr.iter()
        .map(|x| {
            x.as_u64().filter(|&i| i <= u32::MAX as u64).map(|i| i as u32).with_context(|| format!("{what}: not an id"))
        })
        .collect()
}

fn f64s(v: &Value, what: &str) -> Result<Vec<f64>> {
    let arr = v.as_array().with_context(|| format!("{what}: not an array"))?;
    arr.iter().map(|x| x.as_f64().with_context(|| format!("{what}: not a number"))).collect()
}

/// Mean |Δlogprob| of the reference tokens and the largest |Δ| of its recorded top-5 logits over
/// its first 16 positions (`row(j)`: the logits after the prompt and `j` reference tokens).
fn compare<'a>(case: &Value, want: &[u32], vocab: usize, row: impl Fn(usize) -> &'a [f32]) -> Result<(f64, f64)> {
    let ref_lp = f64s(&case["teacher_forced"]["token_logprobs"], "teacher_forced.token_logprobs")?;
    if ref_lp.len() != want.len() {
        bail!("teacher_forced.token_logprobs has {} entries for {} output ids", ref_lp.len(), want.len());
    }
    let mean_abs = want.iter().enumerate().map(|(j, &t)| (-nll(row(j), t) - ref_lp[j]).abs()).sum::<f64>()
        / want.len().max(1) as f64;
    let mut top5 = 0.0f64;
    let positions = case["top5_first16"].as_array().context("top5_first16: not an array")?;
    for (j, pairs) in positions.iter().enumerate().take(want.len()) {
        let r = row(j);
        for pair in pairs.as_array().context("top5_first16: not pairs")? {
            let tid = pair[0].as_u64().filter(|&t| (t as usize) < vocab).context("top5_first16: bad token id")?;
            let val = pair[1].as_f64().context("top5_first16: bad logit")?;
            top5 = top5.max((r[tid as usize] as f64 - val).abs());
        }
    }
    Ok((mean_abs, top5))
}

/// Runs every case of `refs` on the compiled model in `dir` with `backend`.
pub fn check_against_reference(dir: &Path, backend: BackendChoice, refs: &Value) -> Result<RefReport> {
    // Refused before the model loads: a file with nothing to compare is not a pass.
    let ref_cases = reference_cases(refs)?;
    let mut loaded = backend::load(dir, backend, Some(1024), true)?;
    let vocab = loaded.model.plan.hparams.vocab;
    let template = ChatTemplate::new(loaded.tokenizer.chat_template().context("the model has no chat template")?)?;
    let mut cases = Vec::new();
    for case in ref_cases {
        let id = case["id"].as_str().context("case id")?.to_string();
        let input_text = case["input_text"].as_str().context("input_text")?;
        let template_ok = if case["kind"] == "chat" {
            let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).context("messages")?;
            template.render(&messages, true)? == input_text
        } else {
            true
        };
        let prompt = loaded.tokenizer.encode(input_text);
        let prompt_ok = prompt == ids(&case["input_ids"], "input_ids")?;
        if prompt.is_empty() {
            bail!("case {id}: empty prompt");
        }

        // Greedy continuation.
        let want = ids(&case["output_ids"], "output_ids")?;
        if want.is_empty() || prompt.len() + want.len() > 1024 {
            bail!("case {id}: {} prompt and {} output ids do not fit this check", prompt.len(), want.len());
        }
        let margins = f64s(&case["margins"], "margins")?;
        let decided = margins.iter().position(|&m| m < DECIDED_MARGIN).unwrap_or(want.len()).min(want.len());
        loaded.session.reset();
        let opts = GenOptions { max_tokens: want.len(), ..Default::default() };
        let gen = generate(&mut loaded.session, &loaded.tokenizer, &prompt, &opts, |_| {})?;
        let greedy_ok = gen.ids.len() >= decided && gen.ids[..decided] == want[..decided];
        let speculative = if loaded.session.can_verify() {
            loaded.session.reset();
            let opts = GenOptions { speculation: Some(NgramDrafter::new(8)), ..opts };
            let spec = generate(&mut loaded.session, &loaded.tokenizer, &prompt, &opts, |_| {})?;
            Some(SpeculativeRun {
                same_ids: spec.ids == gen.ids,
                drafted: spec.draft_tokens,
                accepted: spec.accepted_draft_tokens,
            })
        } else {
            None
        };

        // Teacher-forced log-probs and top-5 logits of the reference continuation: one prefill.
        loaded.session.reset();
        let full: Vec<u32> = prompt.iter().chain(&want).copied().collect();
        let logits = loaded.session.prefill(&full, LogitsWanted::All)?.logits;
        let row = |j: usize| &logits[(prompt.len() - 1 + j) * vocab..(prompt.len() + j) * vocab];
        let (mean_abs, top5) = compare(case, &want, vocab, row)?;

        // The same, one token at a time through decode (the prompt but its last token prefilled).
        loaded.session.reset();
        let (head, last) = prompt.split_at(prompt.len() - 1);
        if !head.is_empty() {
            loaded.session.prefill(head, LogitsWanted::None)?;
        }
        let mut rows = Vec::with_capacity(want.len());
        for &t in last.iter().chain(&want[..want.len() - 1]) {
            rows.push(loaded.session.decode(t, true)?.logits);
        }
        let (decoded_mean_abs, decoded_top5) = compare(case, &want, vocab, |j| rows[j].as_slice())?;
        cases.push(CaseResult {
            id,
            template_ok,
            prompt_ok,
            greedy_ok,
            decided,
            n_ref: want.len(),
            mean_abs,
            top5,
            decoded_mean_abs,
            decoded_top5,
            speculative,
        });
    }
    Ok(RefReport { cases })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real_refs() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/refs/generation-qwen2.5-coder-0.5b.json");
        load_refs(&path).expect("the vendored reference file loads")
    }

    /// The vendored file's four cases pass the check; an empty case list and a case with no
    /// recorded top-5 logits (which used to print `refcheck PASS` having compared nothing) are
    /// errors that name the problem, as are a missing list and an empty top-5 position.
    #[test]
    fn a_reference_file_with_nothing_to_check_is_refused() {
        let refs = real_refs();
        let ids: Vec<&str> = reference_cases(&refs).unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "c", "d", "i"]);

        let err = |v: &Value| format!("{:#}", reference_cases(v).unwrap_err());
        let mut empty = refs.clone();
        empty["cases"] = serde_json::json!([]);
        assert_eq!(err(&empty), "the reference file's case list is empty: there is nothing to check");
        assert_eq!(err(&serde_json::json!([])), "the reference file has no cases");
        assert_eq!(err(&Value::Null), "the reference file has no cases");

        let mut no_top5 = refs.clone();
        no_top5["cases"][1]["top5_first16"] = serde_json::json!([]);
        assert_eq!(err(&no_top5), "case c: top5_first16 is empty: the case records no top-5 logits to compare");
        no_top5["cases"][1]["top5_first16"] = serde_json::json!([[], []]);
        assert_eq!(err(&no_top5), "case c: top5_first16[0] holds no [token id, logit] pairs");
        no_top5["cases"][1].as_object_mut().unwrap().remove("top5_first16");
        assert_eq!(err(&no_top5), "case c: top5_first16: not an array");
    }

    /// `load_refs` refuses such a file itself (before `refcheck` loads or compiles a model),
    /// naming the file.
    #[test]
    fn load_refs_refuses_an_empty_case_list() {
        let mut refs = real_refs();
        refs["cases"] = serde_json::json!([]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.json");
        std::fs::write(&path, refs.to_string()).unwrap();
        let err = format!("{:#}", load_refs(&path).unwrap_err());
        assert_eq!(
            err,
            format!("{}: the reference file's case list is empty: there is nothing to check", path.display())
        );
    }
}
