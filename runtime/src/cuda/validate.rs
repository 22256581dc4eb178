//! What the CUDA kernels support, checked once at load on top of the plan's one structural
//! validator (`qwen_aot_plan::validate`, run by `CompiledModel::open`: buffers, weights, references
//! and aliasing are already in bounds and consistent when this runs), so that every launch's
//! assumptions hold (the `// SAFETY:` comments in the executor rely on both).
use crate::error::RuntimeError;
use crate::plan::{Plan, Program, Step, WeightFormat, WeightId};

use super::device::QGEMV_MAX_SMEM;
use super::launch::{attention_kernel, ATTN_MAX_GROUP};

fn bad(msg: String) -> RuntimeError {
    RuntimeError::BadPlan(msg)
}

/// The CUDA kernels' capability checks on a plan that `CompiledModel::open` validated.
pub(crate) fn validate(plan: &Plan) -> Result<(), RuntimeError> {
    for (name, prog) in [("prefill", &plan.prefill), ("decode", &plan.decode)] {
        validate_program(plan, prog).map_err(|e| match e {
            RuntimeError::BadPlan(m) => bad(format!("{name} program: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

/// A matrix all in F16 runs on the f16 kernels (any k); in other formats on the quantized ones,
/// which need k a multiple of 32 and the x row fitting in shared memory.
fn matrix(plan: &Plan, id: WeightId, what: &str) -> Result<(), RuntimeError> {
    let w = &plan.weights[id.0 as usize];
    let k = *w.shape.last().unwrap_or(&0);
    if !w.all_parts(WeightFormat::F16) && (!k.is_multiple_of(32) || 4 * k > QGEMV_MAX_SMEM as usize) {
        return Err(bad(format!(
            "{what}: weight {} has rows of {k}: the quantized kernels need a multiple of 32, at most {}",
            w.name,
            QGEMV_MAX_SMEM / 4
        )));
    }
    Ok(())
}

fn validate_program(plan: &Plan, prog: &Program) -> Result<(), RuntimeError> {
    for (si, step) in prog.steps.iter().enumerate() {
        let what = format!("step {si} ({})", step.kernel_name());
        let w = what.as_str();
        match *step {
            Step::Embed { table, .. } => matrix(plan, table, w)?,
            Step::MatMul { weight, .. } => matrix(plan, weight, w)?,
            Step::Gemv { weight, .. } => matrix(plan, weight, w)?,
            Step::Attention { n_heads, n_kv_heads, head_dim, .. } => attention(n_heads, n_kv_heads, head_dim, w)?,
            Step::RmsNorm { .. }
            | Step::AddRmsNorm { .. }
            | Step::BiasRopeKvWrite { .. }
            | Step::SwiGlu { .. }
            | Step::Argmax { .. } => {}
        }
    }
    Ok(())
}

/// The attention kernels: one for the head_dim, and at most [`ATTN_MAX_GROUP`] query heads per KV
/// head.
fn attention(n_heads: usize, n_kv_heads: usize, head_dim: usize, w: &str) -> Result<(), RuntimeError> {
    if attention_kernel(head_dim, 1).is_none() {
        return Err(bad(format!("{w}: head_dim {head_dim} has no CUDA attention kernel (64 and 128 do)")));
    }
    if n_heads / n_kv_heads > ATTN_MAX_GROUP {
        return Err(bad(format!(
            "{w}: {} query heads per KV head; the CUDA attention kernel supports at most {ATTN_MAX_GROUP}",
            n_heads / n_kv_heads
        )));
    }
    Ok(())
}
