//! The CUDA kernels of `kernels/*.cu`, compiled by `build.rs` into one fatbin and embedded here.
//!
//! The runtime crate does not embed kernels: pass [`IMAGE`] to
//! `qwen_aot_runtime::cuda::CudaExecutor::new` (or `CudaDevice::new`). Without nvcc at build time
//! [`KERNELS_AVAILABLE`] is false and [`IMAGE`] is empty (the CUDA backend then reports itself
//! unavailable).
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The kernel image to load: [`IMAGE`], or the fatbin named by `QWEN_AOT_FATBIN` (a developer
/// knob: A/B experiments on kernel variants built with other nvcc flags, without relinking the
/// binary; the variant must define every kernel of the runtime's table). Read once per process.
pub fn image() -> anyhow::Result<&'static [u8]> {
    static OVERRIDE: std::sync::OnceLock<Result<Option<&'static [u8]>, String>> = std::sync::OnceLock::new();
    let loaded = OVERRIDE.get_or_init(|| match std::env::var_os("QWEN_AOT_FATBIN") {
        None => Ok(None),
        Some(path) => std::fs::read(&path)
            .map(|bytes| Some(&*Box::leak(bytes.into_boxed_slice())))
            .map_err(|e| format!("QWEN_AOT_FATBIN={}: {e}", path.to_string_lossy())),
    });
    match loaded {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Ok(IMAGE),
        Err(why) => anyhow::bail!("{why}"),
    }
}

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
