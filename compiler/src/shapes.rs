//! Every GGUF tensor the architecture reads, checked against the shape the metadata gives it,
//! before any pass runs. On the unfused graph each weight is still one GGUF tensor with its own
//! sizes, so a wrong tensor is named as the file names it (`blk.0.ffn_gate.weight`, not the fused
//! `blk.0.ffn_gate.weight+blk.0.ffn_up.weight`) with its full expected shape (`[896, 4864]`, not a
//! row length and a placeholder): what a user needs to find the fault in the file.
use qwen_aot_plan::HyperParams;

use crate::error::CompileError;
use crate::graph::{Op, OpGraph, WeightRef};
use crate::source::TensorSource;

/// The GGUF dims (`dims[0]` the row length) an op of the unfused graph needs of its weight, with
/// the tensor's name; `None` for ops without one.
fn expected_dims<'a>(op: &'a Op, out_cols: &[usize], hp: &HyperParams) -> Option<(&'a WeightRef, Vec<u64>)> {
    let dims = |d: &[usize]| d.iter().map(|&x| x as u64).collect();
    match op {
        Op::MatMul { weight, n, k, .. } => Some((weight, dims(&[*k, *n]))),
        Op::Embedding { table } => Some((table, dims(&[out_cols[0], hp.vocab]))),
        Op::RmsNorm { weight, .. } => Some((weight, dims(&[out_cols[0]]))),
        Op::BiasAdd { bias } => Some((bias, dims(&[out_cols[0]]))),
        _ => None,
    }
}

/// Checks the shape of every tensor `unfused` (the lowered, unfused graph) reads from `src`.
pub fn check_tensor_shapes(unfused: &OpGraph, hp: &HyperParams, src: &dyn TensorSource) -> Result<(), CompileError> {
    for n in unfused.nodes() {
        let node = unfused.node(n);
        let Some((weight, expected)) = expected_dims(&node.op, &node.out_cols, hp) else { continue };
        for name in weight.parts() {
            let found = src.dims(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))?;
            if found != expected {
                return Err(CompileError::TensorShape { name: name.to_string(), found, expected });
            }
        }
    }
    Ok(())
}
