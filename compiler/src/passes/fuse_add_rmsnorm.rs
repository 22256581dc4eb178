//! `rms_norm(add(a, b))` becomes `add_rms_norm(a, b)` with two outputs: the sum (the residual
//! stream, still read by the next residual add) and the normalised row. One pass over the row
//! instead of two, and one launch instead of two.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for norm in g.find(|op| matches!(op, Op::RmsNorm { .. })) {
        let Op::RmsNorm { weight, eps } = g.op(norm).clone() else { continue };
        let src = g.inputs(norm)[0];
        if *g.op(src.node) != Op::Add {
            continue;
        }
        let add = src.node;
        let ins = g.inputs(add);
        let cols = g.cols(src);
        let label = g.node(norm).label.clone();
        let fused = g.add(Op::AddRmsNorm { weight, eps }, vec![cols, cols], label, &ins);
        g.redirect(Value::new(norm, 0), Value::new(fused, 1));
        g.redirect(Value::new(add, 0), Value::new(fused, 0));
        g.remove(norm);
        g.remove(add);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::*;

    #[test]
    fn fuses_the_residual_add_into_the_following_norm() {
        let mut g = tiny_layer();
        // tiny_layer: embedding -> norm (no add before it) ... add -> ffn norm ... add -> final norm.
        assert_eq!(run(&mut g).unwrap(), 2);
        let h = g.op_histogram();
        assert!(h.contains(&("rms_norm", 1)), "the first norm reads the embedding and stays: {h:?}");
        assert!(h.contains(&("add_rms_norm", 2)) && !h.iter().any(|(n, _)| *n == "add"), "{h:?}");
        // The ffn norm's sum output is still the residual of the second add (now the final norm).
        let fused = g.find(|op| matches!(op, Op::AddRmsNorm { .. }));
        let first = fused.iter().copied().find(|&n| g.node(n).label == "blk.0.x").unwrap();
        let readers_of_sum = g.consumers(Value::new(first, 0));
        assert_eq!(readers_of_sum.len(), 1);
        assert!(matches!(g.op(readers_of_sum[0].0), Op::AddRmsNorm { .. }));
        let readers_of_norm = g.consumers(Value::new(first, 1));
        assert_eq!(readers_of_norm.len(), 2, "gate and up read the normed row");
    }
}
