//! Graphviz DOT output of an op graph (optionally only one layer), so a reader can see what the
//! fusion passes did: `qwen-aot compile --dot FILE` / `--svg FILE` draw layer 0 unfused and
//! fused side by side. Fused ops are filled blue; neighbours outside the layer are dashed.
use std::fmt::Write;

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::{Op, OpGraph};

/// The nodes and edges of `g` (restricted to `layer` if given) as a DOT cluster named `id`.
fn cluster(g: &OpGraph, id: &str, title: &str, layer: Option<usize>) -> String {
    let prefix = layer.map(|l| format!("blk.{l}."));
    let in_scope = |n| prefix.as_ref().is_none_or(|p| g.node(n).label.starts_with(p.as_str()));
    let mut shown = std::collections::BTreeSet::new();
    for n in g.g.node_indices().filter(|&n| in_scope(n)) {
        shown.insert(n);
        shown.extend(g.g.edges(n).map(|e| e.target()));
        shown.extend(g.g.edges_directed(n, petgraph::Direction::Incoming).map(|e| e.source()));
    }
    let mut s = String::new();
    let _ = writeln!(s, "  subgraph cluster_{id} {{\n    label=\"{title}\"; fontsize=14; color=gray;");
    for &n in &shown {
        let node = g.node(n);
        let style = if in_scope(n) { "" } else { ", style=dashed, color=gray, fontcolor=gray" };
        let fused = matches!(
            node.op,
            Op::AddRmsNorm { .. } | Op::BiasRopeKvWrite(_) | Op::Attention { .. } | Op::SwiGlu { .. } | Op::Gemv { .. }
        ) || matches!(&node.op, Op::MatMul { weight: super::WeightRef::Concat(_), .. });
        let fill = if fused && in_scope(n) { ", style=filled, fillcolor=\"#cde8ff\"" } else { "" };
        let label = format!("{}\\n{}", node.op, node.label).replace('"', "'");
        let _ = writeln!(s, "    {id}_{} [label=\"{label}\"{style}{fill}];", n.index());
    }
    for e in g.g.edge_references() {
        if shown.contains(&e.source()) && shown.contains(&e.target()) && (in_scope(e.source()) || in_scope(e.target()))
        {
            let cols = g.node(e.source()).out_cols.get(e.weight().src_port as usize).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "    {id}_{} -> {id}_{} [label=\"{cols}\", fontsize=8];",
                e.source().index(),
                e.target().index()
            );
        }
    }
    s.push_str("  }\n");
    s
}

const HEADER: &str = "  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n";

/// One graph (or one layer of it) as a DOT digraph.
pub fn to_dot(g: &OpGraph, title: &str, layer: Option<usize>) -> String {
    format!("digraph \"{title}\" {{\n{HEADER}{}}}\n", cluster(g, "g", title, layer))
}

/// Two graphs side by side in one DOT digraph (e.g. before and after fusion).
pub fn side_by_side(a: &OpGraph, a_title: &str, b: &OpGraph, b_title: &str, layer: Option<usize>) -> String {
    format!("digraph \"fusion\" {{\n{HEADER}{}{}}}\n", cluster(a, "a", a_title, layer), cluster(b, "b", b_title, layer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::{run_all, test_util::tiny_layer};

    #[test]
    fn draws_one_layer_before_and_after_fusion() {
        let before = tiny_layer();
        let mut after = before.clone();
        run_all(&mut after).unwrap();
        let dot = side_by_side(&before, "unfused", &after, "fused", Some(0));
        assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
        assert!(dot.contains("cluster_a") && dot.contains("cluster_b"));
        assert!(dot.contains("softmax") && dot.contains("attention"), "unfused and fused ops both appear");
        assert!(dot.contains("fillcolor"), "fused ops are highlighted");
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }
}
