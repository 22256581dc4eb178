//! Launch shapes and argument lists of every kernel (the host half of each kernels/*.cu header
//! comment), and the [`Op`] list a program compiles to.
//!
//! Every builder takes raw device addresses; its doc names the buffer sizes the kernel touches,
//! which is what the `// SAFETY:` comments at the launch sites rely on (the plan validator and the
//! executor's allocation sizes guarantee them).
use std::ffi::c_void;

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::{sys, CudaGraph};

use super::device::{CudaDevice, Kernel};
use super::q5_direct;
use super::q8_direct;
use super::qmma;
use super::CudaCtx;
use crate::error::RuntimeError;
use crate::kernel_constants::{QMMA_STAGES, QMMA_WIDE_STAGES, QMMA_WIDE_WARPS};
use crate::quant::WeightFormat;

/// One kernel argument, stored in an 8-byte slot (the driver reads the parameter's own size from
/// the slot's address: the low bytes on little-endian targets).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
    /// A weight's parts, passed by value (`QParts` in kernels/quant.cuh).
    Parts(QParts),
}

/// Storage of one kernel argument: big enough for the largest (a [`QParts`]), 8-byte aligned.
type Slot = [u64; 16];

impl Arg {
    fn slot(self) -> Slot {
        let mut s = [0u64; 16];
        match self {
            Arg::Ptr(p) => s[0] = p,
            Arg::I32(v) => s[0] = v as u32 as u64,
            Arg::F32(v) => s[0] = v.to_bits() as u64,
            Arg::Parts(q) => {
                let words = q.words();
                s[..words.len()].copy_from_slice(&words);
            }
        }
        s
    }
}

/// Device view of a weight's parts (kernels/quant.cuh `QParts`, `#[repr(C)]` with the same field
/// order, sizes and alignment: 12 pointers, then two arrays of 3 ints; 120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QParts {
    pub qs: [u64; MAX_PARTS],
    pub qh: [u64; MAX_PARTS],
    pub sc: [u64; MAX_PARTS],
    pub sup: [u64; MAX_PARTS],
    pub row_end: [i32; MAX_PARTS],
    pub fmt: [i32; MAX_PARTS],
}

/// QA_MAX_PARTS in kernels/quant.cuh.
pub(crate) const MAX_PARTS: usize = crate::compiled::MAX_WEIGHT_PARTS;

impl QParts {
    /// The parts of `w` whose bytes start at device address `base` (the weight's offset in the
    /// uploaded weights.bin); unused entries repeat the last part, so every row maps to a part.
    pub fn of(w: &crate::plan::WeightInfo, weights_base: u64) -> QParts {
        let k = *w.shape.last().unwrap_or(&0);
        let mut q = QParts::default();
        let mut rows = 0i32;
        for i in 0..MAX_PARTS {
            let part = w.parts[i.min(w.parts.len() - 1)];
            let l = crate::quant::part_layout(part.format, part.rows, k).expect("part layouts validated at load");
            let base = weights_base + part.offset;
            q.qs[i] = base + l.qs;
            q.qh[i] = base + l.qh;
            q.sc[i] = base + l.sc;
            q.sup[i] = base + l.sup;
            if i < w.parts.len() {
                rows += part.rows as i32;
            }
            q.row_end[i] = rows;
            q.fmt[i] = part.format.code();
        }
        q
    }

    /// Parts of the given formats ending at the given rows, without device addresses: what the
    /// launch-geometry tests choose kernels by (unused entries repeat the last part, as in
    /// [`QParts::of`]).
    #[cfg(test)]
    pub(crate) fn of_formats(fmts: &[(WeightFormat, i32)]) -> QParts {
        let mut q = QParts::default();
        for p in 0..MAX_PARTS {
            let (f, end) = fmts[p.min(fmts.len() - 1)];
            q.fmt[p] = f.code();
            q.row_end[p] = end;
        }
        q
    }

    /// The struct's bytes as 8-byte words (the kernel parameter's image).
    fn words(&self) -> [u64; 15] {
        let mut out = [0u64; 15];
        for (i, v) in self.qs.iter().chain(&self.qh).chain(&self.sc).chain(&self.sup).enumerate() {
            out[i] = *v;
        }
        let ints: Vec<i32> = self.row_end.iter().chain(&self.fmt).copied().collect();
        for (i, pair) in ints.chunks(2).enumerate() {
            out[12 + i] = pair[0] as u32 as u64 | (pair[1] as u32 as u64) << 32;
        }
        out
    }
}

/// One kernel launch: the kernel of a table (`Kernel`, the production image's; `TestKernel`, the
/// test image's), its shape and its arguments.
#[derive(Clone, Debug)]
pub(crate) struct Launch<K = Kernel> {
    pub kernel: K,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem: u32,
    pub args: Vec<Arg>,
}

/// `C[rows, n] (f32) = X16[rows, k] (f16) . W[n, k]^T (f16)` on cuBLAS, f32 compute.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gemm {
    pub w: u64,
    pub x16: u64,
    pub out: u64,
    pub n: usize,
    pub k: usize,
    pub rows: usize,
    /// Row stride of C in elements (`n`, or the whole width when this GEMM computes a column
    /// slice of a wider product).
    pub ldc: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Op {
    Kernel(Launch),
    Gemm(Gemm),
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Kernel(l) => l.kernel.name(),
            Op::Gemm(_) => "cublasGemmEx",
        }
    }
}

const fn div_ceil(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

fn kernel(kernel: Kernel, grid: (usize, usize, usize), block: u32, args: Vec<Arg>) -> Op {
    kernel_smem(kernel, grid, block, 0, args)
}

/// A launch with `smem` bytes of dynamic shared memory (above 48 KB the kernel's limit must have
/// been raised at load: device.rs).
fn kernel_smem(kernel: Kernel, grid: (usize, usize, usize), block: u32, smem: u32, args: Vec<Arg>) -> Op {
    Op::Kernel(Launch {
        kernel,
        grid: (grid.0.max(1) as u32, grid.1.max(1) as u32, grid.2.max(1) as u32),
        block: (block, 1, 1),
        smem,
        args,
    })
}

fn i(v: usize) -> Arg {
    Arg::I32(v as i32)
}

// ---- builders: one per kernel family -----------------------------------------------------------

/// tokens i32 [rows]; table f16 [vocab, hidden]; out f32 [rows, hidden]; `argmax_key` u64 [1]
/// zeroed for the program's LM head argmax epilogue ([`qgemv_argmax`]), or 0 (none).
#[allow(clippy::too_many_arguments)]
pub(crate) fn embed(
    st: u64,
    tokens: u64,
    table: u64,
    out: u64,
    hidden: usize,
    vocab: usize,
    rows: usize,
    argmax_key: u64,
) -> Op {
    kernel(
        Kernel::Embed,
        (div_ceil(hidden, 256 * 8), rows, 1),
        256,
        vec![Arg::Ptr(st), Arg::Ptr(tokens), Arg::Ptr(table), Arg::Ptr(out), i(hidden), i(vocab), Arg::Ptr(argmax_key)],
    )
}

fn norm_block(n: usize) -> u32 {
    (div_ceil(n, 4).div_ceil(32) * 32).clamp(64, 1024) as u32
}

/// x, out f32 [rows, n]; w f32 [n].
pub(crate) fn rms_norm(st: u64, x: u64, w: u64, out: u64, n: usize, eps: f32, rows: usize) -> Op {
    kernel(
        Kernel::RmsNorm,
        (rows, 1, 1),
        norm_block(n),
        vec![Arg::Ptr(st), Arg::Ptr(x), Arg::Ptr(w), Arg::Ptr(out), i(n), Arg::F32(eps)],
    )
}

/// a, b, sum_out, out f32 [rows, n]; w f32 [n].
#[allow(clippy::too_many_arguments)]
pub(crate) fn add_rms_norm(
    st: u64,
    a: u64,
    b: u64,
    w: u64,
    sum_out: u64,
    out: u64,
    n: usize,
    eps: f32,
    rows: usize,
) -> Op {
    kernel(
        Kernel::AddRmsNorm,
        (rows, 1, 1),
        norm_block(n),
        vec![
            Arg::Ptr(st),
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(w),
            Arg::Ptr(sum_out),
            Arg::Ptr(out),
            i(n),
            Arg::F32(eps),
        ],
    )
}

/// Warps sharing one output row (unit): enough blocks (>= 2 per SM) to keep every SM streaming,
/// but at least one 16-byte vector per lane. (Allowing 4 warps on 896-wide rows, i.e. 448
/// o_proj and 288 qkv blocks, measured slower: experiments/LOG.md.)
pub(crate) fn gemv_warps_per_row(n: usize, k: usize, sm_count: u32) -> usize {
    let target = 2 * sm_count as usize;
    let max_wpr = (k / 8 / 32).clamp(1, 8);
    let mut wpr = 1;
    while wpr < max_wpr && wpr * 2 <= max_wpr && div_ceil(n * wpr, 8) < target {
        wpr *= 2;
    }
    wpr
}

/// Whether a plain GEMV runs the 8-loads-per-lane kernel (gemv_f16_wide): when a lane's share of
/// a row is more than GEMV_UNROLL (4) 16-byte vectors, so that up to 8 of them are requested
/// before the PDL wait. `QWEN_AOT_GEMV_WIDE=0` turns it off,
/// for tuning.
pub(crate) fn gemv_wide(k: usize, warps_per_row: usize) -> bool {
    let off = std::env::var("QWEN_AOT_GEMV_WIDE").is_ok_and(|v| v == "0");
    !off && k.is_multiple_of(8) && (k / 8).div_ceil(32 * warps_per_row) > 4
}

/// Rows per warp of the plain GEMV (kernels/matmul.cu, gemv_rows_impl): more than one only for
/// tall matrices (the LM head) whose x row fits a warp's registers (one warp per row, k % 8 == 0,
/// k <= 1024): the largest power of two up to 8 that still leaves >= 16 blocks per SM.
pub(crate) fn gemv_rows_per_warp(n: usize, k: usize, warps_per_row: usize, sm_count: u32) -> usize {
    if warps_per_row != 1 || !k.is_multiple_of(8) || k > 1024 {
        return 1;
    }
    let mut rpw = 1;
    while rpw < 8 && div_ceil(n, 8 * rpw * 2) >= 16 * sm_count as usize {
        rpw *= 2;
    }
    rpw
}

/// Units (gate/up row pairs) per warp of gemv_f16_swiglu_rows, or None where its conditions fail
/// (x must fit a warp's registers: k % 8 == 0, k <= 1024): enough units per warp that every block
/// is resident at once (`resident_blocks` per SM of 8 warps; one wave, no tail).
pub(crate) fn gemv_swiglu_units_per_warp(units: usize, k: usize, sm_count: u32, resident_blocks: u32) -> Option<usize> {
    if !k.is_multiple_of(8) || k > 1024 {
        return None;
    }
    Some(div_ceil(units, (resident_blocks * sm_count) as usize * 8).max(1))
}

/// How a MatMul step is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MatMulMode {
    /// GEMV kernel on every row `< n_tokens` (grid y = rows).
    Gemv,
    /// GEMV kernel on row `n_tokens - 1` only (LM head).
    LastRow,
    /// convert_rows_f16 + cuBLAS + epilogue on `rows` rows.
    Gemm,
}

/// Scratch for the cuBLAS path: f16 copy of x (`rows * k` halves) and per-row scales (`rows` f32),
/// for up to `rows` rows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmScratch {
    pub x16: u64,
    pub scale: u64,
    pub rows: usize,
}

/// The row count a cuBLAS GEMM of `rows` rows runs at: rounded up to a multiple of 16 up to 64
/// rows, of 64 beyond, at most `cap` (the scratch's rows). cuBLAS picks and loads a kernel per
/// shape on first use (~1 ms each, H200): with few row counts, `warm_up` covers every prompt. The
/// extra rows read stale scratch and write rows of out past n_tokens, which nothing reads.
pub(crate) fn gemm_rows(rows: usize, cap: usize) -> usize {
    let bucket = if rows <= 64 { rows.next_multiple_of(16) } else { rows.next_multiple_of(64) };
    bucket.min(cap).max(rows)
}

/// Every row count [`gemm_rows`] gives for prompts of 2..=cap rows, ascending.
pub(crate) fn gemm_row_buckets(cap: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (2..=cap).map(|r| gemm_rows(r, cap)).collect();
    v.dedup();
    v
}

/// x f32 [rows, k]; w f16 [n, k]; out (and residual) f32 [rows, n]. On cuBLAS (`MatMulMode::Gemm`)
/// the GEMM runs at `gemm_rows(rows, scratch.rows)` rows: `out` must hold that many rows and the
/// scratch's x16 `scratch.rows * k` halves (rows past `rows` are written but never read).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    w: u64,
    out: u64,
    residual: Option<u64>,
    n: usize,
    k: usize,
    rows: usize,
    mode: MatMulMode,
    scratch: GemmScratch,
) -> Vec<Op> {
    match mode {
        MatMulMode::Gemv | MatMulMode::LastRow => {
            let epilogue = GemvOut::Store { out, residual, last_row: mode == MatMulMode::LastRow };
            vec![gemv(dev, st, x, None, w, n, k, rows, epilogue)]
        }
        MatMulMode::Gemm => {
            let gemm = Op::Gemm(Gemm { w, x16: scratch.x16, out, n, k, rows: gemm_rows(rows, scratch.rows), ldc: n });
            vec![gemm_convert(st, x, k, rows, scratch), gemm, gemm_epilogue(st, out, residual, n, rows, scratch)]
        }
    }
}

/// Before a cuBLAS GEMM: x f32 [rows, k] to f16 with a power-of-two scale per row (convert_rows_f16).
fn gemm_convert(st: u64, x: u64, k: usize, rows: usize, scratch: GemmScratch) -> Op {
    kernel(
        Kernel::ConvertRowsF16,
        (rows, 1, 1),
        256,
        vec![Arg::Ptr(st), Arg::Ptr(x), Arg::Ptr(scratch.x16), Arg::Ptr(scratch.scale), i(k)],
    )
}

/// After a cuBLAS GEMM: out f32 [rows, n] times the row's scale, plus the residual if any.
fn gemm_epilogue(st: u64, out: u64, residual: Option<u64>, n: usize, rows: usize, scratch: GemmScratch) -> Op {
    let grid = (div_ceil(n, 1024), rows, 1);
    match residual {
        Some(r) => kernel(
            Kernel::GemmEpilogueResidual,
            grid,
            256,
            vec![Arg::Ptr(st), Arg::Ptr(out), Arg::Ptr(scratch.scale), Arg::Ptr(r), i(n)],
        ),
        None => {
            kernel(Kernel::GemmEpilogue, grid, 256, vec![Arg::Ptr(st), Arg::Ptr(out), Arg::Ptr(scratch.scale), i(n)])
        }
    }
}

/// The norm prologue of a GEMV: norm weight f32 [k] and epsilon.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemvNorm {
    pub weight: u64,
    pub eps: f32,
}

/// What a GEMV does with its product row y [n] (kernels/matmul.cu, part 1).
#[derive(Clone, Copy, Debug)]
pub(crate) enum GemvOut {
    /// out f32 [rows, n] (+ residual f32 [rows, n]); `last_row`: only row n_tokens - 1.
    Store { out: u64, residual: Option<u64>, last_row: bool },
    /// n = 2 * ffn; out f32 [rows, ffn].
    SwiGlu { out: u64 },
    /// n = (H + 2Hkv) * d: bias + RoPE + KV write of the product row.
    Rope(RopeArgs),
}

/// Buffers of a bias + RoPE + KV write (the bias_rope_kv_write kernel, or the GEMV epilogue):
/// bias f32 [(H+2Hkv)*d], or 0 (null: no bias, 0.0 is added); inv_freq f32 [d/2]; q_out f32 [rows, H*d]; K cache f32, V cache f16 [max_seq, Hkv, d]
/// with pos + rows <= max_seq.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RopeArgs {
    pub bias: u64,
    pub inv_freq: u64,
    pub q_out: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub heads: Heads,
}

/// The arguments every GEMV entry point starts with (run state, x, norm weight and epsilon, the
/// weight: an f16 pointer or quantized parts), and its units: one row of W, or a pair of rows for
/// the SwiGLU and RoPE epilogues.
fn gemv_head(st: u64, x: u64, norm: Option<GemvNorm>, weight: Arg, n: usize, epilogue: &GemvOut) -> ([Arg; 5], usize) {
    let (norm_w, eps) = norm.map_or((0, 0.0), |nm| (nm.weight, nm.eps));
    let units = match epilogue {
        GemvOut::Store { .. } => n,
        _ => n / 2,
    };
    ([Arg::Ptr(st), Arg::Ptr(x), Arg::Ptr(norm_w), Arg::F32(eps), weight], units)
}

/// x f32 [rows, k]; w f16 [n, k]; norm and epilogue buffers as documented on their types.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv(
    dev: &CudaDevice,
    st: u64,
    x: u64,
    norm: Option<GemvNorm>,
    w: u64,
    n: usize,
    k: usize,
    rows: usize,
    epilogue: GemvOut,
) -> Op {
    let (head, units) = gemv_head(st, x, norm, Arg::Ptr(w), n, &epilogue);
    let wpr = gemv_warps_per_row(units, k, dev.sm_count());
    let rpw = match epilogue {
        GemvOut::Store { .. } => gemv_rows_per_warp(units, k, wpr, dev.sm_count()),
        _ => 1,
    };
    let blocks = div_ceil(units, 8 / wpr * rpw);
    let (kern, grid_y, tail) = match epilogue {
        GemvOut::Store { out, residual, last_row } => {
            let (grid_y, last) = if last_row { (1, 1) } else { (rows, 0) };
            let (kern, split) = if rpw > 1 {
                (Kernel::GemvRows, rpw)
            } else if gemv_wide(k, wpr) {
                (Kernel::GemvWide, wpr)
            } else {
                (Kernel::Gemv, wpr)
            };
            (kern, grid_y, vec![Arg::Ptr(out), Arg::Ptr(residual.unwrap_or(0)), i(n), i(k), i(split), i(last)])
        }
        GemvOut::SwiGlu { out } => {
            let resident = dev.resident_blocks_per_sm(Kernel::GemvSwiGluRows, 256, 0);
            match gemv_swiglu_units_per_warp(units, k, dev.sm_count(), resident) {
                Some(upw) => {
                    let args = head.into_iter().chain([Arg::Ptr(out), i(n / 2), i(k), i(upw)]).collect();
                    return kernel(Kernel::GemvSwiGluRows, (div_ceil(units, 8 * upw), rows, 1), 256, args);
                }
                None => (Kernel::GemvSwiGlu, rows, vec![Arg::Ptr(out), i(n / 2), i(k), i(wpr)]),
            }
        }
        GemvOut::Rope(r) => (Kernel::GemvRope, rows, [rope_args(r), vec![i(k), i(wpr)]].concat()),
    };
    kernel(kern, (blocks, grid_y, 1), 256, head.into_iter().chain(tail).collect())
}

// ---- quantized weights (kernels/qmatmul.cu) ------------------------------------------------------

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
struct QGemv {
    st: u64,
    x: u64,
    norm: Option<GemvNorm>,
    parts: QParts,
    n: usize,
    k: usize,
    rows: usize,
    epilogue: GemvOut,
    argmax_key: Option<u64>,
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
        let shape = super::qmma_shape::Override::of(n, k);
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
fn q5_direct_gemv(dev: &CudaDevice, kern: Kernel, g: &QGemv) -> Op {
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

/// Attention-side sizes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// The kernel arguments of a [`RopeArgs`], in the order both RoPE kernels take them.
fn rope_args(r: RopeArgs) -> Vec<Arg> {
    let h = r.heads;
    vec![
        Arg::Ptr(r.bias),
        Arg::Ptr(r.inv_freq),
        Arg::Ptr(r.q_out),
        Arg::Ptr(r.k_cache),
        Arg::Ptr(r.v_cache),
        i(h.n_heads),
        i(h.n_kv_heads),
        i(h.head_dim),
    ]
}

/// qkv f32 [rows, (H+2Hkv)*d]; the rest as documented on [`RopeArgs`].
pub(crate) fn bias_rope_kv_write(st: u64, qkv: u64, r: RopeArgs, rows: usize) -> Op {
    kernel(Kernel::BiasRopeKvWrite, (rows, 1, 1), 128, [vec![Arg::Ptr(st), Arg::Ptr(qkv)], rope_args(r)].concat())
}

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

/// gate_up f32 [rows, 2*ffn]; out f32 [rows, ffn].
pub(crate) fn swiglu(st: u64, gate_up: u64, out: u64, ffn: usize, rows: usize) -> Op {
    kernel(
        Kernel::SwiGlu,
        (div_ceil(ffn, 1024), rows, 1),
        256,
        vec![Arg::Ptr(st), Arg::Ptr(gate_up), Arg::Ptr(out), i(ffn)],
    )
}

/// Words of one row's result from [`row_scores`] with `top_n` alternatives: the target's
/// log-probability, the non-finite flag, then max(top_n, 1) (id, log-probability) pairs.
pub(crate) fn row_score_words(top_n: usize) -> usize {
    2 + 2 * top_n.max(1)
}

/// How a [`row_scores`] launch cuts each row: `slices` blocks per row, whose partial results the
/// last one to finish merges (kernels/row_scores.cu). One slice reads no scratch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScoreSlices {
    pub slices: usize,
    /// u32 [rows][slices][ROW_SCORE_PART_WORDS].
    pub partials: u64,
    /// u32 [rows], zero between launches.
    pub tickets: u64,
}

/// Fewest logits a slice of a row takes ([`row_score_slices`]): enough that each of the block's
/// threads has two float4s or more to load.
pub(crate) const ROW_SCORE_MIN_SLICE: usize = 4096;

/// Slices per row for `rows` rows of `vocab` logits on `sm_count` SMs: about two blocks per SM
/// over all rows, each slice at least ROW_SCORE_MIN_SLICE logits, at most ROW_SCORE_MAX_SLICES.
/// A decode step's one row of 151,936 logits: 37 slices (one block on one SM took ~80 us on an
/// H100); a prefill's hundreds of rows: 1. With more than one slice, rows x slices <= 2 x
/// sm_count and rows <= sm_count ([`row_score_scratch_words`]).
pub(crate) fn row_score_slices(rows: usize, vocab: usize, sm_count: u32) -> usize {
    use crate::kernel_constants::ROW_SCORE_MAX_SLICES;
    (2 * sm_count as usize / rows.max(1)).min(vocab / ROW_SCORE_MIN_SLICE).clamp(1, ROW_SCORE_MAX_SLICES)
}

/// u32 words of the partials and of the tickets that every split [`row_score_slices`] picks on
/// `sm_count` SMs needs.
pub(crate) fn row_score_scratch_words(sm_count: u32) -> (usize, usize) {
    let sm = sm_count as usize;
    (2 * sm * crate::kernel_constants::ROW_SCORE_PART_WORDS, sm)
}

/// Bytes of the (zeroed) scratch [`ScoreSlices::in_scratch`] lays its partials, then its
/// tickets, out in.
pub(crate) fn row_score_scratch_bytes(sm_count: u32) -> usize {
    let (parts, tickets) = row_score_scratch_words(sm_count);
    (parts + tickets) * 4
}

impl ScoreSlices {
    /// The split [`row_score_slices`] picks for `rows` rows of `vocab` logits, its partials and
    /// tickets in the scratch at `scratch` ([`row_score_scratch_bytes`] bytes).
    pub fn in_scratch(scratch: u64, rows: usize, vocab: usize, sm_count: u32) -> Self {
        let (parts, _) = row_score_scratch_words(sm_count);
        ScoreSlices {
            slices: row_score_slices(rows, vocab, sm_count),
            partials: scratch,
            tickets: scratch + parts as u64 * 4,
        }
    }
}

/// Rows `0..n_tokens` of logits f32 [rows, vocab] scored against targets i32 [rows] with `top_n`
/// (<= ROW_SCORE_MAX_TOP) alternatives: out u32 [rows][row_score_words(top_n)]
/// (kernels/row_scores.cu), each row cut as `split` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_scores(
    st: u64,
    logits: u64,
    targets: u64,
    vocab: usize,
    rows: usize,
    top_n: usize,
    out: u64,
    split: ScoreSlices,
) -> Op {
    debug_assert!(top_n <= crate::kernel_constants::ROW_SCORE_MAX_TOP);
    debug_assert!((1..=crate::kernel_constants::ROW_SCORE_MAX_SLICES).contains(&split.slices));
    kernel(
        Kernel::RowScores,
        (rows, split.slices, 1),
        crate::kernel_constants::ROW_SCORE_THREADS as u32,
        vec![
            Arg::Ptr(st),
            Arg::Ptr(logits),
            Arg::Ptr(targets),
            i(vocab),
            i(top_n),
            Arg::Ptr(out),
            Arg::Ptr(split.partials),
            Arg::Ptr(split.tickets),
        ],
    )
}

/// Argmax scratch: part_v f32 / part_i i32 [ARGMAX_MAX_BLOCKS], counter u32 (zero).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArgmaxScratch {
    pub part_v: u64,
    pub part_i: u64,
    pub counter: u64,
}

pub(crate) const ARGMAX_MAX_BLOCKS: usize = 1024;

/// logits f32 [rows, vocab] (row n_tokens - 1 is read); out i32 [1].
pub(crate) fn argmax(st: u64, logits: u64, out: u64, vocab: usize, sm_count: u32, scratch: ArgmaxScratch) -> Op {
    let threads = crate::kernel_constants::ARGMAX_THREADS;
    let blocks = (2 * sm_count as usize).min(div_ceil(vocab, threads)).clamp(1, ARGMAX_MAX_BLOCKS);
    kernel(
        Kernel::Argmax,
        (blocks, 1, 1),
        threads as u32,
        vec![
            Arg::Ptr(st),
            Arg::Ptr(logits),
            Arg::Ptr(out),
            Arg::Ptr(scratch.part_v),
            Arg::Ptr(scratch.part_i),
            Arg::Ptr(scratch.counter),
            i(vocab),
        ],
    )
}

// ---- execution ----------------------------------------------------------------------------------

impl CudaDevice {
    /// Enqueues `ops` on the stream (no synchronisation; legal during stream capture, cuBLAS'
    /// GEMMs included: the handle has a workspace of its own and never allocates, `device::Blas`).
    ///
    /// # Safety
    /// Every pointer argument of every op must address device memory of the sizes documented on
    /// its builder, valid until the work has completed.
    pub(crate) unsafe fn run_ops(&self, ops: &[Op]) -> Result<(), RuntimeError> {
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        for op in ops {
            match op {
                Op::Kernel(l) => self.launch(l)?,
                Op::Gemm(g) => self.gemm(g)?,
            }
        }
        Ok(())
    }

    /// Records `ops` into a CUDA graph (stream capture), instantiated and uploaded; `what` names
    /// the graph in errors. cuBLAS is created before the capture when `ops` hold an [`Op::Gemm`]
    /// (its creation allocates, which a capture forbids).
    ///
    /// # Safety
    /// As [`CudaDevice::run_ops`], until every launch of the graph has completed.
    pub(crate) unsafe fn capture_graph(&self, ops: &[Op], what: &str) -> Result<CudaGraph, RuntimeError> {
        self.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        if ops.iter().any(|op| matches!(op, Op::Gemm(_))) && self.blas().is_none() {
            // Created here, before the capture, if it was not yet (creating it allocates).
            return Err(RuntimeError::Cuda(format!("the {what} graph holds GEMMs but cuBLAS is unavailable")));
        }
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .cuda_ctx(|| format!("beginning the capture of the {what} graph"))?;
        // SAFETY: this function's contract.
        let recorded = unsafe { self.run_ops(ops) };
        // Always end the capture, even after an error, so the stream is usable again.
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        recorded?;
        let graph = ended
            .cuda_ctx(|| format!("instantiating the {what} graph"))?
            .ok_or_else(|| RuntimeError::Cuda(format!("the capture of the {what} graph produced no graph")))?;
        graph.upload().cuda_ctx(|| format!("uploading the {what} graph"))?;
        Ok(graph)
    }

    unsafe fn launch(&self, l: &Launch) -> Result<(), RuntimeError> {
        // SAFETY: the function is this device's (its loaded module's) for `l.kernel`; the rest is
        // this function's contract.
        unsafe { self.launch_function(self.func(l.kernel), l.kernel.name(), l) }
    }

    /// Launches `f`, the entry point `name` of a module loaded in this device's context, with
    /// `l`'s shape and arguments (`l.kernel` only identifies it to the caller).
    ///
    /// # Safety
    /// As [`CudaDevice::run_ops`] for the launch, and `f` must take exactly `l.args`.
    pub(crate) unsafe fn launch_function<K>(
        &self,
        f: sys::CUfunction,
        name: &str,
        l: &Launch<K>,
    ) -> Result<(), RuntimeError> {
        if super::diag_skip::skipped(name) {
            return Ok(()); // a timing diagnostic (diag_skip.rs)
        }
        let mut slots: Vec<Slot> = l.args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s.as_mut_ptr() as *mut c_void).collect();
        // Programmatic dependent launch: lets this kernel be scheduled while the previous one
        // drains; every block of every kernel waits (griddepcontrol.wait, kernels/common.cuh
        // `pdl_prologue`) before it reads anything an earlier kernel writes, so data dependencies
        // are unchanged.
        let mut attr = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value: sys::CUlaunchAttributeValue { programmaticStreamSerializationAllowed: 1 },
        };
        let config = sys::CUlaunchConfig {
            gridDimX: l.grid.0,
            gridDimY: l.grid.1,
            gridDimZ: l.grid.2,
            blockDimX: l.block.0,
            blockDimY: l.block.1,
            blockDimZ: l.block.2,
            sharedMemBytes: l.smem,
            hStream: self.cu_stream(),
            attrs: &mut attr,
            numAttrs: if self.pdl() { 1 } else { 0 },
        };
        // SAFETY: the function comes from the loaded module; `params` has one pointer per kernel
        // parameter, in order, each to a slot whose low bytes hold the value (i32/f32/pointer;
        // little-endian; a QParts struct's 120-byte image), alive across the call (the driver
        // copies them); `config` and
        // `attr` outlive the call; the buffers behind the pointers are the caller's obligation
        // (see this function's contract).
        unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .cuda_ctx(|| format!("launching {name} grid {:?} block {:?}", l.grid, l.block))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<(), RuntimeError> {
        let blas =
            self.blas().ok_or_else(|| RuntimeError::Cuda("cuBLAS GEMM requested without a cuBLAS handle".into()))?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major view: C (n x rows, ld n) = op(A) op(B) with A = W viewed as k x n (ld k),
        // transposed, and B = X16 viewed as k x rows (ld k).
        // SAFETY: w holds n*k halves, x16 rows*k halves, out (rows-1)*ldc + n floats, with
        // `g.rows` the padded row count (`gemm_rows`; the builders' contract on `matmul`);
        // alpha/beta are host scalars (default pointer mode) alive across the call.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                g.n as i32,
                g.rows as i32,
                g.k as i32,
                &alpha as *const f32 as *const c_void,
                g.w as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                g.k as i32,
                g.x16 as *const c_void,
                blas_sys::cudaDataType::CUDA_R_16F,
                g.k as i32,
                &beta as *const f32 as *const c_void,
                g.out as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                g.ldc as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .cuda_ctx(|| format!("cublasGemmEx n={} k={} rows={}", g.n, g.k, g.rows))
    }
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

    /// A decode row of the real vocabulary is cut into 37 slices on an H100's 132 SMs; many rows
    /// (a prefill) are not cut; a split always fits the scratch `row_score_scratch_words` sizes.
    #[test]
    fn row_score_slices_fit_their_scratch() {
        use crate::kernel_constants::{ROW_SCORE_MAX_SLICES, ROW_SCORE_PART_WORDS};
        assert_eq!(row_score_slices(1, 151_936, 132), 37);
        assert_eq!(row_score_slices(7, 151_936, 132), 37);
        assert_eq!(row_score_slices(40, 151_936, 132), 6);
        assert_eq!(row_score_slices(512, 151_936, 132), 1);
        assert_eq!(row_score_slices(1, 1_003, 132), 1, "a vocabulary shorter than a slice");
        assert_eq!(row_score_slices(1, 1 << 22, 132), ROW_SCORE_MAX_SLICES);
        // The executor's scratch: the partials from its start, the tickets after them, within it.
        let split = ScoreSlices::in_scratch(4096, 1, 151_936, 132);
        assert_eq!((split.slices, split.partials, split.tickets), (37, 4096, 4096 + 2 * 132 * 44 * 4));
        assert_eq!(row_score_scratch_bytes(132), 2 * 132 * 44 * 4 + 132 * 4);
        for sm in [1u32, 16, 78, 132, 144] {
            let (parts, tickets) = row_score_scratch_words(sm);
            for rows in 1..600 {
                for vocab in [7, 4_095, 4_096, 32_000, 151_936, 1 << 22] {
                    let slices = row_score_slices(rows, vocab, sm);
                    assert!((1..=ROW_SCORE_MAX_SLICES).contains(&slices));
                    if slices > 1 {
                        assert!(rows * slices * ROW_SCORE_PART_WORDS <= parts && rows <= tickets);
                        assert!(vocab / slices >= ROW_SCORE_MIN_SLICE);
                    }
                }
            }
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
    fn gemm_rows_round_up_to_few_buckets_within_the_scratch() {
        assert_eq!(gemm_rows(9, 512), 16);
        assert_eq!(gemm_rows(37, 512), 48);
        assert_eq!(gemm_rows(64, 512), 64);
        assert_eq!(gemm_rows(65, 512), 128);
        assert_eq!(gemm_rows(500, 512), 512);
        assert_eq!(gemm_rows(37, 40), 40, "capped by the scratch");
        assert_eq!(gemm_rows(37, 37), 37, "never below rows");
        assert_eq!(gemm_row_buckets(512), vec![16, 32, 48, 64, 128, 192, 256, 320, 384, 448, 512]);
        assert_eq!(gemm_row_buckets(100), vec![16, 32, 48, 64, 100]);
        for cap in [2usize, 37, 100, 512] {
            let buckets = gemm_row_buckets(cap);
            for rows in 2..=cap {
                assert!(buckets.contains(&gemm_rows(rows, cap)), "cap {cap}, rows {rows}");
            }
        }
    }

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
        use WeightFormat as W;
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

    /// QGEMV_KERNELS lists exactly the format pairs kernels/qgemv.cu instantiates, in order, and
    /// the kernel names follow the pair's suffix.
    #[test]
    fn qgemv_table_matches_the_kernels() {
        let src = include_str!("../../../kernels/qgemv.cu");
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

    /// The QParts image is the 120-byte struct the kernels take (QA_MAX_PARTS = MAX_PARTS parts;
    /// the format codes and the limit are generated for the kernels: `kernel_constants`).
    #[test]
    fn qparts_image_matches_the_kernels() {
        assert_eq!(MAX_PARTS, crate::kernel_constants::QA_MAX_PARTS);
        assert_eq!(std::mem::size_of::<QParts>(), 120);
        let q = QParts { qs: [1, 2, 3], row_end: [7, 8, 9], fmt: [4, 5, 6], ..QParts::default() };
        let w = q.words();
        assert_eq!(&w[..3], &[1, 2, 3]);
        assert_eq!(w[12], 7 | 8 << 32, "row_end[0], row_end[1]");
        assert_eq!(w[13], 9 | 4 << 32, "row_end[2], fmt[0]");
        assert_eq!(w[14], 5 | 6 << 32, "fmt[1], fmt[2]");
    }

    /// QParts::of: plane addresses from the parts' layouts, cumulative row ends, and the last
    /// part repeated in unused entries (every row maps to a part).
    #[test]
    fn qparts_of_a_mixed_weight() {
        use crate::plan::{WeightInfo, WeightPart};
        use crate::quant::{part_layout, WeightFormat as W};
        let k = 64;
        let (a, b) = (part_layout(W::Q5_0, 10, k).unwrap(), part_layout(W::Q8_0, 3, k).unwrap());
        let parts = vec![
            WeightPart { rows: 10, format: W::Q5_0, offset: 512, bytes: a.bytes },
            WeightPart { rows: 3, format: W::Q8_0, offset: 512 + a.bytes, bytes: b.bytes },
        ];
        let w = WeightInfo { name: "qkv".into(), shape: vec![13, k], offset: 512, bytes: a.bytes + b.bytes, parts };
        let q = QParts::of(&w, 1 << 20);
        assert_eq!(q.row_end, [10, 13, 13]);
        assert_eq!(q.fmt, [W::Q5_0.code(), W::Q8_0.code(), W::Q8_0.code()]);
        assert_eq!(q.qs[0], (1 << 20) + 512);
        assert_eq!(q.qh[0], (1 << 20) + 512 + a.qh);
        assert_eq!(q.sc[0], (1 << 20) + 512 + a.sc);
        assert_eq!(q.qs[1], (1 << 20) + 512 + a.bytes);
        assert_eq!(q.sc[1], (1 << 20) + 512 + a.bytes + b.sc);
        assert_eq!((q.qs[2], q.sc[2]), (q.qs[1], q.sc[1]));
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
