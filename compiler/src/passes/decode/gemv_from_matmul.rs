//! Every `matmul` becomes a plain `gemv` (no norm, store epilogue) that the following decode
//! passes can grow.
use crate::error::CompileError;
use crate::graph::{GemvEpi, Op, OpGraph};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    for n in g.find(|op| matches!(op, Op::MatMul { .. })) {
        let Op::MatMul { weight, n: rows, k, logits } = g.op(n).clone() else { continue };
        g.g[n].op = Op::Gemv { weight, n: rows, k, norm: None, epilogue: GemvEpi::Store { residual: false, logits } };
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_layer;
    use super::*;

    #[test]
    fn every_matmul_becomes_a_plain_gemv() {
        let mut g = decode_layer(0);
        let matmuls = g.find(|op| matches!(op, Op::MatMul { .. })).len();
        assert_eq!(matmuls, 5, "qkv, o, gate|up, down, LM head: {:?}", g.op_histogram());
        assert_eq!(run(&mut g).unwrap(), matmuls);
        assert!(g.find(|op| matches!(op, Op::MatMul { .. })).is_empty());
        let heads = g.find(|op| {
            matches!(op, Op::Gemv { epilogue: GemvEpi::Store { logits: true, residual: false }, norm: None, .. })
        });
        assert_eq!(heads.len(), 1, "the LM head keeps its logits flag");
    }
}
