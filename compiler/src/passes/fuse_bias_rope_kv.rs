//! For each KV write fed by `rope(k)` and `v`, with the layer's query `rope(q)` read by the
//! attention that follows, builds one `bias_rope_kv_write(q, k, v)` that adds the (concatenated)
//! biases, rotates q and k and writes K/V into the cache, outputting the rotated q and the
//! ordering token. Each of q, k and v is either `bias_add(projection)`, whose bias the fused op
//! takes over, or the projection itself (a model without that bias); a layer's three must agree
//! (all biased: one packed q|k|v bias; none: the fused op adds none).
use petgraph::stable_graph::NodeIndex;

use crate::error::CompileError;
use crate::graph::{Op, OpGraph, RopeKv, Value, WeightRef};

/// A projection as the fused op reads it: the value before any bias, and the `bias_add` (node,
/// tensor name) that the fused op replaces, if there is one.
struct Projection {
    raw: Value,
    bias: Option<(NodeIndex, String)>,
}

/// `bias_add(x)` with a single consumer is x plus its bias; any other value is a projection
/// without bias.
fn projection(g: &OpGraph, v: Value) -> Projection {
    match g.op(v.node) {
        Op::BiasAdd { bias: WeightRef::Tensor(b) } if g.sole_consumer(v).is_some() => {
            Projection { raw: g.inputs(v.node)[0], bias: Some((v.node, b.clone())) }
        }
        _ => Projection { raw: v, bias: None },
    }
}

/// A rope's attributes: (heads, head_dim, theta).
type RopeAttrs = (usize, usize, f32);

/// `rope(projection)` with one consumer: (rope node, the projection, rope attrs).
fn rope_of(g: &OpGraph, v: Value) -> Option<(NodeIndex, Projection, RopeAttrs)> {
    let Op::Rope { heads, head_dim, theta } = *g.op(v.node) else { return None };
    g.sole_consumer(v)?;
    Some((v.node, projection(g, g.inputs(v.node)[0]), (heads, head_dim, theta)))
}

/// The packed q|k|v bias of the three projections: all biased, or none.
fn packed_bias(layer: usize, qkv: [&Projection; 3]) -> Result<Option<WeightRef>, CompileError> {
    let names: Vec<&str> = qkv.iter().filter_map(|p| p.bias.as_ref().map(|(_, n)| n.as_str())).collect();
    match names.len() {
        0 => Ok(None),
        3 => Ok(Some(WeightRef::Concat(names.iter().map(|n| n.to_string()).collect()))),
        _ => {
            let missing = ["q", "k", "v"].iter().zip(qkv).filter(|(_, p)| p.bias.is_none()).map(|(w, _)| *w);
            Err(CompileError::PartialBias {
                layer,
                missing: missing.collect::<Vec<_>>().join(" and "),
                present: names.join(" and "),
            })
        }
    }
}

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for kw in g.find(|op| matches!(op, Op::KvWrite { .. })) {
        let Op::KvWrite { layer, kv_heads, head_dim } = *g.op(kw) else { continue };
        let ins = g.inputs(kw);
        let Some((k_rope, k, (kh, kd, k_theta))) = rope_of(g, ins[0]) else { continue };
        let v = projection(g, ins[1]);
        // The query: input 0 of the attention reading this cache.
        let readers = g.consumers(Value::new(kw, 0));
        let Some(&(att, _)) =
            readers.iter().find(|(n, _)| matches!(g.op(*n), Op::Attention { .. } | Op::AttnScores { .. }))
        else {
            continue;
        };
        let Some((q_rope, q, (heads, qd, q_theta))) = rope_of(g, g.inputs(att)[0]) else { continue };
        if kh != kv_heads || kd != head_dim || qd != head_dim || q_theta != k_theta {
            return Err(CompileError::Graph(format!(
                "layer {layer}: q/k rope and kv_write disagree on heads or head_dim"
            )));
        }
        let bias = packed_bias(layer, [&q, &k, &v])?;
        let cols = vec![g.cols(Value::new(q_rope, 0)), 0];
        let label = g.node(kw).label.replace(".kv", ".qkv");
        let fused = g.add(
            Op::BiasRopeKvWrite(RopeKv { bias, layer, heads, kv_heads, head_dim, theta: q_theta }),
            cols,
            label,
            &[q.raw, k.raw, v.raw],
        );
        g.redirect(Value::new(q_rope, 0), Value::new(fused, 0));
        g.redirect(Value::new(kw, 0), Value::new(fused, 1));
        let biases = [&q, &k, &v].into_iter().filter_map(|p| p.bias.as_ref().map(|(n, _)| *n));
        for n in [q_rope, k_rope, kw].into_iter().chain(biases.collect::<Vec<_>>()) {
            g.remove(n);
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{tiny_layer, tiny_layer_with};
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
        let f = g.find(|op| matches!(op, Op::BiasRopeKvWrite(_)))[0];
        let Op::BiasRopeKvWrite(RopeKv { bias, heads, kv_heads, .. }) = g.op(f) else { unreachable!() };
        assert_eq!(
            bias,
            &Some(WeightRef::Concat(vec![
                "blk.0.attn_q.bias".into(),
                "blk.0.attn_k.bias".into(),
                "blk.0.attn_v.bias".into()
            ]))
        );
        assert_eq!((*heads, *kv_heads), (4, 2));
        // Inputs are the three raw projections; the attention reads both outputs.
        assert!(g.inputs(f).iter().all(|v| matches!(g.op(v.node), Op::MatMul { .. })));
        let att = g.find(|op| matches!(op, Op::Attention { .. }))[0];
        assert_eq!(g.inputs(att), vec![Value::new(f, 0), Value::new(f, 1)]);
    }

    /// A model without q/k/v biases (the description marks them optional): the projections feed
    /// the ropes and the cache write directly, and the fused op has no bias.
    #[test]
    fn fuses_projections_without_bias() {
        let mut g = tiny_layer_with(&|name| !name.ends_with(".bias"));
        assert!(g.find(|op| matches!(op, Op::BiasAdd { .. })).is_empty(), "lowered without bias adds");
        super::super::fuse_attention::run(&mut g).unwrap();
        assert_eq!(run(&mut g).unwrap(), 1);
        let h = g.op_histogram();
        for gone in ["rope", "kv_write"] {
            assert!(!h.iter().any(|(n, _)| *n == gone), "{gone} survived: {h:?}");
        }
        let f = g.find(|op| matches!(op, Op::BiasRopeKvWrite(_)))[0];
        assert!(matches!(g.op(f), Op::BiasRopeKvWrite(RopeKv { bias: None, heads: 4, kv_heads: 2, .. })));
        assert!(g.inputs(f).iter().all(|v| matches!(g.op(v.node), Op::MatMul { .. })));
    }

    /// Only some of a layer's q/k/v biases: refused, naming the layer and what is missing.
    #[test]
    fn refuses_a_layer_with_some_biases() {
        let mut g = tiny_layer_with(&|name| name != "blk.0.attn_k.bias");
        super::super::fuse_attention::run(&mut g).unwrap();
        let err = run(&mut g).unwrap_err().to_string();
        assert!(err.starts_with("layer 0: k has no bias while blk.0.attn_q.bias and blk.0.attn_v.bias do:"), "{err}");
    }
}
