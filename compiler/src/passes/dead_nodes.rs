//! Removes every node that no program output depends on (e.g. the slices left behind by
//! `absorb_slices`). Liveness flows backwards from the outputs along all edges, so ordering-only
//! values such as the KV-cache token keep their writers alive.
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::error::CompileError;
use crate::graph::OpGraph;

pub fn run(g: &mut OpGraph) -> Result<usize, CompileError> {
    let mut live = std::collections::HashSet::new();
    let mut stack: Vec<_> = g.outputs.iter().map(|(_, v)| v.node).collect();
    while let Some(n) = stack.pop() {
        if live.insert(n) {
            stack.extend(g.g.edges_directed(n, Direction::Incoming).map(|e| e.source()));
        }
    }
    let dead: Vec<_> = g.g.node_indices().filter(|n| !live.contains(n)).collect();
    for &n in &dead {
        g.remove(n);
    }
    Ok(dead.len())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::tiny_layer;
    use super::*;
    use crate::graph::{Op, Value};

    #[test]
    fn removes_only_unreachable_nodes() {
        let mut g = tiny_layer();
        let before = g.op_count();
        assert_eq!(run(&mut g).unwrap(), 0, "a freshly lowered graph has no dead nodes");
        let emb = g.find(|op| matches!(op, Op::Embedding { .. }))[0];
        let orphan = g.add(Op::Silu, vec![64], "orphan", &[Value::new(emb, 0)]);
        g.add(Op::Silu, vec![64], "orphan2", &[Value::new(orphan, 0)]);
        assert_eq!(run(&mut g).unwrap(), 2);
        assert_eq!(g.op_count(), before);
    }
}
