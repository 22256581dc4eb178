//! Graphviz DOT output of an op graph (optionally only the nodes of one layer), so a reader can
//! see what the fusion passes did: `qwen-aot compile --dot FILE`.
use std::fmt::Write;

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::OpGraph;

/// Renders the graph; with `layer = Some(l)` only nodes labelled `blk.{l}.*` and their direct
/// neighbours (drawn dashed) appear.
pub fn to_dot(g: &OpGraph, title: &str, layer: Option<usize>) -> String {
    let prefix = layer.map(|l| format!("blk.{l}."));
    let in_scope = |n| prefix.as_ref().map_or(true, |p| g.node(n).label.starts_with(p.as_str()));
    let mut shown = std::collections::BTreeSet::new();
    for n in g.g.node_indices() {
        if in_scope(n) {
            shown.insert(n);
            for e in g.g.edges(n) {
                shown.insert(e.target());
            }
            for e in g.g.edges_directed(n, petgraph::Direction::Incoming) {
                shown.insert(e.source());
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(s, "digraph \"{title}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];");
    for &n in &shown {
        let node = g.node(n);
        let style = if in_scope(n) { "" } else { ", style=dashed, color=gray" };
        let fused = matches!(
            node.op,
            super::Op::AddRmsNorm { .. } | super::Op::BiasRopeKvWrite { .. } | super::Op::Attention { .. } | super::Op::SwiGlu { .. }
        );
        let fill = if fused { ", style=filled, fillcolor=\"#cde8ff\"" } else { "" };
        let label = format!("{}\\n{}", node.op, node.label).replace('"', "'");
        let _ = writeln!(s, "  n{} [label=\"{label}\"{style}{fill}];", n.index());
    }
    for e in g.g.edge_references() {
        if shown.contains(&e.source()) && shown.contains(&e.target()) && (in_scope(e.source()) || in_scope(e.target())) {
            let cols = g.node(e.source()).out_cols.get(e.weight().src_port as usize).copied().unwrap_or(0);
            let _ = writeln!(s, "  n{} -> n{} [label=\"{cols}\", fontsize=8];", e.source().index(), e.target().index());
        }
    }
    s.push_str("}\n");
    s
}
