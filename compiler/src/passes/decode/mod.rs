//! Decode-only passes: they run on a copy of the fused graph from which the decode program (one
//! row, GEMV kernels) is emitted. The prefill program keeps the fused graph as it is: its matmuls
//! run on cuBLAS, where a norm in the prologue or an epilogue on the product would need kernels of
//! their own.
//!
//! Every matmul becomes a `gemv`, then its neighbours move into it: the residual add of the
//! following add+norm (the norm stays behind, reading the GEMV's sum), the RMS norm that feeds it
//! (applied as x is read), and the SwiGLU or bias+RoPE+KV write that consumes its product. Per
//! Qwen2 layer this leaves 5 launches instead of 9 (see experiments/LOG.md).
mod gemv_epilogue;
mod gemv_from_matmul;
mod gemv_norm;
mod gemv_residual;

use super::Pass;
use crate::graph::{GemvEpi, Op, OpGraph, Value};
use petgraph::stable_graph::NodeIndex;

/// The one step reading `v`, when `v` is the product of a plain GEMV (it only stores: no residual
/// add yet, not the LM head) -- the GEMVs the residual and epilogue passes may still extend.
fn plain_gemv_sole_reader(g: &OpGraph, v: Value) -> Option<NodeIndex> {
    let plain = matches!(g.op(v.node), Op::Gemv { epilogue: GemvEpi::Store { residual: false, logits: false }, .. });
    if plain {
        g.sole_consumer(v)
    } else {
        None
    }
}

/// The decode pipeline, in order (run after [`super::PASSES`]): the residual pass splits each
/// add+norm so that the norm pass can then fold every norm into the GEMV reading it.
pub const DECODE_PASSES: &[Pass] = &[
    Pass { name: "gemv_from_matmul", run: gemv_from_matmul::run },
    Pass { name: "gemv_absorb_residual", run: gemv_residual::run },
    Pass { name: "gemv_absorb_norm", run: gemv_norm::run },
    Pass { name: "gemv_absorb_epilogue", run: gemv_epilogue::run },
];

#[cfg(test)]
pub(crate) mod test_util {
    use crate::graph::OpGraph;

    /// The tiny layer after the shared passes and the first `decode_passes` decode passes.
    pub fn decode_layer(decode_passes: usize) -> OpGraph {
        let mut g = super::super::test_util::tiny_layer();
        super::super::run_all(&mut g).unwrap();
        for p in &super::DECODE_PASSES[..decode_passes] {
            (p.run)(&mut g).unwrap();
        }
        g
    }
}
