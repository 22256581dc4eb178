//! The plan validator's rules for derived weights ([`crate::derive`]): the stored weights lie
//! back to back from the start of `weights.bin`, then the corrections back to back up to its
//! end, then the derived targets back to back past it; every entry names a distinct stored base
//! and target of the recipe's formats and one shape, and frames whose sizes fit their region --
//! so a load allocates and decompresses only what the plan's own weight table bounds.
use crate::derive::{DerivedWeight, FrameGeometry, MAX_FRAME_BYTES};
use crate::{Plan, WeightInfo, ALIGNMENT};

use super::{bad, InvalidPlan};

/// The largest compressed size of one frame: zstd's bound for a frame of MAX_FRAME_BYTES
/// bytes (input + input/256 + a small constant; 64 KiB of slack covers every version's).
const MAX_FRAME: u64 = MAX_FRAME_BYTES + (MAX_FRAME_BYTES >> 8) + (64 << 10);

/// Checks every derived entry, the correction regions from `stored_end` (where the stored
/// weights end) to the end of the file, and the targets' virtual offsets past it.
pub(super) fn validate_derived(plan: &Plan, stored_end: u64) -> Result<(), InvalidPlan> {
    let mut at = stored_end;
    for (n, d) in plan.derived.iter().enumerate() {
        let (target, base) = (weight(plan, d, d.target.0, "target")?, weight(plan, d, d.base.0, "base")?);
        if plan.derived[..n].iter().any(|e| e.target == d.target) {
            return Err(bad(format!("weight {} is derived twice", target.name)));
        }
        if plan.derivation(d.base).is_some() {
            return Err(bad(format!("derived weight {} has a derived base ({})", target.name, base.name)));
        }
        let (base_fmt, target_fmt) = d.recipe.formats();
        if base.single_format() != Some(base_fmt)
            || target.single_format() != Some(target_fmt)
            || base.shape != target.shape
        {
            return Err(bad(format!(
                "derived weight {} does not fit its recipe {:?} (base {})",
                target.name, d.recipe, base.name
            )));
        }
        if d.correction_offset != at || !d.correction_bytes.is_multiple_of(ALIGNMENT) {
            return Err(bad(format!("the correction of {} is not where the previous one ends", target.name)));
        }
        at = at
            .checked_add(d.correction_bytes)
            .ok_or_else(|| bad(format!("correction of {} overflows", target.name)))?;
        let geometry = match (target.shape.as_slice(), usize::try_from(d.frame_rows)) {
            ([rows, k], Ok(frame_rows)) => FrameGeometry::new(target_fmt, *rows, *k, frame_rows),
            _ => None,
        };
        let Some(geometry) = geometry else {
            return Err(bad(format!(
                "derived weight {} has frames of {} rows, more than a frame may hold (or none)",
                target.name, d.frame_rows
            )));
        };
        let want_frames = geometry.frames();
        let compressed = d.frames.iter().try_fold(0u64, |sum, &f| (f > 0 && f <= MAX_FRAME).then(|| sum + f));
        if d.frames.len() != want_frames || compressed.is_none_or(|c| c > d.correction_bytes) {
            return Err(bad(format!("the correction frames of {} do not fit the weight or their region", target.name)));
        }
        let hex64 = |s: &String| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if d.frame_sha256.len() != d.frames.len() || !d.frame_sha256.iter().all(hex64) {
            return Err(bad(format!("derived weight {} has no valid SHA-256 per frame", target.name)));
        }
    }
    if at != plan.weights_bytes {
        return Err(bad(format!(
            "the stored weights and corrections end at byte {at} of the {} in weights.bin",
            plan.weights_bytes
        )));
    }
    // The targets, past the end of the file, in entry order.
    let mut end = plan.weights_bytes;
    for d in &plan.derived {
        let t = &plan.weights[d.target.0 as usize];
        if t.offset != end {
            return Err(bad(format!("derived weight {} does not start where the previous one ends", t.name)));
        }
        end = t.offset.checked_add(t.bytes).ok_or_else(|| bad(format!("derived weight {} overflows", t.name)))?;
    }
    Ok(())
}

fn weight<'a>(plan: &'a Plan, d: &DerivedWeight, id: u32, what: &str) -> Result<&'a WeightInfo, InvalidPlan> {
    plan.weights.get(id as usize).ok_or_else(|| {
        bad(format!("a derived weight names {what} {id} of {} weights (target {})", plan.weights.len(), d.target.0))
    })
}
