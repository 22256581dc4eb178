//! Sibling matmuls — several `matmul`s reading the same value with the same `k` (Q/K/V; gate/up)
//! — become one matmul over the row-concatenated weight, followed by `slice`s that give each
//! former consumer its columns. One pass over the input row and one launch instead of several;
//! `absorb_slices` then lets fused consumers read the packed output directly.
use crate::error::CompileError;
use crate::graph::{Op, OpGraph, Value, WeightRef};

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut count = 0;
    // Group matmuls by the value they read (node order keeps q, k, v and gate, up in order).
    let mut groups: std::collections::BTreeMap<Value, Vec<_>> = Default::default();
    for m in g.find(|op| matches!(op, Op::MatMul { weight: WeightRef::Tensor(_), logits: false, .. })) {
        groups.entry(g.inputs(m)[0]).or_default().push(m);
    }
    for (input, members) in groups {
        if members.len() < 2 {
            continue;
        }
        let mut names = Vec::new();
        let mut widths = Vec::new();
        let mut k0 = None;
        for &m in &members {
            let Op::MatMul { weight: WeightRef::Tensor(name), n, k, .. } = g.op(m) else { unreachable!() };
            if *k0.get_or_insert(*k) != *k {
                return Err(CompileError::Graph(format!("matmuls reading one value disagree on k ({name})")));
            }
            names.push(name.clone());
            widths.push(*n);
        }
        let total: usize = widths.iter().sum();
        let label = format!("{}+", g.node(members[0]).label);
        let k = k0.unwrap_or(0);
        let cat = g.add(
            Op::MatMul { weight: WeightRef::Concat(names), n: total, k, logits: false },
            vec![total],
            label,
            &[input],
        );
        let mut start = 0;
        for (&m, &n) in members.iter().zip(&widths) {
            let label = g.node(m).label.clone();
            let slice = g.add(Op::Slice { start, len: n }, vec![n], label, &[Value::new(cat, 0)]);
            g.redirect(Value::new(m, 0), Value::new(slice, 0));
            g.remove(m);
            start += n;
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
    fn merges_qkv_and_gate_up() {
        let mut g = tiny_layer();
        assert_eq!(g.find(|op| matches!(op, Op::MatMul { .. })).len(), 8, "q k v o gate up down + LM head");
        assert_eq!(run(&mut g).unwrap(), 2);
        let mms = g.find(|op| matches!(op, Op::MatMul { .. }));
        assert_eq!(mms.len(), 5, "qkv, o, gate|up, down, LM head");
        let qkv = mms
            .iter()
            .copied()
            .find(|&m| matches!(g.op(m), Op::MatMul { weight: WeightRef::Concat(p), .. } if p.len() == 3))
            .unwrap();
        let Op::MatMul { weight, n, k, .. } = g.op(qkv) else { unreachable!() };
        assert_eq!(weight.parts(), vec!["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"]);
        assert_eq!((*n, *k), (64 + 32 + 32, 64));
        let mut slices: Vec<_> = g.consumers(Value::new(qkv, 0)).iter().map(|(s, _)| g.op(*s).clone()).collect();
        slices.sort_by_key(|op| if let Op::Slice { start, .. } = op { *start } else { usize::MAX });
        assert_eq!(
            slices,
            vec![Op::Slice { start: 0, len: 64 }, Op::Slice { start: 64, len: 32 }, Op::Slice { start: 96, len: 32 }]
        );
    }

    #[test]
    fn never_merges_the_lm_head() {
        let mut g = tiny_layer();
        run(&mut g).unwrap();
        assert_eq!(g.find(|op| matches!(op, Op::MatMul { logits: true, .. })).len(), 1);
    }
}
