//! Emission: turns the scheduled, fused op graph into a plan [`Program`] for a given number of
//! rows (`max_tokens`): one buffer per value (placed by the memory planner) and one step per
//! node. Ops without a plan step (unfused vocabulary) are an error: a pass must remove them.
use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;
use qwen_aot_plan::{BufId, BufferInfo, DType, GemvEpilogue, NormPrologue, Program, RopeKvWrite, Step};

use crate::error::CompileError;
use crate::graph::{GemvEpi, Op, OpGraph, RopeKv, Value};
use crate::memory::{self, Interval};
use crate::pack::WeightTable;

pub fn emit_program(
    g: &OpGraph,
    order: &[NodeIndex],
    max_tokens: usize,
    weights: &WeightTable,
) -> Result<Program, CompileError> {
    let position: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    // Every value with columns gets a buffer; its lifetime runs from its producer to its last reader.
    let mut values: Vec<Value> = Vec::new();
    let mut intervals = Vec::new();
    let mut buffers = Vec::new();
    for (i, &n) in order.iter().enumerate() {
        let node = g.node(n);
        for (port, &cols) in node.out_cols.iter().enumerate() {
            if cols == 0 {
                continue;
            }
            let v = Value::new(n, port as u8);
            let last_use = if g.is_output(v) {
                order.len()
            } else {
                g.consumers(v).iter().map(|(c, _)| position[c]).max().unwrap_or(i)
            };
            let dtype = if matches!(node.op, Op::Tokens | Op::Argmax { .. }) { DType::I32 } else { DType::F32 };
            let bytes = (max_tokens * cols) as u64 * dtype.size();
            let name = match (&node.op, port) {
                (Op::AddRmsNorm { .. }, 0) => format!("{}.residual", node.label),
                _ => node.label.clone(),
            };
            buffers.push(BufferInfo { name, dtype, row_elems: cols, offset: 0, bytes });
            intervals.push(Interval { bytes, def: i, last_use });
            values.push(v);
        }
    }
    let (offsets, arena_bytes) = memory::plan(&intervals);
    for (b, off) in buffers.iter_mut().zip(offsets) {
        b.offset = off;
    }
    let naive_arena_bytes = intervals.iter().map(|iv| memory::align(iv.bytes)).sum();
    let ids: HashMap<Value, BufId> = values.iter().enumerate().map(|(i, v)| (*v, BufId(i as u32))).collect();
    let buf = |v: Value| {
        ids.get(&v)
            .copied()
            .ok_or_else(|| CompileError::Graph(format!("value of {} has no buffer", g.node(v.node).label)))
    };
    let out = |n: NodeIndex, port: u8| buf(Value::new(n, port));

    let mut steps = Vec::new();
    let mut tokens = None;
    for &n in order {
        let node = g.node(n);
        let ins = g.inputs(n);
        let packed = |what: &str| -> Result<BufId, CompileError> {
            match ins.as_slice() {
                [one] => buf(*one),
                _ => Err(CompileError::Unlowerable(format!("{what} with unpacked inputs ({})", node.label))),
            }
        };
        let step = match &node.op {
            Op::Tokens => {
                tokens = Some(out(n, 0)?);
                continue;
            }
            Op::Embedding { table } => Step::Embed { tokens: buf(ins[0])?, table: weights.id(table)?, out: out(n, 0)? },
            Op::RmsNorm { weight, eps } => {
                Step::RmsNorm { x: buf(ins[0])?, weight: weights.id(weight)?, out: out(n, 0)?, eps: *eps }
            }
            Op::AddRmsNorm { weight, eps } => Step::AddRmsNorm {
                a: buf(ins[0])?,
                b: buf(ins[1])?,
                weight: weights.id(weight)?,
                eps: *eps,
                sum_out: out(n, 0)?,
                norm_out: out(n, 1)?,
            },
            Op::MatMul { weight, n: nn, k, logits } => Step::MatMul {
                x: buf(ins[0])?,
                weight: weights.id(weight)?,
                n: *nn,
                k: *k,
                out: out(n, 0)?,
                residual: None,
                logit_rows: *logits,
            },
            Op::BiasRopeKvWrite(r) => Step::BiasRopeKvWrite {
                qkv: packed("bias_rope_kv_write")?,
                rope: rope_kv_write(weights, r)?,
                q_out: out(n, 0)?,
            },
            Op::Attention { layer, heads, kv_heads, head_dim, scale } => Step::Attention {
                q: buf(ins[0])?,
                layer: *layer,
                n_heads: *heads,
                n_kv_heads: *kv_heads,
                head_dim: *head_dim,
                scale: *scale,
                out: out(n, 0)?,
            },
            Op::SwiGlu { ffn } => Step::SwiGlu { gate_up: packed("swiglu")?, ffn: *ffn, out: out(n, 0)? },
            Op::Argmax { vocab } => Step::Argmax { logits: buf(ins[0])?, vocab: *vocab, out: out(n, 0)? },
            Op::Gemv { weight, n: nn, k, norm, epilogue } => Step::Gemv {
                x: buf(ins[0])?,
                norm: norm
                    .as_ref()
                    .map(|(w, eps)| Ok::<_, CompileError>(NormPrologue { weight: weights.id(w)?, eps: *eps }))
                    .transpose()?,
                weight: weights.id(weight)?,
                n: *nn,
                k: *k,
                epilogue: match epilogue {
                    GemvEpi::Store { residual, logits } => GemvEpilogue::Store {
                        out: out(n, 0)?,
                        residual: if *residual {
                            Some(buf(*ins.get(1).ok_or_else(|| {
                                CompileError::Graph(format!("{} has no residual input", node.label))
                            })?)?)
                        } else {
                            None
                        },
                        logit_rows: *logits,
                    },
                    GemvEpi::SwiGlu { ffn } => GemvEpilogue::SwiGlu { ffn: *ffn, out: out(n, 0)? },
                    GemvEpi::BiasRopeKvWrite(r) => {
                        GemvEpilogue::BiasRopeKvWrite { rope: rope_kv_write(weights, r)?, q_out: out(n, 0)? }
                    }
                },
            },
            other => return Err(CompileError::Unlowerable(format!("{} ({})", other.name(), node.label))),
        };
        steps.push(step);
    }
    let output = |name: &str| {
        g.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| CompileError::Graph(format!("no `{name}` output")))
    };
    Ok(Program {
        max_tokens,
        buffers,
        arena_bytes,
        naive_arena_bytes,
        tokens: tokens.ok_or_else(|| CompileError::Graph("no token input".into()))?,
        logits: buf(output("logits")?)?,
        next_token: buf(output("next_token")?)?,
        steps,
    })
}

/// The plan's bias + RoPE + KV write attributes (a step, or a GEMV epilogue) from the graph's.
fn rope_kv_write(weights: &WeightTable, r: &RopeKv) -> Result<RopeKvWrite, CompileError> {
    Ok(RopeKvWrite {
        bias: r.bias.as_ref().map(|b| weights.id(b)).transpose()?,
        layer: r.layer,
        n_heads: r.heads,
        n_kv_heads: r.kv_heads,
        head_dim: r.head_dim,
        rope_theta: r.theta,
    })
}
