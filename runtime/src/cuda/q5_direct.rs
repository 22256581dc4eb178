//! The Q5_0 GEMVs read straight into MMA fragments (kernels/q5_direct.cu): which GEMVs they take
//! and their launch geometry. [`super::launch::qgemv`] and [`super::launch::qgemv_argmax`] ask
//! [`direct_kernel`] first (the launch itself is `launch::q5_direct_gemv`) and fall back to
//! kernels/qmma.cu.
use std::sync::atomic::{AtomicBool, Ordering};

use super::device::Kernel;
use super::launch::{GemvOut, QParts};
use crate::quant::WeightFormat;

/// Elements per item: four groups of 32, one per lane of a quad.
const SPAN: usize = 128;

/// Row slots per warp tile (rows; for SwiGLU 8 units, gate and up).
const TILE_SLOTS: usize = 16;

/// Longest row the kernels take: the x digits (3 bytes per element), tables and row sums stay
/// under the 48 KB of dynamic shared memory a kernel gets without opting in.
const MAX_K: usize = 8192;

/// Most tiles one block owns (its warps' row sums in shared memory: 512 bytes each).
const MAX_TILES_PER_BLOCK: usize = 16;

/// Set by the kernel check (to keep checking kernels/qmma.cu's Q5_0 entry points); forcing
/// kernels/qgemv.cu (`QWEN_AOT_QGEMV=v2`) turns the direct kernels off too, and so does
/// `QWEN_AOT_Q5_DIRECT` ([`EnvChoice`]).
static OFF: AtomicBool = AtomicBool::new(false);

/// Which GEMVs `QWEN_AOT_Q5_DIRECT` (read at first use) lets go direct, so that one binary can
/// measure what each entry point gains: `0` none, `store` the stores only (with the argmax),
/// `swiglu` SwiGLU only; unset or anything else, both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnvChoice {
    None,
    Store,
    SwiGlu,
    Both,
}

impl EnvChoice {
    fn parse(v: Option<&str>) -> EnvChoice {
        match v {
            Some("0") => EnvChoice::None,
            Some("store") => EnvChoice::Store,
            Some("swiglu") => EnvChoice::SwiGlu,
            _ => EnvChoice::Both,
        }
    }

    fn allows(self, kernel: Kernel) -> bool {
        match self {
            EnvChoice::None => false,
            EnvChoice::Store => kernel != Kernel::GemvQ5DirectSwiGlu,
            EnvChoice::SwiGlu => kernel == Kernel::GemvQ5DirectSwiGlu,
            EnvChoice::Both => true,
        }
    }
}

/// Makes [`direct_kernel`] refuse every weight (true) or decide per weight (false).
pub(crate) fn force_off(off: bool) {
    OFF.store(off, Ordering::Relaxed);
}

fn allowed(kernel: Kernel) -> bool {
    static ENV: std::sync::OnceLock<EnvChoice> = std::sync::OnceLock::new();
    let env = *ENV.get_or_init(|| EnvChoice::parse(std::env::var("QWEN_AOT_Q5_DIRECT").ok().as_deref()));
    !OFF.load(Ordering::Relaxed) && !super::qmma::v2_only() && env.allows(kernel)
}

/// The direct entry point for a GEMV over `parts` ([n, k]) with `epilogue` -- with the argmax
/// epilogue when `argmax` (a store without a residual) -- if it takes it: the store (with or
/// without a residual) or SwiGLU, every part Q5_0, rows of whole 128-element spans no longer than
/// [`MAX_K`].
pub(crate) fn direct_kernel(parts: &QParts, n: usize, k: usize, epilogue: &GemvOut, argmax: bool) -> Option<Kernel> {
    let all_q5 = parts.fmt.iter().all(|&f| f == WeightFormat::Q5_0.code());
    let shape = n > 0 && k > 0 && k.is_multiple_of(SPAN) && k <= MAX_K;
    let kernel = match epilogue {
        GemvOut::Store { residual: None, .. } if argmax => Kernel::GemvQ5DirectArgmax,
        GemvOut::Store { .. } if !argmax => Kernel::GemvQ5DirectStore,
        GemvOut::SwiGlu { .. } if !argmax && n.is_multiple_of(2) => Kernel::GemvQ5DirectSwiGlu,
        _ => return None,
    };
    (all_q5 && shape && allowed(kernel)).then_some(kernel)
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
/// element), the column weights and zero-point terms (32 bytes each per 64 elements), each warp's
/// row sums (512 bytes per tile) and 32 bytes of zeros.
pub(crate) fn smem_bytes(k: usize, tpb: usize) -> usize {
    3 * k + 2 * 32 * (k / 64) + 512 * tpb + 32
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
        assert_eq!(direct_kernel(&q5, 896, 896, &store(), false), Some(Kernel::GemvQ5DirectStore));
        let with_res = GemvOut::Store { out: 0, residual: Some(8), last_row: false };
        assert_eq!(direct_kernel(&q5, 896, 896, &with_res, false), Some(Kernel::GemvQ5DirectStore));
        let gate_up = QParts::of_formats(&[(W::Q5_0, 4864), (W::Q5_0, 9728)]);
        let swiglu = GemvOut::SwiGlu { out: 0 };
        assert_eq!(direct_kernel(&gate_up, 9728, 896, &swiglu, false), Some(Kernel::GemvQ5DirectSwiGlu));
        let heads = crate::cuda::launch::Heads { n_heads: 14, n_kv_heads: 2, head_dim: 64 };
        let args = crate::cuda::launch::RopeArgs { bias: 0, inv_freq: 0, q_out: 0, k_cache: 0, v_cache: 0, heads };
        assert_eq!(direct_kernel(&q5, 1024, 896, &GemvOut::Rope(args), false), None, "no RoPE entry point");
        let qkv = QParts::of_formats(&[(W::Q5_0, 1024), (W::Q8_0, 1152)]);
        assert_eq!(direct_kernel(&qkv, 1152, 896, &store(), false), None, "a Q8_0 part");
        assert_eq!(direct_kernel(&QParts::of_formats(&[(W::Q4_K, 896)]), 896, 1536, &store(), false), None, "Q4_K");
        assert_eq!(direct_kernel(&q5, 896, 864, &store(), false), None, "27 groups");
        assert_eq!(direct_kernel(&q5, 896, 960, &store(), false), None, "7.5 spans");
        assert_eq!(direct_kernel(&q5, 896, MAX_K + SPAN, &store(), false), None, "too long");
        assert_eq!(direct_kernel(&q5, 896, MAX_K, &store(), false), Some(Kernel::GemvQ5DirectStore));
        assert_eq!(direct_kernel(&gate_up, 9727, 896, &swiglu, false), None, "an odd gate|up");
        let head = GemvOut::Store { out: 0, residual: None, last_row: true };
        assert_eq!(direct_kernel(&q5, 896, 896, &head, true), Some(Kernel::GemvQ5DirectArgmax));
        assert_eq!(direct_kernel(&q5, 896, 896, &with_res, true), None, "the argmax has no residual");
        assert_eq!(direct_kernel(&gate_up, 9728, 896, &swiglu, true), None, "nor SwiGLU");
    }

    /// `QWEN_AOT_Q5_DIRECT`: 0 turns both kernels off, store and swiglu keep one family each.
    #[test]
    fn env_choice() {
        use Kernel::{GemvQ5DirectArgmax as A, GemvQ5DirectStore as S, GemvQ5DirectSwiGlu as G};
        let allows = |v: Option<&str>| [S, A, G].map(|k| EnvChoice::parse(v).allows(k));
        assert_eq!(allows(None), [true, true, true]);
        assert_eq!(allows(Some("1")), [true, true, true]);
        assert_eq!(allows(Some("0")), [false, false, false]);
        assert_eq!(allows(Some("store")), [true, true, false]);
        assert_eq!(allows(Some("swiglu")), [false, false, true]);
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
        assert_eq!(smem_bytes(896, 3), 2688 + 896 + 1536 + 32);
        assert!(smem_bytes(MAX_K, MAX_TILES_PER_BLOCK) <= 48 * 1024);
    }
}
