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

mod attention;
mod exec;
mod quant;
mod scores;

pub(crate) use attention::*;
pub(crate) use quant::*;
pub(crate) use scores::*;

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

/// gate_up f32 [rows, 2*ffn]; out f32 [rows, ffn].
pub(crate) fn swiglu(st: u64, gate_up: u64, out: u64, ffn: usize, rows: usize) -> Op {
    kernel(
        Kernel::SwiGlu,
        (div_ceil(ffn, 1024), rows, 1),
        256,
        vec![Arg::Ptr(st), Arg::Ptr(gate_up), Arg::Ptr(out), i(ffn)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
