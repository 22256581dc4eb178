//! Launches of the GEMVs and prefill matmuls on quantized weights (kernels/qgemv.cu, qmma.cu,
//! q5_direct.cu, q8_direct.cu) and of the dequantisation into the prefill's f16 scratch
//! (kernels/qlookup.cu): which kernel a weight's formats take, and its grid.

use super::{
    div_ceil, gemm_convert, gemm_epilogue, gemm_rows, gemv_head, i, kernel, q5_direct, q8_direct, qmma, rope_args, Arg,
    CudaDevice, Gemm, GemmScratch, GemvNorm, GemvOut, Kernel, Launch, MatMulMode, Op, QParts, WeightFormat,
    QMMA_STAGES, QMMA_WIDE_STAGES, QMMA_WIDE_WARPS,
};

use crate::cuda::qmma_shape;

/// Warps sharing one unit of a quantized GEMV: doubled while every lane still gets about two
/// groups of 32 elements (k = 896: 1 warp; 4864: 4; 8960: 8).
pub(crate) fn qgemv_warps_per_row(k: usize) -> usize {
    let groups = k / 32;
    let mut wpr = 1;
    while wpr < 8 && 64 * wpr <= groups {
        wpr *= 2;
    }
    wpr
}

/// Units per team of a quantized GEMV: one wave of `resident` blocks per SM, so that each block
/// copies its x row into shared memory once for many rows (the LM head: ~36 rows per warp).
pub(crate) fn qgemv_units_per_warp(units: usize, wpr: usize, sm_count: u32, resident: u32) -> usize {
    let blocks_at_one = units.div_ceil(GEMV_TEAM_WARPS / wpr);
    blocks_at_one.div_ceil((sm_count * resident.max(1)) as usize).max(1)
}

/// Warps per block of every GEMV (GEMV_WARPS in the kernels).
const GEMV_TEAM_WARPS: usize = crate::kernel_constants::GEMV_WARPS;

/// The quantized GEMV kernels of kernels/qgemv.cu (its QGEMV_ENTRIES list, in the same order): for
/// each format pair (fa, fb) the store, SwiGLU and RoPE entry points, for weights whose parts are
/// all in fa or fb. A test keeps the two lists equal.
#[rustfmt::skip]
pub(crate) const QGEMV_KERNELS: &[(WeightFormat, WeightFormat, [Kernel; 3])] = &[
    (WeightFormat::F32, WeightFormat::F32, [Kernel::GemvQStoreF32, Kernel::GemvQSwiGluF32, Kernel::GemvQRopeF32]),
    (WeightFormat::F16, WeightFormat::F16, [Kernel::GemvQStoreF16, Kernel::GemvQSwiGluF16, Kernel::GemvQRopeF16]),
    (WeightFormat::BF16, WeightFormat::BF16, [Kernel::GemvQStoreBf16, Kernel::GemvQSwiGluBf16, Kernel::GemvQRopeBf16]),
    (WeightFormat::Q4_0, WeightFormat::Q4_0, [Kernel::GemvQStoreQ40, Kernel::GemvQSwiGluQ40, Kernel::GemvQRopeQ40]),
    (WeightFormat::Q4_1, WeightFormat::Q4_1, [Kernel::GemvQStoreQ41, Kernel::GemvQSwiGluQ41, Kernel::GemvQRopeQ41]),
    (WeightFormat::Q5_0, WeightFormat::Q5_0, [Kernel::GemvQStoreQ50, Kernel::GemvQSwiGluQ50, Kernel::GemvQRopeQ50]),
    (WeightFormat::Q5_1, WeightFormat::Q5_1, [Kernel::GemvQStoreQ51, Kernel::GemvQSwiGluQ51, Kernel::GemvQRopeQ51]),
    (WeightFormat::Q8_0, WeightFormat::Q8_0, [Kernel::GemvQStoreQ80, Kernel::GemvQSwiGluQ80, Kernel::GemvQRopeQ80]),
    (WeightFormat::Q2_K, WeightFormat::Q2_K, [Kernel::GemvQStoreQ2K, Kernel::GemvQSwiGluQ2K, Kernel::GemvQRopeQ2K]),
    (WeightFormat::Q3_K, WeightFormat::Q3_K, [Kernel::GemvQStoreQ3K, Kernel::GemvQSwiGluQ3K, Kernel::GemvQRopeQ3K]),
    (WeightFormat::Q4_K, WeightFormat::Q4_K, [Kernel::GemvQStoreQ4K, Kernel::GemvQSwiGluQ4K, Kernel::GemvQRopeQ4K]),
    (WeightFormat::Q5_K, WeightFormat::Q5_K, [Kernel::GemvQStoreQ5K, Kernel::GemvQSwiGluQ5K, Kernel::GemvQRopeQ5K]),
    (WeightFormat::Q6_K, WeightFormat::Q6_K, [Kernel::GemvQStoreQ6K, Kernel::GemvQSwiGluQ6K, Kernel::GemvQRopeQ6K]),
    (WeightFormat::Q4_0, WeightFormat::Q8_0, [Kernel::GemvQStoreQ40Q80, Kernel::GemvQSwiGluQ40Q80, Kernel::GemvQRopeQ40Q80]),
    (WeightFormat::Q4_1, WeightFormat::Q8_0, [Kernel::GemvQStoreQ41Q80, Kernel::GemvQSwiGluQ41Q80, Kernel::GemvQRopeQ41Q80]),
    (WeightFormat::Q5_0, WeightFormat::Q8_0, [Kernel::GemvQStoreQ50Q80, Kernel::GemvQSwiGluQ50Q80, Kernel::GemvQRopeQ50Q80]),
    (WeightFormat::Q5_1, WeightFormat::Q8_0, [Kernel::GemvQStoreQ51Q80, Kernel::GemvQSwiGluQ51Q80, Kernel::GemvQRopeQ51Q80]),
    (WeightFormat::Q3_K, WeightFormat::Q6_K, [Kernel::GemvQStoreQ3KQ6K, Kernel::GemvQSwiGluQ3KQ6K, Kernel::GemvQRopeQ3KQ6K]),
    (WeightFormat::Q4_K, WeightFormat::Q6_K, [Kernel::GemvQStoreQ4KQ6K, Kernel::GemvQSwiGluQ4KQ6K, Kernel::GemvQRopeQ4KQ6K]),
    (WeightFormat::Q5_K, WeightFormat::Q6_K, [Kernel::GemvQStoreQ5KQ6K, Kernel::GemvQSwiGluQ5KQ6K, Kernel::GemvQRopeQ5KQ6K]),
    (WeightFormat::Q3_K, WeightFormat::Q4_K, [Kernel::GemvQStoreQ3KQ4K, Kernel::GemvQSwiGluQ3KQ4K, Kernel::GemvQRopeQ3KQ4K]),
    (WeightFormat::Q3_K, WeightFormat::Q5_K, [Kernel::GemvQStoreQ3KQ5K, Kernel::GemvQSwiGluQ3KQ5K, Kernel::GemvQRopeQ3KQ5K]),
    (WeightFormat::Q2_K, WeightFormat::Q3_K, [Kernel::GemvQStoreQ2KQ3K, Kernel::GemvQSwiGluQ2KQ3K, Kernel::GemvQRopeQ2KQ3K]),
];

/// The kernel for a GEMV with epilogue `epi` (0 store, 1 SwiGLU, 2 RoPE) over parts in
/// `formats`: the specialised kernel of the pair that covers them, else the general one.
pub(crate) fn qgemv_kernel(epi: usize, parts: &QParts) -> Kernel {
    let formats: Vec<i32> = parts.fmt.to_vec();
    let covered = |a: WeightFormat, b: WeightFormat| formats.iter().all(|&f| f == a.code() || f == b.code());
    QGEMV_KERNELS
        .iter()
        .find(|(a, b, _)| covered(*a, *b))
        .map(|(_, _, k)| k[epi])
        .unwrap_or([Kernel::GemvQAny, Kernel::GemvQAnySwiGlu, Kernel::GemvQAnyRope][epi])
}

/// x f32 [rows, k]; W: `parts` ([n, k], any formats, k % 32 == 0); norm and epilogue buffers as
/// for [`gemv`]. Dynamic shared memory: 4 * k bytes (at most QGEMV_MAX_SMEM).
#[allow(clippy::too_many_arguments)]
pub(crate) fn qgemv(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    norm: Option<GemvNorm>,
    parts: QParts,
    n: usize,
    k: usize,
    rows: usize,
    epilogue: GemvOut,
) -> Op {
    let g = QGemv { st, x, norm, parts, n, k, rows, epilogue, argmax_key: None };
    if let GemvOut::Store { out, residual: None, last_row } = epilogue {
        if let Some(kern) = q8_direct::direct_kernel(&parts, n, k, false) {
            return q8_direct_gemv(dev, kern, &g, (out, last_row));
        }
    }
    if let Some(kern) = q5_direct::direct_kernel(&parts, n, k, &epilogue, false) {
        return q5_direct_gemv(dev, kern, &g);
    }
    if let Some(kern) = qmma::qmma_kernel(&parts, n, k, &epilogue) {
        return qmma_gemv(dev, kern, &g);
    }
    let (head, units) = gemv_head(st, x, norm, Arg::Parts(parts), n, &epilogue);
    let wpr = qgemv_warps_per_row(k);
    let (kern, grid_y, tail) = match epilogue {
        GemvOut::Store { out, residual, last_row } => {
            let grid_y = if last_row { 1 } else { rows };
            (qgemv_kernel(0, &parts), grid_y, vec![Arg::Ptr(out), Arg::Ptr(residual.unwrap_or(0)), i(n), i(k), i(wpr)])
        }
        GemvOut::SwiGlu { out } => (qgemv_kernel(1, &parts), rows, vec![Arg::Ptr(out), i(n / 2), i(k), i(wpr)]),
        GemvOut::Rope(r) => (qgemv_kernel(2, &parts), rows, [rope_args(r), vec![i(k), i(wpr)]].concat()),
    };
    let resident = dev.resident_blocks_per_sm(kern, 256, 4 * k as u32);
    let upw = qgemv_units_per_warp(units, wpr, dev.sm_count(), resident);
    let mut args: Vec<Arg> = head.into_iter().chain(tail).collect();
    args.push(i(upw));
    if let GemvOut::Store { last_row, .. } = epilogue {
        args.push(i(usize::from(last_row)));
    }
    let blocks = units.div_ceil(GEMV_TEAM_WARPS / wpr * upw);
    Op::Kernel(Launch {
        kernel: kern,
        grid: (blocks.max(1) as u32, grid_y.max(1) as u32, 1),
        block: (256, 1, 1),
        smem: 4 * k as u32,
        args,
    })
}

/// The LM head of the last token with the greedy argmax as its epilogue, when a tensor-core
/// entry point takes the weight ([`qmma::argmax_kernel`]; None: launch [`qgemv`] and [`argmax`]):
/// logits f32 [rows, n] (row n_tokens - 1 written, as [`GemvOut::Store`] with `last_row`), and
/// `argmax_key` u64 [1], zeroed before the launch (by the program's [`embed`]), maximised to the
/// argmax_key (kernels/argmax.cuh) of the winning logit: [`super::argmax_key::decode`] gives its
/// index.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qgemv_argmax(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    norm: Option<GemvNorm>,
    parts: QParts,
    n: usize,
    k: usize,
    logits: u64,
    argmax_key: u64,
) -> Option<Op> {
    let epilogue = GemvOut::Store { out: logits, residual: None, last_row: true };
    let g = QGemv { st, x, norm, parts, n, k, rows: 1, epilogue, argmax_key: Some(argmax_key) };
    if let Some(kern) = q8_direct::direct_kernel(&parts, n, k, true) {
        return Some(q8_direct_gemv(dev, kern, &g, (logits, true)));
    }
    if let Some(kern) = q5_direct::direct_kernel(&parts, n, k, &epilogue, true) {
        return Some(q5_direct_gemv(dev, kern, &g));
    }
    let kern = qmma::argmax_kernel(&parts, n, k)?;
    Some(qmma_gemv(dev, kern, &g))
}

/// One quantized GEMV as [`qgemv`] or [`qgemv_argmax`] was asked for it (`argmax_key`: the
/// store-with-argmax entry point's key), which each of its launchers -- kernels/qmma.cu,
/// kernels/q8_direct.cu, kernels/q5_direct.cu -- turns into a launch.
/// (attention.rs builds one for o_proj's fold.)
pub(super) struct QGemv {
    pub st: u64,
    pub x: u64,
    pub norm: Option<GemvNorm>,
    pub parts: QParts,
    pub n: usize,
    pub k: usize,
    pub rows: usize,
    pub epilogue: GemvOut,
    pub argmax_key: Option<u64>,
}

impl QGemv {
    /// The arguments every entry point starts with ([`gemv_head`]).
    fn head(&self) -> [Arg; 5] {
        gemv_head(self.st, self.x, self.norm, Arg::Parts(self.parts), self.n, &self.epilogue).0
    }

    /// The launch rows and the arguments after the head of the tiled GEMVs (qmma.cu,
    /// q5_direct.cu), whose one geometry argument (`geometry`: warps per tile, or tiles per block)
    /// follows n and k: store (out, the residual unless the argmax entry point, n, k, geometry,
    /// last_row, then the argmax key), SwiGLU (out, ffn = n / 2, k, geometry) or RoPE (its
    /// buffers, k, geometry).
    fn tiled_tail(&self, geometry: usize) -> (usize, Vec<Arg>) {
        let (n, k) = (self.n, self.k);
        match self.epilogue {
            GemvOut::Store { out, residual, last_row } => {
                let grid_y = if last_row { 1 } else { self.rows };
                let last = i(usize::from(last_row));
                match self.argmax_key {
                    Some(key) => (grid_y, vec![Arg::Ptr(out), i(n), i(k), i(geometry), last, Arg::Ptr(key)]),
                    None => {
                        (grid_y, vec![Arg::Ptr(out), Arg::Ptr(residual.unwrap_or(0)), i(n), i(k), i(geometry), last])
                    }
                }
            }
            GemvOut::SwiGlu { out } => (self.rows, vec![Arg::Ptr(out), i(n / 2), i(k), i(geometry)]),
            GemvOut::Rope(r) => (self.rows, [rope_args(r), vec![i(k), i(geometry)]].concat()),
        }
    }
}

/// [`qgemv`] on the tensor-core kernel `kern` (kernels/qmma.cu; [`qmma::qmma_kernel`] chose it):
/// the same arguments as kernels/qgemv.cu's but warps per tile instead of warps per row and
/// units per warp. Dynamic shared memory: the x digits ([`qmma::smem_bytes`]). `argmax_key`: the
/// store-with-argmax entry point `kern` ([`qgemv_argmax`]; no residual, never the wide store).
fn qmma_gemv(dev: &CudaDevice, kern: Kernel, g: &QGemv) -> Op {
    let (n, k) = (g.n, g.k);
    let tiles = qmma::tiles(n, &g.epilogue);
    // A store with few tiles and long rows (down_proj) on the wide entry point: QMMA_WIDE_WARPS
    // warps per tile in one block per SM; otherwise GEMV_WARPS warps per block, shared by
    // [`qmma::warps_per_tile`] each, or as `QWEN_AOT_QMMA_SHAPE` says.
    let wide = match g.epilogue {
        GemvOut::Store { .. } if g.argmax_key.is_none() => qmma::wide_store(kern, tiles, k, dev.sm_count()),
        _ => None,
    };
    let (kern, warps, stages) =
        wide.map_or((kern, GEMV_TEAM_WARPS, QMMA_STAGES), |w| (w, QMMA_WIDE_WARPS, QMMA_WIDE_STAGES));
    let smem = qmma::smem_bytes_for(warps, stages, k);
    let (wpt, blocks) = if wide.is_some() {
        (QMMA_WIDE_WARPS, tiles)
    } else {
        let shape = qmma_shape::Override::of(n, k);
        let wpt =
            shape.wpt.unwrap_or_else(|| qmma::warps_per_tile(tiles, k, dev.sm_count(), qmma::kernel_step_groups(kern)));
        // With its dynamic shared memory (the ring and the x digits): past k ~ 3,000 two blocks
        // fit an SM, not the three its registers allow.
        let resident = dev.resident_blocks_per_sm(kern, 256, smem as u32);
        (wpt, shape.blocks.unwrap_or_else(|| qmma::blocks(tiles, wpt, dev.sm_count(), resident)))
    };
    let (grid_y, tail) = g.tiled_tail(wpt);
    Op::Kernel(Launch {
        kernel: kern,
        grid: (blocks as u32, grid_y.max(1) as u32, 1),
        block: (warps as u32 * 32, 1, 1),
        smem: smem as u32,
        args: g.head().into_iter().chain(tail).collect(),
    })
}

/// [`qgemv`]'s store without a residual (`(out, last_row)`: `g`'s [`GemvOut::Store`]) on
/// kernels/q8_direct.cu (`kern`: [`q8_direct::direct_kernel`] chose it): the GEMV head, then out,
/// n, k, last_row and, for the argmax entry point, the argmax key. Dynamic shared memory: the x
/// digits and their tables ([`q8_direct::smem_bytes`]).
fn q8_direct_gemv(dev: &CudaDevice, kern: Kernel, g: &QGemv, (out, last_row): (u64, bool)) -> Op {
    let (n, k) = (g.n, g.k);
    let smem = q8_direct::smem_bytes(k) as u32;
    let threads = (GEMV_TEAM_WARPS * 32) as u32;
    let resident = dev.resident_blocks_per_sm(kern, threads, smem);
    let tail = [Arg::Ptr(out), i(n), i(k), i(usize::from(last_row))].into_iter().chain(g.argmax_key.map(Arg::Ptr));
    let grid_y = if last_row { 1 } else { g.rows.max(1) as u32 };
    Op::Kernel(Launch {
        kernel: kern,
        grid: (q8_direct::blocks(n, dev.sm_count(), resident) as u32, grid_y, 1),
        block: (threads, 1, 1),
        smem,
        args: g.head().into_iter().chain(tail).collect(),
    })
}

/// [`qgemv`]'s store (with or without a residual, or with the argmax) or SwiGLU on
/// kernels/q5_direct.cu (`kern`: [`q5_direct::direct_kernel`] chose it, never for RoPE): the GEMV
/// head, then [`QGemv::tiled_tail`] with tiles per block. Dynamic shared memory: the x digits,
/// their tables and the warps' row sums ([`q5_direct::smem_bytes`]).
pub(super) fn q5_direct_gemv(dev: &CudaDevice, kern: Kernel, g: &QGemv) -> Op {
    let tiles = q5_direct::tiles(g.n, &g.epilogue);
    let threads = (GEMV_TEAM_WARPS * 32) as u32;
    let resident = dev.resident_blocks_per_sm(kern, threads, q5_direct::smem_bytes(g.k, 1) as u32);
    let tpb = q5_direct::tiles_per_block(tiles, dev.sm_count(), resident);
    let (grid_y, tail) = g.tiled_tail(tpb);
    Op::Kernel(Launch {
        kernel: kern,
        grid: (tiles.div_ceil(tpb) as u32, grid_y.max(1) as u32, 1),
        block: (threads, 1, 1),
        smem: q5_direct::smem_bytes(g.k, tpb) as u32,
        args: g.head().into_iter().chain(tail).collect(),
    })
}

/// tokens i32 [rows]; table: `parts` [vocab, hidden]; out f32 [rows, hidden]; `argmax_key` as
/// for [`embed`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn embed_q(
    st: u64,
    tokens: u64,
    parts: QParts,
    out: u64,
    hidden: usize,
    vocab: usize,
    rows: usize,
    argmax_key: u64,
) -> Op {
    kernel(
        Kernel::EmbedQ,
        (div_ceil(hidden / 32, 256), rows, 1),
        256,
        vec![
            Arg::Ptr(st),
            Arg::Ptr(tokens),
            Arg::Parts(parts),
            Arg::Ptr(out),
            i(hidden),
            i(vocab),
            Arg::Ptr(argmax_key),
        ],
    )
}

/// Rows `row_begin..row_begin + rows` of `parts` ([n, k]) to f16 `out` [rows, k].
pub(crate) fn dequant_q_f16(parts: QParts, row_begin: usize, rows: usize, k: usize, out: u64) -> Op {
    kernel(
        Kernel::DequantQF16,
        (dequant_blocks(rows, k), 1, 1),
        DEQUANT_THREADS,
        vec![Arg::Parts(parts), i(row_begin), i(rows), i(k), Arg::Ptr(out)],
    )
}

const DEQUANT_THREADS: u32 = crate::kernel_constants::DQ_THREADS as u32;

/// Blocks of a dequantisation of `rows` rows of `k` columns: one per chunk of groups, plus one
/// per part boundary the rows may cross (qlookup.cu `dq_blocks`; surplus blocks return at once).
fn dequant_blocks(rows: usize, k: usize) -> usize {
    if rows == 0 {
        return 0;
    }
    debug_assert!(k.is_multiple_of(32), "rows of whole groups");
    let groups = rows * (k / 32);
    // The kernel counts groups (a part's, plus a chunk's rounding) in 32 bits.
    assert!(groups + crate::kernel_constants::DQ_CHUNK <= i32::MAX as usize, "{rows} x {k}: too many groups");
    groups.div_ceil(crate::kernel_constants::DQ_CHUNK) + (crate::kernel_constants::QA_MAX_PARTS - 1)
}

/// Where a prefill GEMM on a quantized weight finds its f16 copy.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dequantised {
    /// Already dequantised (by [`dequant_q_f16_batch`]) at this address: [n, k] halves.
    At(u64),
    /// Dequantise it here, in slices of at most `bytes / (2k)` rows through `scratch`.
    Slices { scratch: u64, bytes: usize },
}

/// A prefill matmul on quantized weights: the GEMV kernel, or on cuBLAS: x converted once, then
/// the GEMM over W's f16 copy (per `w16`: ready, or per slice: dequantise the slice to f16 in the
/// scratch, GEMM into its columns of out); then the scale/residual epilogue over all of out.
/// Buffers as for [`matmul`]; a slice scratch holds `bytes` bytes (>= 2k).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_q(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    parts: QParts,
    out: u64,
    residual: Option<u64>,
    n: usize,
    k: usize,
    rows: usize,
    mode: MatMulMode,
    scratch: GemmScratch,
    w16: Dequantised,
) -> Vec<Op> {
    match mode {
        MatMulMode::Gemv | MatMulMode::LastRow => {
            let epilogue = GemvOut::Store { out, residual, last_row: mode == MatMulMode::LastRow };
            vec![qgemv(dev, st, x, None, parts, n, k, rows, epilogue)]
        }
        MatMulMode::Gemm => {
            let gemm = |w, r0: usize, nr| {
                let out = out + 4 * r0 as u64;
                Op::Gemm(Gemm { w, x16: scratch.x16, out, n: nr, k, rows: gemm_rows(rows, scratch.rows), ldc: n })
            };
            let mut ops = vec![gemm_convert(st, x, k, rows, scratch)];
            match w16 {
                Dequantised::At(w) => ops.push(gemm(w, 0, n)),
                Dequantised::Slices { scratch: ws, bytes } => {
                    let slice = crate::cuda::dequant_batch::slice_rows(bytes, n, k);
                    for r0 in (0..n).step_by(slice) {
                        let nr = slice.min(n - r0);
                        ops.push(dequant_q_f16(parts, r0, nr, k, ws));
                        ops.push(gemm(ws, r0, nr));
                    }
                }
            }
            ops.push(gemm_epilogue(st, out, residual, n, rows, scratch));
            ops
        }
    }
}

/// One whole weight to dequantise: its parts, shape [n, k], and where its f16 copy goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DequantJob {
    pub parts: QParts,
    pub n: usize,
    pub k: usize,
    pub out: u64,
}

/// Whole weights to f16 (`job.out`: n * k halves each), four per launch (dequant_q_f16_x4).
pub(crate) fn dequant_q_f16_batch(jobs: &[DequantJob]) -> Vec<Op> {
    jobs.chunks(4)
        .map(|four| {
            let job = |i: usize| four.get(i).copied();
            // The weights' blocks back to back; an absent weight (a batch of fewer than four) has
            // no rows and so no blocks.
            let blocks: usize = four.iter().map(|j| dequant_blocks(j.n, j.k)).sum();
            let mut args: Vec<Arg> = (0..4).map(|s| Arg::Parts(job(s).map_or(four[0].parts, |j| j.parts))).collect();
            args.extend((0..4).map(|s| i(job(s).map_or(0, |j| j.n))));
            args.extend((0..4).map(|s| i(job(s).map_or(32, |j| j.k))));
            args.extend((0..4).map(|s| Arg::Ptr(job(s).map_or(0, |j| j.out))));
            kernel(Kernel::DequantQF16x4, (blocks, 1, 1), DEQUANT_THREADS, args)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dequantisation's grid has a block for every chunk the kernel cuts the rows into: each
    /// part's overlap with the rows in DQ_CHUNK-group chunks (kernels/qlookup.cu `dq_chunk`), for
    /// slices that start and end anywhere across up to three parts.
    #[test]
    fn dequant_grid_covers_every_chunk_of_every_part() {
        use crate::kernel_constants::DQ_CHUNK;
        let chunks = |ends: &[usize], begin: usize, rows: usize, k: usize| -> usize {
            let mut r0 = 0;
            let mut total = 0;
            for &end in ends {
                let (lo, hi) = (begin.max(r0), (begin + rows).min(end));
                total += (hi.saturating_sub(lo) * (k / 32)).div_ceil(DQ_CHUNK);
                r0 = end;
            }
            total
        };
        let mut tight = false;
        for k in [256usize, 896, 1536, 4864] {
            for ends in [vec![7usize], vec![3, 10], vec![1, 9, 17], vec![896, 1024, 1152]] {
                let n = *ends.last().unwrap();
                for begin in 0..n.min(20) {
                    for rows in 1..=(n - begin).min(40) {
                        let need = chunks(&ends, begin, rows, k);
                        let grid = dequant_blocks(rows, k);
                        assert!(grid >= need, "k {k} parts {ends:?} rows {begin}+{rows}: {grid} < {need}");
                        tight |= grid == need;
                    }
                }
                let whole = chunks(&ends, 0, n, k);
                assert!(dequant_blocks(n, k) >= whole);
            }
        }
        assert!(tight, "the bound is reached (three parts each with a partial chunk)");
        assert_eq!(dequant_blocks(0, 896), 0, "an absent weight has no blocks");
        // Qwen2.5-0.5B gate|up: 9728 x 896 = 272,384 groups = 1,064 chunks (+2 for part boundaries).
        assert_eq!(dequant_blocks(9728, 896), 1066);
    }

    /// QGEMV_KERNELS lists exactly the format pairs kernels/qgemv.cu instantiates, in order, and
    /// the kernel names follow the pair's suffix.
    #[test]
    fn qgemv_table_matches_the_kernels() {
        let src = include_str!("../../../../kernels/qgemv.cu");
        let listed: Vec<(String, String, String)> = src
            .lines()
            .filter_map(|l| l.strip_prefix("QGEMV_ENTRIES(QF_"))
            .map(|l| {
                let f: Vec<&str> = l.trim_end_matches(')').split(", ").collect();
                (f[0].to_string(), f[1].trim_start_matches("QF_").to_string(), f[2].to_string())
            })
            .collect();
        assert_eq!(listed.len(), QGEMV_KERNELS.len());
        for ((a, b, sfx), (fa, fb, ks)) in listed.iter().zip(QGEMV_KERNELS) {
            assert_eq!((a.as_str(), b.as_str()), (fa.name(), fb.name()));
            for (k, epi) in ks.iter().zip(["store", "swiglu", "rope"]) {
                assert_eq!(k.name(), format!("gemv_q_{epi}_{sfx}"));
            }
        }
    }

    /// Single formats and listed mixes get their specialised kernel; other mixes the general one.
    #[test]
    fn qgemv_kernel_choice() {
        let parts = |f: [WeightFormat; 3]| QParts { fmt: f.map(|x| x.code()), ..QParts::default() };
        use WeightFormat as W;
        assert_eq!(qgemv_kernel(0, &parts([W::Q5_0; 3])), Kernel::GemvQStoreQ50);
        assert_eq!(qgemv_kernel(2, &parts([W::Q5_0, W::Q8_0, W::Q8_0])), Kernel::GemvQRopeQ50Q80);
        assert_eq!(qgemv_kernel(1, &parts([W::Q6_K, W::Q4_K, W::Q4_K])), Kernel::GemvQSwiGluQ4KQ6K);
        assert_eq!(qgemv_kernel(0, &parts([W::Q4_0, W::Q6_K, W::Q6_K])), Kernel::GemvQAny);
        assert_eq!(qgemv_kernel(2, &parts([W::Q4_K, W::Q5_0, W::Q8_0])), Kernel::GemvQAnyRope);
    }
}
