//! The Q5_0 GEMVs read straight into MMA fragments (kernels/q5_direct.cu): which GEMVs they take
//! and their launch geometry. [`super::launch::qgemv`] asks [`direct_kernel`] first (the launch
//! itself is `launch::q5_direct_gemv`) and falls back to kernels/qmma.cu.
use std::sync::atomic::{AtomicBool, Ordering};

use super::device::Kernel;
use super::launch::{GemvOut, QParts};
use crate::quant::WeightFormat;

/// Elements per item: four groups of 32, one per lane of a quad.
const SPAN: usize = 128;

/// Row slots per warp tile (rows; for SwiGLU 8 units, gate and up).
const TILE_SLOTS: usize = 16;

/// Longest row the kernels take: the x digits (3 bytes per element) and tables stay far under the
/// 48 KB of dynamic shared memory a kernel gets without opting in.
const MAX_K: usize = 8192;

/// Most tiles one block owns (its row sums' shared memory: 64 bytes each).
const MAX_TILES_PER_BLOCK: usize = 64;

/// Set by the kernel check (to keep checking kernels/qmma.cu's Q5_0 entry points) or by
/// `QWEN_AOT_Q5_DIRECT=0` at first use (to measure what the kernels gain in one binary); forcing
/// kernels/qgemv.cu (`QWEN_AOT_QGEMV=v2`) turns them off too.
static OFF: AtomicBool = AtomicBool::new(false);

/// Makes [`direct_kernel`] refuse every weight (true) or decide per weight (false).
pub(crate) fn force_off(off: bool) {
    OFF.store(off, Ordering::Relaxed);
}

fn off() -> bool {
    static ENV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    OFF.load(Ordering::Relaxed)
        || super::qmma::v2_only()
        || *ENV.get_or_init(|| std::env::var("QWEN_AOT_Q5_DIRECT").is_ok_and(|v| v == "0"))
}

/// The direct entry point for a GEMV over `parts` ([n, k]) with `epilogue`, if it takes it: the
/// store (with or without a residual) or SwiGLU, every part Q5_0, rows of whole 128-element spans
/// no longer than [`MAX_K`].
pub(crate) fn direct_kernel(parts: &QParts, n: usize, k: usize, epilogue: &GemvOut) -> Option<Kernel> {
    let all_q5 = parts.fmt.iter().all(|&f| f == WeightFormat::Q5_0.code());
    let shape = n > 0 && k > 0 && k.is_multiple_of(SPAN) && k <= MAX_K;
    let kernel = match epilogue {
        GemvOut::Store { .. } => Kernel::GemvQ5DirectStore,
        GemvOut::SwiGlu { .. } if n.is_multiple_of(2) => Kernel::GemvQ5DirectSwiGlu,
        _ => return None,
    };
    (!off() && all_q5 && shape).then_some(kernel)
}

/// Warp tiles of the GEMV: 16 rows each (store), 8 units of a gate and an up row (SwiGLU).
pub(crate) fn tiles(n: usize, epilogue: &GemvOut) -> usize {
    match epilogue {
        GemvOut::SwiGlu { .. } => (n / 2).div_ceil(TILE_SLOTS / 2),
        _ => n.div_ceil(TILE_SLOTS),
    }
}

/// Tiles per block: every tile in one wave of the SMs' resident blocks, so that each warp's
/// first items are requested before the PDL wait.
pub(crate) fn tiles_per_block(tiles: usize, sm_count: u32, resident: u32) -> usize {
    tiles.div_ceil((sm_count * resident.max(1)) as usize).clamp(1, MAX_TILES_PER_BLOCK)
}

/// Dynamic shared memory for rows of `k` and `tpb` tiles per block: the digit planes (3 bytes per
/// element), the column weights and zero-point terms (32 bytes each per 64 elements), the group
/// scales and sums (8 bytes per group), the row sums (64 bytes per tile) and 32 bytes of zeros.
pub(crate) fn smem_bytes(k: usize, tpb: usize) -> usize {
    3 * k + 2 * 32 * (k / 64) + 8 * (k / 32) + 64 * tpb + 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use WeightFormat as W;

    fn store() -> GemvOut {
        GemvOut::Store { out: 0, residual: None, last_row: false }
    }

    /// The default model's o_proj and gate|up (Q5_0, one or two parts) take the direct kernels;
    /// other formats, a Q8_0 part, the RoPE epilogue, rows not of whole spans or too long do not.
    #[test]
    fn which_weights_go_direct() {
        let q5 = QParts::of_formats(&[(W::Q5_0, 896)]);
        assert_eq!(direct_kernel(&q5, 896, 896, &store()), Some(Kernel::GemvQ5DirectStore));
        let with_res = GemvOut::Store { out: 0, residual: Some(8), last_row: false };
        assert_eq!(direct_kernel(&q5, 896, 896, &with_res), Some(Kernel::GemvQ5DirectStore));
        let gate_up = QParts::of_formats(&[(W::Q5_0, 4864), (W::Q5_0, 9728)]);
        let swiglu = GemvOut::SwiGlu { out: 0 };
        assert_eq!(direct_kernel(&gate_up, 9728, 896, &swiglu), Some(Kernel::GemvQ5DirectSwiGlu));
        let qkv = QParts::of_formats(&[(W::Q5_0, 1024), (W::Q8_0, 1152)]);
        assert_eq!(direct_kernel(&qkv, 1152, 896, &store()), None, "a Q8_0 part");
        assert_eq!(direct_kernel(&QParts::of_formats(&[(W::Q4_K, 896)]), 896, 1536, &store()), None, "Q4_K");
        assert_eq!(direct_kernel(&q5, 896, 864, &store()), None, "27 groups");
        assert_eq!(direct_kernel(&q5, 896, 960, &store()), None, "7.5 spans");
        assert_eq!(direct_kernel(&q5, 896, MAX_K + SPAN, &store()), None, "too long");
        assert_eq!(direct_kernel(&q5, 896, MAX_K, &store()), Some(Kernel::GemvQ5DirectStore));
        assert_eq!(direct_kernel(&gate_up, 9727, 896, &swiglu), None, "an odd gate|up");
    }

    /// The default model's shapes: gate|up is 608 tiles (3 per block on 2 blocks per SM of 132),
    /// o_proj 56 (one each); the longest row's shared memory stays under the 48 KB default.
    #[test]
    fn geometry() {
        let swiglu = GemvOut::SwiGlu { out: 0 };
        assert_eq!(tiles(9728, &swiglu), 608);
        assert_eq!(tiles(896, &store()), 56);
        assert_eq!(tiles(897, &store()), 57);
        assert_eq!(tiles_per_block(608, 132, 2), 3);
        assert_eq!(tiles_per_block(56, 132, 2), 1);
        assert_eq!(tiles_per_block(1_000_000, 132, 2), MAX_TILES_PER_BLOCK);
        assert_eq!(smem_bytes(896, 3), 2688 + 896 + 224 + 192 + 32);
        assert!(smem_bytes(MAX_K, MAX_TILES_PER_BLOCK) <= 48 * 1024);
    }
}
