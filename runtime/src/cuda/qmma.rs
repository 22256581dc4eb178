//! Launch geometry of the tensor-core quantized GEMVs (kernels/qmma.cu): which weights they take,
//! how many warps share a tile, and the launch itself. [`super::launch::qgemv`] uses them when
//! [`qmma_kernel`] says the weight fits, and falls back to kernels/qgemv.cu otherwise.
use std::sync::atomic::{AtomicBool, Ordering};

use super::device::Kernel;
use super::launch::{GemvOut, QParts};
use crate::kernel_constants::{
    GEMV_WARPS, QMMA_GROUP_SMEM, QMMA_RING_WORDS, QMMA_STAGES, QMMA_STEP_GROUPS, QMMA_TILE_ROWS, QMMA_WIDE_STAGES,
    QMMA_WIDE_WARPS,
};
use crate::quant::{WeightFormat, SUPER};

/// The kernels of kernels/qmma.cu (its QMMA_ENTRIES list, in order): for each format pair the
/// store, SwiGLU and RoPE entry points. A test keeps the two lists equal.
#[rustfmt::skip]
pub(crate) const QMMA_KERNELS: &[(WeightFormat, WeightFormat, [Kernel; 4])] = &[
    (WeightFormat::Q4_0, WeightFormat::Q4_0, [Kernel::GemvMStoreQ40, Kernel::GemvMSwiGluQ40, Kernel::GemvMRopeQ40, Kernel::GemvMStoreWideQ40]),
    (WeightFormat::Q4_1, WeightFormat::Q4_1, [Kernel::GemvMStoreQ41, Kernel::GemvMSwiGluQ41, Kernel::GemvMRopeQ41, Kernel::GemvMStoreWideQ41]),
    (WeightFormat::Q5_0, WeightFormat::Q5_0, [Kernel::GemvMStoreQ50, Kernel::GemvMSwiGluQ50, Kernel::GemvMRopeQ50, Kernel::GemvMStoreWideQ50]),
    (WeightFormat::Q5_1, WeightFormat::Q5_1, [Kernel::GemvMStoreQ51, Kernel::GemvMSwiGluQ51, Kernel::GemvMRopeQ51, Kernel::GemvMStoreWideQ51]),
    (WeightFormat::Q8_0, WeightFormat::Q8_0, [Kernel::GemvMStoreQ80, Kernel::GemvMSwiGluQ80, Kernel::GemvMRopeQ80, Kernel::GemvMStoreWideQ80]),
    (WeightFormat::Q4_K, WeightFormat::Q4_K, [Kernel::GemvMStoreQ4K, Kernel::GemvMSwiGluQ4K, Kernel::GemvMRopeQ4K, Kernel::GemvMStoreWideQ4K]),
    (WeightFormat::Q5_K, WeightFormat::Q5_K, [Kernel::GemvMStoreQ5K, Kernel::GemvMSwiGluQ5K, Kernel::GemvMRopeQ5K, Kernel::GemvMStoreWideQ5K]),
    (WeightFormat::Q6_K, WeightFormat::Q6_K, [Kernel::GemvMStoreQ6K, Kernel::GemvMSwiGluQ6K, Kernel::GemvMRopeQ6K, Kernel::GemvMStoreWideQ6K]),
    (WeightFormat::Q4_0, WeightFormat::Q8_0, [Kernel::GemvMStoreQ40Q80, Kernel::GemvMSwiGluQ40Q80, Kernel::GemvMRopeQ40Q80, Kernel::GemvMStoreWideQ40Q80]),
    (WeightFormat::Q4_1, WeightFormat::Q8_0, [Kernel::GemvMStoreQ41Q80, Kernel::GemvMSwiGluQ41Q80, Kernel::GemvMRopeQ41Q80, Kernel::GemvMStoreWideQ41Q80]),
    (WeightFormat::Q5_0, WeightFormat::Q8_0, [Kernel::GemvMStoreQ50Q80, Kernel::GemvMSwiGluQ50Q80, Kernel::GemvMRopeQ50Q80, Kernel::GemvMStoreWideQ50Q80]),
    (WeightFormat::Q5_1, WeightFormat::Q8_0, [Kernel::GemvMStoreQ51Q80, Kernel::GemvMSwiGluQ51Q80, Kernel::GemvMRopeQ51Q80, Kernel::GemvMStoreWideQ51Q80]),
    (WeightFormat::Q4_K, WeightFormat::Q6_K, [Kernel::GemvMStoreQ4KQ6K, Kernel::GemvMSwiGluQ4KQ6K, Kernel::GemvMRopeQ4KQ6K, Kernel::GemvMStoreWideQ4KQ6K]),
    (WeightFormat::Q5_K, WeightFormat::Q6_K, [Kernel::GemvMStoreQ5KQ6K, Kernel::GemvMSwiGluQ5KQ6K, Kernel::GemvMRopeQ5KQ6K, Kernel::GemvMStoreWideQ5KQ6K]),
];

/// The store entry points with the greedy argmax as their epilogue (kernels/qmma.cu's
/// QMMA_ARGMAX_ENTRY list, in order): the LM head of a decode, one format per matrix. A test
/// keeps the two lists equal.
pub(crate) const QMMA_ARGMAX_KERNELS: &[(WeightFormat, Kernel)] = &[
    (WeightFormat::Q4_0, Kernel::GemvMStoreArgmaxQ40),
    (WeightFormat::Q4_1, Kernel::GemvMStoreArgmaxQ41),
    (WeightFormat::Q5_0, Kernel::GemvMStoreArgmaxQ50),
    (WeightFormat::Q5_1, Kernel::GemvMStoreArgmaxQ51),
    (WeightFormat::Q8_0, Kernel::GemvMStoreArgmaxQ80),
    (WeightFormat::Q4_K, Kernel::GemvMStoreArgmaxQ4K),
    (WeightFormat::Q5_K, Kernel::GemvMStoreArgmaxQ5K),
    (WeightFormat::Q6_K, Kernel::GemvMStoreArgmaxQ6K),
];

/// Set by `QWEN_AOT_QGEMV=v2` at first use, or by the kernel check: every quantized GEMV then
/// runs on kernels/qgemv.cu (to compare the two, and to keep checking the fallback).
static V2_ONLY: AtomicBool = AtomicBool::new(false);

/// Makes [`qmma_kernel`] refuse every weight (true) or decide per weight (false).
pub(crate) fn force_v2(on: bool) {
    V2_ONLY.store(on, Ordering::Relaxed);
}

pub(crate) fn v2_only() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    V2_ONLY.load(Ordering::Relaxed) || *ENV.get_or_init(|| std::env::var("QWEN_AOT_QGEMV").is_ok_and(|v| v == "v2"))
}

/// Which epilogue a GEMV has (the kernel tables' index).
fn epilogue_index(epi: &GemvOut) -> usize {
    match epi {
        GemvOut::Store { .. } => 0,
        GemvOut::SwiGlu { .. } => 1,
        GemvOut::Rope(_) => 2,
    }
}

/// The row of W that tile row `r` (0..8) of tile `t` computes, or None past the matrix: the
/// kernels' `tile_row` (store: rows 8t..8t+7; paired epilogues: units 4t..4t+3, first rows then
/// second rows, `unit_rows` in kernels/gemv_epilogue.cuh).
fn tile_row(epi: usize, t: usize, r: usize, n: usize, head_dim: usize) -> Option<usize> {
    if epi == 0 {
        let j = t * QMMA_TILE_ROWS + r;
        return (j < n).then_some(j);
    }
    let u = t * (QMMA_TILE_ROWS / 2) + r % 4;
    if u >= n / 2 {
        return None;
    }
    let (j0, j1) = if epi == 1 {
        (u, u + n / 2)
    } else {
        let half = head_dim / 2;
        let (head, i) = (u / half, u % half);
        (head * head_dim + i, head * head_dim + i + half)
    };
    Some(if r < 4 { j0 } else { j1 })
}

/// The format of each row's part.
fn row_format(parts: &QParts, j: usize) -> i32 {
    let p = parts.row_end.iter().position(|&e| (j as i32) < e).unwrap_or(parts.row_end.len() - 1);
    parts.fmt[p]
}

/// Whether every tile's rows are in parts of one format (the kernels resolve a tile's format
/// once, from its first row).
fn tiles_uniform(parts: &QParts, epi: usize, n: usize, head_dim: usize) -> bool {
    let per_tile = if epi == 0 { QMMA_TILE_ROWS } else { QMMA_TILE_ROWS / 2 };
    let units = if epi == 0 { n } else { n / 2 };
    (0..units.div_ceil(per_tile)).all(|t| {
        let mut rows = (0..QMMA_TILE_ROWS).filter_map(|r| tile_row(epi, t, r, n, head_dim));
        let first = rows.next().map(|j| row_format(parts, j));
        rows.all(|j| Some(row_format(parts, j)) == first)
    })
}

/// Most dynamic shared memory a block takes: two blocks per SM still fit sm_90's 228 KB.
pub(crate) const QMMA_MAX_SMEM: usize = 112 * 1024;

/// Most dynamic shared memory a wide block takes (one block per SM; under sm_90's opt-in limit of
/// 227 KB, which counts the kernel's static shared memory too).
pub(crate) const QMMA_WIDE_MAX_SMEM: usize = 200 * 1024;

/// Dynamic shared memory of a launch with rows of `k`: every warp's weight ring, then the x
/// digits and group sums.
pub(crate) fn smem_bytes(k: usize) -> usize {
    smem_bytes_for(GEMV_WARPS, QMMA_STAGES, k)
}

/// [`smem_bytes`] of a block of `warps` warps whose rings are `stages` deep (the wide store
/// entries: [`QMMA_WIDE_WARPS`], [`QMMA_WIDE_STAGES`]).
pub(crate) fn smem_bytes_for(warps: usize, stages: usize, k: usize) -> usize {
    warps * stages * QMMA_RING_WORDS * 32 * 4 + k / 32 * QMMA_GROUP_SMEM
}

/// The dynamic shared memory each entry point may be given: the wide store entries
/// ([`wide_store`]) up to [`QMMA_WIDE_MAX_SMEM`], the others [`QMMA_MAX_SMEM`].
pub(crate) fn smem_limits() -> impl Iterator<Item = (Kernel, u32)> {
    QMMA_KERNELS
        .iter()
        .flat_map(|(_, _, [store, swiglu, rope, wide])| {
            [(*store, QMMA_MAX_SMEM), (*swiglu, QMMA_MAX_SMEM), (*rope, QMMA_MAX_SMEM), (*wide, QMMA_WIDE_MAX_SMEM)]
                .map(|(k, b)| (k, b as u32))
        })
        .chain(QMMA_ARGMAX_KERNELS.iter().map(|&(_, k)| (k, QMMA_MAX_SMEM as u32)))
}

/// The wide entry point ([`QMMA_WIDE_WARPS`] warps per block) of the pair whose store entry is
/// `kern`, when a launch of `tiles` tiles with rows of `k` wants it: [`warps_per_tile`] would
/// give each tile more than GEMV_WARPS warps (few tiles, long rows: down_proj), the tiles are
/// one wave of one block per SM, and the wider ring fits. `QWEN_AOT_QMMA_WIDE=0` turns it off
/// (to measure what it gains).
pub(crate) fn wide_store(kern: Kernel, tiles: usize, k: usize, sm_count: u32) -> Option<Kernel> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("QWEN_AOT_QMMA_WIDE").is_ok_and(|v| v == "0")) {
        return None;
    }
    let &(_, _, [_, _, _, wide]) = QMMA_KERNELS.iter().find(|(_, _, ks)| ks[0] == kern)?;
    let wants =
        tiles <= sm_count as usize && wants_more_warps(tiles, GEMV_WARPS, k, sm_count, kernel_step_groups(kern));
    (wants && smem_bytes_for(QMMA_WIDE_WARPS, QMMA_WIDE_STAGES, k) <= QMMA_WIDE_MAX_SMEM).then_some(wide)
}

/// The tensor-core kernel for this GEMV, if one takes it: a format pair covers the parts, every
/// tile is in one format, k is a multiple of the pair's step (128, or 256 for the k-quant pairs),
/// the ring and x digits fit the shared memory, and kernels/qgemv.cu is not forced.
pub(crate) fn qmma_kernel(parts: &QParts, n: usize, k: usize, epi: &GemvOut) -> Option<Kernel> {
    // Steps never cross a row's end (k % 128 here, the pair's own step below); the digits and
    // ring fit.
    if v2_only() || !k.is_multiple_of(32 * QMMA_STEP_GROUPS) || smem_bytes(k) > QMMA_MAX_SMEM {
        return None;
    }
    let head_dim = match epi {
        GemvOut::Rope(r) => r.heads.head_dim,
        _ => 0,
    };
    let e = epilogue_index(epi);
    if e == 2 && (head_dim == 0 || !(head_dim / 2).is_multiple_of(QMMA_TILE_ROWS / 2)) {
        return None;
    }
    let covered = |a: WeightFormat, b: WeightFormat| parts.fmt.iter().all(|&f| f == a.code() || f == b.code());
    let &(a, b, ks) = QMMA_KERNELS.iter().find(|(a, b, _)| covered(*a, *b))?;
    // A step never crosses a row's end (k-quant rows are whole super-blocks; checked anyway).
    let whole_steps = k.is_multiple_of(32 * step_groups(a, b));
    (whole_steps && tiles_uniform(parts, e, n, head_dim)).then_some(ks[e])
}

/// The store-with-argmax entry point for an LM head of `parts` ([n, k], rows of the last token
/// only), if one takes it: the tensor-core store would ([`qmma_kernel`]) and the weight is in one
/// format. The caller then launches it instead of the store and the argmax kernel.
pub(crate) fn argmax_kernel(parts: &QParts, n: usize, k: usize) -> Option<Kernel> {
    let store = qmma_kernel(parts, n, k, &GemvOut::Store { out: 0, residual: None, last_row: true })?;
    let &(a, b, _) = QMMA_KERNELS.iter().find(|(_, _, ks)| ks[0] == store)?;
    if a != b {
        return None;
    }
    QMMA_ARGMAX_KERNELS.iter().find(|(f, _)| *f == a).map(|&(_, kern)| kern)
}

/// Groups of 32 elements a warp takes per step in a format pair's kernels (kernels/qmma.cu
/// `step_groups_of`): a whole super-block when both formats are k-quants (rows of whole
/// super-blocks), QMMA_STEP_GROUPS otherwise.
pub(crate) fn step_groups(a: WeightFormat, b: WeightFormat) -> usize {
    // The kernels' WIDE_STEP_GROUPS (2 * QMMA_STEP_GROUPS) is a super-block.
    const _: () = assert!(SUPER / 32 == 2 * QMMA_STEP_GROUPS);
    let k_quant = |f: WeightFormat| f.row_multiple() == SUPER;
    if k_quant(a) && k_quant(b) {
        SUPER / 32
    } else {
        QMMA_STEP_GROUPS
    }
}

/// [`step_groups`] of one of [`QMMA_KERNELS`]' entry points.
pub(crate) fn kernel_step_groups(kern: Kernel) -> usize {
    let pair = QMMA_KERNELS.iter().find(|(_, _, ks)| ks.contains(&kern)).map(|&(a, b, _)| (a, b));
    let single = || QMMA_ARGMAX_KERNELS.iter().find(|(_, k)| *k == kern).map(|&(f, _)| (f, f));
    pair.or_else(single).map_or(QMMA_STEP_GROUPS, |(a, b)| step_groups(a, b))
}

/// Blocks per SM whose warps [`warps_per_tile`] aims to keep busy: 2, or `QWEN_AOT_QMMA_BLOCKS` (a
/// tuning knob, read once). Measured best at both shapes (H100, 43rd session, random weights,
/// medians of 3): 1.5B step 956.3 µs with 2 against 956.2 with 1 and 988.6 / 988.3 with 3 / 4
/// (an earlier build had 4 ahead by 2 %); the 0.5B's Q5_0 GEMVs take the direct kernels, so its
/// step does not move (528.7-529.4).
fn target_blocks_per_sm() -> usize {
    static TARGET: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *TARGET.get_or_init(|| {
        std::env::var("QWEN_AOT_QMMA_BLOCKS").ok().and_then(|v| v.parse().ok()).filter(|&b| b > 0).unwrap_or(2)
    })
}

/// Warps sharing a tile: doubled while the launch has fewer warps than the target blocks of
/// GEMV_WARPS per SM and the warps' steps (`step_groups` groups each) do not yet cover a row in
/// one step each.
pub(crate) fn warps_per_tile(tiles: usize, k: usize, sm_count: u32, step_groups: usize) -> usize {
    let mut wpt = 1;
    while wpt < GEMV_WARPS && wants_more_warps(tiles, wpt, k, sm_count, step_groups) {
        wpt *= 2;
    }
    wpt
}

/// Whether tiles of `wpt` warps each would take more: the launch has fewer warps than the target
/// blocks of GEMV_WARPS per SM, and its warps' steps do not yet cover a row in one step each.
fn wants_more_warps(tiles: usize, wpt: usize, k: usize, sm_count: u32, step_groups: usize) -> bool {
    let target = target_blocks_per_sm() * GEMV_WARPS * sm_count as usize;
    tiles * wpt < target && k / 32 > step_groups * wpt
}

/// Tiles of a GEMV with `n` rows (paired epilogues: n / 2 units, four per tile).
pub(crate) fn tiles(n: usize, epi: &GemvOut) -> usize {
    match epi {
        GemvOut::Store { .. } => n.div_ceil(QMMA_TILE_ROWS),
        _ => (n / 2).div_ceil(QMMA_TILE_ROWS / 2),
    }
}

/// Blocks of a launch: every tile's team once, at most `resident` blocks per SM (the kernels
/// grid-stride over the rest, so a block turns its x row into digits once for many tiles).
pub(crate) fn blocks(tiles: usize, wpt: usize, sm_count: u32, resident: u32) -> usize {
    let teams_per_block = GEMV_WARPS / wpt;
    tiles.div_ceil(teams_per_block).min((sm_count * resident.max(1)) as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::launch::{Heads, RopeArgs};

    fn parts(fmts: &[(WeightFormat, i32)]) -> QParts {
        QParts::of_formats(fmts)
    }

    fn rope(head_dim: usize) -> GemvOut {
        let heads = Heads { n_heads: 14, n_kv_heads: 2, head_dim };
        GemvOut::Rope(RopeArgs { bias: 0, inv_freq: 0, q_out: 0, k_cache: 0, v_cache: 0, heads })
    }

    const STORE: GemvOut = GemvOut::Store { out: 0, residual: None, last_row: false };

    /// The arguments of each use of `macro` in kernels/qmma.cu, `QF_` prefixes dropped.
    fn macro_uses(macro_name: &str) -> Vec<Vec<String>> {
        let prefix = format!("{macro_name}(QF_");
        include_str!("../../../kernels/qmma.cu")
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|l| l.trim_end_matches(')').split(", ").map(|s| s.trim_start_matches("QF_").to_string()).collect())
            .collect()
    }

    /// QMMA_KERNELS lists exactly the pairs kernels/qmma.cu instantiates, in order, and the names
    /// follow the pair's suffix.
    #[test]
    fn table_matches_the_kernels() {
        let listed = macro_uses("QMMA_ENTRIES");
        assert_eq!(listed.len(), QMMA_KERNELS.len());
        for (l, (fa, fb, ks)) in listed.iter().zip(QMMA_KERNELS) {
            assert_eq!((l[0].as_str(), l[1].as_str()), (fa.name(), fb.name()));
            // Three blocks' worth of registers exactly for the super-block-step pairs.
            let min_blocks = if step_groups(*fa, *fb) == 8 { "3" } else { "2" };
            assert_eq!(l[3], min_blocks, "{} {}", fa.name(), fb.name());
            for (k, epi) in ks.iter().zip(["store", "swiglu", "rope", "store_wide"]) {
                assert_eq!(k.name(), format!("gemv_m_{epi}_{}", l[2]));
            }
        }
    }

    /// QMMA_ARGMAX_KERNELS lists exactly kernels/qmma.cu's QMMA_ARGMAX_ENTRY formats, in order,
    /// with the register bound of the format's own store entry.
    #[test]
    fn argmax_table_matches_the_kernels() {
        let listed = macro_uses("QMMA_ARGMAX_ENTRY");
        assert_eq!(listed.len(), QMMA_ARGMAX_KERNELS.len());
        for (l, (f, kern)) in listed.iter().zip(QMMA_ARGMAX_KERNELS) {
            assert_eq!(l[0], f.name());
            assert_eq!(kern.name(), format!("gemv_m_store_argmax_{}", l[1]));
            let min_blocks = if step_groups(*f, *f) == 8 { "3" } else { "2" };
            assert_eq!(l[2], min_blocks, "{}", f.name());
            assert_eq!(kernel_step_groups(*kern), step_groups(*f, *f));
        }
    }

    /// The default model's Q8_0 LM head and a 1.5B's Q6_K one take the argmax entry; a weight
    /// of two formats, or one the tensor-core store does not take, does not.
    #[test]
    fn which_lm_heads_take_the_argmax_epilogue() {
        use WeightFormat as W;
        let q8 = parts(&[(W::Q8_0, 151_936)]);
        assert_eq!(argmax_kernel(&q8, 151_936, 896), Some(Kernel::GemvMStoreArgmaxQ80));
        assert_eq!(argmax_kernel(&parts(&[(W::Q6_K, 151_936)]), 151_936, 1536), Some(Kernel::GemvMStoreArgmaxQ6K));
        assert_eq!(argmax_kernel(&parts(&[(W::Q5_0, 64), (W::Q8_0, 128)]), 128, 896), None, "two formats");
        assert_eq!(argmax_kernel(&parts(&[(W::Q3_K, 896)]), 896, 1024), None, "no tensor-core kernel");
        assert_eq!(argmax_kernel(&q8, 151_936, 864), None, "k % 128 != 0");
    }

    /// The default model's weights take the tensor-core kernels: Q5_0 q|k + Q8_0 v with RoPE,
    /// Q5_0 gate|up, Q6_K down, the Q8_0 LM head; a mixed store weight whose part boundary cuts
    /// a tile, formats without a kernel, and k past the shared memory do not.
    #[test]
    fn which_weights_take_the_tensor_cores() {
        use WeightFormat as W;
        let qkv = parts(&[(W::Q5_0, 1024), (W::Q8_0, 1152)]);
        assert_eq!(qmma_kernel(&qkv, 1152, 896, &rope(64)), Some(Kernel::GemvMRopeQ50Q80));
        assert_eq!(qmma_kernel(&parts(&[(W::Q5_0, 9728)]), 9728, 896, &STORE), Some(Kernel::GemvMStoreQ50));
        assert_eq!(qmma_kernel(&parts(&[(W::Q6_K, 896)]), 896, 4864, &STORE), Some(Kernel::GemvMStoreQ6K));
        let swiglu = GemvOut::SwiGlu { out: 0 };
        assert_eq!(qmma_kernel(&parts(&[(W::Q4_K, 17920)]), 17920, 1536, &swiglu), Some(Kernel::GemvMSwiGluQ4K));
        // gate Q5_0, up Q8_0: a tile holds both, so no uniform format.
        assert_eq!(qmma_kernel(&parts(&[(W::Q5_0, 64), (W::Q8_0, 128)]), 128, 896, &swiglu), None);
        // a store weight whose parts meet inside a tile (row 1149).
        assert_eq!(qmma_kernel(&parts(&[(W::Q5_0, 1149), (W::Q8_0, 1152)]), 1152, 896, &STORE), None);
        assert_eq!(qmma_kernel(&parts(&[(W::Q3_K, 896)]), 896, 1024, &STORE), None);
        assert_eq!(qmma_kernel(&parts(&[(W::F16, 896)]), 896, 1024, &STORE), None);
        let too_long = (QMMA_MAX_SMEM / QMMA_GROUP_SMEM * 32).next_multiple_of(128);
        assert_eq!(qmma_kernel(&parts(&[(W::Q8_0, 896)]), 896, too_long, &STORE), None);
        assert_eq!(qmma_kernel(&parts(&[(W::Q8_0, 896)]), 896, 864, &STORE), None, "27 groups: k % 128 != 0");
        assert_eq!(qmma_kernel(&parts(&[(W::Q8_0, 896)]), 896, 8960, &STORE), Some(Kernel::GemvMStoreQ80));
    }

    /// down_proj at 0.5B (112 tiles of 152 groups, one wave) takes the wide store; the 1.5B's
    /// (192 tiles: more than one block per SM) and short rows (o_proj, the LM head) do not, nor
    /// epilogues other than the store.
    #[test]
    fn wide_store_for_few_long_tiles() {
        assert_eq!(wide_store(Kernel::GemvMStoreQ6K, 112, 4864, 132), Some(Kernel::GemvMStoreWideQ6K));
        assert_eq!(wide_store(Kernel::GemvMStoreQ50, 112, 4864, 132), Some(Kernel::GemvMStoreWideQ50));
        assert_eq!(wide_store(Kernel::GemvMStoreQ6K, 192, 8960, 132), None, "1.5B down: two waves");
        assert_eq!(wide_store(Kernel::GemvMStoreQ50, 112, 896, 132), None, "o_proj: one step per warp already");
        assert_eq!(wide_store(Kernel::GemvMStoreQ80, 18_992, 896, 132), None, "LM head");
        assert_eq!(wide_store(Kernel::GemvMSwiGluQ6K, 112, 4864, 132), None, "not a store entry");
        assert!(smem_bytes_for(QMMA_WIDE_WARPS, QMMA_WIDE_STAGES, 4864) <= QMMA_WIDE_MAX_SMEM);
        // The 0.5B down's wide block and a qkv block (k = 896) share an SM (228 KB; 1 KB a block
        // reserved, static shared memory ~1 KB each): the next kernel starts under PDL.
        let both = smem_bytes_for(QMMA_WIDE_WARPS, QMMA_WIDE_STAGES, 4864) + smem_bytes(896) + 4 * 1024;
        assert!(both <= 228 * 1024, "{both}");
    }

    /// Paired epilogues: a tile's first rows are units 4t..4t+3 and its last four their partners.
    #[test]
    fn tile_rows_follow_the_units() {
        assert_eq!(
            (0..8).map(|r| tile_row(0, 2, r, 20, 0)).collect::<Vec<_>>()[..5],
            [Some(16), Some(17), Some(18), Some(19), None]
        );
        let swiglu: Vec<_> = (0..8).map(|r| tile_row(1, 1, r, 20, 0).unwrap()).collect();
        assert_eq!(swiglu, [4, 5, 6, 7, 14, 15, 16, 17]);
        let rope: Vec<_> = (0..8).map(|r| tile_row(2, 9, r, 1152, 64).unwrap()).collect();
        assert_eq!(rope, [68, 69, 70, 71, 100, 101, 102, 103], "unit 36 is head 1, i 4");
    }

    /// k-quant pairs step a super-block at a time, every other pair four groups; each entry point
    /// reports its pair's.
    #[test]
    fn step_groups_per_pair() {
        use WeightFormat as W;
        assert_eq!(step_groups(W::Q4_K, W::Q6_K), 8);
        assert_eq!(step_groups(W::Q6_K, W::Q6_K), 8);
        assert_eq!(step_groups(W::Q5_0, W::Q8_0), 4);
        assert_eq!(kernel_step_groups(Kernel::GemvMSwiGluQ4K), 8);
        assert_eq!(kernel_step_groups(Kernel::GemvMStoreQ4KQ6K), 8);
        assert_eq!(kernel_step_groups(Kernel::GemvMRopeQ50Q80), 4);
        assert_eq!(kernel_step_groups(Kernel::GemvMStoreQ80), 4);
    }

    /// With the default target (two blocks per SM): few tiles (o_proj, down) take eight warps per
    /// tile, gate|up two, the LM head one (it grid-strides over its 18,992 tiles).
    #[test]
    fn warps_per_tile_for_the_default_shapes() {
        let four = QMMA_STEP_GROUPS;
        assert_eq!(warps_per_tile(112, 896, 132, four), 8, "o_proj: 28 groups, 112 tiles");
        assert_eq!(warps_per_tile(112, 4864, 132, 8), 8, "down_proj (Q6_K: super-block steps)");
        assert_eq!(warps_per_tile(1216, 896, 132, four), 2, "gate|up");
        assert_eq!(warps_per_tile(18_992, 896, 132, four), 1, "LM head");
        assert_eq!(warps_per_tile(4, 64, 132, four), 1, "two groups: one warp");
        // 1.5B: gate|up (Q4_K, 2,240 tiles of 48 groups) one warp per tile; down (Q6_K, 192
        // tiles of 280 groups) eight; a 256-wide k-quant row is one step: one warp.
        assert_eq!(warps_per_tile(2240, 1536, 132, 8), 1);
        assert_eq!(warps_per_tile(192, 8960, 132, 8), 8);
        assert_eq!(warps_per_tile(4, 256, 132, 8), 1);
        assert_eq!(warps_per_tile(4, 256, 132, four), 2);
        assert_eq!(blocks(18_992, 1, 132, 2), 264);
        assert_eq!(blocks(112, 8, 132, 2), 112);
    }
}
