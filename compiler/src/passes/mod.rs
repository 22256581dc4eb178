//! Compiler passes, run as one explicit ordered list. Each pass documents the pattern it
//! rewrites, returns how many rewrites it made, and has a before/after test on a small graph.
//!
//! Order matters: attention and the bias/RoPE/KV fusion look at the unfused projections; the
//! concatenation of sibling matmuls runs after them and leaves slices that `absorb_slices` then
//! folds into the fused consumers; dead-node elimination sweeps up last.
mod absorb_slices;
mod concat_matmuls;
mod dead_nodes;
pub mod decode;
mod fuse_add_rmsnorm;
mod fuse_attention;
mod fuse_bias_rope_kv;
mod fuse_swiglu;
#[cfg(test)]
pub(crate) mod test_util;

use crate::error::CompileError;
use crate::graph::OpGraph;

pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut OpGraph) -> Result<usize, CompileError>,
}

/// The pipeline, in order.
pub const PASSES: &[Pass] = &[
    Pass { name: "fuse_attention", run: fuse_attention::run },
    Pass { name: "fuse_bias_rope_kv_write", run: fuse_bias_rope_kv::run },
    Pass { name: "fuse_swiglu", run: fuse_swiglu::run },
    Pass { name: "fuse_add_rmsnorm", run: fuse_add_rmsnorm::run },
    Pass { name: "concat_sibling_matmuls", run: concat_matmuls::run },
    Pass { name: "absorb_slices", run: absorb_slices::run },
    Pass { name: "eliminate_dead_nodes", run: dead_nodes::run },
];

/// Runs every pass in order; returns (pass name, rewrites) for the report.
pub fn run_all(g: &mut OpGraph) -> Result<Vec<(&'static str, usize)>, CompileError> {
    PASSES.iter().map(|p| Ok((p.name, (p.run)(g)?))).collect()
}

/// Runs the decode passes ([`decode::DECODE_PASSES`]) on a graph that went through [`run_all`].
pub fn run_decode(g: &mut OpGraph) -> Result<Vec<(&'static str, usize)>, CompileError> {
    decode::DECODE_PASSES.iter().map(|p| Ok((p.name, (p.run)(g)?))).collect()
}
