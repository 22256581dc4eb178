//! `attn_scores(q, kv) -> scale -> causal_mask -> softmax -> attn_context(·, kv)`
//! becomes one `attention(q, kv)` with the scale folded in: the scores never touch memory.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for s in g.find(|op| matches!(op, Op::AttnScores { .. })) {
        let Op::AttnScores { layer, heads, kv_heads, head_dim } = g.op(s).clone() else { continue };
        let Some(scale_n) = g.sole_consumer(Value::new(s, 0)) else { continue };
        let Op::Scale { factor } = *g.op(scale_n) else { continue };
        let Some(mask) = g.sole_consumer(Value::new(scale_n, 0)).filter(|&n| *g.op(n) == Op::CausalMask) else {
            continue;
        };
        let Some(soft) = g.sole_consumer(Value::new(mask, 0)).filter(|&n| *g.op(n) == Op::Softmax) else { continue };
        let Some(ctx) = g.sole_consumer(Value::new(soft, 0)) else { continue };
        if !matches!(g.op(ctx), Op::AttnContext { .. }) {
            continue;
        }
        let inputs = g.inputs(s);
        let (cols, label) = (g.node(ctx).out_cols.clone(), g.node(ctx).label.clone());
        let fused = g.add(Op::Attention { layer, heads, kv_heads, head_dim, scale: factor }, cols, label, &inputs);
        g.redirect(Value::new(ctx, 0), Value::new(fused, 0));
        for n in [s, scale_n, mask, soft, ctx] {
            g.remove(n);
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::*;

    #[test]
    fn folds_the_five_attention_ops_into_one() {
        let mut g = tiny_layer();
        let before = g.op_histogram();
        assert!(before.contains(&("softmax", 1)) && before.contains(&("attn_scores", 1)));
        assert_eq!(run(&mut g).unwrap(), 1);
        let after = g.op_histogram();
        for gone in ["attn_scores", "scale", "causal_mask", "softmax", "attn_context"] {
            assert!(!after.iter().any(|(n, _)| *n == gone), "{gone} survived: {after:?}");
        }
        let att = g.find(|op| matches!(op, Op::Attention { .. }));
        assert_eq!(att.len(), 1);
        let Op::Attention { scale, .. } = g.op(att[0]) else { unreachable!() };
        assert_eq!(*scale, 0.25, "1/sqrt(16)");
        // q comes from the rope, and the attention is still ordered after the KV write.
        let ins = g.inputs(att[0]);
        assert!(matches!(g.op(ins[0].node), Op::Rope { .. }));
        assert!(matches!(g.op(ins[1].node), Op::KvWrite { .. }));
        // The output projection now reads the fused node.
        assert!(g.consumers(Value::new(att[0], 0)).iter().any(|(n, _)| matches!(g.op(*n), Op::MatMul { .. })));
    }

    #[test]
    fn leaves_a_shared_intermediate_alone() {
        let mut g = tiny_layer();
        let soft = g.find(|op| *op == Op::Softmax)[0];
        g.outputs.push(("probs".into(), Value::new(soft, 0)));
        assert_eq!(run(&mut g).unwrap(), 0);
    }
}
