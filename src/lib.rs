//! The `qwen-aot` and `generate` binaries share this small library: model location, CLI helpers,
//! and the embedded CUDA kernels.
pub mod kernels;
