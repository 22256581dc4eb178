//! The weight packer: decides the plan's weight table (one entry per distinct weight the fused
//! graph reads, concatenations included), checks every tensor's shape against what its op
//! expects, and writes `weights.bin`: matrices as f16 `[n, k]`, vectors (norms, biases) as f32,
//! each at an [`ALIGNMENT`]-aligned offset.
use std::collections::BTreeMap;
use std::io::Write;

use half::f16;
use qwen_aot_runtime::plan::{DType, WeightId, WeightInfo, ALIGNMENT};
use sha2::{Digest, Sha256};

use crate::error::CompileError;
use crate::graph::{Op, OpGraph, WeightRef};
use crate::source::TensorSource;

/// The weight table and the lookup from graph weights to plan ids.
#[derive(Debug, Default)]
pub struct WeightTable {
    pub infos: Vec<WeightInfo>,
    pub refs: Vec<WeightRef>,
    pub ids: BTreeMap<WeightRef, WeightId>,
    pub total_bytes: u64,
}

impl WeightTable {
    pub fn id(&self, w: &WeightRef) -> Result<WeightId, CompileError> {
        self.ids.get(w).copied().ok_or_else(|| CompileError::Graph(format!("weight {} not in the table", w.plan_name())))
    }
}

/// Expected shape of each part: a matrix `[n_part, k]` or a vector `[len_part]`.
enum Expect {
    Matrix { n: usize, k: usize },
    Vector { len: usize },
}

fn expectation<'a>(op: &'a Op, out_cols: &[usize]) -> Option<(&'a WeightRef, Expect)> {
    match op {
        Op::MatMul { weight, n, k, .. } => Some((weight, Expect::Matrix { n: *n, k: *k })),
        Op::Embedding { table } => Some((table, Expect::Matrix { n: 0, k: out_cols[0] })),
        Op::RmsNorm { weight, .. } | Op::AddRmsNorm { weight, .. } => Some((weight, Expect::Vector { len: out_cols[0] })),
        Op::BiasRopeKvWrite { bias, heads, kv_heads, head_dim, .. } => Some((bias, Expect::Vector { len: (heads + 2 * kv_heads) * head_dim })),
        Op::BiasAdd { bias } => Some((bias, Expect::Vector { len: out_cols[0] })),
        _ => None,
    }
}

/// Builds the weight table for `g` (weights in first-use order of `order`).
pub fn weight_table(g: &OpGraph, order: &[petgraph::stable_graph::NodeIndex], src: &dyn TensorSource) -> Result<WeightTable, CompileError> {
    let mut t = WeightTable::default();
    let mut offset = 0u64;
    for &n in order {
        let node = g.node(n);
        let Some((w, expect)) = expectation(&node.op, &node.out_cols) else { continue };
        if t.ids.contains_key(w) {
            continue;
        }
        let mut rows = 0u64;
        let mut cols = None;
        for part in w.parts() {
            let dims = src.dims(part).ok_or_else(|| CompileError::MissingTensor(part.to_string()))?;
            match (&expect, dims.as_slice()) {
                (Expect::Matrix { k, .. }, [kk, nn]) if *kk == *k as u64 => {
                    rows += nn;
                    cols = Some(*kk);
                }
                (Expect::Vector { .. }, [len]) => rows += len,
                _ => {
                    let expected = match &expect {
                        Expect::Matrix { k, .. } => vec![*k as u64, 0],
                        Expect::Vector { len } => vec![*len as u64],
                    };
                    return Err(CompileError::TensorShape { name: part.to_string(), found: dims, expected });
                }
            }
        }
        let (shape, dtype) = match expect {
            Expect::Matrix { n, k } => {
                if n != 0 && rows != n as u64 {
                    return Err(CompileError::TensorShape { name: w.plan_name(), found: vec![k as u64, rows], expected: vec![k as u64, n as u64] });
                }
                (vec![rows as usize, cols.unwrap_or(0) as usize], DType::F16)
            }
            Expect::Vector { len } => {
                if rows != len as u64 {
                    return Err(CompileError::TensorShape { name: w.plan_name(), found: vec![rows], expected: vec![len as u64] });
                }
                (vec![len], DType::F32)
            }
        };
        let bytes = shape.iter().product::<usize>() as u64 * dtype.size();
        t.ids.insert(w.clone(), WeightId(t.infos.len() as u32));
        t.infos.push(WeightInfo { name: w.plan_name(), dtype, shape, offset, bytes });
        t.refs.push(w.clone());
        offset = crate::memory::align(offset + bytes);
    }
    t.total_bytes = offset;
    Ok(t)
}

/// Writes every weight of the table to `out` in order; returns the sha256 of the bytes written.
pub fn write_weights(t: &WeightTable, src: &dyn TensorSource, out: &mut dyn Write, mut progress: impl FnMut(u64)) -> Result<String, CompileError> {
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let io = |e| CompileError::io("weights.bin", e);
    for (info, w) in t.infos.iter().zip(&t.refs) {
        let pad = vec![0u8; (info.offset - written) as usize];
        out.write_all(&pad).map_err(io)?;
        hasher.update(&pad);
        let mut values = Vec::new();
        for part in w.parts() {
            values.extend(src.load_f32(part)?);
        }
        let bytes: Vec<u8> = match info.dtype {
            DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        if bytes.len() as u64 != info.bytes {
            return Err(CompileError::Graph(format!("weight {} has {} bytes, planned {}", info.name, bytes.len(), info.bytes)));
        }
        out.write_all(&bytes).map_err(io)?;
        hasher.update(&bytes);
        written = info.offset + info.bytes;
        progress(written);
    }
    let pad = vec![0u8; (t.total_bytes - written) as usize];
    out.write_all(&pad).map_err(io)?;
    hasher.update(&pad);
    debug_assert_eq!(t.total_bytes % ALIGNMENT, 0);
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
