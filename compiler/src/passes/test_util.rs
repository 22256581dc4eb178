//! A one-layer model lowered from the shipped description, for the passes' before/after tests:
//! hidden 64, 4 query heads, 2 KV heads, head_dim 16, ffn 24, vocab 50.
use qwen_aot_plan::HyperParams;

use crate::description::{Description, QWEN2};
use crate::graph::{lower::lower, OpGraph};

pub fn tiny_hparams() -> HyperParams {
    HyperParams {
        n_layers: 1,
        hidden: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn: 24,
        vocab: 50,
        rms_eps: 1e-6,
        rope_theta: 10000.0,
        context_length: 128,
    }
}

pub fn tiny_layer() -> OpGraph {
    tiny_layer_with(&|_| true)
}

/// [`tiny_layer`] of a model that has the tensors `has` accepts (the description's optional
/// biases are left out where it has none).
pub fn tiny_layer_with(has: &dyn Fn(&str) -> bool) -> OpGraph {
    let d = Description::parse(QWEN2).unwrap();
    lower(&d, &tiny_hparams(), has).unwrap()
}
