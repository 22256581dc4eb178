//! Launches of the decode and prefill attention (kernels/attention.cu): the split geometry (how many
//! splits a KV cache gets, how long a chunk is at a given length, how many are active), the head
//! groups, the shared-memory layout's size, and o_proj's GEMV that merges a few splits as it loads
//! its x (kernels/attn_fold.cuh).

use super::quant::{q5_direct_gemv, QGemv};
use super::{i, kernel_smem, q5_direct, Arg, CudaDevice, GemvOut, Heads, Kernel, Op, QParts};

/// Attention partials: part_o f32 [rows, H, splits, d], part_ml f32 [rows, H, splits, 2];
/// counters u32 [rows, H] (the kernel uses [rows, Hkv * head groups], at most that), zeroed once at
/// allocation (the kernel resets them after use).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnScratch {
    pub part_o: u64,
    pub part_ml: u64,
    pub counters: u64,
}

/// Largest query-head group the attention kernel supports (MAX_G = ATT_WARPS in attention.cu).
pub(crate) const ATTN_MAX_GROUP: usize = crate::kernel_constants::ATT_WARPS;
/// Largest split count the attention kernel's merge supports (ATT_MAX_SPLITS in attention.cu).
pub(crate) const ATTN_MAX_SPLITS: usize = crate::kernel_constants::ATT_MAX_SPLITS;

/// Every attention kernel: (kernel, head_dim, query rows per block).
pub(crate) const ATTENTION_KERNELS: [(Kernel, usize, usize); 4] = [
    (Kernel::AttentionSplitD64, 64, 1),
    (Kernel::AttentionSplitD128, 128, 1),
    (Kernel::AttentionRowsD64, 64, ATT_PREFILL_ROWS),
    (Kernel::AttentionRowsD128, 128, ATT_PREFILL_ROWS),
];

/// The attention kernel for `head_dim` serving `rows_per_block` query rows per block (1, or
/// ATT_PREFILL_ROWS), if there is one.
pub(crate) fn attention_kernel(head_dim: usize, rows_per_block: usize) -> Option<Kernel> {
    ATTENTION_KERNELS.iter().find(|&&(_, d, r)| d == head_dim && r == rows_per_block).map(|&(k, _, _)| k)
}

/// Query rows per attention block: ATT_PREFILL_ROWS for a direct (one-split) launch of several
/// rows -- a prefill, whose rows then share each staged K/V tile -- else 1.
fn attention_rows_per_block(rows: usize, splits: usize) -> usize {
    if rows > 1 && splits == 1 {
        ATT_PREFILL_ROWS
    } else {
        1
    }
}

const ATT_PREFILL_ROWS: usize = crate::kernel_constants::ATT_PREFILL_ROWS;

/// Keys per attention tile is 4096 / head_dim (64 or 32); chunks are multiples of this.
pub(crate) const ATTN_CHUNK_ALIGN: usize = 64;

/// Fewest keys one split (block) takes while the context is at most ATTN_LONG_FACTOR times this
/// (64 beyond: attn_chunk in common.cuh): contexts up to this length run in one block per KV
/// head and write their output directly, with no merge (`QWEN_AOT_ATTN_MIN_CHUNK` overrides it, a
/// positive multiple of 64, for tuning).
pub(crate) const ATTN_MIN_CHUNK: usize = 128;
/// ATTN_LONG_FACTOR in common.cuh.
const ATTN_LONG_FACTOR: usize = crate::kernel_constants::ATTN_LONG_FACTOR;

/// Blocks per KV head and split in a decode step (one row), each serving ceil(G / groups) of the
/// G query heads: more SMs share a short context's work (`QWEN_AOT_ATTN_HEAD_GROUPS` overrides
/// it, for tuning). A prefill has a block per row already, so there one group is faster: each
/// extra group re-reads the K/V tiles for the same rows (fifteenth session's sweep, 0.5B shapes,
/// 512 rows: 139.8K tokens/s with one group, 134.7K with two, 116.9K with four).
pub(crate) const ATTN_HEAD_GROUPS: usize = 2;

/// Head groups for `g` query heads per KV head and `rows` query rows: 1..=g, with no group left
/// empty; one for more than one row.
fn attention_head_groups(g: usize, rows: usize) -> usize {
    if rows > 1 {
        return 1;
    }
    let want = std::env::var("QWEN_AOT_ATTN_HEAD_GROUPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(ATTN_HEAD_GROUPS);
    let g = g.max(1);
    let per = g.div_ceil(want.clamp(1, g));
    g.div_ceil(per)
}

/// Read once per process: the split count and the launches must agree on it.
fn attention_min_chunk() -> usize {
    static MIN_CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN_CHUNK.get_or_init(|| {
        std::env::var("QWEN_AOT_ATTN_MIN_CHUNK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&c| c > 0 && c % ATTN_CHUNK_ALIGN == 0 && c <= 1 << 20)
            .unwrap_or(ATTN_MIN_CHUNK)
    })
}

/// Split count for decode: about two blocks per SM over all KV heads, at least one, and no more
/// than can ever be active. A split takes at least [`least_chunk`] keys (attn_chunk in
/// common.cuh), so at most ceil(len / least_chunk(len)) splits have keys for a context of len
/// keys -- largest at len = max_seq; and with that many or more, every context of up to max_seq
/// keys gets the same partition, hence the same result, as with any larger split count. Blocks
/// beyond it would only launch, wait and exit.
pub(crate) fn attention_splits(n_kv_heads: usize, sm_count: u32, max_seq: usize) -> usize {
    split_count(n_kv_heads, sm_count, max_seq, attention_min_chunk())
}

fn split_count(n_kv_heads: usize, sm_count: u32, max_seq: usize, min_chunk: usize) -> usize {
    let useful = max_seq.div_ceil(least_chunk(max_seq, min_chunk)).clamp(1, ATTN_MAX_SPLITS);
    (2 * sm_count as usize / n_kv_heads.max(1)).clamp(1, useful)
}

/// The fewest keys a split takes at context length `len` (attn_chunk in common.cuh).
fn least_chunk(len: usize, min_chunk: usize) -> usize {
    if len <= ATTN_LONG_FACTOR * min_chunk {
        min_chunk.max(1)
    } else {
        ATTN_CHUNK_ALIGN
    }
}

/// Splits a decode row's attention runs in at context length `len` (cached keys and its own) with
/// `n_splits` splits: the `active` of kernels/attention.cu and attn_fold.cuh.
pub(crate) fn attn_active_splits(len: usize, n_splits: usize) -> usize {
    len.div_ceil(attn_chunk(len, n_splits.max(1), attention_min_chunk())).max(1)
}

/// attn_chunk (kernels/common.cuh).
fn attn_chunk(len: usize, n_splits: usize, min_chunk: usize) -> usize {
    (len.div_ceil(n_splits).div_ceil(ATTN_CHUNK_ALIGN) * ATTN_CHUNK_ALIGN).max(least_chunk(len, min_chunk))
}

/// Dynamic shared memory of the attention kernel for `head_dim` and `rows` query rows per block:
/// the layout `AttnSmem` in kernels/attention.cu (the kernel traps when given less) -- two stages
/// of f32 K tiles and f16 V tiles of 4096 / head_dim keys, each row padded by 16 bytes, q of up to
/// ATT_WARPS heads per row, the warps' probabilities per row and the merge weights.
pub(crate) fn attention_smem_bytes(head_dim: usize, rows: usize) -> u32 {
    use crate::kernel_constants::{ATT_MAX_SPLITS, ATT_WARPS};
    let tile = 4096 / head_dim;
    let k = 2 * tile * (head_dim + 4) * 4;
    let v = 2 * tile * (head_dim + 8) * 2;
    let q = rows * ATT_WARPS * head_dim * 4;
    let p = rows * ATT_WARPS * tile * 4;
    let w = ATT_WARPS * ATT_MAX_SPLITS * 4;
    (k + v + q + p + w) as u32
}

/// q, out f32 [rows, H*d]; K cache f32, V cache f16 [max_seq, Hkv, d]. `splits == 1`: direct output;
/// otherwise split partials in `scratch` (sized for `rows * H * splits`), merged by the last block
/// of each (row, kv head, head group) -- one launch either way -- except in rows of 2..=`fold_max`
/// active splits, which stop at their partials for the GEMV after it ([`qgemv_attn_fold`] with the
/// same `fold_max`; 0: every row merged here). Block 256 (one warp per query head).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    st: u64,
    q: u64,
    k_cache: u64,
    v_cache: u64,
    out: u64,
    h: Heads,
    scale: f32,
    rows: usize,
    splits: usize,
    scratch: AttnScratch,
    fold_max: usize,
) -> Vec<Op> {
    assert!((1..=ATTN_MAX_SPLITS).contains(&splits), "attention splits {splits} out of range");
    let per_block = attention_rows_per_block(rows, splits);
    let kern = attention_kernel(h.head_dim, per_block).expect("head_dim validated");
    let groups = attention_head_groups(h.n_heads / h.n_kv_heads.max(1), rows);
    vec![kernel_smem(
        kern,
        (h.n_kv_heads * groups, splits, rows.div_ceil(per_block)),
        256,
        attention_smem_bytes(h.head_dim, per_block),
        vec![
            Arg::Ptr(st),
            Arg::Ptr(q),
            Arg::Ptr(k_cache),
            Arg::Ptr(v_cache),
            Arg::Ptr(out),
            Arg::Ptr(scratch.part_o),
            Arg::Ptr(scratch.part_ml),
            Arg::Ptr(scratch.counters),
            i(h.n_heads),
            i(h.n_kv_heads),
            Arg::F32(scale),
            i(splits),
            i(attention_min_chunk()),
            i(groups),
            i(fold_max),
        ],
    )]
}

/// The most active splits of a decode row whose merge the GEMV after the attention does
/// (kernels/attn_fold.cuh): two batches of partials. Past it the attention merges them itself.
/// Measured (experiments/LOG.md, 37th session; H100, random 0.5B): without any merge a step at
/// 128-1,024 keys is ~47 µs shorter; folded, a one-batch row (129-256 keys) gains 6.8 %, a
/// two-batch row (257-512) 2.5 %, while rows of three or more batches measured slower folded
/// (every o_proj block merges the whole row: an L2 round trip per batch).
pub(crate) const ATTN_FOLD_MAX_SPLITS: usize = 8;

/// [`ATTN_FOLD_MAX_SPLITS`], or `QWEN_AOT_ATTN_FOLD` (read at first use; 0: never fold; at most
/// [`ATTN_MAX_SPLITS`], the most a row can have) for comparisons in one binary.
pub(crate) fn attn_fold_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let v = std::env::var("QWEN_AOT_ATTN_FOLD").ok().and_then(|v| v.parse().ok());
        v.unwrap_or(ATTN_FOLD_MAX_SPLITS).min(ATTN_MAX_SPLITS)
    })
}

/// Where a GEMV after an attention launched with `fold_max > 0` finds the attention's split
/// partials (kernels/attn_fold.cuh): the attention's scratch, heads, split count and `fold_max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttnFold {
    pub scratch: AttnScratch,
    pub heads: Heads,
    pub splits: usize,
    pub fold_max: usize,
}

/// Whether [`qgemv_attn_fold`] takes a store of every row (with or without a residual; no norm:
/// x is the attention's output as it is) over this weight: one kernels/q5_direct.cu stores.
pub(crate) fn takes_attn_fold(parts: &QParts, n: usize, k: usize) -> bool {
    let store = GemvOut::Store { out: 0, residual: None, last_row: false };
    q5_direct::direct_kernel(parts, n, k, &store, false) == Some(Kernel::GemvQ5DirectStore)
}

/// [`qgemv`]'s store with x the output of the attention before it, merged from `fold`'s partials
/// where a row ran in several splits (kernels/q5_direct.cu `gemv_q5_direct_store_fold`); None
/// unless [`takes_attn_fold`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn qgemv_attn_fold(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    parts: QParts,
    n: usize,
    k: usize,
    rows: usize,
    epilogue: GemvOut,
    fold: AttnFold,
) -> Option<Op> {
    let full_store = matches!(epilogue, GemvOut::Store { last_row: false, .. });
    if !full_store || !takes_attn_fold(&parts, n, k) || fold.heads.n_heads * fold.heads.head_dim != k {
        return None;
    }
    let g = QGemv { st, x, norm: None, parts, n, k, rows, epilogue, argmax_key: None };
    let Op::Kernel(mut launch) = q5_direct_gemv(dev, Kernel::GemvQ5DirectStoreFold, &g) else {
        return None;
    };
    launch.args.extend([
        Arg::Ptr(fold.scratch.part_o),
        Arg::Ptr(fold.scratch.part_ml),
        i(fold.heads.n_heads),
        i(fold.heads.head_dim),
        i(fold.splits),
        i(attention_min_chunk()),
        i(fold.fold_max),
    ]);
    Some(Op::Kernel(launch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_shared_memory_matches_the_kernel_layout() {
        // AttnSmem<64, 1>: K 2*64*68*4 + V 2*64*72*2 + q 8*64*4 + p 8*64*4 + w 8*128*4.
        assert_eq!(attention_smem_bytes(64, 1), 34_816 + 18_432 + 2_048 + 2_048 + 4_096);
        // AttnSmem<128, 1>: K 2*32*132*4 + V 2*32*136*2 + q 8*128*4 + p 8*32*4 + w 8*128*4.
        assert_eq!(attention_smem_bytes(128, 1), 33_792 + 17_408 + 4_096 + 1_024 + 4_096);
        // AttnSmem<64, 4>: q and p four times over.
        assert_eq!(attention_smem_bytes(64, 4), 34_816 + 18_432 + 4 * 2_048 + 4 * 2_048 + 4_096);
        // Within sm_90's 227 KB per block; three decode blocks fit an SM's 228 KB, two prefill ones.
        assert!(3 * attention_smem_bytes(64, 1) <= 228 * 1024);
        for (_, d, rows) in ATTENTION_KERNELS {
            assert!(2 * attention_smem_bytes(d, rows) <= 228 * 1024, "d={d} rows={rows}");
        }
    }

    #[test]
    fn several_rows_per_attention_block_only_in_direct_mode() {
        assert_eq!(attention_rows_per_block(512, 1), ATT_PREFILL_ROWS, "a prefill");
        assert_eq!(attention_rows_per_block(1, 1), 1, "a decode step without splits");
        assert_eq!(attention_rows_per_block(1, 64), 1, "a decode step with splits");
        assert_eq!(attention_rows_per_block(37, 3), 1, "several rows with splits (the check's)");
        assert_eq!(attention_kernel(64, ATT_PREFILL_ROWS), Some(Kernel::AttentionRowsD64));
        assert_eq!(attention_kernel(128, 1), Some(Kernel::AttentionSplitD128));
        assert_eq!(attention_kernel(96, 1), None);
    }

    #[test]
    fn attention_head_groups_for_decode_only() {
        // A prefill (rows > 1) always runs one group, whatever the tuning override says.
        assert_eq!(attention_head_groups(7, 512), 1);
        assert_eq!(attention_head_groups(6, 2), 1);
        if std::env::var_os("QWEN_AOT_ATTN_HEAD_GROUPS").is_none() {
            assert_eq!(attention_head_groups(7, 1), 2, "0.5B: 7 heads as 4 + 3");
            assert_eq!(attention_head_groups(6, 1), 2, "1.5B: 6 heads as 3 + 3");
            assert_eq!(attention_head_groups(1, 1), 1, "MHA: one head per KV head");
        }
    }

    #[test]
    fn split_count_stops_where_splits_stop_being_active() {
        // H200 (132 SMs), 2 KV heads: 132 wanted; a 2177-key cache (the bench) can use 35
        // 64-key chunks (contexts past 128 keys), a 1024-key one 16.
        assert_eq!(split_count(2, 132, 2177, 128), 35);
        assert_eq!(split_count(2, 132, 1024, 128), 16);
        assert_eq!(split_count(2, 132, 128, 128), 1, "one chunk of min_chunk keys");
        assert_eq!(split_count(2, 132, 4096, 128), 64);
        assert_eq!(split_count(2, 132, 32768, 128), 128, "capped by the merge's limit");
        assert_eq!(split_count(2, 132, 1, 128), 1);
        assert_eq!(split_count(8, 4, 4096, 64), 1, "at least one");
    }

    /// With the capped count, every length up to max_seq is cut into exactly the chunks an
    /// uncapped count gives, so the cap changes no result.
    #[test]
    fn capped_split_count_keeps_every_partition() {
        for &(max_seq, min_chunk) in &[(2177usize, 128usize), (4096, 128), (1000, 64), (333, 192), (32768, 128)] {
            let capped = split_count(2, 132, max_seq, min_chunk);
            // Capped by 64-key chunks of the cache only.
            let uncapped = (2 * 132 / 2usize).clamp(1, max_seq.div_ceil(ATTN_CHUNK_ALIGN).clamp(1, ATTN_MAX_SPLITS));
            for len in 1..=max_seq {
                let (a, b) = (attn_chunk(len, capped, min_chunk), attn_chunk(len, uncapped, min_chunk));
                assert_eq!(a, b, "max_seq {max_seq}, len {len}: chunk {a} with {capped} splits, {b} with {uncapped}");
                assert!(len.div_ceil(a) <= capped, "len {len} needs more than {capped} splits");
            }
        }
    }

    /// Short contexts keep min_chunk-key chunks (one split, no merge, up to min_chunk keys);
    /// past ATTN_LONG_FACTOR x min_chunk keys the chunks shrink to 64 keys, as many splits as the
    /// count allows.
    #[test]
    fn chunks_shrink_only_for_long_contexts() {
        let splits = split_count(2, 132, 2177, 128);
        assert_eq!(attn_chunk(100, splits, 128), 128);
        assert_eq!(attn_chunk(128, splits, 128), 128);
        assert_eq!(attn_chunk(129, splits, 128), 64, "3 splits of one 64-key tile each");
        assert_eq!(attn_chunk(1024, splits, 128), 64);
        assert_eq!(attn_chunk(1025, splits, 128), 64);
        assert_eq!(attn_chunk(2048, splits, 128), 64, "32 splits of 64 keys");
        assert_eq!(attn_chunk(2177, splits, 128), 64);
        assert_eq!(attn_chunk(1025, 8, 128), 192, "few splits: the chunk follows the length");
    }

    /// The fold's GEMV is the Q5_0 direct store: all-Q5_0 rows of whole 128-element spans only.
    #[test]
    fn only_q5_0_direct_stores_take_the_fold() {
        use crate::quant::WeightFormat as W;
        assert!(takes_attn_fold(&QParts::of_formats(&[(W::Q5_0, 896)]), 896, 896));
        assert!(!takes_attn_fold(&QParts::of_formats(&[(W::Q8_0, 896)]), 896, 896));
        assert!(!takes_attn_fold(&QParts::of_formats(&[(W::Q5_0, 512), (W::Q8_0, 384)]), 896, 896));
        assert!(!takes_attn_fold(&QParts::of_formats(&[(W::Q5_0, 896)]), 896, 200), "k not whole spans");
    }

    /// The active split count the decode forms pick by (decode_forms.rs) is the kernels':
    /// one split up to min_chunk keys, then one 64-key split per 64 keys while the count allows.
    #[test]
    fn active_splits_follow_the_chunks() {
        assert_eq!(attention_min_chunk(), 128, "the default min_chunk (QWEN_AOT_ATTN_MIN_CHUNK unset)");
        let splits = split_count(2, 132, 4096, 128);
        let active: Vec<usize> =
            [1, 128, 129, 192, 193, 256, 257, 512, 513, 2048].map(|len| attn_active_splits(len, splits)).to_vec();
        assert_eq!(active, [1, 1, 3, 3, 4, 4, 5, 8, 9, 32]);
        assert_eq!(attn_active_splits(1025, 8), 6, "few splits: 192-key chunks");
        assert_eq!(attn_active_splits(5, 0), 1, "a split count of 0 is taken as 1");
    }
}
