//! For each KV write fed by `rope(bias_add(k))` and `bias_add(v)`, with the layer's query
//! `rope(bias_add(q))` read by the attention that follows, builds one
//! `bias_rope_kv_write(q, k, v)` that adds the (concatenated) biases, rotates q and k and writes
//! K/V into the cache, outputting the rotated q and the ordering token.
use petgraph::stable_graph::NodeIndex;

use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value, WeightRef};

/// `bias_add(x)` with a single consumer: returns (node, raw input, bias tensor name).
fn bias_of(g: &OpGraph, v: Value) -> Option<(NodeIndex, Value, String)> {
    match g.op(v.node) {
        Op::BiasAdd { bias: WeightRef::Tensor(b) } if g.sole_consumer(v).is_some() => {
            Some((v.node, g.inputs(v.node)[0], b.clone()))
        }
        _ => None,
    }
}

/// A rope's attributes: (heads, head_dim, theta).
type RopeAttrs = (usize, usize, f32);

/// `rope(bias_add(x))`, each with one consumer: (rope node, bias node, raw input, bias, rope attrs).
fn rope_of(g: &OpGraph, v: Value) -> Option<(NodeIndex, NodeIndex, Value, String, RopeAttrs)> {
    let Op::Rope { heads, head_dim, theta } = *g.op(v.node) else { return None };
    g.sole_consumer(v)?;
    let (b, raw, bias) = bias_of(g, g.inputs(v.node)[0])?;
    Some((v.node, b, raw, bias, (heads, head_dim, theta)))
}

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for kw in g.find(|op| matches!(op, Op::KvWrite { .. })) {
        let Op::KvWrite { layer, kv_heads, head_dim } = *g.op(kw) else { continue };
        let ins = g.inputs(kw);
        let Some((k_rope, k_bias, k_raw, kb, (kh, kd, k_theta))) = rope_of(g, ins[0]) else { continue };
        let Some((v_bias, v_raw, vb)) = bias_of(g, ins[1]) else { continue };
        // The query: input 0 of the attention reading this cache.
        let readers = g.consumers(Value::new(kw, 0));
        let Some(&(att, _)) =
            readers.iter().find(|(n, _)| matches!(g.op(*n), Op::Attention { .. } | Op::AttnScores { .. }))
        else {
            continue;
        };
        let Some((q_rope, q_bias, q_raw, qb, (heads, qd, q_theta))) = rope_of(g, g.inputs(att)[0]) else { continue };
        if kh != kv_heads || kd != head_dim || qd != head_dim || q_theta != k_theta {
            return Err(CompileError::Graph(format!(
                "layer {layer}: q/k rope and kv_write disagree on heads or head_dim"
            )));
        }
        let cols = vec![g.cols(Value::new(q_rope, 0)), 0];
        let label = g.node(kw).label.replace(".kv", ".qkv");
        let fused = g.add(
            Op::BiasRopeKvWrite {
                bias: WeightRef::Concat(vec![qb, kb, vb]),
                layer,
                heads,
                kv_heads,
                head_dim,
                theta: q_theta,
            },
            cols,
            label,
            &[q_raw, k_raw, v_raw],
        );
        g.redirect(Value::new(q_rope, 0), Value::new(fused, 0));
        g.redirect(Value::new(kw, 0), Value::new(fused, 1));
        for n in [q_rope, q_bias, k_rope, k_bias, v_bias, kw] {
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
    fn fuses_biases_ropes_and_the_cache_write() {
        let mut g = tiny_layer();
        super::super::fuse_attention::run(&mut g).unwrap();
        assert_eq!(run(&mut g).unwrap(), 1);
        let h = g.op_histogram();
        for gone in ["bias_add", "rope", "kv_write"] {
            assert!(!h.iter().any(|(n, _)| *n == gone), "{gone} survived: {h:?}");
        }
        let f = g.find(|op| matches!(op, Op::BiasRopeKvWrite { .. }))[0];
        let Op::BiasRopeKvWrite { bias, heads, kv_heads, .. } = g.op(f) else { unreachable!() };
        assert_eq!(
            bias,
            &WeightRef::Concat(vec![
                "blk.0.attn_q.bias".into(),
                "blk.0.attn_k.bias".into(),
                "blk.0.attn_v.bias".into()
            ])
        );
        assert_eq!((*heads, *kv_heads), (4, 2));
        // Inputs are the three raw projections; the attention reads both outputs.
        assert!(g.inputs(f).iter().all(|v| matches!(g.op(v.node), Op::MatMul { .. })));
        let att = g.find(|op| matches!(op, Op::Attention { .. }))[0];
        assert_eq!(g.inputs(att), vec![Value::new(f, 0), Value::new(f, 1)]);
    }
}
