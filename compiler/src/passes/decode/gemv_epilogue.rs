//! A plain GEMV whose product is read only by a SwiGLU (packed gate|up) or a bias+RoPE+KV write
//! (packed qkv) takes that step as its epilogue: one warp group computes the two rows that the
//! step combines (gate i and up i; the RoPE pair i, i + d/2), so the product row never touches
//! memory and the step's launch disappears.
use super::plain_gemv_sole_reader;
use crate::error::CompileError;
use crate::graph::{GemvEpi, Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for old in g.find(|op| matches!(op, Op::Gemv { .. })) {
        let Some(reader) = plain_gemv_sole_reader(g, Value::new(old, 0)) else { continue };
        let Op::Gemv { weight, n, k, norm, .. } = g.op(old).clone() else { continue };
        if g.inputs(reader).len() != 1 {
            continue; // unpacked inputs
        }
        let epilogue = match g.op(reader).clone() {
            Op::SwiGlu { ffn } if 2 * ffn == n => GemvEpi::SwiGlu { ffn },
            Op::BiasRopeKvWrite(r) if (r.heads + 2 * r.kv_heads) * r.head_dim == n => GemvEpi::BiasRopeKvWrite(r),
            _ => continue,
        };
        let cols = g.node(reader).out_cols.clone();
        let label = g.node(reader).label.clone();
        let x = g.inputs(old);
        let fused = g.add(Op::Gemv { weight, n, k, norm, epilogue }, cols.clone(), label, &x);
        for port in 0..cols.len() as u8 {
            g.redirect(Value::new(reader, port), Value::new(fused, port));
        }
        g.remove(reader);
        g.remove(old);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_layer;
    use super::*;

    #[test]
    fn swiglu_and_rope_become_gemv_epilogues() {
        let mut g = decode_layer(3);
        assert_eq!(run(&mut g).unwrap(), 2);
        let h = g.op_histogram();
        assert!(!h.iter().any(|(n, _)| *n == "swiglu" || *n == "bias_rope_kv_write"), "{h:?}");
        assert!(h.contains(&("norm_gemv_swiglu", 1)) && h.contains(&("norm_gemv_rope_kv_write", 1)), "{h:?}");
        let rope = g.find(|op| matches!(op, Op::Gemv { epilogue: GemvEpi::BiasRopeKvWrite(_), .. }))[0];
        assert_eq!(g.node(rope).out_cols, vec![4 * 16, 0], "rotated q, kv-token");
        let readers = g.consumers(Value::new(rope, 1));
        assert!(matches!(g.op(readers[0].0), Op::Attention { .. }), "the attention is ordered after the KV write");
        let sw = g.find(|op| matches!(op, Op::Gemv { epilogue: GemvEpi::SwiGlu { .. }, .. }))[0];
        assert_eq!(g.node(sw).out_cols, vec![24]);
        // One layer: qkv, attention, o_proj(+res), gate|up+swiglu, down(+res), LM head, argmax.
        assert_eq!(g.op_count(), 1 + 7, "embedding + {h:?}");
    }
}
