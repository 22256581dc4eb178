//! The plan's one structural validator: every size, offset and reference checked once, when a
//! compiled directory is opened (`CompiledModel::open` in the runtime), so that executors may index
//! and launch without further checks. A backend adds only what its kernels cannot do on top of it
//! (the CUDA executor: head dims, query-group size, quantized row lengths), never structure.
//!
//! The rules are the plan's documented contract, not any one kernel's. Where the runtime's two
//! earlier validators (the loader's and the CUDA executor's) disagreed, the contract decides:
//! - No step's output overlaps one of its inputs or another of its outputs, not even exactly
//!   (an in-place RmsNorm or AddRmsNorm with `sum_out == a` is refused; the CUDA validator allowed
//!   it). Every step's semantics are defined on separate buffers, the compiler's memory planner
//!   never aliases them (compiler/src/memory.rs), and the CPU executor borrows a step's inputs as
//!   `&[f32]` next to its outputs as `&mut [f32]`: in place, those borrows would alias, which Rust
//!   forbids (undefined behaviour), whatever a kernel could tolerate.
//! - RmsNorm and AddRmsNorm rows are `hidden` wide, with an f32 `[hidden]` weight, as
//!   [`Step::RmsNorm`] says and the CPU twin computes (the CUDA validator took the width from the
//!   input buffer).
//! - Buffers start at a multiple of [`ALIGNMENT`] (the contract; the CUDA validator asked 16).
//! - Attention and RoPE steps have exactly the hyperparameters' heads and head_dim (the KV cache
//!   is sized from them; the CUDA validator compared only KV heads and head_dim).
mod derived;

use thiserror::Error;

use crate::integrity;
use crate::quant::part_layout;
use crate::{
    BufId, DType, GemvEpilogue, Plan, Program, RopeKvWrite, Step, WeightFormat, WeightId, WeightInfo, ALIGNMENT,
};

/// Why a plan is not valid: one sentence naming the program, step, buffer or weight at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidPlan(pub String);

fn bad(msg: String) -> InvalidPlan {
    InvalidPlan(msg)
}

/// Checks every size, offset and reference in the plan (not its version or seal: the loader
/// checks those first, on the text), so executors may trust it.
pub fn validate(plan: &Plan) -> Result<(), InvalidPlan> {
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
    // The stored weights back to back from 0, then the derived weights' corrections to the end of
    // the file, so that the hashed windows cover every byte; the derived weights past it.
    let weights_len = plan.weights_bytes.checked_add(plan.weights.iter().map(|w| w.bytes).sum::<u64>());
    let weights_len = weights_len.ok_or_else(|| bad("the weights' sizes overflow".into()))?;
    let mut end = 0;
    for (i, w) in plan.weights.iter().enumerate() {
        let derived = plan.derivation(WeightId(i as u32)).is_some();
        validate_weight(w, if derived { weights_len } else { plan.weights_bytes })?;
        if derived {
            continue;
        }
        if w.offset != end {
            return Err(bad(format!("weight {} does not start where the previous one ends", w.name)));
        }
        end = w.offset + w.bytes;
    }
    if plan.derived.is_empty() && end != plan.weights_bytes {
        return Err(bad(format!("the weights end at byte {end} of the {} in weights.bin", plan.weights_bytes)));
    }
    derived::validate_derived(plan, end)?;
    if let Some(d) = plan.derived.iter().find(|d| plan.read_by_matrix_product(d.target)) {
        return Err(bad(format!(
            "the derived weight {} is read by a matrix product (only embedding lookups may read one)",
            plan.weights[d.target.0 as usize].name
        )));
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
fn validate_weight(w: &WeightInfo, file_bytes: u64) -> Result<(), InvalidPlan> {
    let inconsistent = |why: &str| bad(format!("weight {} has an inconsistent layout: {why}", w.name));
    if !w.offset.is_multiple_of(ALIGNMENT) || w.offset.checked_add(w.bytes).is_none_or(|end| end > file_bytes) {
        return Err(inconsistent("offset/size outside weights.bin (or, derived, past the weight space)"));
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

fn validate_program(plan: &Plan, p: &Program, name: &str) -> Result<(), InvalidPlan> {
    if p.max_tokens == 0 || p.max_tokens > 1 << 16 {
        return Err(bad(format!("{name}: max_tokens {} out of range", p.max_tokens)));
    }
    if p.steps.is_empty() {
        return Err(bad(format!("{name}: the program has no steps")));
    }
    let mut buffers_end = 0u64;
    for b in &p.buffers {
        let need = (p.max_tokens as u64).checked_mul(b.row_elems as u64).and_then(|e| e.checked_mul(b.dtype.size()));
        let need = need.ok_or_else(|| bad(format!("{name}: buffer {}'s size overflows", b.name)))?;
        // Exactly its rows (up to the alignment): an oversized buffer would make the arena, which
        // executors allocate as the plan says, as large as a file claims.
        if b.offset % ALIGNMENT != 0
            || b.bytes < need
            || b.bytes > need.next_multiple_of(ALIGNMENT)
            || b.offset.checked_add(b.bytes).is_none_or(|e| e > p.arena_bytes)
        {
            return Err(bad(format!("{name}: buffer {} does not fit the arena", b.name)));
        }
        buffers_end = buffers_end.max(b.offset + b.bytes);
    }
    if p.arena_bytes > buffers_end.next_multiple_of(ALIGNMENT) {
        return Err(bad(format!(
            "{name}: an arena of {} bytes where its buffers end at byte {buffers_end}",
            p.arena_bytes
        )));
    }
    let hp = &plan.hparams;
    let buf = |id: BufId, dtype: DType, elems: usize| -> Result<(), InvalidPlan> {
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
    let weight = |id: WeightId, kind: Kind, shape: &[usize]| -> Result<(), InvalidPlan> {
        let w =
            plan.weights.get(id.0 as usize).ok_or_else(|| bad(format!("{name}: weight {} does not exist", id.0)))?;
        let vector_ok = kind == Kind::Matrix || w.all_parts(WeightFormat::F32);
        if w.shape != shape || !vector_ok {
            return Err(bad(format!("{name}: weight {} is {:?} where {kind:?}{shape:?} is needed", w.name, w.shape)));
        }
        Ok(())
    };
    let attn = |nh: usize, nkv: usize, hd: usize| -> Result<(), InvalidPlan> {
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
    let rope_ok = |r: &RopeKvWrite, q_out: BufId| -> Result<usize, InvalidPlan> {
        attn(r.n_heads, r.n_kv_heads, r.head_dim)?;
        layer_ok(r.layer)?;
        if let Some(b) = r.bias {
            weight(b, Kind::Vector, &[r.packed()])?;
        }
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
