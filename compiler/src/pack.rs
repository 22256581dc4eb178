//! The weight packer: decides the plan's weight table (one entry per distinct weight the fused
//! graph reads, concatenations included), checks every tensor's shape against what its op
//! expects, and writes `weights.bin`. A matrix `[n, k]` is one or more row-range parts, each in
//! one [`WeightFormat`] (native mode: the GGUF's own, repacked losslessly by [`crate::repack`];
//! `--weights f16`: one F16 part); a vector (norm, bias) is one F32 part. Parts lie back to back
//! from the weight's [`ALIGNMENT`]-aligned offset (every part's size is a multiple of it).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;
use qwen_aot_plan::integrity;
use qwen_aot_plan::quant::part_layout;
use qwen_aot_plan::{WeightFormat, WeightId, WeightInfo, WeightPart, ALIGNMENT};
use rayon::prelude::*;

use crate::derive::Derivation;
use crate::error::CompileError;
use crate::gguf::{GgmlType, GgufError};
use crate::graph::{Op, OpGraph, RopeKv, WeightRef};
use crate::repack::{format_of, repack_into, RepackError};
use crate::source::TensorSource;

/// How matrices are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightMode {
    /// The GGUF's own format per tensor (quantized weights stay quantized).
    #[default]
    Native,
    /// Every matrix dequantised and rounded to one F16 part (the pre-plan-5 path, for comparison).
    F16,
}

/// How one part's bytes are made from its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// The tensors' ggml bits moved into the canonical layout (lossless).
    Repack,
    /// Dequantised, then rounded to f16.
    ToF16,
    /// Dequantised to f32 (vectors).
    ToF32,
}

/// Where one part comes from: consecutive tensors (name, rows), all filled the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct PartSource {
    pub tensors: Vec<(String, usize)>,
    pub fill: Fill,
}

/// The weight table and the lookup from graph weights to plan ids.
#[derive(Debug, Default)]
pub struct WeightTable {
    pub infos: Vec<WeightInfo>,
    pub refs: Vec<WeightRef>,
    /// Per weight, per part (parallel to `infos[i].parts`): what fills it.
    pub sources: Vec<Vec<PartSource>>,
    pub ids: BTreeMap<WeightRef, WeightId>,
    pub total_bytes: u64,
}

impl WeightTable {
    pub fn id(&self, w: &WeightRef) -> Result<WeightId, CompileError> {
        self.ids
            .get(w)
            .copied()
            .ok_or_else(|| CompileError::Graph(format!("weight {} not in the table", w.plan_name())))
    }
}

/// Bytes of `weights.bin` per part format (sorted by format), for reports.
pub fn bytes_by_format(infos: &[WeightInfo]) -> Vec<(WeightFormat, u64)> {
    let mut m = BTreeMap::new();
    for p in infos.iter().flat_map(|w| &w.parts) {
        *m.entry(p.format).or_insert(0u64) += p.bytes;
    }
    m.into_iter().collect()
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
        Op::RmsNorm { weight, .. } | Op::AddRmsNorm { weight, .. } => {
            Some((weight, Expect::Vector { len: out_cols[0] }))
        }
        Op::BiasRopeKvWrite(RopeKv { bias: Some(bias), heads, kv_heads, head_dim, .. }) => {
            Some((bias, Expect::Vector { len: (heads + 2 * kv_heads) * head_dim }))
        }
        Op::BiasAdd { bias } => Some((bias, Expect::Vector { len: out_cols[0] })),
        _ => None,
    }
}

/// The stored format of one matrix tensor of ggml type `dtype` with rows of `k`, and how it is
/// filled.
fn matrix_format(
    name: &str,
    dtype: GgmlType,
    k: usize,
    mode: WeightMode,
) -> Result<(WeightFormat, Fill), CompileError> {
    // Checked here, before the minutes of packing, with the message the dequantiser would give.
    if !dtype.can_dequantize() {
        return Err(CompileError::Tensor { name: name.to_string(), source: GgufError::UnsupportedDequant { dtype } });
    }
    let native = format_of(dtype)
        .ok_or_else(|| CompileError::Repack { name: name.to_string(), source: RepackError::Unsupported { dtype } })?;
    Ok(match (mode, native) {
        (WeightMode::F16, _) => (WeightFormat::F16, Fill::ToF16),
        // The F32 and BF16 GEMVs read whole 32-element groups with vector loads; only the F16
        // kernels handle any row length (as before plan 5), so other widths are stored as F16.
        (WeightMode::Native, WeightFormat::F32 | WeightFormat::BF16) if !k.is_multiple_of(32) => {
            (WeightFormat::F16, Fill::ToF16)
        }
        (WeightMode::Native, f) => (f, Fill::Repack),
    })
}

/// Builds the weight table for `g` (weights in first-use order of `order`).
pub fn weight_table(
    g: &OpGraph,
    order: &[petgraph::stable_graph::NodeIndex],
    src: &dyn TensorSource,
    mode: WeightMode,
) -> Result<WeightTable, CompileError> {
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
        // (tensor, its rows) for matrices.
        let mut tensors = Vec::new();
        for part in w.parts() {
            let dims = src.dims(part).ok_or_else(|| CompileError::MissingTensor(part.to_string()))?;
            match (&expect, dims.as_slice()) {
                (Expect::Matrix { k, .. }, [kk, nn]) if *kk == *k as u64 => {
                    rows += nn;
                    cols = Some(*kk);
                    tensors.push((part, *nn as usize));
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
        // Parts before their offsets: (rows, format, fill, tensors), and the row length.
        let (shape, k, plan) = match expect {
            Expect::Matrix { n, k } => {
                if n != 0 && rows != n as u64 {
                    return Err(CompileError::TensorShape {
                        name: w.plan_name(),
                        found: vec![k as u64, rows],
                        expected: vec![k as u64, n as u64],
                    });
                }
                let k = cols.unwrap_or(0) as usize;
                let mut plan: Vec<(usize, WeightFormat, PartSource)> = Vec::new();
                for (name, r) in tensors {
                    let dtype = src.ggml_type(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))?;
                    let (format, fill) = matrix_format(name, dtype, k, mode)?;
                    // Adjacent tensors stored alike share one part (q|k of one format, gate|up).
                    match plan.last_mut() {
                        Some((rows, f, s)) if *f == format && s.fill == fill => {
                            *rows += r;
                            s.tensors.push((name.to_string(), r));
                        }
                        _ => plan.push((r, format, PartSource { tensors: vec![(name.to_string(), r)], fill })),
                    }
                }
                (vec![rows as usize, k], k, plan)
            }
            Expect::Vector { len } => {
                if rows != len as u64 {
                    return Err(CompileError::TensorShape {
                        name: w.plan_name(),
                        found: vec![rows],
                        expected: vec![len as u64],
                    });
                }
                let tensors = w.parts().iter().map(|p| (p.to_string(), 1)).collect();
                (vec![len], len, vec![(1, WeightFormat::F32, PartSource { tensors, fill: Fill::ToF32 })])
            }
        };
        let start = offset;
        let mut parts = Vec::with_capacity(plan.len());
        let mut sources = Vec::with_capacity(plan.len());
        for (rows, format, source) in plan {
            let layout = part_layout(format, rows, k).ok_or_else(|| CompileError::Repack {
                name: source.tensors[0].0.clone(),
                source: RepackError::RowLength { format: format.name(), k, multiple: format.row_multiple() },
            })?;
            parts.push(WeightPart { rows, format, offset, bytes: layout.bytes });
            sources.push(source);
            offset += layout.bytes;
        }
        t.ids.insert(w.clone(), WeightId(t.infos.len() as u32));
        t.infos.push(WeightInfo { name: w.plan_name(), shape, offset: start, bytes: offset - start, parts });
        t.refs.push(w.clone());
        t.sources.push(sources);
        debug_assert_eq!(offset % ALIGNMENT, 0, "part sizes are multiples of the alignment");
    }
    t.total_bytes = offset;
    Ok(t)
}

/// The bytes of one part: `part.bytes` long, padding zero.
pub(crate) fn part_bytes(
    part: &WeightPart,
    source: &PartSource,
    k: usize,
    src: &dyn TensorSource,
) -> Result<Vec<u8>, CompileError> {
    // Sizes come from `part_layout` of shapes the source has, so they are bounded by its data.
    let mut out = match source.fill {
        Fill::Repack => vec![0u8; part.bytes as usize],
        Fill::ToF16 | Fill::ToF32 => Vec::with_capacity(part.bytes as usize),
    };
    let mut first = 0;
    for (name, rows) in &source.tensors {
        // Every tensor passes here exactly once, as its own ggml bytes: the one place to refuse
        // NaN/Inf weights (a dequantised copy would hide which block's scale is bad).
        let raw = src.load_raw(name)?;
        crate::finite::check(raw.dtype, &raw.bytes)
            .map_err(|source| CompileError::NonFinite { name: name.clone(), source })?;
        match source.fill {
            Fill::Repack => {
                repack_into(raw.dtype, &raw.bytes, *rows, k, &mut out, part.rows, first)
                    .map_err(|e| CompileError::Repack { name: name.clone(), source: e })?;
            }
            Fill::ToF16 => out.extend(src.load_f32(name)?.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
            Fill::ToF32 => out.extend(src.load_f32(name)?.iter().flat_map(|v| v.to_le_bytes())),
        }
        first += rows;
    }
    if out.len() as u64 > part.bytes {
        return Err(CompileError::Graph(format!(
            "weight part of {} has {} bytes, planned {}",
            source.tensors[0].0,
            out.len(),
            part.bytes
        )));
    }
    out.resize(part.bytes as usize, 0);
    Ok(out)
}

/// What [`write_weights`] computed over the bytes it wrote ([`qwen_aot_plan::integrity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsDigest {
    /// The two-level SHA-256 of every byte (the plan's `weights_sha256`).
    pub sha256: String,
    /// Each window's short hash (the plan's `weights_windows`).
    pub windows: String,
}

/// Writes every stored part of the table into `out` at its offset, then the corrections of the
/// `derived` weights (which are not stored: `crate::derive`), parts in parallel (each part is
/// filled, hashed window by window and written by one task; `out` is sized first, and the parts
/// and corrections tile it, so no byte is left unwritten), in one pass over the source. At most
/// one part per thread is held in memory. `progress` gets the bytes written so far.
pub fn write_weights(
    t: &WeightTable,
    derived: &[Derivation],
    src: &dyn TensorSource,
    out: &std::fs::File,
    progress: impl Fn(u64) + Sync,
) -> Result<WeightsDigest, CompileError> {
    let io = |e| CompileError::io("weights.bin", e);
    out.set_len(t.total_bytes).map_err(io)?;
    let done = AtomicU64::new(0);
    // In file order: the stored parts, then the corrections (as `integrity::windows` lists them).
    let tasks: Vec<Task> = t
        .infos
        .iter()
        .zip(&t.sources)
        .enumerate()
        .filter(|&(i, _)| !derived.iter().any(|d| d.target == i))
        .flat_map(|(_, (info, sources))| {
            let k = *info.shape.last().unwrap_or(&0);
            info.parts.iter().zip(sources).map(move |(part, source)| Task::Part(part, source, k))
        })
        .chain(derived.iter().map(Task::Correction))
        .collect();
    let per_part: Vec<Vec<[u8; 32]>> = tasks
        .into_par_iter()
        .map(|task| {
            let (bytes, at) = match task {
                Task::Part(part, source, k) => (part_bytes(part, source, k, src)?, part.offset),
                Task::Correction(d) => (d.region(), d.correction_offset),
            };
            write_at(out, &bytes, at).map_err(io)?;
            let n = bytes.len() as u64;
            progress(done.fetch_add(n, Ordering::Relaxed) + n);
            Ok(integrity::part_digests(&bytes))
        })
        .collect::<Result<_, CompileError>>()?;
    let (sha256, windows) = integrity::summarize(&per_part.concat());
    Ok(WeightsDigest { sha256, windows })
}

/// One unit of [`write_weights`]' work: a stored part (with its row length), or a derived
/// weight's correction region.
enum Task<'a> {
    Part(&'a WeightPart, &'a PartSource, usize),
    Correction(&'a Derivation),
}

/// `bytes` written at `offset` of `file` (positioned writes, so that tasks need no shared cursor).
fn write_at(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(windows)]
    {
        let (mut bytes, mut offset) = (bytes, offset);
        while !bytes.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_write(file, bytes, offset)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            (bytes, offset) = (&bytes[n..], offset + n as u64);
        }
        Ok(())
    }
}

pub use integrity::hex;

#[cfg(test)]
mod tests;
