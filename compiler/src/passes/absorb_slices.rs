//! A fused consumer whose inputs are contiguous slices covering one whole value in order (the
//! q|k|v slices of a concatenated projection for `bias_rope_kv_write`; gate|up for `swiglu`)
//! reads that packed value directly instead. The slices are left for dead-node elimination.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

/// The value `inputs` tile exactly, if they are slices `[0..a], [a..b], ...` of one value.
fn packed_source(g: &OpGraph, inputs: &[Value]) -> Option<Value> {
    let mut src = None;
    let mut next = 0;
    for v in inputs {
        let Op::Slice { start, len } = *g.op(v.node) else { return None };
        let s = g.inputs(v.node)[0];
        if *src.get_or_insert(s) != s || start != next {
            return None;
        }
        next += len;
    }
    let s = src?;
    (g.cols(s) == next).then_some(s)
}

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for n in g.find(|op| matches!(op, Op::BiasRopeKvWrite(_) | Op::SwiGlu { .. })) {
        let ins = g.inputs(n);
        if ins.len() < 2 {
            continue;
        }
        if let Some(packed) = packed_source(g, &ins) {
            g.set_inputs(n, &[packed]);
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::super::{concat_matmuls, fuse_attention, fuse_bias_rope_kv, fuse_swiglu};
    use super::*;

    #[test]
    fn fused_consumers_read_the_packed_projection() {
        let mut g = tiny_layer();
        for p in [fuse_attention::run, fuse_bias_rope_kv::run, fuse_swiglu::run, concat_matmuls::run] {
            p(&mut g).unwrap();
        }
        assert_eq!(run(&mut g).unwrap(), 2);
        for n in g.find(|op| matches!(op, Op::BiasRopeKvWrite(_) | Op::SwiGlu { .. })) {
            let ins = g.inputs(n);
            assert_eq!(ins.len(), 1);
            assert!(matches!(g.op(ins[0].node), Op::MatMul { .. }), "reads the concatenated matmul");
        }
    }

    #[test]
    fn out_of_order_slices_are_not_absorbed() {
        let mut g = tiny_layer();
        for p in [fuse_swiglu::run, concat_matmuls::run] {
            p(&mut g).unwrap();
        }
        let s = g.find(|op| matches!(op, Op::SwiGlu { .. }))[0];
        let ins = g.inputs(s);
        g.set_inputs(s, &[ins[1], ins[0]]);
        assert_eq!(run(&mut g).unwrap(), 0);
    }
}
