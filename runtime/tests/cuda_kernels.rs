//! Every CUDA kernel against its CPU twin (runtime::cuda::check) at the 0.5B shapes and odd
//! shapes. The runtime crate does not embed kernels, so the fatbin comes from `QWEN_AOT_FATBIN`
//! (a path; build.rs writes it to `OUT_DIR/kernels.fatbin` of the root crate, and
//! scripts/device-build.sh copies it to .device/), and the test kernels' image from
//! `QWEN_AOT_TEST_FATBIN`, by default `test_kernels.fatbin` next to it (build.rs and
//! device-build.sh put it there). Without `QWEN_AOT_FATBIN`, a driver or a GPU the test prints why
//! and passes: CI has no GPU; the device machine runs it for real.
#![cfg(feature = "cuda")]

use qwen_aot_runtime::cuda::check::{check_kernels, format_rows, CheckShape};
use qwen_aot_runtime::cuda::CudaDevice;
use qwen_aot_runtime::error::RuntimeError;

/// The device with the production image loaded, and the test image's bytes.
fn device() -> Option<(CudaDevice, Vec<u8>)> {
    let Ok(path) = std::env::var("QWEN_AOT_FATBIN") else {
        eprintln!("skipped: QWEN_AOT_FATBIN is not set (no kernel image to test)");
        return None;
    };
    let image = std::fs::read(&path).unwrap_or_else(|e| panic!("QWEN_AOT_FATBIN={path}: {e}"));
    let test_path = std::env::var("QWEN_AOT_TEST_FATBIN").unwrap_or_else(|_| {
        let p = std::path::Path::new(&path).with_file_name("test_kernels.fatbin");
        p.to_string_lossy().into_owned()
    });
    let test_image = std::fs::read(&test_path).unwrap_or_else(|e| panic!("test kernel image {test_path}: {e}"));
    match CudaDevice::new(&image) {
        Ok(d) => Some((d, test_image)),
        Err(RuntimeError::CudaUnavailable(why)) => {
            eprintln!("skipped: CUDA unavailable: {why}");
            None
        }
        Err(e) => panic!("opening the GPU: {e}"),
    }
}

#[test]
fn kernels_match_cpu_twins() {
    let Some((dev, test_image)) = device() else { return };
    println!(
        "device: {} (sm_{}{}, {} SMs, cuBLAS {})",
        dev.name(),
        dev.compute_capability().0,
        dev.compute_capability().1,
        dev.sm_count(),
        dev.has_cublas()
    );
    // QWEN_AOT_CHECK_SHAPES=odd keeps the small odd shapes plus one 0.5B decode (for the slow
    // compute-sanitizer runs).
    let mut shapes = CheckShape::default_set();
    if std::env::var("QWEN_AOT_CHECK_SHAPES").is_ok_and(|v| v == "odd") {
        shapes.retain(|s| s.label.starts_with("odd") || (s.n_tokens == 1 && s.pos > 0));
    }
    let rows = check_kernels(&dev, &test_image, 0x5EED, &shapes).expect("CUDA failure during the checks");
    println!("{}", format_rows(&rows));
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).map(|r| format!("{} @ {}", r.name, r.shape)).collect();
    assert!(failed.is_empty(), "kernel checks failed: {failed:?}");
}

#[test]
fn empty_image_is_unavailable_not_a_panic() {
    match CudaDevice::new(&[]) {
        Err(RuntimeError::CudaUnavailable(_)) => {}
        Err(e) => panic!("expected CudaUnavailable, got {e}"),
        Ok(_) => panic!("an empty image cannot load"),
    }
}

#[test]
fn no_driver_or_gpu_is_a_clean_error() {
    // On a machine without libcuda (CI) this must be CudaUnavailable, never a panic; on the GPU
    // machine a garbage image must be a Cuda error (module load), also without a panic.
    match CudaDevice::new(b"not a fatbin, but long enough to be read as one.......") {
        Err(RuntimeError::CudaUnavailable(why)) => eprintln!("unavailable (expected without a GPU): {why}"),
        Err(RuntimeError::Cuda(e)) => eprintln!("GPU present, bad image rejected: {e}"),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("a garbage image cannot load"),
    }
}
