//! Derived weights (plan format 7, row frames since 8; `qwen_aot_plan::derive`): finds the weights a recipe rebuilds
//! from another weight up to a small correction, encodes the corrections, and moves the derived
//! weights out of `weights.bin` (stored weights back to back, then the corrections; the derived
//! weights in the virtual space past the file's end).
//!
//! In practice this is a tied embedding stored twice: the default model's Q5_0 `token_embd`
//! rebuilt from its Q8_0 `output` (correction 9.3 MB instead of 93.6 MB).
use qwen_aot_plan::derive::{frame_sha256, recipe_base, recipe_rows, DeriveRecipe, DerivedWeight, FrameGeometry};
use qwen_aot_plan::{Plan, WeightFormat, WeightId, ALIGNMENT};
use rayon::prelude::*;

use crate::error::CompileError;
use crate::pack::{part_bytes, Fill, WeightTable};
use crate::source::TensorSource;

/// zstd level of the corrections (3, zstd's default: higher levels gain little on XOR noise).
const ZSTD_LEVEL: i32 = 3;

/// A weight is derived only when its compressed correction is at most this share of its bytes
/// (otherwise storing it costs about as much and loads faster).
const MAX_CORRECTION_SHARE: f64 = 0.5;

/// One weight to derive: indices into the table, and its correction's compressed frames.
pub struct Derivation {
    pub target: usize,
    pub base: usize,
    pub recipe: DeriveRecipe,
    /// Rows per frame, and each frame compressed ([`FrameGeometry`]).
    pub frame_rows: usize,
    pub frames: Vec<Vec<u8>>,
    pub frame_sha256: Vec<String>,
    /// Where the correction lies in `weights.bin` (set by [`relayout`]).
    pub correction_offset: u64,
}

impl Derivation {
    /// The correction region's size in `weights.bin`: the frames, padded to ALIGNMENT.
    pub fn region_bytes(&self) -> u64 {
        align(self.frames.iter().map(|f| f.len() as u64).sum())
    }

    /// The correction region's bytes as stored: the frames back to back, zero-padded.
    pub fn region(&self) -> Vec<u8> {
        let mut out = self.frames.concat();
        out.resize(self.region_bytes() as usize, 0);
        out
    }
}

fn align(v: u64) -> u64 {
    v.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// (target, base, recipe) of every weight a recipe fits: a one-part Q5_0 matrix repacked from
/// the GGUF that no matrix product of `plan` reads (the embedding: a derived weight is read by
/// rows), with a one-part Q8_0 matrix of the same shape beside it (the first such base).
fn candidates(t: &WeightTable, plan: &Plan) -> Vec<(usize, usize, DeriveRecipe)> {
    let recipe = DeriveRecipe::RequantQ8_0ToQ5_0;
    let (base_fmt, target_fmt) = recipe.formats();
    let repacked = |i: usize, f: WeightFormat| {
        t.infos[i].shape.len() == 2 && t.infos[i].single_format() == Some(f) && t.sources[i][0].fill == Fill::Repack
    };
    (0..t.infos.len())
        .filter(|&i| repacked(i, target_fmt) && !plan.read_by_matrix_product(WeightId(i as u32)))
        .filter_map(|i| {
            let base = (0..t.infos.len()).find(|&j| repacked(j, base_fmt) && t.infos[j].shape == t.infos[i].shape)?;
            Some((i, base, recipe))
        })
        .collect()
}

/// Whether a recipe fits any weight of `t` (a compile with derivation may then derive some).
pub fn has_candidates(t: &WeightTable, plan: &Plan) -> bool {
    !candidates(t, plan).is_empty()
}

/// The weights of `t` worth deriving, with their corrections (the packed bytes of each candidate
/// and its base computed from `src` once more; a compile holds them for one weight at a time).
pub fn find(t: &WeightTable, plan: &Plan, src: &dyn TensorSource) -> Result<Vec<Derivation>, CompileError> {
    let mut out = Vec::new();
    for (target, base, recipe) in candidates(t, plan) {
        let bytes = |i: usize| {
            let info = &t.infos[i];
            part_bytes(&info.parts[0], &t.sources[i][0], info.shape[1], src)
        };
        let (real, base_bytes) = (bytes(target)?, bytes(base)?);
        let (base_info, target_info) = (&t.infos[base], &t.infos[target]);
        let failed = |e: String| CompileError::Graph(format!("deriving {}: {e}", target_info.name));
        let view = recipe_base(recipe, base_info, &base_bytes, target_info).map_err(|e| failed(e.to_string()))?;
        let geometry = FrameGeometry::for_target(recipe.formats().1, view.rows, view.k)
            .ok_or_else(|| failed("no frame geometry".into()))?;
        // The padding between the planes belongs to no frame: a rebuild leaves it zero.
        if !geometry.padding_is_zero(&real) {
            continue;
        }
        // Per frame: the real rows' bytes, and the recipe's XORed into them, compressed.
        let framed = (0..geometry.frames())
            .into_par_iter()
            .map(|i| {
                let real_frame: Vec<u8> = geometry.plane_ranges(i).into_iter().flat_map(|r| real[r].to_vec()).collect();
                let mut xor = vec![0u8; real_frame.len()];
                recipe_rows(recipe, &view, geometry.frame_rows_of(i), &mut geometry.split_frame(i, &mut xor));
                xor.iter_mut().zip(&real_frame).for_each(|(x, r)| *x ^= r);
                let compressed = zstd::bulk::compress(&xor, ZSTD_LEVEL)?;
                Ok((compressed, frame_sha256(&real_frame)))
            })
            .collect::<Result<Vec<_>, std::io::Error>>()
            .map_err(|e| CompileError::io("a correction frame (zstd)", e))?;
        let (frames, frame_sha256): (Vec<Vec<u8>>, Vec<String>) = framed.into_iter().unzip();
        let compressed: usize = frames.iter().map(Vec::len).sum();
        if compressed as f64 > MAX_CORRECTION_SHARE * real.len() as f64 {
            continue;
        }
        out.push(Derivation {
            target,
            base,
            recipe,
            frame_rows: geometry.frame_rows,
            frames,
            frame_sha256,
            correction_offset: 0,
        });
    }
    Ok(out)
}

/// Lays `t` out for `derived`: the stored weights back to back from 0, the corrections after
/// them to the end of the file (`t.total_bytes` becomes the file's size), the derived weights
/// past it in `derived`'s order. Returns the plan's entries.
pub fn relayout(t: &mut WeightTable, derived: &mut [Derivation]) -> Vec<DerivedWeight> {
    let targets: Vec<usize> = derived.iter().map(|d| d.target).collect();
    let is_target = |i: usize| targets.contains(&i);
    let mut at = 0u64;
    let move_to = |t: &mut WeightTable, i: usize, at: &mut u64| {
        let w = &mut t.infos[i];
        let (old, new) = (w.offset, *at);
        for p in &mut w.parts {
            p.offset = p.offset - old + new;
        }
        w.offset = new;
        *at += w.bytes;
    };
    for i in (0..t.infos.len()).filter(|&i| !is_target(i)) {
        move_to(t, i, &mut at);
    }
    let mut entries = Vec::with_capacity(derived.len());
    for d in derived.iter_mut() {
        d.correction_offset = at;
        let region = d.region_bytes();
        entries.push(DerivedWeight {
            target: WeightId(d.target as u32),
            base: WeightId(d.base as u32),
            recipe: d.recipe,
            correction_offset: at,
            correction_bytes: region,
            frame_rows: d.frame_rows as u64,
            frames: d.frames.iter().map(|f| f.len() as u64).collect(),
            frame_sha256: d.frame_sha256.clone(),
        });
        at += region;
    }
    t.total_bytes = at;
    for &target in &targets {
        move_to(t, target, &mut at);
    }
    entries
}
