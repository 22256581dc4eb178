//! Topological schedule of the op graph. Kahn's algorithm with the lowest node index first among
//! ready nodes, so the order follows the description (layer by layer) and is deterministic.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::error::CompileError;
use crate::graph::OpGraph;

pub fn schedule(g: &OpGraph) -> Result<Vec<NodeIndex>, CompileError> {
    let mut indegree: HashMap<NodeIndex, usize> =
        g.g.node_indices().map(|n| (n, g.g.edges_directed(n, Direction::Incoming).count())).collect();
    let mut ready: BinaryHeap<Reverse<NodeIndex>> =
        indegree.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| Reverse(n)).collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(n)) = ready.pop() {
        order.push(n);
        for e in g.g.edges_directed(n, Direction::Outgoing) {
            let d = indegree.get_mut(&e.target()).expect("edge target is a node");
            *d -= 1;
            if *d == 0 {
                ready.push(Reverse(e.target()));
            }
        }
    }
    if order.len() != indegree.len() {
        return Err(CompileError::Graph("the op graph has a cycle".into()));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Op, Value};

    #[test]
    fn orders_producers_before_consumers_and_detects_cycles() {
        let mut g = OpGraph::default();
        let t = g.add(Op::Tokens, vec![1], "t", &[]);
        let b = g.add(Op::Silu, vec![4], "b", &[Value::new(t, 0)]);
        let a = g.add(Op::Silu, vec![4], "a", &[Value::new(t, 0)]);
        let c = g.add(Op::Add, vec![4], "c", &[Value::new(a, 0), Value::new(b, 0)]);
        assert_eq!(schedule(&g).unwrap(), vec![t, b, a, c], "lowest index first among ready nodes");
        g.g.add_edge(c, b, crate::graph::Edge { src_port: 0, dst_port: 1 });
        assert!(schedule(&g).is_err());
    }
}
