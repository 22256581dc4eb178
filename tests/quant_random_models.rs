//! The random quantized models at their real shapes (the default model's mix at 0.5B, 24 layers;
//! the Q4_K_M mix at 1.5B, 28 layers) stay numerically sane through all their layers on the CPU
//! executor: finite logits of a moderate spread, and not one constant row (about 10 s on two
//! cores: a 1.5B-shaped CPU forward pass).
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{
    compile_random, default_model_mix, q4_k_m_1_5b_mix, qwen05b_hparams, qwen15b_hparams, FormatMix,
};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::LogitsWanted;
use qwen_aot_runtime::plan::HyperParams;
use qwen_aot_runtime::session::Session;

fn logit_spread(hp: &HyperParams, tied: bool, mix: &FormatMix) -> (f32, f32) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let hp = HyperParams { context_length: 64, ..hp.clone() };
    compile_random(&hp, tied, 3, mix, &CompileOptions { prefill_tokens: 8, ..Default::default() }, &dir).unwrap();
    let model = CompiledModel::open(&dir, Integrity::Sampled).unwrap();
    let mut s = Session::new(Box::new(CpuExecutor::new(&model, 64).unwrap()));
    let logits = s.prefill(&[11, 2200, 7, 90000, 5], LogitsWanted::Last).unwrap().logits;
    assert!(logits.iter().all(|v| v.is_finite()));
    let n = logits.len() as f32;
    let mean = logits.iter().sum::<f32>() / n;
    let std = (logits.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    (mean, std)
}

#[test]
fn the_default_models_mix_at_05b_shapes_is_sane() {
    let (mean, std) = logit_spread(&qwen05b_hparams(24), false, &default_model_mix());
    eprintln!("0.5B default mix: logits mean {mean}, std {std}");
    assert!(std > 0.1 && std < 100.0 && mean.abs() < 10.0 * std, "mean {mean} std {std}");
}

#[test]
fn the_q4_k_m_mix_at_15b_shapes_is_sane() {
    let (mean, std) = logit_spread(&qwen15b_hparams(), true, &q4_k_m_1_5b_mix());
    eprintln!("1.5B Q4_K_M mix: logits mean {mean}, std {std}");
    assert!(std > 0.1 && std < 100.0 && mean.abs() < 10.0 * std, "mean {mean} std {std}");
}
