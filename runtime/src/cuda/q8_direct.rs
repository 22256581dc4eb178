//! The Q8_0 LM head read straight into MMA fragments (kernels/q8_direct.cu): which GEMVs it
//! takes and its launch geometry. [`super::launch::qgemv`] and [`super::launch::qgemv_argmax`]
//! ask [`direct_kernel`] first (the launch itself is `launch::q8_direct_gemv`) and fall back to
//! kernels/qmma.cu.
use std::sync::atomic::{AtomicBool, Ordering};

use super::device::Kernel;
use super::launch::QParts;
use crate::kernel_constants::GEMV_WARPS;
use crate::quant::WeightFormat;

/// Elements per MMA pair of a warp (two groups of 32).
const SPAN: usize = 64;

/// Elements per item (two spans: one pointer step and one scale load per row): rows must be
/// whole items.
const ITEM: usize = 2 * SPAN;

/// Rows of W per warp tile.
const TILE_ROWS: usize = 16;

/// Longest row the kernel takes: its x digits (3 bytes per element) and tables stay far under the
/// 48 KB of dynamic shared memory a kernel gets without opting in.
const MAX_K: usize = 8192;

/// Set by the kernel check (to keep checking kernels/qmma.cu's Q8_0 LM head) or by
/// `QWEN_AOT_Q8_DIRECT=0` at first use (to measure what the kernel gains in one binary); forcing
/// kernels/qgemv.cu (`QWEN_AOT_QGEMV=v2`) turns it off too.
static OFF: AtomicBool = AtomicBool::new(false);

/// Makes [`direct_kernel`] refuse every weight (true) or decide per weight (false).
pub(crate) fn force_off(off: bool) {
    OFF.store(off, Ordering::Relaxed);
}

fn off() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    OFF.load(Ordering::Relaxed)
        || super::qmma::v2_only()
        || *ENV.get_or_init(|| std::env::var("QWEN_AOT_Q8_DIRECT").is_ok_and(|v| v == "0"))
}

/// The direct entry point for a store without a residual of `parts` ([n, k]) -- with the argmax
/// epilogue when `argmax` -- if it takes the weight: one part, Q8_0, rows of whole 128-element
/// items ([`ITEM`]) no longer than [`MAX_K`].
pub(crate) fn direct_kernel(parts: &QParts, n: usize, k: usize, argmax: bool) -> Option<Kernel> {
    let one_q8_part = parts.fmt[0] == WeightFormat::Q8_0.code() && parts.row_end[0] as usize >= n;
    let takes = !off() && n > 0 && one_q8_part && k > 0 && k.is_multiple_of(ITEM) && k <= MAX_K;
    takes.then_some(if argmax { Kernel::GemvQ8DirectArgmax } else { Kernel::GemvQ8DirectStore })
}

/// Dynamic shared memory for rows of `k`: the digit planes (3 bytes per element) and the column
/// weights (32 bytes per span).
pub(crate) fn smem_bytes(k: usize) -> usize {
    3 * k + 32 * (k / SPAN)
}

/// Blocks of a launch: every tile's warp once, at most the SMs' resident blocks (the warps
/// stride over the rest).
pub(crate) fn blocks(n: usize, sm_count: u32, resident: u32) -> usize {
    n.div_ceil(TILE_ROWS).div_ceil(GEMV_WARPS).min((sm_count * resident.max(1)) as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(fmts: &[(WeightFormat, i32)]) -> QParts {
        QParts::of_formats(fmts)
    }

    /// The default model's LM head (151,936 x 896 Q8_0, one part) takes both entry points; other
    /// formats, two parts, rows not of whole spans or too long do not.
    #[test]
    fn which_weights_go_direct() {
        use WeightFormat as W;
        let head = parts(&[(W::Q8_0, 151_936)]);
        assert_eq!(direct_kernel(&head, 151_936, 896, true), Some(Kernel::GemvQ8DirectArgmax));
        assert_eq!(direct_kernel(&head, 151_936, 896, false), Some(Kernel::GemvQ8DirectStore));
        assert_eq!(direct_kernel(&parts(&[(W::Q6_K, 151_936)]), 151_936, 1536, true), None, "Q6_K");
        assert_eq!(direct_kernel(&parts(&[(W::Q8_0, 64), (W::Q8_0, 128)]), 128, 896, false), None, "two parts");
        assert_eq!(direct_kernel(&parts(&[(W::Q5_0, 64), (W::Q8_0, 128)]), 128, 896, false), None, "mixed");
        assert_eq!(direct_kernel(&head, 151_936, 864, false), None, "27 groups");
        assert_eq!(direct_kernel(&head, 151_936, 960, false), None, "15 spans: not whole items");
        assert_eq!(direct_kernel(&head, 151_936, MAX_K + ITEM, false), None, "too long");
        assert_eq!(direct_kernel(&head, 151_936, MAX_K, false), Some(Kernel::GemvQ8DirectStore));
    }

    /// The shared memory of the longest row stays under the 48 KB default; the LM head's grid is
    /// every resident slot, a short matrix one block per eight tiles.
    #[test]
    fn shared_memory_and_blocks() {
        assert!(smem_bytes(MAX_K) <= 48 * 1024);
        assert_eq!(smem_bytes(896), 2688 + 448);
        assert_eq!(blocks(151_936, 132, 3), 396);
        assert_eq!(blocks(20_003, 132, 3), 157, "1,251 tiles of 16 rows, eight per block");
        assert_eq!(blocks(5, 132, 3), 1);
    }
}
