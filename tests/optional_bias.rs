//! Models without q/k/v biases (Llama-style attention): the description's biases are optional,
//! so such a model compiles into a plan whose bias+RoPE+KV write steps carry no bias, the CPU
//! executor adds 0.0 there, and the logits equal, bit for bit, those of the same model with its
//! biases stored as zeros -- through prefill (the `BiasRopeKvWrite` step) and decode (the GEMV
//! epilogue). The plan validator accepts a step without a bias and still checks one that has it.
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::source::MemorySource;
use qwen_aot_compiler::synthetic::{
    default_model_mix, multi_window_hparams, random_model_mix, remove_qkv_bias, zero_qkv_bias, FormatMix,
};
use qwen_aot_runtime::compiled::{validate, CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::{Executor, LogitsWanted};
use qwen_aot_runtime::plan::{GemvEpilogue, HyperParams, Plan, RopeKvWrite, Step, WeightId};

fn hp() -> HyperParams {
    HyperParams { ffn: 512, vocab: 97, context_length: 64, ..multi_window_hparams() }
}

/// Compiles `src` (prefill chunks of 4 rows) into a fresh directory and opens it.
fn compile(src: &MemorySource, dir: &tempfile::TempDir, name: &str) -> CompiledModel {
    let opts = CompileOptions { prefill_tokens: 4, ..Default::default() };
    let mut compiled = build(&hp(), src, name, &opts).unwrap();
    let out = dir.path().join(name);
    write_dir(&mut compiled, src, None, &out, |_| {}).unwrap();
    CompiledModel::open(&out, Integrity::Full).unwrap()
}

/// Every bias+RoPE+KV write of the plan (steps and GEMV epilogues), prefill and decode.
fn ropes(plan: &Plan) -> Vec<RopeKvWrite> {
    plan.prefill
        .steps
        .iter()
        .chain(&plan.decode.steps)
        .filter_map(|s| match s {
            Step::BiasRopeKvWrite { rope, .. }
            | Step::Gemv { epilogue: GemvEpilogue::BiasRopeKvWrite { rope, .. }, .. } => Some(*rope),
            _ => None,
        })
        .collect()
}

/// Prefill of 9 tokens (three chunks, every row's logits) and 5 decode steps: every logit.
fn logits(model: &CompiledModel) -> Vec<f32> {
    let mut exec = CpuExecutor::new(model, 64).unwrap();
    let prompt: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % 97).collect();
    let mut all = Vec::new();
    for (c, chunk) in prompt.chunks(4).enumerate() {
        all.extend(exec.prefill(chunk, c * 4, LogitsWanted::All).unwrap().logits);
    }
    let mut next = 11;
    for i in 0..5 {
        let step = exec.decode(next, prompt.len() + i, true).unwrap();
        all.extend_from_slice(&step.logits);
        next = step.next_token;
    }
    assert_eq!(all.len(), (9 + 5) * 97);
    all
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// No bias vs an all-zero bias: identical logits; the stored bias is the only difference in the
/// plans; the biased original differs (the bias is really applied).
#[test]
fn no_bias_equals_an_all_zero_bias_bit_for_bit() {
    for (label, mix) in [("f16", FormatMix::f16()), ("q5_0|q8_0", default_model_mix())] {
        let original = random_model_mix(&hp(), false, 21, &mix);
        let (mut none, mut zero) = (original.clone(), original.clone());
        remove_qkv_bias(&mut none);
        zero_qkv_bias(&mut zero);
        let dir = tempfile::tempdir().unwrap();
        let (m_none, m_zero, m_orig) =
            (compile(&none, &dir, "none"), compile(&zero, &dir, "zero"), compile(&original, &dir, "original"));

        let (r_none, r_zero) = (ropes(&m_none.plan), ropes(&m_zero.plan));
        assert_eq!(r_none.len(), 4, "{label}: one step per layer and program");
        assert!(r_none.iter().all(|r| r.bias.is_none()), "{label}: {r_none:?}");
        assert!(r_zero.iter().all(|r| r.bias.is_some()), "{label}: {r_zero:?}");
        assert!(!m_none.plan.weights.iter().any(|w| w.name.contains(".bias")), "{label}: a bias weight without biases");
        // The zero-bias plan has exactly one more weight per layer (the packed q|k|v bias).
        assert_eq!(m_zero.plan.weights.len(), m_none.plan.weights.len() + 2, "{label}");
        // In plan.json the field is absent, not null: plans with a bias read as before it was optional.
        let text = std::fs::read_to_string(m_none.dir.join("plan.json")).unwrap();
        assert!(!text.contains("\"bias\""), "{label}: plan.json names a bias");

        let (l_none, l_zero, l_orig) = (logits(&m_none), logits(&m_zero), logits(&m_orig));
        assert!(bits(&l_none) == bits(&l_zero), "{label}: no bias and a zero bias give different logits");
        let moved = l_none.iter().zip(&l_orig).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{label}: the biased model's logits moved by only {moved}");
    }
}

/// The validator: a bias-less bias+RoPE+KV write is valid; a bias is still checked when present
/// (it must exist and be an F32 vector of the packed q|k|v length).
#[test]
fn plan_validation_of_optional_biases() {
    let dir = tempfile::tempdir().unwrap();
    let mut biased = random_model_mix(&hp(), false, 3, &FormatMix::f16());
    let with = compile(&biased, &dir, "with");
    remove_qkv_bias(&mut biased);
    let without = compile(&biased, &dir, "without");
    assert_eq!(validate(&without.plan), Ok(()));

    // Dropping every bias of a biased plan leaves a valid (bias-less) plan.
    let mut plan = with.plan.clone();
    set_biases(&mut plan, |_| None);
    assert_eq!(validate(&plan), Ok(()));

    let packed = (hp().n_heads + 2 * hp().n_kv_heads) * hp().head_dim;
    let find = |pred: &dyn Fn(&qwen_aot_runtime::plan::WeightInfo) -> bool| {
        WeightId(with.plan.weights.iter().position(pred).expect("such a weight") as u32)
    };
    let norm = find(&|w| w.name == "blk.0.attn_norm.weight");
    let matrix = find(&|w| w.shape.len() == 2);
    let cases: [(&str, Option<WeightId>, String); 3] = [
        ("a weight that does not exist", Some(WeightId(9999)), "weight 9999 does not exist".into()),
        (
            "a vector of the wrong length",
            Some(norm),
            format!("weight blk.0.attn_norm.weight is [256] where Vector[{packed}] is needed"),
        ),
        ("a matrix", Some(matrix), format!("where Vector[{packed}] is needed")),
    ];
    for (what, bias, message) in cases {
        let mut plan = with.plan.clone();
        set_biases(&mut plan, |_| bias);
        let err = validate(&plan).expect_err(what).to_string();
        assert!(err.starts_with("prefill: ") && err.contains(&message), "{what}: {err}");
    }
}

/// Sets the bias of every bias+RoPE+KV write (steps and epilogues) in both programs.
fn set_biases(plan: &mut Plan, f: impl Fn(Option<WeightId>) -> Option<WeightId>) {
    for s in plan.prefill.steps.iter_mut().chain(plan.decode.steps.iter_mut()) {
        match s {
            Step::BiasRopeKvWrite { rope, .. }
            | Step::Gemv { epilogue: GemvEpilogue::BiasRopeKvWrite { rope, .. }, .. } => rope.bias = f(rope.bias),
            _ => {}
        }
    }
}
