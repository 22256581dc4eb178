//! The CUDA backend: the kernels of `kernels/*.cu` driven through cudarc's driver API (loaded
//! dynamically, so binaries run on machines without a driver and say so).
//!
//! - [`CudaDevice`]: context, one non-blocking stream, the kernel module (the fatbin image the root
//!   crate embeds, passed in by the caller), a function table indexed by [`Kernel`], and an
//!   optional cuBLAS handle (prefill GEMMs).
//! - [`CudaExecutor`]: implements [`crate::executor::Executor`] for a [`crate::plan::Plan`];
//!   decode is captured once into a CUDA graph and replayed per token; a prefill replays the
//!   graph of its row bucket (`prefill_graphs`), captured on first use.
//! - `check::check_kernels`: every kernel against its CPU twin (feature `harness`).
//! - `bench`: per-kernel timings at real shapes (feature `harness`).
//! - `test_kernels`: the test image (`kernels/test/*.cu`, kernels only the checks launch) and its
//!   table `TestKernel` (feature `harness`).
//! - [`sample`]: sampling on the device (kernels/sample.cu) and the executor's token history.
//!
//! Single-stream design: cudarc's per-buffer event tracking is disabled (its event records are
//! illegal inside stream capture and useless with one stream); kernels are launched with raw
//! device pointers through `cuLaunchKernel`.
mod argmax_key;
#[cfg(feature = "harness")]
pub mod bench;
#[cfg(feature = "harness")]
pub mod check;
mod decode_forms;
mod dequant_batch;
mod device;
mod diag_skip;
mod executor;
mod kernel_table;
pub(crate) mod launch;
mod prefill_graphs;
mod q5_direct;
mod q8_direct;
pub(crate) mod qmma;
mod qmma_shape;
pub mod sample;
#[cfg(feature = "harness")]
pub mod test_kernels;
mod validate;

pub use device::{CudaDevice, DevBuf, Kernel};
pub use executor::{CudaExecutor, PrefillPath};

use crate::error::RuntimeError;

/// Maps a cudarc error into [`RuntimeError::Cuda`] with what was being done.
pub(crate) trait CudaCtx<T> {
    fn cuda_ctx(self, what: impl FnOnce() -> String) -> Result<T, RuntimeError>;
}

impl<T, E: std::fmt::Display> CudaCtx<T> for Result<T, E> {
    fn cuda_ctx(self, what: impl FnOnce() -> String) -> Result<T, RuntimeError> {
        self.map_err(|e| RuntimeError::Cuda(format!("{}: {e}", what())))
    }
}
