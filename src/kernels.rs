//! The CUDA kernels of `kernels/*.cu`, compiled by `build.rs` into one fatbin and embedded here.
//!
//! The runtime crate does not embed kernels: pass [`IMAGE`] to
//! `qwen_aot_runtime::cuda::CudaExecutor::new` (or `CudaDevice::new`). Without nvcc at build time
//! [`KERNELS_AVAILABLE`] is false and [`IMAGE`] is empty (the CUDA backend then reports itself
//! unavailable).
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_image() {
        assert_eq!(KERNELS_AVAILABLE, !IMAGE.is_empty());
        if KERNELS_AVAILABLE {
            assert!(!KERNEL_NAMES.is_empty());
            assert_eq!(IMAGE.as_ptr() as usize % 16, 0, "image must be 16-byte aligned");
            // Every kernel the runtime loads must be in the image.
            for name in qwen_aot_runtime::cuda::Kernel::ALL.iter().map(|k| k.name()) {
                assert!(KERNEL_NAMES.contains(&name), "kernel {name} missing from the image: {KERNEL_NAMES:?}");
            }
        }
    }
}
