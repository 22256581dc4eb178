//! Loading a compiled directory: `plan.json` (parsed, its seal checked, validated once),
//! `weights.bin` (memory-mapped; its size checked, and a sample of its windows or all of it
//! hashed: [`crate::integrity`]) and `tokenizer.json` (if present).
//! After [`CompiledModel::open`] succeeds, every buffer and weight reference in the plan is in
//! bounds, so executors can index without further checks.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::RuntimeError;
use crate::integrity::{self, Damage};
use crate::phases;
use crate::plan::{
    BufId, DType, GemvEpilogue, Plan, Program, RopeKvWrite, Step, WeightFormat, WeightId, WeightInfo, ALIGNMENT,
    PLAN_FILE, PLAN_FORMAT_VERSION, TOKENIZER_FILE, WEIGHTS_FILE,
};
use crate::quant::part_layout;

pub struct CompiledModel {
    pub dir: PathBuf,
    pub plan: Plan,
    /// Shared so that an executor reading weights in place (the CPU's) keeps the map alive
    /// without copying `weights.bin`.
    weights: Arc<Mmap>,
}

/// How much of `weights.bin` [`CompiledModel::open`] hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// [`integrity::SAMPLED_WINDOWS`] windows of 64 KiB, picked at random per process (every
    /// window of a small model): the default at every load.
    Sampled,
    /// Every byte (about half a second per GB on two cores): `qwen-aot verify`, `check`.
    Full,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io { path: path.display().to_string(), source }
}

impl CompiledModel {
    /// Opens and validates `dir`, hashing `weights.bin` as `check` says.
    pub fn open(dir: &Path, check: Integrity) -> Result<CompiledModel, RuntimeError> {
        let (plan, weights) = Self::open_unchecked(dir)?;
        let _span = phases::span(match check {
            Integrity::Sampled => "weights.bin: hash 16 sampled windows",
            Integrity::Full => "weights.bin: hash every byte",
        });
        let wpath = dir.join(WEIGHTS_FILE);
        let windows = integrity::windows(&plan);
        let damaged = match check {
            Integrity::Sampled => {
                integrity::check_sampled(&plan, &weights, &windows, integrity::random_seed()).err().map(|d| vec![d])
            }
            Integrity::Full => {
                let report = integrity::check_full(&plan, &weights, &windows);
                (!report.damaged.is_empty() || !report.sha256_ok).then_some(report.damaged)
            }
        };
        if let Some(damaged) = damaged {
            return Err(corrupt(&wpath, &plan, &damaged));
        }
        Ok(CompiledModel { dir: dir.to_path_buf(), plan, weights: Arc::new(weights) })
    }

    /// The plan (parsed, seal checked, validated) and the mapped `weights.bin` (size checked),
    /// without hashing any weight: [`Self::open`], and `qwen-aot verify`, which reports every
    /// damaged window itself.
    pub fn open_unchecked(dir: &Path) -> Result<(Plan, Mmap), RuntimeError> {
        let plan_path = dir.join(PLAN_FILE);
        let span = phases::span("plan.json: read, parse, check seal, validate");
        let text = std::fs::read_to_string(&plan_path).map_err(io(&plan_path))?;
        let plan = parse_plan(&text).map_err(|e| match e {
            RuntimeError::BadPlan(why) => RuntimeError::BadPlan(format!("{}: {why}", plan_path.display())),
            other => other,
        })?;
        drop(span);
        let _span = phases::span("weights.bin: map, check size");
        let wpath = dir.join(WEIGHTS_FILE);
        let file = std::fs::File::open(&wpath).map_err(io(&wpath))?;
        // SAFETY: the file is opened read-only and the project never writes a compiled directory
        // in place (the compiler writes a temporary directory and renames it), so the mapping is
        // not mutated underneath us by our own tools.
        let weights = unsafe { Mmap::map(&file) }.map_err(io(&wpath))?;
        if weights.len() as u64 != plan.weights_bytes {
            return Err(RuntimeError::BadPlan(format!(
                "{} is {} bytes but the plan expects {} (truncated or from another compile)",
                wpath.display(),
                weights.len(),
                plan.weights_bytes
            )));
        }
        Ok((plan, weights))
    }

    /// The packed bytes of `weights.bin`.
    pub fn weight_bytes(&self) -> &[u8] {
        &self.weights
    }

    /// `weights.bin` handed to `f` in order, `chunk` bytes at a time (offset, bytes); once `f`
    /// returns, the chunk's pages leave this process's resident set (MADV_DONTNEED on the
    /// read-only file mapping: they stay in the page cache and fault back in, unchanged, if read
    /// again). An upload this way keeps about one chunk of the file resident on the host instead
    /// of all of it. `f` must be done reading the chunk when it returns.
    pub fn stream_weights(
        &self,
        chunk: usize,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let chunk = chunk.max(1);
        for (i, bytes) in self.weights.chunks(chunk).enumerate() {
            let offset = i * chunk;
            f(offset as u64, bytes)?;
            #[cfg(unix)]
            // SAFETY: the map is a read-only mapping of a file this process never writes, so
            // dropping its pages loses nothing: a later read faults the same bytes back in from
            // the file (DONTNEED only discards data in private pages that were written). The
            // range is inside the map (memmap2 aligns its start down to a page).
            unsafe {
                // Best effort: a refused advice only keeps the pages resident.
                let _ = self.weights.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len());
            }
        }
        Ok(())
    }

    /// The memory map of `weights.bin`, shared (for executors that read weights in place).
    pub fn weights_map(&self) -> Arc<Mmap> {
        Arc::clone(&self.weights)
    }

    /// Bytes of one weight (in bounds: checked at open).
    pub fn weight(&self, id: WeightId) -> &[u8] {
        let w = &self.plan.weights[id.0 as usize];
        &self.weights[w.offset as usize..(w.offset + w.bytes) as usize]
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}

/// `plan.json`'s text to a validated plan. One typed parse in the normal case; the version is
/// looked at first only when that fails, so that an old plan gets the "recompile" message.
pub fn parse_plan(text: &str) -> Result<Plan, RuntimeError> {
    let plan: Plan = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let version = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("format_version").and_then(|x| x.as_u64()));
            return Err(match version {
                Some(v) if v != u64::from(PLAN_FORMAT_VERSION) => {
                    RuntimeError::PlanVersion { found: v.try_into().unwrap_or(u32::MAX), expected: PLAN_FORMAT_VERSION }
                }
                _ => bad(e.to_string()),
            });
        }
    };
    if plan.format_version != PLAN_FORMAT_VERSION {
        return Err(RuntimeError::PlanVersion { found: plan.format_version, expected: PLAN_FORMAT_VERSION });
    }
    if !integrity::seal_matches(text) {
        return Err(bad("the plan does not match its own checksum (plan_sha256): it was edited or damaged".into()));
    }
    validate(&plan)?;
    Ok(plan)
}

/// The error for damaged windows of `weights.bin` (none listed: only the two-level hash differs,
/// i.e. the plan's own table was altered).
fn corrupt(path: &Path, plan: &Plan, damaged: &[Damage]) -> RuntimeError {
    const SHOWN: usize = 3;
    let mut what: Vec<String> = damaged.iter().take(SHOWN).map(|d| d.describe(plan)).collect();
    if damaged.len() > SHOWN {
        what.push(format!("and {} more windows", damaged.len() - SHOWN));
    }
    if what.is_empty() {
        what.push("its SHA-256 differs from the plan's while every window matches".into());
    }
    RuntimeError::CorruptWeights {
        path: path.display().to_string(),
        what: format!("{} differ from what the compiler wrote", what.join(", ")),
    }
}

fn bad(msg: String) -> RuntimeError {
    RuntimeError::BadPlan(msg)
}

/// Checks every size, offset and reference in the plan once, so executors may trust it.
pub fn validate(plan: &Plan) -> Result<(), RuntimeError> {
    let hp = &plan.hparams;
    let sane = |v: usize, what: &str| {
        if v == 0 || v > 1 << 24 {
            Err(bad(format!("hyperparameter {what} = {v} is out of range")))
        } else {
            Ok(())
        }
    };
    for (v, what) in [
        (hp.n_layers, "n_layers"),
        (hp.hidden, "hidden"),
        (hp.n_heads, "n_heads"),
        (hp.n_kv_heads, "n_kv_heads"),
        (hp.head_dim, "head_dim"),
        (hp.ffn, "ffn"),
        (hp.vocab, "vocab"),
        (hp.context_length, "context_length"),
    ] {
        sane(v, what)?;
    }
    if !hp.n_heads.is_multiple_of(hp.n_kv_heads) || !hp.head_dim.is_multiple_of(2) {
        return Err(bad(format!(
            "{} heads / {} KV heads / head_dim {} is not a valid attention shape",
            hp.n_heads, hp.n_kv_heads, hp.head_dim
        )));
    }
    let mut end = 0;
    for w in &plan.weights {
        validate_weight(w, plan.weights_bytes)?;
        // Back to back from 0 to the end of the file, so that the hashed windows cover every byte.
        if w.offset != end {
            return Err(bad(format!("weight {} does not start where the previous one ends", w.name)));
        }
        end = w.offset + w.bytes;
    }
    if end != plan.weights_bytes {
        return Err(bad(format!("the weights end at byte {end} of the {} in weights.bin", plan.weights_bytes)));
    }
    if !integrity::table_fits(plan, integrity::window_count(plan)) {
        return Err(bad("the window hash table (weights_windows) does not fit the weights".into()));
    }
    validate_program(plan, &plan.prefill, "prefill")?;
    validate_program(plan, &plan.decode, "decode")?;
    if plan.decode.max_tokens != 1 {
        return Err(bad("the decode program must process exactly one token".into()));
    }
    Ok(())
}

/// A weight's parts: consecutive, aligned, inside the weight and the file, each of the size its
/// format's layout gives for its rows, and their rows adding up to the shape's.
fn validate_weight(w: &WeightInfo, file_bytes: u64) -> Result<(), RuntimeError> {
    let inconsistent = |why: &str| bad(format!("weight {} has an inconsistent layout: {why}", w.name));
    if !w.offset.is_multiple_of(ALIGNMENT) || w.offset.checked_add(w.bytes).is_none_or(|end| end > file_bytes) {
        return Err(inconsistent("offset/size outside weights.bin"));
    }
    let (rows, k) = match w.shape.as_slice() {
        [n, k] => (*n, *k),
        [len] => (1, *len),
        _ => return Err(inconsistent("neither a matrix nor a vector")),
    };
    if w.parts.is_empty() || w.parts.len() > MAX_WEIGHT_PARTS {
        return Err(inconsistent("needs 1 to 3 parts"));
    }
    let mut at = w.offset;
    let mut seen_rows = 0usize;
    for part in &w.parts {
        let layout = part_layout(part.format, part.rows, k)
            .ok_or_else(|| inconsistent(&format!("{} rows of {k} do not fit {}", part.rows, part.format.name())))?;
        if part.offset != at || part.bytes != layout.bytes || part.rows == 0 {
            return Err(inconsistent("parts are not consecutive or have the wrong size"));
        }
        at += part.bytes;
        seen_rows += part.rows;
    }
    if seen_rows != rows || at != w.offset + w.bytes {
        return Err(inconsistent("parts do not cover the weight"));
    }
    Ok(())
}

/// What a step reads a weight as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `[n, k]` in any formats.
    Matrix,
    /// `[len]`, one F32 part.
    Vector,
}

/// Most parts a weight may have (the CUDA kernels take them by value: QA_MAX_PARTS in
/// kernels/quant.cuh): q|k|v or gate|up in up to three formats.
pub const MAX_WEIGHT_PARTS: usize = 3;

fn validate_program(plan: &Plan, p: &Program, name: &str) -> Result<(), RuntimeError> {
    if p.max_tokens == 0 || p.max_tokens > 1 << 16 {
        return Err(bad(format!("{name}: max_tokens {} out of range", p.max_tokens)));
    }
    for b in &p.buffers {
        let need = (p.max_tokens * b.row_elems) as u64 * b.dtype.size();
        if b.offset % ALIGNMENT != 0
            || b.bytes < need
            || b.offset.checked_add(b.bytes).is_none_or(|e| e > p.arena_bytes)
        {
            return Err(bad(format!("{name}: buffer {} does not fit the arena", b.name)));
        }
    }
    let hp = &plan.hparams;
    let buf = |id: BufId, dtype: DType, elems: usize| -> Result<(), RuntimeError> {
        let b = p.buffers.get(id.0 as usize).ok_or_else(|| bad(format!("{name}: buffer {} does not exist", id.0)))?;
        if b.dtype != dtype || b.row_elems != elems {
            return Err(bad(format!(
                "{name}: buffer {} is {:?}x{} where {:?}x{} is needed",
                b.name, b.dtype, b.row_elems, dtype, elems
            )));
        }
        Ok(())
    };
    // Vectors are one F32 part; matrices any formats (their parts were checked above).
    let weight = |id: WeightId, kind: Kind, shape: &[usize]| -> Result<(), RuntimeError> {
        let w =
            plan.weights.get(id.0 as usize).ok_or_else(|| bad(format!("{name}: weight {} does not exist", id.0)))?;
        let vector_ok = kind == Kind::Matrix || w.all_parts(WeightFormat::F32);
        if w.shape != shape || !vector_ok {
            return Err(bad(format!("{name}: weight {} is {:?} where {kind:?}{shape:?} is needed", w.name, w.shape)));
        }
        Ok(())
    };
    let attn = |nh: usize, nkv: usize, hd: usize| -> Result<(), RuntimeError> {
        if (nh, nkv, hd) != (hp.n_heads, hp.n_kv_heads, hp.head_dim) {
            return Err(bad(format!("{name}: attention shape {nh}/{nkv}/{hd} differs from the hyperparameters")));
        }
        Ok(())
    };
    let layer_ok = |l: usize| {
        if l < hp.n_layers {
            Ok(())
        } else {
            Err(bad(format!("{name}: layer {l} out of range")))
        }
    };
    // Bias + RoPE + KV write (a step or a GEMV epilogue): its sizes; returns the packed qkv width.
    let rope_ok = |r: &RopeKvWrite, q_out: BufId| -> Result<usize, RuntimeError> {
        attn(r.n_heads, r.n_kv_heads, r.head_dim)?;
        layer_ok(r.layer)?;
        weight(r.bias, Kind::Vector, &[r.packed()])?;
        buf(q_out, DType::F32, r.n_heads * r.head_dim)?;
        Ok(r.packed())
    };
    buf(p.tokens, DType::I32, 1)?;
    buf(p.logits, DType::F32, hp.vocab)?;
    buf(p.next_token, DType::I32, 1)?;
    for s in &p.steps {
        match s {
            Step::Embed { tokens, table, out } => {
                buf(*tokens, DType::I32, 1)?;
                weight(*table, Kind::Matrix, &[hp.vocab, hp.hidden])?;
                buf(*out, DType::F32, hp.hidden)?;
            }
            Step::RmsNorm { x, weight: w, out, .. } => {
                buf(*x, DType::F32, hp.hidden)?;
                weight(*w, Kind::Vector, &[hp.hidden])?;
                buf(*out, DType::F32, hp.hidden)?;
            }
            Step::AddRmsNorm { a, b, weight: w, sum_out, norm_out, .. } => {
                for id in [a, b, sum_out, norm_out] {
                    buf(*id, DType::F32, hp.hidden)?;
                }
                weight(*w, Kind::Vector, &[hp.hidden])?;
            }
            Step::MatMul { x, weight: w, n, k, out, residual, .. } => {
                buf(*x, DType::F32, *k)?;
                weight(*w, Kind::Matrix, &[*n, *k])?;
                buf(*out, DType::F32, *n)?;
                if let Some(r) = residual {
                    buf(*r, DType::F32, *n)?;
                }
            }
            Step::BiasRopeKvWrite { qkv, rope, q_out } => buf(*qkv, DType::F32, rope_ok(rope, *q_out)?)?,
            Step::Attention { q, layer, n_heads, n_kv_heads, head_dim, out, .. } => {
                attn(*n_heads, *n_kv_heads, *head_dim)?;
                layer_ok(*layer)?;
                buf(*q, DType::F32, n_heads * head_dim)?;
                buf(*out, DType::F32, n_heads * head_dim)?;
            }
            Step::SwiGlu { gate_up, ffn, out } => {
                buf(*gate_up, DType::F32, 2 * ffn)?;
                buf(*out, DType::F32, *ffn)?;
            }
            Step::Argmax { logits, vocab, out } => {
                buf(*logits, DType::F32, *vocab)?;
                buf(*out, DType::I32, 1)?;
            }
            Step::Gemv { x, norm, weight: w, n, k, epilogue } => {
                buf(*x, DType::F32, *k)?;
                weight(*w, Kind::Matrix, &[*n, *k])?;
                if let Some(nm) = norm {
                    weight(nm.weight, Kind::Vector, &[*k])?;
                }
                match epilogue {
                    GemvEpilogue::Store { out, residual, .. } => {
                        buf(*out, DType::F32, *n)?;
                        if let Some(r) = residual {
                            buf(*r, DType::F32, *n)?;
                        }
                    }
                    GemvEpilogue::SwiGlu { ffn, out } => {
                        if 2 * ffn != *n {
                            return Err(bad(format!("{name}: gemv_swiglu of {n} rows is not 2 x ffn {ffn}")));
                        }
                        buf(*out, DType::F32, *ffn)?;
                    }
                    GemvEpilogue::BiasRopeKvWrite { rope, q_out } => {
                        let packed = rope_ok(rope, *q_out)?;
                        if packed != *n {
                            return Err(bad(format!(
                                "{name}: gemv_rope_kv_write of {n} rows for a packed qkv of {packed}"
                            )));
                        }
                    }
                }
            }
        }
        // Outputs of a step must not overlap its inputs (kernels assume no aliasing).
        let (ins, outs) = step_buffers(s);
        for o in &outs {
            for other in ins.iter().chain(outs.iter().filter(|x| *x != o)) {
                let (bo, bi) = (&p.buffers[o.0 as usize], &p.buffers[other.0 as usize]);
                if bo.offset < bi.offset + bi.bytes && bi.offset < bo.offset + bo.bytes {
                    return Err(bad(format!(
                        "{name}: step {} writes {} which overlaps {}",
                        s.kernel_name(),
                        bo.name,
                        bi.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// (inputs, outputs) buffers of a step.
pub fn step_buffers(s: &Step) -> (Vec<BufId>, Vec<BufId>) {
    match s {
        Step::Embed { tokens, out, .. } => (vec![*tokens], vec![*out]),
        Step::RmsNorm { x, out, .. } => (vec![*x], vec![*out]),
        Step::AddRmsNorm { a, b, sum_out, norm_out, .. } => (vec![*a, *b], vec![*sum_out, *norm_out]),
        Step::MatMul { x, out, residual, .. } => (std::iter::once(*x).chain(*residual).collect(), vec![*out]),
        Step::BiasRopeKvWrite { qkv, q_out, .. } => (vec![*qkv], vec![*q_out]),
        Step::Attention { q, out, .. } => (vec![*q], vec![*out]),
        Step::SwiGlu { gate_up, out, .. } => (vec![*gate_up], vec![*out]),
        Step::Argmax { logits, out, .. } => (vec![*logits], vec![*out]),
        Step::Gemv { x, epilogue, .. } => match epilogue {
            GemvEpilogue::Store { out, residual, .. } => (std::iter::once(*x).chain(*residual).collect(), vec![*out]),
            GemvEpilogue::SwiGlu { out, .. } => (vec![*x], vec![*out]),
            GemvEpilogue::BiasRopeKvWrite { q_out, .. } => (vec![*x], vec![*q_out]),
        },
    }
}
