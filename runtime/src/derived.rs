//! Rebuilding a plan's derived weights at load (`qwen_aot_plan::derive`): each target is its
//! recipe applied to its stored base, XORed with the correction decompressed from `weights.bin`,
//! frame by frame in parallel, and checked against the SHA-256s the compiler recorded per frame
//! (a sample of frames at a normal load, every frame for `verify` and `check`). The plan
//! validator has bounded every size beforehand (frames per target, each frame's compressed size,
//! the regions inside the file), so nothing here allocates from an unchecked claim.
use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::plan::derive::{apply_recipe, frame_ranges, frame_sha256, DerivedWeight};
use crate::plan::{Plan, WeightId};

/// The derived weights' bytes, rebuilt, by target.
#[derive(Default)]
pub struct DerivedBytes {
    weights: Vec<(WeightId, Vec<u8>)>,
}

impl DerivedBytes {
    /// The rebuilt bytes of `id`, if it is derived.
    pub fn get(&self, id: WeightId) -> Option<&[u8]> {
        self.weights.iter().find(|(w, _)| *w == id).map(|(_, b)| b.as_slice())
    }

    /// Every rebuilt weight, in the plan's order (their offsets are back to back past the file).
    pub fn iter(&self) -> impl Iterator<Item = (WeightId, &[u8])> {
        self.weights.iter().map(|(w, b)| (*w, b.as_slice()))
    }
}

/// Which frames of a derived weight a rebuild hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameCheck {
    /// Every frame (`qwen-aot verify`, `check`).
    All,
    /// One frame in [`SAMPLE_EVERY`], the phase picked by this seed (a normal load: the
    /// correction itself lies in hashed windows of `weights.bin`, sampled the same way).
    Sampled(u64),
}

/// A sampled rebuild hashes one frame in this many.
pub const SAMPLE_EVERY: usize = 8;

/// Rebuilds every derived weight of `plan` from `file` (the whole `weights.bin`, size-checked).
pub fn rebuild(plan: &Plan, file: &[u8], check: FrameCheck) -> Result<DerivedBytes, RuntimeError> {
    let weights = plan
        .derived
        .iter()
        .map(|d| Ok((d.target, rebuild_one(plan, d, file, check)?)))
        .collect::<Result<_, RuntimeError>>()?;
    Ok(DerivedBytes { weights })
}

fn rebuild_one(plan: &Plan, d: &DerivedWeight, file: &[u8], check: FrameCheck) -> Result<Vec<u8>, RuntimeError> {
    let (target, base) = (&plan.weights[d.target.0 as usize], &plan.weights[d.base.0 as usize]);
    let damaged = |why: String| RuntimeError::CorruptWeights {
        path: "weights.bin".into(),
        what: format!("the derived weight {} cannot be rebuilt: {why}", target.name),
    };
    let base_bytes = &file[base.offset as usize..(base.offset + base.bytes) as usize];
    let threads = rayon::current_num_threads();
    let mut out =
        apply_recipe(d.recipe, base, base_bytes, target, threads).map_err(|e| RuntimeError::BadPlan(e.to_string()))?;
    // The frames' places in the file, then each frame decompressed into its range of `out`
    // (XOR) and hashed, in parallel.
    let mut at = d.correction_offset as usize;
    let frames: Vec<&[u8]> = d
        .frames
        .iter()
        .map(|&n| {
            let f = &file[at..at + n as usize];
            at += n as usize;
            f
        })
        .collect();
    let ranges: Vec<_> = frame_ranges(out.len()).collect();
    let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(ranges.len());
    let mut rest = out.as_mut_slice();
    for r in &ranges {
        let (piece, tail) = rest.split_at_mut(r.len());
        pieces.push(piece);
        rest = tail;
    }
    let hashed = |i: usize| match check {
        FrameCheck::All => true,
        FrameCheck::Sampled(seed) => (i as u64).wrapping_add(seed) % SAMPLE_EVERY as u64 == 0,
    };
    pieces.into_par_iter().zip(frames).enumerate().try_for_each(|(i, (piece, frame))| {
        // At most the frame's own length: a frame claiming more is damage, not an allocation.
        let xor = zstd::bulk::decompress(frame, piece.len()).map_err(|e| damaged(format!("frame {i}: {e}")))?;
        if xor.len() != piece.len() {
            return Err(damaged(format!("frame {i} holds {} bytes, expected {}", xor.len(), piece.len())));
        }
        piece.iter_mut().zip(&xor).for_each(|(b, x)| *b ^= x);
        if hashed(i) && frame_sha256(piece) != d.frame_sha256[i] {
            return Err(damaged(format!("frame {i} differs from the compiler's (SHA-256)")));
        }
        Ok(())
    })?;
    Ok(out)
}
