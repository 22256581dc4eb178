//! The CUDA backend as the binaries see it: the embedded kernel image plus the runtime's CUDA
//! executor. Any failure (no kernels in this build, no driver, no GPU, out of memory) is an error
//! the caller reports or, for `--backend auto`, turns into a CPU fallback.
use anyhow::{bail, Context, Result};
use qwen_aot_runtime::compiled::CompiledModel;
use qwen_aot_runtime::cuda::{CudaDevice, CudaExecutor};
use qwen_aot_runtime::executor::Executor;

use crate::kernels::{image, KERNELS_AVAILABLE};

fn require_kernels() -> Result<()> {
    if !KERNELS_AVAILABLE {
        bail!("this binary was built without nvcc, so it has no CUDA kernels (run scripts/setup-cuda.sh and rebuild)");
    }
    Ok(())
}

/// The GPU with this binary's kernels loaded.
pub fn open_device() -> Result<CudaDevice> {
    require_kernels()?;
    CudaDevice::new(image()?).context("opening the GPU")
}

/// Whether the GPU is usable: kernels in this binary, a driver and a device that opens. Cheap
/// next to loading a model, so `--backend cuda` can fail before a compile of minutes, not after.
pub fn probe() -> Result<()> {
    open_device().map(drop)
}

pub fn cuda_executor(model: &CompiledModel, max_seq: usize, _quiet: bool) -> Result<Box<dyn Executor>> {
    require_kernels()?;
    Ok(Box::new(CudaExecutor::new(model, image()?, max_seq)?))
}
