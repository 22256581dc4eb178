//! The test image: kernels only the verification harness launches (`kernels/test/*.cu`), built
//! by the root crate's build.rs into a second fatbin (`qwen_aot::kernels::TEST_IMAGE`) so that
//! the production image holds only the kernels the runtime launches. `check::check_kernels`
//! loads it next to the production image, into the same context.
use cudarc::driver::sys;

use super::device::{CudaDevice, Module};
use super::kernel_table::kernel_table;
use super::launch::{Arg, Launch};
use super::CudaCtx;
use crate::error::RuntimeError;

kernel_table! {
    /// Every kernel entry point of the test image (the `extern "C"` names in kernels/test/*.cu).
    pub enum TestKernel;
    SampleExpf => "sample_expf_test",
    XDigits => "x_digits_test",
}

/// The test image loaded on a device, with its function table indexed by [`TestKernel`].
pub struct TestKernels {
    // Field order = drop order: the function table before the module it points into.
    funcs: Vec<sys::CUfunction>,
    _module: Module,
}

impl TestKernels {
    /// Loads `image` (`qwen_aot::kernels::TEST_IMAGE`) into `dev`'s context.
    pub fn load(dev: &CudaDevice, image: &[u8]) -> Result<TestKernels, RuntimeError> {
        if image.is_empty() {
            return Err(RuntimeError::CudaUnavailable(
                "this binary was built without nvcc (no test kernel image embedded)".into(),
            ));
        }
        let what = format!("the test kernel image ({} bytes)", image.len());
        let module = Module::load(&dev.ctx, image, &what)?;
        let funcs = module.functions(TestKernel::ALL.iter().map(|k| k.name()), "the test kernel image")?;
        Ok(TestKernels { funcs, _module: module })
    }

    /// Runs `l` on `dev` (the device this image was loaded on) and waits for it.
    ///
    /// # Safety
    /// Every pointer argument must address device memory of the sizes documented on `l`'s builder,
    /// valid until the call returns.
    pub(crate) unsafe fn run(&self, dev: &CudaDevice, l: &Launch<TestKernel>) -> Result<(), RuntimeError> {
        dev.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
        // SAFETY: the function is this image's entry point for `l.kernel`, loaded in `dev`'s
        // context (bound above); the buffers are this function's contract.
        unsafe { dev.launch_function(self.funcs[l.kernel as usize], l.kernel.name(), l)? };
        dev.sync(l.kernel.name())
    }
}

/// A one-dimensional grid-stride launch of `kernel`: `threads` per block, enough blocks for
/// `items` (at least 1, at most `max_blocks`; the kernels stride over the rest).
fn grid_stride(
    kernel: TestKernel,
    items: usize,
    threads: u32,
    max_blocks: usize,
    args: Vec<Arg>,
) -> Launch<TestKernel> {
    Launch {
        kernel,
        grid: (items.div_ceil(threads as usize).clamp(1, max_blocks) as u32, 1, 1),
        block: (threads, 1, 1),
        smem: 0,
        args,
    }
}

/// out[i] = the sampler's expf (kernels/libm_expf.cuh) of input[i]; both f32 [n].
pub(crate) fn sample_expf(input: u64, out: u64, n: usize) -> Launch<TestKernel> {
    grid_stride(TestKernel::SampleExpf, n, 256, 4096, vec![Arg::Ptr(input), Arg::Ptr(out), Arg::I32(n as i32)])
}

/// x's digits as the tensor-core GEMVs make them (kernels/test/x_digits.cu): `x` f32 [groups * 32]
/// in, `words` u32 [groups * 24] (per group: digit plane d, word w) and `scale` f32 [groups] out.
pub(crate) fn x_digits(x: u64, words: u64, scale: u64, groups: usize) -> Launch<TestKernel> {
    let args = vec![Arg::Ptr(x), Arg::Ptr(words), Arg::Ptr(scale), Arg::I32(groups as i32)];
    grid_stride(TestKernel::XDigits, groups, 128, 1024, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launch shapes the two test kernels had before they shared `grid_stride`.
    #[test]
    fn grid_stride_shapes() {
        let l = sample_expf(1, 2, 1000);
        assert_eq!((l.grid, l.block, l.smem, l.args.len()), ((4, 1, 1), (256, 1, 1), 0, 3));
        assert_eq!(sample_expf(1, 2, 0).grid, (1, 1, 1), "at least one block");
        assert_eq!(sample_expf(1, 2, 1 << 24).grid, (4096, 1, 1), "capped: the kernel strides");
        let l = x_digits(1, 2, 3, 134);
        assert_eq!((l.grid, l.block, l.smem, l.args.len()), ((2, 1, 1), (128, 1, 1), 0, 4));
        assert_eq!(x_digits(1, 2, 3, 1 << 20).grid, (1024, 1, 1));
    }
}
