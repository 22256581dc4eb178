//! qwen-aot compiler: GGUF reader, Qwen2 architecture description, op graph, fusion passes,
//! memory planner, weight packer and plan emitter.
//!
//! Invariant: no CUDA. The compiler hard-codes no layer sequence: it comes from `graphs/qwen2.toml`.
pub mod gguf;
