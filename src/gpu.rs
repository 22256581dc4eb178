//! The CUDA backend as the binaries see it: the embedded kernel image plus the runtime's CUDA
//! executor. Any failure (no kernels in this build, no driver, no GPU, out of memory) is an error
//! the caller reports or, for `--backend auto`, turns into a CPU fallback.
use anyhow::{bail, Result};
use qwen_aot_runtime::compiled::CompiledModel;
use qwen_aot_runtime::cuda::CudaExecutor;
use qwen_aot_runtime::executor::Executor;

use crate::kernels::{IMAGE, KERNELS_AVAILABLE};

pub fn cuda_executor(model: &CompiledModel, max_seq: usize, _quiet: bool) -> Result<Box<dyn Executor>> {
    if !KERNELS_AVAILABLE {
        bail!("this binary was built without nvcc, so it has no CUDA kernels (run scripts/setup-cuda.sh and rebuild)");
    }
    Ok(Box::new(CudaExecutor::new(model, IMAGE, max_seq)?))
}
