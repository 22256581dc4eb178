//! The CUDA kernels of `kernels/*.cu`, compiled by `build.rs` into one fatbin and embedded here,
//! and the test-only kernels of `kernels/test/*.cu` in a second, small image.
//!
//! The runtime crate does not embed kernels: pass [`IMAGE`] to
//! `qwen_aot_runtime::cuda::CudaExecutor::new` (or `CudaDevice::new`), and [`TEST_IMAGE`] to the
//! verification harness (`qwen_aot_runtime::cuda::check::check_kernels`) only. Without nvcc at
//! build time [`KERNELS_AVAILABLE`] is false and both images are empty (the CUDA backend then
//! reports itself unavailable).
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The kernel image to load: [`IMAGE`], or the fatbin named by `QWEN_AOT_FATBIN` (a developer
/// knob: A/B experiments on kernel variants built with other nvcc flags, without relinking the
/// binary; the variant must define every kernel of the runtime's table). Read once per process.
pub fn image() -> anyhow::Result<&'static [u8]> {
    static LOADED: std::sync::OnceLock<Result<&'static [u8], String>> = std::sync::OnceLock::new();
    let loaded = LOADED.get_or_init(|| match std::env::var_os("QWEN_AOT_FATBIN") {
        None => Ok(IMAGE),
        Some(path) => std::fs::read(&path)
            .map(|bytes| &*Box::leak(bytes.into_boxed_slice()))
            .map_err(|e| format!("QWEN_AOT_FATBIN={}: {e}", path.to_string_lossy())),
    });
    loaded.clone().map_err(|why| anyhow::anyhow!(why))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use qwen_aot_runtime::cuda::test_kernels::TestKernel;
    use qwen_aot_runtime::cuda::Kernel;

    use super::*;

    /// Each image holds exactly its table's kernels: the production image every kernel the
    /// runtime launches and nothing else (no test hook), the test image the harness's.
    #[test]
    fn tables_match_images() {
        assert_eq!(KERNELS_AVAILABLE, !IMAGE.is_empty());
        assert_eq!(KERNELS_AVAILABLE, !TEST_IMAGE.is_empty());
        if !KERNELS_AVAILABLE {
            return;
        }
        for image in [IMAGE, TEST_IMAGE] {
            assert_eq!(image.as_ptr() as usize % 16, 0, "images must be 16-byte aligned");
        }
        let set = |names: &[&'static str]| names.iter().copied().collect::<BTreeSet<_>>();
        let production = set(&Kernel::ALL.iter().map(|k| k.name()).collect::<Vec<_>>());
        let test = set(&TestKernel::ALL.iter().map(|k| k.name()).collect::<Vec<_>>());
        assert_eq!(set(KERNEL_NAMES), production, "kernels/*.cu entry points vs cuda::Kernel");
        assert_eq!(set(TEST_KERNEL_NAMES), test, "kernels/test/*.cu entry points vs TestKernel");
        assert!(production.is_disjoint(&test), "a kernel in both images");
    }
}
