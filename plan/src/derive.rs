//! Derived weights (plan format 7, row frames since 8): a weight that `weights.bin` does not hold itself but as a
//! *recipe* applied to another weight (its *base*) plus a lossless *correction*, rebuilt at load.
//!
//! Why: GGUF files of tied-embedding models often store the embedding twice, quantized twice from
//! one matrix -- the default model has `token_embd.weight` as Q5_0 (93.6 MB) and `output.weight`
//! as Q8_0 (144.6 MB). ggml's reference Q5_0 quantizer applied to the dequantised Q8_0 rows
//! reproduces 99.99 % of the Q5_0 scales and 96.85 % of its codes (experiments/tied_requant.py),
//! so the XOR of the recipe's output with the real bytes is mostly zeros and compresses (zstd) to
//! a tenth of the weight: every byte of the GGUF is kept, in 84 MB less.
//!
//! The contract, shared by the compiler (which writes it) and the runtime (which rebuilds it):
//! - the recipe's output is computed on the *packed* layouts ([`crate::quant`]): the base's part
//!   bytes in, the target's part bytes out (`apply_recipe`, deterministic: plain f32 arithmetic);
//! - the correction is `real XOR recipe output` over the target's bytes, cut into *row frames*
//!   ([`FrameGeometry`]): frame `i` holds rows `i * frame_rows ..` (the last frame fewer), its
//!   bytes those rows' slices of the target's planes (qs, qh, sc, sup) back to back; each frame is
//!   compressed as one zstd frame, stored back to back at `correction_offset` in `weights.bin` (a
//!   region of `correction_bytes`, padded with zeros to [`crate::ALIGNMENT`]). The padding between
//!   the target's planes belongs to no frame: it is zero, as packing leaves it. Whole rows, so that
//!   a load can rebuild only the rows it reads first (the CPU executor's embedding lookups: a
//!   prompt's tokens touch a few frames of ≈ 0.3 ms each); plan format 7 cut the target's bytes
//!   into 4 MiB frames, where one row's planes lay in three frames spanning most of the table;
//! - `frame_sha256` holds the SHA-256 of each frame of the rebuilt target: a load checks a sample
//!   of them (like the windows of `weights.bin`, [`crate::integrity`]), `qwen-aot verify` and
//!   `check` every one.
//!
//! A derived target lies in the plan's *virtual* weight space past the end of `weights.bin`
//! (`WeightInfo::offset >= Plan::weights_bytes`); every other weight is stored in the file.
use std::ops::Range;

use half::f16;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::quant::pack::{pack_qh1, pack_qs4};
use crate::quant::{part_layout, PartView, WeightFormat, GROUP};
use crate::{WeightId, WeightInfo};

/// Target bytes a correction frame aims at: the compiler puts as many whole rows in a frame as
/// fit in this (at least one). Small, so that rebuilding a frame for one row's sake costs little
/// (the default model's embedding: 212 rows, 717 frames, ≈ 0.3 ms each on one core).
pub const FRAME_TARGET_BYTES: u64 = 128 << 10;

/// The most target bytes one frame may hold: the validator's bound, and so the bound of every
/// decompression a load does.
pub const MAX_FRAME_BYTES: u64 = 4 << 20;

/// How a target's bytes are computed from its base's.
#[allow(non_camel_case_types)]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeriveRecipe {
    /// Base Q8_0 and target Q5_0, one part each, same shape: every group of the base dequantised
    /// (`d * q`, f32) and quantised again with ggml's reference Q5_0 quantizer
    /// (`quantize_row_q5_0_ref`: `d = max / -16` where max is the element of largest magnitude,
    /// code `min(31, trunc(x / d + 16.5))`, d stored as f16).
    RequantQ8_0ToQ5_0,
}

impl DeriveRecipe {
    /// The (base, target) formats the recipe reads and writes.
    pub fn formats(self) -> (WeightFormat, WeightFormat) {
        match self {
            DeriveRecipe::RequantQ8_0ToQ5_0 => (WeightFormat::Q8_0, WeightFormat::Q5_0),
        }
    }
}

/// One derived weight of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DerivedWeight {
    /// The weight rebuilt (its offset lies past the end of `weights.bin`).
    pub target: WeightId,
    /// The stored weight the recipe reads.
    pub base: WeightId,
    pub recipe: DeriveRecipe,
    /// Where the correction's frames lie in `weights.bin`: a region of `correction_bytes` (a
    /// multiple of [`crate::ALIGNMENT`]) starting at `correction_offset`.
    pub correction_offset: u64,
    pub correction_bytes: u64,
    /// Rows per frame ([`FrameGeometry`]; the last frame may hold fewer).
    pub frame_rows: u64,
    /// Compressed size of each frame, in order; frame i rebuilds the target's rows
    /// `[i * frame_rows, min((i + 1) * frame_rows, rows))`.
    pub frames: Vec<u64>,
    /// SHA-256 (hex) of each frame of the rebuilt target, in order.
    pub frame_sha256: Vec<String>,
}

/// Why a recipe cannot run on the weights it was given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeriveError {
    #[error("the recipe {recipe:?} needs a one-part {want} {what}, found {found}")]
    Format { recipe: DeriveRecipe, what: &'static str, want: &'static str, found: String },
    #[error("base and target of the recipe have different shapes ({base:?} and {target:?})")]
    Shape { base: Vec<usize>, target: Vec<usize> },
    #[error("{what} bytes do not match the weight's layout")]
    Layout { what: &'static str },
}

/// Where a target's row frames lie in its packed bytes (see the module's contract): per plane
/// (qs, qh, sc, sup), the plane's offset in the target and its bytes per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGeometry {
    pub rows: usize,
    pub frame_rows: usize,
    planes: [(usize, usize); 4],
}

impl FrameGeometry {
    /// The geometry of a one-part target of `rows` rows of `k` in `format`, `frame_rows` rows per
    /// frame; `None` when the layout does not exist, `frame_rows` is 0 or a frame would hold more
    /// than [`MAX_FRAME_BYTES`].
    pub fn new(format: WeightFormat, rows: usize, k: usize, frame_rows: usize) -> Option<FrameGeometry> {
        let g = FrameGeometry::unbounded(format, rows, k, frame_rows)?;
        let frame_bytes = (g.row_bytes() as u64).checked_mul(frame_rows as u64)?;
        (frame_bytes <= MAX_FRAME_BYTES).then_some(g)
    }

    /// [`Self::new`] without the bound on a frame's bytes (chunks of the whole target, in memory).
    fn unbounded(format: WeightFormat, rows: usize, k: usize, frame_rows: usize) -> Option<FrameGeometry> {
        let l = part_layout(format, rows, k)?;
        if rows == 0 || frame_rows == 0 {
            return None;
        }
        let plane = |off: u64, bytes: u64| (off as usize, (bytes / rows as u64) as usize);
        let planes =
            [plane(l.qs, l.qs_bytes), plane(l.qh, l.qh_bytes), plane(l.sc, l.sc_bytes), plane(l.sup, l.sup_bytes)];
        Some(FrameGeometry { rows, frame_rows, planes })
    }

    /// The geometry the compiler writes: as many rows per frame as fit [`FRAME_TARGET_BYTES`].
    pub fn for_target(format: WeightFormat, rows: usize, k: usize) -> Option<FrameGeometry> {
        let row_bytes = FrameGeometry::new(format, rows, k, 1)?.row_bytes();
        let frame_rows = (FRAME_TARGET_BYTES as usize / row_bytes.max(1)).clamp(1, rows.max(1));
        FrameGeometry::new(format, rows, k, frame_rows)
    }

    /// Packed bytes of one row, all planes.
    pub fn row_bytes(&self) -> usize {
        self.planes.iter().map(|&(_, per_row)| per_row).sum()
    }

    pub fn frames(&self) -> usize {
        self.rows.div_ceil(self.frame_rows)
    }

    /// The rows of frame `i`.
    pub fn frame_rows_of(&self, i: usize) -> Range<usize> {
        let start = (i * self.frame_rows).min(self.rows);
        start..(start + self.frame_rows).min(self.rows)
    }

    /// Bytes of frame `i` (its rows' plane slices back to back).
    pub fn frame_bytes(&self, i: usize) -> usize {
        self.frame_rows_of(i).len() * self.row_bytes()
    }

    /// The frame holding `row`.
    pub fn frame_of(&self, row: usize) -> usize {
        row / self.frame_rows
    }

    /// The byte ranges of frame `i`'s plane slices in the target, in plane order (qs, qh, sc, sup;
    /// empty for planes the format lacks).
    pub fn plane_ranges(&self, i: usize) -> [Range<usize>; 4] {
        let r = self.frame_rows_of(i);
        self.planes.map(|(off, per_row)| off + r.start * per_row..off + r.end * per_row)
    }

    /// Bytes of frame `i`'s slice of each plane, in plane order.
    fn plane_lens(&self, i: usize) -> [usize; 4] {
        let n = self.frame_rows_of(i).len();
        self.planes.map(|(_, per_row)| n * per_row)
    }

    /// A buffer of frame `i`'s bytes cut into its plane slices, in plane order.
    pub fn split_frame<'a>(&self, i: usize, buf: &'a mut [u8]) -> [&'a mut [u8]; 4] {
        let [qs_len, qh_len, sc_len, _] = self.plane_lens(i);
        let (qs, rest) = buf.split_at_mut(qs_len);
        let (qh, rest) = rest.split_at_mut(qh_len);
        let (sc, sup) = rest.split_at_mut(sc_len);
        [qs, qh, sc, sup]
    }

    /// A buffer of frame `i`'s bytes viewed as a part of its rows (`format`, rows of `k`: the
    /// target's), so that row `r` of the target is row `r - frame_rows_of(i).start` of the view.
    pub fn frame_view<'a>(&self, i: usize, format: WeightFormat, k: usize, buf: &'a [u8]) -> PartView<'a> {
        let [qs_len, qh_len, sc_len, _] = self.plane_lens(i);
        let (qs, rest) = buf.split_at(qs_len);
        let (qh, rest) = rest.split_at(qh_len);
        let (sc, sup) = rest.split_at(sc_len);
        PartView { format, rows: self.frame_rows_of(i).len(), k, qs, qh, sc, sup }
    }

    /// Whether every byte of `target` (the whole packed target) outside the planes -- the
    /// padding, which belongs to no frame and which a rebuild leaves zero -- is zero.
    pub fn padding_is_zero(&self, target: &[u8]) -> bool {
        let mut at = 0;
        for &(off, per_row) in self.planes.iter().filter(|&&(_, per_row)| per_row > 0) {
            if target[at.min(off)..off].iter().any(|&b| b != 0) {
                return false;
            }
            at = off + self.rows * per_row;
        }
        target[at.min(target.len())..].iter().all(|&b| b == 0)
    }

    /// The target's whole packed bytes cut into every frame's plane slices (frame order; the
    /// padding between planes in none of them).
    pub fn split_target<'a>(&self, target: &'a mut [u8]) -> Vec<[&'a mut [u8]; 4]> {
        let mut frames: Vec<[&'a mut [u8]; 4]> = (0..self.frames()).map(|_| Default::default()).collect();
        let mut rest = target;
        let mut at = 0;
        for (p, &(off, per_row)) in self.planes.iter().enumerate() {
            if per_row == 0 {
                continue;
            }
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(off - at);
            let (plane, tail) = tail.split_at_mut(self.rows * per_row);
            (rest, at) = (tail, off + self.rows * per_row);
            for (f, piece) in frames.iter_mut().zip(plane.chunks_mut(self.frame_rows * per_row)) {
                f[p] = piece;
            }
        }
        frames
    }
}

/// [`frame_sha256`] of a frame fed in pieces (its plane slices, in order).
#[derive(Default)]
pub struct FrameHasher(Sha256);

impl FrameHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn hex(self) -> String {
        crate::integrity::hex(&self.0.finalize())
    }
}

/// The recorded hash of one frame of target bytes: its SHA-256, hex.
pub fn frame_sha256(bytes: &[u8]) -> String {
    crate::integrity::hex(&Sha256::digest(bytes))
}

/// The view of a recipe's base, after checking that `base` and `target` fit the recipe: one part
/// each of its formats, the same shape, `base_bytes` of the base's layout.
pub fn recipe_base<'a>(
    recipe: DeriveRecipe,
    base: &WeightInfo,
    base_bytes: &'a [u8],
    target: &WeightInfo,
) -> Result<PartView<'a>, DeriveError> {
    let (base_fmt, target_fmt) = recipe.formats();
    let one_part = |w: &WeightInfo, want: WeightFormat, what: &'static str| match w.single_format() {
        Some(f) if f == want => Ok(()),
        other => Err(DeriveError::Format {
            recipe,
            what,
            want: want.name(),
            found: other.map_or_else(|| format!("{} parts", w.parts.len()), |f| f.name().to_string()),
        }),
    };
    one_part(base, base_fmt, "base")?;
    one_part(target, target_fmt, "target")?;
    let ([rows, k], [trows, tk]) = (base.shape.as_slice(), target.shape.as_slice()) else {
        return Err(DeriveError::Shape { base: base.shape.clone(), target: target.shape.clone() });
    };
    if (rows, k) != (trows, tk) {
        return Err(DeriveError::Shape { base: base.shape.clone(), target: target.shape.clone() });
    }
    let view = PartView::new(base_fmt, *rows, *k, base_bytes).ok_or(DeriveError::Layout { what: "base" })?;
    let layout = part_layout(target_fmt, *rows, *k).ok_or(DeriveError::Layout { what: "target" })?;
    if layout.bytes != target.bytes {
        return Err(DeriveError::Layout { what: "target" });
    }
    Ok(view)
}

/// The recipe's output for the target's rows `rows`, written into those rows' plane slices
/// (`planes`: qs, qh, sc, sup, as [`FrameGeometry`] cuts them); `base` views the whole base
/// ([`recipe_base`]). Each row's bytes depend only on the same row of the base, so a frame comes
/// out the same whether it is computed alone or as part of the whole target.
pub fn recipe_rows(recipe: DeriveRecipe, base: &PartView, rows: Range<usize>, planes: &mut [&mut [u8]; 4]) {
    match recipe {
        DeriveRecipe::RequantQ8_0ToQ5_0 => {
            let [qs, qh, sc, _] = planes;
            debug_assert_eq!(qs.len(), rows.len() * (base.k / GROUP) * 16);
            requant_q8_0_to_q5_0(base, rows.start * (base.k / GROUP), qs, qh, sc);
        }
    }
}

/// The recipe's output for `target` (its whole packed bytes, padding zero) from `base`'s packed
/// bytes, computed on `threads` threads (at least one).
pub fn apply_recipe(
    recipe: DeriveRecipe,
    base: &WeightInfo,
    base_bytes: &[u8],
    target: &WeightInfo,
    threads: usize,
) -> Result<Vec<u8>, DeriveError> {
    let view = recipe_base(recipe, base, base_bytes, target)?;
    let (rows, k) = (view.rows, view.k);
    let per = rows.div_ceil(threads.max(1)).max(1);
    let chunks =
        FrameGeometry::unbounded(recipe.formats().1, rows, k, per).ok_or(DeriveError::Layout { what: "target" })?;
    let mut out = vec![0u8; target.bytes as usize];
    std::thread::scope(|s| {
        for (i, planes) in chunks.split_target(&mut out).into_iter().enumerate() {
            let (view, rows) = (&view, chunks.frame_rows_of(i));
            s.spawn(move || recipe_rows(recipe, view, rows, &mut { planes }));
        }
    });
    Ok(out)
}

/// Groups `first..` of a Q8_0 view, requantised to Q5_0 planes (`qs`: 16 bytes, `qh`: 4, `sc`: 2
/// per group; as many groups as they hold). The same code compiled for AVX2 where the CPU has it:
/// the loop is written to vectorise (the rebuild of the default model's embedding, 4.25 M groups,
/// is what a CPU load waits for), and its f32 operations are the same either way, so the bytes are.
fn requant_q8_0_to_q5_0(base: &PartView, first: usize, qs: &mut [u8], qh: &mut [u8], sc: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), all the function requires.
        return unsafe { requant_q8_0_to_q5_0_avx2(base, first, qs, qh, sc) };
    }
    requant_groups(base, first, qs, qh, sc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_q8_0_to_q5_0_avx2(base: &PartView, first: usize, qs: &mut [u8], qh: &mut [u8], sc: &mut [u8]) {
    requant_groups(base, first, qs, qh, sc);
}

#[inline(always)]
fn requant_groups(base: &PartView, first: usize, qs: &mut [u8], qh: &mut [u8], sc: &mut [u8]) {
    let n = qs.len() / 16;
    let base_qs = base.qs[GROUP * first..GROUP * (first + n)].chunks_exact(GROUP);
    let base_sc = base.sc[2 * first..2 * (first + n)].chunks_exact(2);
    let out = qs.chunks_exact_mut(16).zip(qh.chunks_exact_mut(4)).zip(sc.chunks_exact_mut(2));
    let mut x = [0f32; GROUP];
    for (((qs, qh), sc), (bq, bs)) in out.zip(base_qs.zip(base_sc)) {
        let d8 = f16::from_bits(u16::from_le_bytes([bs[0], bs[1]])).to_f32();
        let bq: &[u8; GROUP] = bq.try_into().expect("chunks_exact(GROUP)");
        for i in 0..GROUP {
            x[i] = f32::from(bq[i] as i8) * d8;
        }
        let (d, q) = quantize_q5_0_ref(&x);
        sc.copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        // The low nibbles in `qs`, bit 4 in `qh`, as the repacker packs a GGUF Q5_0 block.
        let mut low = [0u8; GROUP];
        for (l, &c) in low.iter_mut().zip(&q) {
            *l = c & 0x0f;
        }
        pack_qs4(&low, qs);
        pack_qh1(|e| (q[e] >> 4) & 1, qh);
    }
}

/// ggml's reference Q5_0 quantisation of one group: the scale (f32, stored rounded to f16) and
/// the 32 five-bit codes. Written to vectorise (eight running maxima, the first largest element
/// found through a bit mask, the codes clamped to [0, 31] before a plain conversion);
/// `tests::vectorised_quantizer_matches_ggml_literally` holds it to a literal transcription of
/// ggml's loop.
#[inline(always)]
pub fn quantize_q5_0_ref(x: &[f32; GROUP]) -> (f32, [u8; GROUP]) {
    // ggml keeps the first element of the largest magnitude, with its sign (+0.0 when all are
    // zero). `max` ignores NaN, so the maxima come out as a sequential fold's would.
    let mut lanes = [0f32; 8];
    for chunk in x.chunks_exact(8) {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let mut at = 0u32;
    for (i, v) in x.iter().enumerate() {
        at |= u32::from(v.abs() == amax) << i;
    }
    let max = if amax > 0.0 && at != 0 { x[at.trailing_zeros() as usize] } else { 0.0 };
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; GROUP];
    for (c, &v) in q.iter_mut().zip(x) {
        // C's `MIN(31, (int8_t)(x * id + 16.5f))`: the sum lies in [0.5, 32.5] (up to rounding),
        // where truncating and then capping equals capping and then truncating; `max(0.0)` only
        // keeps out-of-range input (infinite scales) where a saturating cast would put it, and
        // `min` maps NaN to 31 as the saturating cast of `min`'s result did.
        // Not `clamp`: it keeps NaN, which the unchecked conversion below must never see.
        #[allow(clippy::manual_clamp)]
        let t = (v * id + 16.5).min(31.0).max(0.0);
        // SAFETY: t is finite and within [0, 31] (both clamps above), so it fits an i32.
        *c = unsafe { t.to_int_unchecked::<i32>() } as u8;
    }
    (d, q)
}

#[cfg(test)]
mod tests;
