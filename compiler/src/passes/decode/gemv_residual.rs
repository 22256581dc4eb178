//! `add_rms_norm(a, gemv(x))`, where nothing else reads the GEMV's product, becomes
//! `s = gemv(x) + a` (the residual add done by the GEMV as it stores each element) followed by
//! `rms_norm(s)`, which `gemv_absorb_norm` then folds into the next GEMV. The sum `s` is the
//! residual stream, still read by the next residual add. (a + b == b + a exactly in IEEE
//! arithmetic, so the operand order does not matter.)
use super::plain_gemv_sole_reader;
use crate::error::CompileError;
use crate::graph::{GemvEpi, Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for add_norm in g.find(|op| matches!(op, Op::AddRmsNorm { .. })) {
        let Op::AddRmsNorm { weight, eps } = g.op(add_norm).clone() else { continue };
        let ins = g.inputs(add_norm);
        let Some(slot) = (0..2).find(|&s| plain_gemv_sole_reader(g, ins[s]) == Some(add_norm)) else { continue };
        let old = ins[slot].node;
        let Op::Gemv { weight: w, n, k, norm, .. } = g.op(old).clone() else { continue };
        let x = g.inputs(old)[0];
        let gemv_label = g.node(old).label.clone();
        let norm_label = g.node(add_norm).label.clone();
        let gemv = g.add(
            Op::Gemv { weight: w, n, k, norm, epilogue: GemvEpi::Store { residual: true, logits: false } },
            vec![n],
            gemv_label,
            &[x, ins[1 - slot]],
        );
        let rms = g.add(Op::RmsNorm { weight, eps }, vec![n], norm_label, &[Value::new(gemv, 0)]);
        g.redirect(Value::new(add_norm, 0), Value::new(gemv, 0));
        g.redirect(Value::new(add_norm, 1), Value::new(rms, 0));
        g.remove(add_norm);
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
    fn moves_each_residual_add_into_the_gemv_that_feeds_it() {
        let mut g = decode_layer(1);
        // One layer: o_proj -> add_rms_norm (ffn norm), down -> add_rms_norm (final norm).
        assert_eq!(run(&mut g).unwrap(), 2);
        let h = g.op_histogram();
        assert!(!h.iter().any(|(n, _)| *n == "add_rms_norm"), "{h:?}");
        assert!(h.contains(&("gemv_residual", 2)), "{h:?}");
        for gemv in g.find(|op| matches!(op, Op::Gemv { epilogue: GemvEpi::Store { residual: true, .. }, .. })) {
            let ins = g.inputs(gemv);
            assert_eq!(ins.len(), 2, "x and the residual");
            let readers = g.consumers(Value::new(gemv, 0));
            assert!(readers.iter().any(|(r, _)| matches!(g.op(*r), Op::RmsNorm { .. })), "the norm reads the sum");
        }
        // The o_proj sum is the residual of the down projection's GEMV.
        let o = g.find(|op| matches!(op, Op::Gemv { k: 64, n: 64, .. }));
        let down = g.find(|op| matches!(op, Op::Gemv { k: 24, .. }))[0];
        assert_eq!(g.inputs(down)[1], Value::new(o[0], 0));
    }
}
