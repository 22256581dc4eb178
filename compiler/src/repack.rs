//! Repacking: a GGUF tensor's ggml blocks (layouts in `gguf/dequant/{legacy,kquants}.rs`) become
//! the plan's canonical group/plane layout (`qwen_aot_plan::quant`). Lossless: only bits move,
//! so `PartView::dequant_row` of the result equals the GGUF dequantiser bit for bit (tested in
//! `repack/tests.rs` for every format).
//!
//! Per group of 32 elements the quantized codes are regrouped into the `qs`/`qh` planes, the
//! per-group scales go to `sc` (Q3_K's and Q4_K/Q5_K's packed 6-bit scales are unpacked to one byte
//! each, so the kernels never unpack them), and the k-quants' super-block f16 d [and dmin] go to
//! `sup`. Rows are independent, so big tensors are repacked in row batches in parallel.
use qwen_aot_plan::quant::pack::{pack_qh1, pack_qh2, pack_qs2, pack_qs4};
use qwen_aot_plan::quant::{part_layout, WeightFormat, GROUP, SUPER};
use rayon::prelude::*;
use thiserror::Error;

use crate::gguf::{q3_k_scales, GgmlType};

#[derive(Debug, Error, PartialEq)]
pub enum RepackError {
    #[error("{dtype} has no weight format in the plan")]
    Unsupported { dtype: GgmlType },
    #[error("rows of {k} elements do not fit {format} (it needs a multiple of {multiple})")]
    RowLength { format: &'static str, k: usize, multiple: usize },
    #[error("{rows} rows of {k} {dtype} elements are {expected} bytes, got {got}")]
    SourceSize { dtype: GgmlType, rows: usize, k: usize, expected: u64, got: usize },
    #[error("rows {first}..{end} do not fit a part of {part_rows} rows in {part_bytes} bytes")]
    Destination { first: usize, end: usize, part_rows: usize, part_bytes: usize },
}

/// The plan format that keeps `dtype`'s bits, if any.
pub fn format_of(dtype: GgmlType) -> Option<WeightFormat> {
    Some(match dtype {
        GgmlType::F32 => WeightFormat::F32,
        GgmlType::F16 => WeightFormat::F16,
        GgmlType::BF16 => WeightFormat::BF16,
        GgmlType::Q4_0 => WeightFormat::Q4_0,
        GgmlType::Q4_1 => WeightFormat::Q4_1,
        GgmlType::Q5_0 => WeightFormat::Q5_0,
        GgmlType::Q5_1 => WeightFormat::Q5_1,
        GgmlType::Q8_0 => WeightFormat::Q8_0,
        GgmlType::Q2_K => WeightFormat::Q2_K,
        GgmlType::Q3_K => WeightFormat::Q3_K,
        GgmlType::Q4_K => WeightFormat::Q4_K,
        GgmlType::Q5_K => WeightFormat::Q5_K,
        GgmlType::Q6_K => WeightFormat::Q6_K,
        _ => return None,
    })
}

/// The ggml type whose blocks a format keeps (the inverse of [`format_of`]).
pub fn ggml_type_of(format: WeightFormat) -> GgmlType {
    match format {
        WeightFormat::F32 => GgmlType::F32,
        WeightFormat::F16 => GgmlType::F16,
        WeightFormat::BF16 => GgmlType::BF16,
        WeightFormat::Q4_0 => GgmlType::Q4_0,
        WeightFormat::Q4_1 => GgmlType::Q4_1,
        WeightFormat::Q5_0 => GgmlType::Q5_0,
        WeightFormat::Q5_1 => GgmlType::Q5_1,
        WeightFormat::Q8_0 => GgmlType::Q8_0,
        WeightFormat::Q2_K => GgmlType::Q2_K,
        WeightFormat::Q3_K => GgmlType::Q3_K,
        WeightFormat::Q4_K => GgmlType::Q4_K,
        WeightFormat::Q5_K => GgmlType::Q5_K,
        WeightFormat::Q6_K => GgmlType::Q6_K,
    }
}

/// `rows` rows of `k` elements of `dtype` (`src`: exactly their ggml bytes) as one part:
/// `part_layout(format, rows, k).bytes` bytes, padding zero.
pub fn repack(dtype: GgmlType, src: &[u8], rows: usize, k: usize) -> Result<(WeightFormat, Vec<u8>), RepackError> {
    let format = format_of(dtype).ok_or(RepackError::Unsupported { dtype })?;
    let layout = part_layout(format, rows, k).ok_or(RepackError::RowLength {
        format: format.name(),
        k,
        multiple: format.row_multiple(),
    })?;
    // part_layout's sizes are bounded by rows * k * 4, the size of an allocation that exists.
    let mut out = vec![0u8; layout.bytes as usize];
    repack_into(dtype, src, rows, k, &mut out, rows, 0)?;
    Ok((format, out))
}

/// Writes `rows` rows of `dtype` (`src`) as rows `first..first + rows` of a part of `part_rows`
/// rows in `format_of(dtype)` (`part`: the whole part, `part_layout(..).bytes` long). This is how
/// adjacent tensors of one format (q|k|v, gate|up) share one part.
pub fn repack_into(
    dtype: GgmlType,
    src: &[u8],
    rows: usize,
    k: usize,
    part: &mut [u8],
    part_rows: usize,
    first: usize,
) -> Result<(), RepackError> {
    let format = format_of(dtype).ok_or(RepackError::Unsupported { dtype })?;
    let row_err = RepackError::RowLength { format: format.name(), k, multiple: format.row_multiple() };
    let layout = part_layout(format, part_rows, k).ok_or(row_err)?;
    let expected = (rows as u64).checked_mul(k as u64).and_then(|n| dtype.bytes_for(n));
    if expected != Some(src.len() as u64) {
        return Err(RepackError::SourceSize { dtype, rows, k, expected: expected.unwrap_or(u64::MAX), got: src.len() });
    }
    if first.checked_add(rows).is_none_or(|end| end > part_rows) || part.len() as u64 != layout.bytes {
        return Err(RepackError::Destination {
            first,
            end: first.saturating_add(rows),
            part_rows,
            part_bytes: part.len(),
        });
    }
    if let Some(eb) = format.float_bytes() {
        // Float formats are the ggml rows themselves.
        let at = first * k * eb;
        part[at..at + src.len()].copy_from_slice(src);
        return Ok(());
    }
    let p = format.planes();
    let (gpr, spr) = (k / GROUP, k / SUPER);
    // The planes lie in the order qs, qh, sc, sup (absent ones empty), so four disjoint slices.
    let (qs, rest) = part.split_at_mut(layout.qh as usize);
    let (qh, rest) = rest.split_at_mut((layout.sc - layout.qh) as usize);
    let (sc, sup) = rest.split_at_mut((layout.sup - layout.sc) as usize);
    let per_row = [gpr * p.qs, gpr * p.qh, gpr * p.sc, spr * p.sup];
    let rows_of = |i: usize| first * per_row[i]..(first + rows) * per_row[i];
    let dst =
        Planes { qs: &mut qs[rows_of(0)], qh: &mut qh[rows_of(1)], sc: &mut sc[rows_of(2)], sup: &mut sup[rows_of(3)] };
    let src_row = src.len() / rows.max(1);
    run_rows(row_kernel(format), src, src_row, dst, per_row, rows);
    Ok(())
}

/// A part's four planes (the rows being written).
struct Planes<'a> {
    qs: &'a mut [u8],
    qh: &'a mut [u8],
    sc: &'a mut [u8],
    sup: &'a mut [u8],
}

/// Repacks whole rows: `src` is a run of ggml blocks, the planes that run's groups.
type RowKernel = fn(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]);

/// Source bytes per parallel task: big enough to amortise scheduling, small enough to balance
/// the 2-core machine (a 4864-wide Q5_0 row is 3 KiB).
const TASK_BYTES: usize = 1 << 18;

/// Splits `plane` into `n` chunks of `per` bytes (`n` empty slices for an absent plane).
fn chunks(plane: &mut [u8], per: usize, n: usize) -> Vec<&mut [u8]> {
    if per == 0 {
        (0..n).map(|_| <&mut [u8]>::default()).collect()
    } else {
        plane.chunks_mut(per).collect()
    }
}

fn run_rows(kernel: RowKernel, src: &[u8], src_row: usize, dst: Planes, per_row: [usize; 4], rows: usize) {
    if rows == 0 {
        return;
    }
    let batch = (TASK_BYTES / src_row.max(1)).clamp(1, rows);
    let n = rows.div_ceil(batch);
    // One task per row batch: its source blocks and its rows of every plane.
    let tasks: Vec<(&[u8], Planes)> = src
        .chunks(batch * src_row)
        .zip(chunks(dst.qs, batch * per_row[0], n))
        .zip(chunks(dst.qh, batch * per_row[1], n))
        .zip(chunks(dst.sc, batch * per_row[2], n))
        .zip(chunks(dst.sup, batch * per_row[3], n))
        .map(|((((s, qs), qh), sc), sup)| (s, Planes { qs, qh, sc, sup }))
        .collect();
    let run = |(s, p): (&[u8], Planes)| kernel(s, p.qs, p.qh, p.sc, p.sup);
    if tasks.len() == 1 {
        tasks.into_iter().for_each(run);
    } else {
        tasks.into_par_iter().for_each(run);
    }
}

fn row_kernel(format: WeightFormat) -> RowKernel {
    match format {
        WeightFormat::Q4_0 => q4_0,
        WeightFormat::Q4_1 => q4_1,
        WeightFormat::Q5_0 => q5_0,
        WeightFormat::Q5_1 => q5_1,
        WeightFormat::Q8_0 => q8_0,
        WeightFormat::Q2_K => q2_k,
        WeightFormat::Q3_K => q3_k,
        WeightFormat::Q4_K => q4_k,
        WeightFormat::Q5_K => q5_k,
        WeightFormat::Q6_K => q6_k,
        // Float formats are copied by `repack_into` and never get here.
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => |_, _, _, _, _| {},
    }
}

// ---- legacy formats: one ggml block is one group ----

/// ggml's Q5 `qh`: bit `e` of the little-endian u32 is element `e`'s fifth bit.
fn qh_bits(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn q4_0(src: &[u8], qs: &mut [u8], _: &mut [u8], sc: &mut [u8], _: &mut [u8]) {
    for ((b, qs), sc) in src.chunks_exact(18).zip(qs.chunks_exact_mut(16)).zip(sc.chunks_exact_mut(2)) {
        sc.copy_from_slice(&b[0..2]);
        // ggml's nibble order (element j low, j + 16 high) is already the canonical one.
        qs.copy_from_slice(&b[2..18]);
    }
}

fn q4_1(src: &[u8], qs: &mut [u8], _: &mut [u8], sc: &mut [u8], _: &mut [u8]) {
    for ((b, qs), sc) in src.chunks_exact(20).zip(qs.chunks_exact_mut(16)).zip(sc.chunks_exact_mut(4)) {
        sc.copy_from_slice(&b[0..4]);
        qs.copy_from_slice(&b[4..20]);
    }
}

fn q5_0(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], _: &mut [u8]) {
    let blocks =
        src.chunks_exact(22).zip(qs.chunks_exact_mut(16)).zip(qh.chunks_exact_mut(4)).zip(sc.chunks_exact_mut(2));
    for (((b, qs), qh), sc) in blocks {
        sc.copy_from_slice(&b[0..2]);
        let h = qh_bits(&b[2..6]);
        pack_qh1(|e| ((h >> e) & 1) as u8, qh);
        qs.copy_from_slice(&b[6..22]);
    }
}

fn q5_1(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], _: &mut [u8]) {
    let blocks =
        src.chunks_exact(24).zip(qs.chunks_exact_mut(16)).zip(qh.chunks_exact_mut(4)).zip(sc.chunks_exact_mut(4));
    for (((b, qs), qh), sc) in blocks {
        sc.copy_from_slice(&b[0..4]);
        let h = qh_bits(&b[4..8]);
        pack_qh1(|e| ((h >> e) & 1) as u8, qh);
        qs.copy_from_slice(&b[8..24]);
    }
}

fn q8_0(src: &[u8], qs: &mut [u8], _: &mut [u8], sc: &mut [u8], _: &mut [u8]) {
    for ((b, qs), sc) in src.chunks_exact(34).zip(qs.chunks_exact_mut(32)).zip(sc.chunks_exact_mut(2)) {
        sc.copy_from_slice(&b[0..2]);
        qs.copy_from_slice(&b[2..34]);
    }
}

// ---- k-quants: one ggml super-block is eight groups and one `sup` entry ----

/// The planes of one super-block (8 groups) inside a row's planes.
fn super_planes<'a>(
    i: usize,
    p: [usize; 4],
    qs: &'a mut [u8],
    qh: &'a mut [u8],
    sc: &'a mut [u8],
    sup: &'a mut [u8],
) -> [&'a mut [u8]; 4] {
    let at = |s: &'a mut [u8], per_group: usize, n: usize| &mut s[i * n * per_group..(i + 1) * n * per_group];
    [at(qs, p[0], 8), at(qh, p[1], 8), at(sc, p[2], 8), at(sup, p[3], 1)]
}

/// Q2_K (84 bytes: scales[16], qs[64], d, dmin). Group `g = 4n + j` (n: 128-element half, j: 2-bit
/// shift) takes element `e` from bits `2j` of `qs[32n + e]`; its halves' scale bytes are
/// `scales[2g]` and `scales[2g + 1]`.
fn q2_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]) {
    for (i, b) in src.chunks_exact(84).enumerate() {
        let [qs, _, sc, sup] = super_planes(i, [8, 0, 2, 4], qs, qh, sc, sup);
        for g in 0..8 {
            let (n, j) = (g / 4, g % 4);
            let c: [u8; 32] = std::array::from_fn(|e| (b[16 + 32 * n + e] >> (2 * j)) & 3);
            pack_qs2(&c, &mut qs[8 * g..8 * g + 8]);
        }
        sc.copy_from_slice(&b[0..16]);
        sup.copy_from_slice(&b[80..84]);
    }
}

/// Q3_K (110 bytes: hmask[32], qs[64], scales[12], d). Low bits as Q2_K; element `e` of group `g`
/// has its third bit at bit `g` of `hmask[e]`.
fn q3_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]) {
    for (i, b) in src.chunks_exact(110).enumerate() {
        let [qs, qh, sc, sup] = super_planes(i, [8, 4, 2, 2], qs, qh, sc, sup);
        let (hmask, low) = (&b[0..32], &b[32..96]);
        for g in 0..8 {
            let (n, j) = (g / 4, g % 4);
            let c: [u8; 32] = std::array::from_fn(|e| (low[32 * n + e] >> (2 * j)) & 3);
            pack_qs2(&c, &mut qs[8 * g..8 * g + 8]);
            pack_qh1(|e| (hmask[e] >> g) & 1, &mut qh[4 * g..4 * g + 4]);
        }
        sc.copy_from_slice(&q3_k_scales(&b[96..108]));
        sup.copy_from_slice(&b[108..110]);
    }
}

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes of Q4_K / Q5_K (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K (144 bytes: d, dmin, scales[12], qs[128]) and Q5_K (176: d, dmin, scales[12], qh[32],
/// qs[128]). Group `g` takes nibble `g % 2` of `qs[32 (g / 2) + e]`; Q5_K's fifth bit is bit `g`
/// of `qh[e]`. `sc` = [scale, min] of the group.
fn q45_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8], five: bool) {
    let (size, low_at) = if five { (176, 48) } else { (144, 16) };
    let p = [16, if five { 4 } else { 0 }, 2, 4];
    for (i, b) in src.chunks_exact(size).enumerate() {
        let [qs, qh, sc, sup] = super_planes(i, p, qs, qh, sc, sup);
        let low = &b[low_at..low_at + 128];
        for g in 0..8 {
            let c: [u8; 32] = std::array::from_fn(|e| (low[32 * (g / 2) + e] >> (4 * (g % 2))) & 0x0f);
            pack_qs4(&c, &mut qs[16 * g..16 * g + 16]);
            if five {
                pack_qh1(|e| (b[16 + e] >> g) & 1, &mut qh[4 * g..4 * g + 4]);
            }
            let (s, m) = scale_min_k4(g, &b[4..16]);
            sc[2 * g] = s;
            sc[2 * g + 1] = m;
        }
        sup.copy_from_slice(&b[0..4]);
    }
}

fn q4_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]) {
    q45_k(src, qs, qh, sc, sup, false)
}

fn q5_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]) {
    q45_k(src, qs, qh, sc, sup, true)
}

/// Q6_K (210 bytes: ql[128], qh[64], scales[16] i8, d). Group `g = 4n + i`: low nibble `i / 2` of
/// `ql[64n + 32 (i % 2) + e]`, high two bits `2i` of `qh[32n + e]`, half scales
/// `scales[8n + 2i]`, `scales[8n + 2i + 1]`.
fn q6_k(src: &[u8], qs: &mut [u8], qh: &mut [u8], sc: &mut [u8], sup: &mut [u8]) {
    for (i, b) in src.chunks_exact(210).enumerate() {
        let [qs, qh, sc, sup] = super_planes(i, [16, 8, 2, 2], qs, qh, sc, sup);
        for g in 0..8 {
            let (n, i) = (g / 4, g % 4);
            let c: [u8; 32] = std::array::from_fn(|e| (b[64 * n + 32 * (i % 2) + e] >> (4 * (i / 2))) & 0x0f);
            let h: [u8; 32] = std::array::from_fn(|e| (b[128 + 32 * n + e] >> (2 * i)) & 3);
            pack_qs4(&c, &mut qs[16 * g..16 * g + 16]);
            pack_qh2(&h, &mut qh[8 * g..8 * g + 8]);
            sc[2 * g] = b[192 + 8 * n + 2 * i];
            sc[2 * g + 1] = b[192 + 8 * n + 2 * i + 1];
        }
        sup.copy_from_slice(&b[208..210]);
    }
}

#[cfg(test)]
mod tests;
