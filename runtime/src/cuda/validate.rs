//! Validates a plan once at load against what the CUDA kernels need, so that every launch's
//! buffer sizes hold (the `// SAFETY:` comments in the executor rely on this).
use crate::error::RuntimeError;
use crate::plan::{
    BufId, DType, GemvEpilogue, Plan, Program, RopeKvWrite, Step, WeightFormat, WeightId, PLAN_FORMAT_VERSION,
};

use super::device::QGEMV_MAX_SMEM;
use super::launch::{attention_kernel, ATTN_MAX_GROUP};

fn bad(msg: String) -> RuntimeError {
    RuntimeError::BadPlan(msg)
}

pub(crate) fn validate(plan: &Plan, weights_len: usize) -> Result<(), RuntimeError> {
    if plan.format_version != PLAN_FORMAT_VERSION {
        return Err(RuntimeError::PlanVersion { found: plan.format_version, expected: PLAN_FORMAT_VERSION });
    }
    if plan.weights_bytes != weights_len as u64 {
        return Err(bad(format!("weights.bin has {weights_len} bytes, the plan expects {}", plan.weights_bytes)));
    }
    // The structural rules (weights' parts inside weights.bin, buffers, references) are the
    // plan's own validator's; what follows are the CUDA kernels' extra needs.
    crate::compiled::validate(plan)?;
    let hp = &plan.hparams;
    for (name, prog) in [("prefill", &plan.prefill), ("decode", &plan.decode)] {
        validate_program(plan, name, prog).map_err(|e| match e {
            RuntimeError::BadPlan(m) => bad(format!("{name} program: {m}")),
            other => other,
        })?;
    }
    if plan.decode.max_tokens != 1 {
        return Err(bad(format!("decode program has max_tokens {} (must be 1)", plan.decode.max_tokens)));
    }
    if hp.n_kv_heads == 0 || hp.head_dim == 0 {
        return Err(bad("zero KV heads or head_dim".into()));
    }
    Ok(())
}

struct Ctx<'a> {
    plan: &'a Plan,
    prog: &'a Program,
}

impl Ctx<'_> {
    fn buf(&self, id: BufId, dtype: DType, row_elems: usize, what: &str) -> Result<(u64, u64), RuntimeError> {
        let b = self
            .prog
            .buffers
            .get(id.0 as usize)
            .ok_or_else(|| bad(format!("{what}: buffer #{} does not exist", id.0)))?;
        if b.dtype != dtype || b.row_elems != row_elems {
            return Err(bad(format!(
                "{what}: buffer {} is {:?} x {} per row, expected {:?} x {row_elems}",
                b.name, b.dtype, b.row_elems, dtype
            )));
        }
        Ok((b.offset, b.bytes))
    }

    /// `dtype` F32: a vector (one F32 part); F16: a matrix, all F16 (the f16 kernels, any k) or
    /// in formats the quantized kernels read (k a multiple of 32, the x row fitting shared memory).
    fn weight(&self, id: WeightId, dtype: DType, shape: &[usize], what: &str) -> Result<(), RuntimeError> {
        let w = self
            .plan
            .weights
            .get(id.0 as usize)
            .ok_or_else(|| bad(format!("{what}: weight #{} does not exist", id.0)))?;
        if w.shape != shape {
            return Err(bad(format!("{what}: weight {} is {:?}, expected {shape:?}", w.name, w.shape)));
        }
        if dtype == DType::F32 && !w.all_parts(WeightFormat::F32) {
            return Err(bad(format!("{what}: weight {} must be F32", w.name)));
        }
        let k = *shape.last().unwrap_or(&0);
        let quantized = !w.all_parts(WeightFormat::F16);
        if dtype == DType::F16 && quantized && (!k.is_multiple_of(32) || 4 * k > QGEMV_MAX_SMEM as usize) {
            return Err(bad(format!(
                "{what}: weight {} has rows of {k}: the quantized kernels need a multiple of 32, at most {}",
                w.name,
                QGEMV_MAX_SMEM / 4
            )));
        }
        Ok(())
    }
}

impl Ctx<'_> {
    /// Bias + RoPE + KV write (a step or a GEMV epilogue): heads, bias, q_out; returns q_out's range.
    fn rope(&self, r: &RopeKvWrite, q_out: BufId, what: &str) -> Result<(u64, u64), RuntimeError> {
        check_heads(&self.plan.hparams, r.layer, r.n_heads, r.n_kv_heads, r.head_dim, what)?;
        self.weight(r.bias, DType::F32, &[r.packed()], what)?;
        self.buf(q_out, DType::F32, r.n_heads * r.head_dim, what)
    }
}

fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

/// Inputs and outputs must not overlap, except identical ranges where `in_place` allows it.
fn disjoint(step: &str, ins: &[(u64, u64)], outs: &[(u64, u64)], in_place: bool) -> Result<(), RuntimeError> {
    for (i, o) in outs.iter().enumerate() {
        for x in ins {
            if overlap(*x, *o) && !(in_place && x == o) {
                return Err(bad(format!(
                    "{step}: an output overlaps an input in the arena (offsets {} and {})",
                    o.0, x.0
                )));
            }
        }
        for p in &outs[..i] {
            if overlap(*p, *o) {
                return Err(bad(format!("{step}: two outputs overlap in the arena")));
            }
        }
    }
    Ok(())
}

fn validate_program(plan: &Plan, _name: &str, prog: &Program) -> Result<(), RuntimeError> {
    let hp = &plan.hparams;
    if prog.max_tokens == 0 {
        return Err(bad("max_tokens is 0".into()));
    }
    for b in &prog.buffers {
        let need = prog.max_tokens as u64 * b.row_elems as u64 * b.dtype.size();
        if b.bytes < need
            || b.offset.checked_add(b.bytes).is_none_or(|e| e > prog.arena_bytes)
            || !b.offset.is_multiple_of(16)
        {
            return Err(bad(format!(
                "buffer {}: offset {} + {} bytes (needs {need}) outside the arena ({}) or misaligned",
                b.name, b.offset, b.bytes, prog.arena_bytes
            )));
        }
    }
    let c = Ctx { plan, prog };
    c.buf(prog.tokens, DType::I32, 1, "tokens")?;
    c.buf(prog.logits, DType::F32, hp.vocab, "logits")?;
    c.buf(prog.next_token, DType::I32, 1, "next_token")?;
    for (si, step) in prog.steps.iter().enumerate() {
        let what = format!("step {si} ({})", step.kernel_name());
        let w = what.as_str();
        match *step {
            Step::Embed { tokens, table, out } => {
                let t = c.buf(tokens, DType::I32, 1, w)?;
                let o = c.buf(out, DType::F32, hp.hidden, w)?;
                c.weight(table, DType::F16, &[hp.vocab, hp.hidden], w)?;
                disjoint(w, &[t], &[o], false)?;
            }
            Step::RmsNorm { x, weight, out, .. } => {
                let n = c.prog.buffers.get(x.0 as usize).map(|b| b.row_elems).unwrap_or(0);
                let xi = c.buf(x, DType::F32, n, w)?;
                let o = c.buf(out, DType::F32, n, w)?;
                c.weight(weight, DType::F32, &[n], w)?;
                disjoint(w, &[xi], &[o], true)?;
            }
            Step::AddRmsNorm { a, b, weight, sum_out, norm_out, .. } => {
                let n = c.prog.buffers.get(a.0 as usize).map(|b| b.row_elems).unwrap_or(0);
                let ai = c.buf(a, DType::F32, n, w)?;
                let bi = c.buf(b, DType::F32, n, w)?;
                let s = c.buf(sum_out, DType::F32, n, w)?;
                let o = c.buf(norm_out, DType::F32, n, w)?;
                c.weight(weight, DType::F32, &[n], w)?;
                disjoint(w, &[ai, bi], &[s, o], true)?;
            }
            Step::MatMul { x, weight, n, k, out, residual, .. } => {
                let xi = c.buf(x, DType::F32, k, w)?;
                let o = c.buf(out, DType::F32, n, w)?;
                c.weight(weight, DType::F16, &[n, k], w)?;
                let mut ins = vec![xi];
                if let Some(r) = residual {
                    ins.push(c.buf(r, DType::F32, n, w)?);
                }
                disjoint(w, &ins, &[o], false)?;
            }
            Step::BiasRopeKvWrite { qkv, ref rope, q_out } => {
                let o = c.rope(rope, q_out, w)?;
                let qi = c.buf(qkv, DType::F32, rope.packed(), w)?;
                disjoint(w, &[qi], &[o], false)?;
            }
            Step::Attention { q, layer, n_heads, n_kv_heads, head_dim, out, .. } => {
                check_heads(hp, layer, n_heads, n_kv_heads, head_dim, w)?;
                if attention_kernel(head_dim).is_none() {
                    return Err(bad(format!("{w}: head_dim {head_dim} has no CUDA attention kernel (64 and 128 do)")));
                }
                if n_heads / n_kv_heads > ATTN_MAX_GROUP {
                    return Err(bad(format!(
                        "{w}: {} query heads per KV head; the CUDA attention kernel supports at most {ATTN_MAX_GROUP}",
                        n_heads / n_kv_heads
                    )));
                }
                let qi = c.buf(q, DType::F32, n_heads * head_dim, w)?;
                let o = c.buf(out, DType::F32, n_heads * head_dim, w)?;
                disjoint(w, &[qi], &[o], false)?;
            }
            Step::SwiGlu { gate_up, ffn, out } => {
                let g = c.buf(gate_up, DType::F32, 2 * ffn, w)?;
                let o = c.buf(out, DType::F32, ffn, w)?;
                disjoint(w, &[g], &[o], false)?;
            }
            Step::Argmax { logits, vocab, out } => {
                let l = c.buf(logits, DType::F32, vocab, w)?;
                let o = c.buf(out, DType::I32, 1, w)?;
                disjoint(w, &[l], &[o], false)?;
            }
            Step::Gemv { x, norm, weight, n, k, ref epilogue } => {
                let xi = c.buf(x, DType::F32, k, w)?;
                c.weight(weight, DType::F16, &[n, k], w)?;
                if let Some(nm) = norm {
                    c.weight(nm.weight, DType::F32, &[k], w)?;
                }
                match *epilogue {
                    GemvEpilogue::Store { out, residual, .. } => {
                        let o = c.buf(out, DType::F32, n, w)?;
                        let mut ins = vec![xi];
                        if let Some(r) = residual {
                            ins.push(c.buf(r, DType::F32, n, w)?);
                        }
                        disjoint(w, &ins, &[o], false)?;
                    }
                    GemvEpilogue::SwiGlu { ffn, out } => {
                        if 2 * ffn != n {
                            return Err(bad(format!("{w}: {n} rows are not a packed gate|up of ffn {ffn}")));
                        }
                        let o = c.buf(out, DType::F32, ffn, w)?;
                        disjoint(w, &[xi], &[o], false)?;
                    }
                    GemvEpilogue::BiasRopeKvWrite { ref rope, q_out } => {
                        if rope.packed() != n {
                            return Err(bad(format!("{w}: {n} rows are not a packed qkv of {}", rope.packed())));
                        }
                        let o = c.rope(rope, q_out, w)?;
                        disjoint(w, &[xi], &[o], false)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_heads(
    hp: &crate::plan::HyperParams,
    layer: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    w: &str,
) -> Result<(), RuntimeError> {
    if layer >= hp.n_layers {
        return Err(bad(format!("{w}: layer {layer} >= n_layers {}", hp.n_layers)));
    }
    if n_kv_heads != hp.n_kv_heads || head_dim != hp.head_dim {
        return Err(bad(format!("{w}: KV shape {n_kv_heads} x {head_dim} differs from the model's {} x {} (the KV cache is sized from hparams)", hp.n_kv_heads, hp.head_dim)));
    }
    if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) || !head_dim.is_multiple_of(2) {
        return Err(bad(format!(
            "{w}: {n_heads} heads / {n_kv_heads} KV heads / head_dim {head_dim} is not a valid GQA shape"
        )));
    }
    Ok(())
}
