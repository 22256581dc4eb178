//! `mul(silu(gate), up)` becomes `swiglu(gate, up)`: the activation is applied on the fly and
//! the silu result never touches memory.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for m in g.find(|op| *op == Op::Mul) {
        let ins = g.inputs(m);
        let Some(silu_slot) = ins.iter().position(|v| *g.op(v.node) == Op::Silu && g.sole_consumer(*v) == Some(m))
        else {
            continue;
        };
        let silu = ins[silu_slot].node;
        let gate = g.inputs(silu)[0];
        let up = ins[1 - silu_slot];
        let ffn = g.cols(Value::new(m, 0));
        let label = g.node(m).label.clone();
        let fused = g.add(Op::SwiGlu { ffn }, vec![ffn], label, &[gate, up]);
        g.redirect(Value::new(m, 0), Value::new(fused, 0));
        g.remove(m);
        g.remove(silu);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::*;

    #[test]
    fn fuses_silu_and_mul() {
        let mut g = tiny_layer();
        assert_eq!(run(&mut g).unwrap(), 1);
        let h = g.op_histogram();
        assert!(!h.iter().any(|(n, _)| *n == "silu" || *n == "mul"), "{h:?}");
        let s = g.find(|op| matches!(op, Op::SwiGlu { .. }))[0];
        assert_eq!(*g.op(s), Op::SwiGlu { ffn: 24 });
        let ins = g.inputs(s);
        assert_eq!(g.node(ins[0].node).label, "blk.0.g", "gate first");
        assert_eq!(g.node(ins[1].node).label, "blk.0.u", "up second");
    }
}
