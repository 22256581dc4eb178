//! A norm whose normalised row is read by exactly one matmul (the concatenated Q/K/V, the
//! concatenated gate/up, the LM head) is folded into that matmul's prologue:
//! `matmul(rms_norm(x))` -> `norm_matmul(x)`, `matmul(add_rms_norm(a, b).norm)` ->
//! `norm_matmul(a, b)` whose second output is the sum (the residual stream). On the GPU the
//! matmul's blocks each normalise the row themselves while their first weight loads are in
//! flight, so the norm's own launch (two per layer) disappears. Runs after the matmuls are
//! concatenated, so one matmul reads each norm.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for norm in g.find(|op| matches!(op, Op::RmsNorm { .. } | Op::AddRmsNorm { .. })) {
        let (norm_weight, eps, normed) = match g.op(norm).clone() {
            Op::RmsNorm { weight, eps } => (weight, eps, Value::new(norm, 0)),
            Op::AddRmsNorm { weight, eps } => (weight, eps, Value::new(norm, 1)),
            _ => continue,
        };
        let Some(mm) = g.sole_consumer(normed) else { continue };
        let Op::MatMul { weight, n, k, logits } = g.op(mm).clone() else { continue };
        let sum = Value::new(norm, 0);
        let has_sum = normed != sum && !(g.consumers(sum).is_empty() && !g.is_output(sum));
        let ins = g.inputs(norm);
        let label = g.node(mm).label.clone();
        let fused = g.add(Op::NormMatMul { norm_weight, eps, weight, n, k, logits }, vec![n, if has_sum { k } else { 0 }], label, &ins);
        g.redirect(Value::new(mm, 0), Value::new(fused, 0));
        if has_sum {
            g.redirect(sum, Value::new(fused, 1));
        }
        g.remove(mm);
        g.remove(norm);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::*;

    #[test]
    fn folds_every_norm_into_the_one_matmul_that_reads_it() {
        let mut g = tiny_layer();
        for p in &super::super::PASSES[..6] {
            (p.run)(&mut g).unwrap();
        }
        let before = g.op_histogram();
        assert!(before.contains(&("rms_norm", 1)) && before.contains(&("add_rms_norm", 2)), "{before:?}");
        // One layer: attention norm -> qkv, ffn norm -> gate|up, final norm -> LM head.
        assert_eq!(run(&mut g).unwrap(), 3);
        let after = g.op_histogram();
        assert!(!after.iter().any(|(n, _)| *n == "rms_norm" || *n == "add_rms_norm"), "{after:?}");
        assert!(after.contains(&("norm_matmul", 3)), "{after:?}");
        let fused = g.find(|op| matches!(op, Op::NormMatMul { .. }));
        let by_label = |l: &str| fused.iter().copied().find(|&f| g.node(f).label.starts_with(l)).unwrap();
        // The attention norm reads the embedding alone: one input, no sum output.
        let qkv = by_label("blk.0.q");
        assert_eq!(g.inputs(qkv).len(), 1);
        assert_eq!(g.node(qkv).out_cols, vec![(4 + 2 * 2) * 16, 0], "q, k, v of 4 + 2 + 2 heads of 16");
        // The ffn norm adds the residual; its sum feeds the final norm's add.
        let ffn = by_label("blk.0.g");
        assert_eq!(g.inputs(ffn).len(), 2);
        assert_eq!(g.node(ffn).out_cols, vec![2 * 24, 64]);
        let readers = g.consumers(Value::new(ffn, 1));
        assert_eq!(readers.len(), 1);
        assert!(matches!(g.op(readers[0].0), Op::NormMatMul { logits: true, .. }), "the LM head reads the residual");
        // The final sum is read by nobody: no sum output.
        let head = g.find(|op| matches!(op, Op::NormMatMul { logits: true, .. }))[0];
        assert_eq!(g.node(head).out_cols, vec![50, 0]);
    }
}
