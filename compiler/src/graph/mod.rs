//! The op graph: a petgraph `StableDiGraph` whose nodes are operations and whose edges carry
//! values. A node may have several outputs ("ports"); an edge connects output port `src_port` of
//! its source to input slot `dst_port` of its target. Output columns per port say how wide a
//! value's rows are (0 = no buffer: an ordering token or a symbolic-width intermediate).
pub mod dot;
pub mod lower;
pub mod op;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub use op::{GemvEpi, Op, RopeKv, WeightRef};

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub port: u8,
}

impl Value {
    pub fn new(node: NodeIndex, port: u8) -> Self {
        Value { node, port }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// Columns of each output port's rows.
    pub out_cols: Vec<usize>,
    /// Human-readable origin, e.g. `blk.3.q`.
    pub label: String,
}

#[derive(Clone, Copy, Debug)]
pub struct Edge {
    pub src_port: u8,
    pub dst_port: u8,
}

#[derive(Clone, Debug, Default)]
pub struct OpGraph {
    pub g: StableDiGraph<Node, Edge>,
    /// Named program outputs (`logits`, `next_token`); they keep their producers alive.
    pub outputs: Vec<(String, Value)>,
}

impl OpGraph {
    pub fn add(&mut self, op: Op, out_cols: Vec<usize>, label: impl Into<String>, inputs: &[Value]) -> NodeIndex {
        let n = self.g.add_node(Node { op, out_cols, label: label.into() });
        for (slot, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.node, n, Edge { src_port: v.port, dst_port: slot as u8 });
        }
        n
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.g[n]
    }

    pub fn op(&self, n: NodeIndex) -> &Op {
        &self.g[n].op
    }

    pub fn cols(&self, v: Value) -> usize {
        self.g[v.node].out_cols.get(v.port as usize).copied().unwrap_or(0)
    }

    /// Inputs of `n` ordered by slot.
    pub fn inputs(&self, n: NodeIndex) -> Vec<Value> {
        let mut ins: Vec<(u8, Value)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.weight().dst_port, Value::new(e.source(), e.weight().src_port)))
            .collect();
        ins.sort();
        ins.into_iter().map(|(_, v)| v).collect()
    }

    /// Nodes (with their input slot) that read `v`, in node order.
    pub fn consumers(&self, v: Value) -> Vec<(NodeIndex, u8)> {
        let mut c: Vec<(NodeIndex, u8)> = self
            .g
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == v.port)
            .map(|e| (e.target(), e.weight().dst_port))
            .collect();
        c.sort();
        c
    }

    /// The single node reading `v`, if exactly one does and `v` is not a program output.
    pub fn sole_consumer(&self, v: Value) -> Option<NodeIndex> {
        let c = self.consumers(v);
        (c.len() == 1 && !self.is_output(v)).then(|| c[0].0)
    }

    pub fn is_output(&self, v: Value) -> bool {
        self.outputs.iter().any(|(_, o)| *o == v)
    }

    /// Makes every reader of `from` (and the outputs list) read `to` instead.
    pub fn redirect(&mut self, from: Value, to: Value) {
        let edges: Vec<_> = self
            .g
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == from.port)
            .map(|e| (e.id(), e.target(), e.weight().dst_port))
            .collect();
        for (id, target, slot) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(to.node, target, Edge { src_port: to.port, dst_port: slot });
        }
        for (_, o) in self.outputs.iter_mut() {
            if *o == from {
                *o = to;
            }
        }
    }

    /// Replaces all inputs of `n` with `inputs` (slots renumbered from 0).
    pub fn set_inputs(&mut self, n: NodeIndex, inputs: &[Value]) {
        let old: Vec<_> = self.g.edges_directed(n, Direction::Incoming).map(|e| e.id()).collect();
        for id in old {
            self.g.remove_edge(id);
        }
        for (slot, v) in inputs.iter().enumerate() {
            self.g.add_edge(v.node, n, Edge { src_port: v.port, dst_port: slot as u8 });
        }
    }

    pub fn remove(&mut self, n: NodeIndex) {
        self.g.remove_node(n);
    }

    /// Node indices in insertion order (stable across removals).
    pub fn nodes(&self) -> Vec<NodeIndex> {
        self.g.node_indices().collect()
    }

    /// Nodes whose op satisfies `pred`.
    pub fn find(&self, pred: impl Fn(&Op) -> bool) -> Vec<NodeIndex> {
        self.g.node_indices().filter(|&n| pred(&self.g[n].op)).collect()
    }

    /// Number of operation nodes (the token input excluded), for reports.
    pub fn op_count(&self) -> usize {
        self.g.node_indices().filter(|&n| !matches!(self.g[n].op, Op::Tokens)).count()
    }

    /// Op name -> count, sorted by name.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for n in self.g.node_indices() {
            *m.entry(self.g[n].op.name()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }
}
