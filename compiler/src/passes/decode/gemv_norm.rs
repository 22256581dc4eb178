//! `gemv(rms_norm(x))`, where the GEMV is the only reader of the normalised row, becomes
//! `gemv(x)` with the norm as its prologue: each GEMV warp sums x^2 over the share of x it reads
//! anyway and scales the finished dot product (kernels/matmul.cu), so the norm's launch and its
//! output buffer disappear.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for rms in g.find(|op| matches!(op, Op::RmsNorm { .. })) {
        let Op::RmsNorm { weight, eps } = g.op(rms).clone() else { continue };
        let normed = Value::new(rms, 0);
        let Some(gemv) = g.sole_consumer(normed) else { continue };
        // Read as the GEMV's x (slot 0), not as its residual.
        if g.consumers(normed)[0].1 != 0 {
            continue;
        }
        let Op::Gemv { norm: None, k, .. } = g.op(gemv) else { continue };
        if *k != g.cols(normed) {
            continue;
        }
        let mut ins = g.inputs(gemv);
        ins[0] = g.inputs(rms)[0];
        g.set_inputs(gemv, &ins);
        if let Op::Gemv { norm, .. } = &mut g.g[gemv].op {
            *norm = Some((weight, eps));
        }
        g.remove(rms);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_layer;
    use super::*;
    use crate::graph::GemvEpi;

    #[test]
    fn folds_every_norm_into_the_gemv_that_reads_it() {
        let mut g = decode_layer(2);
        // attention norm -> qkv, ffn norm -> gate|up, final norm -> LM head.
        assert_eq!(run(&mut g).unwrap(), 3);
        let h = g.op_histogram();
        assert!(!h.iter().any(|(n, _)| n.contains("rms_norm")), "{h:?}");
        assert!(h.contains(&("norm_gemv", 3)), "{h:?}");
        let head = g.find(|op| matches!(op, Op::Gemv { epilogue: GemvEpi::Store { logits: true, .. }, .. }))[0];
        let Op::Gemv { norm: Some((w, eps)), .. } = g.op(head) else { panic!("LM head without norm") };
        assert_eq!((w.plan_name().as_str(), *eps), ("output_norm.weight", 1e-6));
        // The LM head reads the residual stream: the down projection's GEMV output.
        let x = g.inputs(head)[0];
        assert!(matches!(g.op(x.node), Op::Gemv { epilogue: GemvEpi::Store { residual: true, .. }, .. }));
        // The qkv GEMV reads the embedding directly.
        let qkv = g.find(|op| matches!(op, Op::Gemv { n: 128, .. }))[0];
        assert!(matches!(g.op(g.inputs(qkv)[0].node), Op::Embedding { .. }));
    }
}
