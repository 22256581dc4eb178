//! qwen-aot compiler: GGUF reader, Qwen2 architecture description, op graph, fusion passes,
//! memory planner, weight packer and plan emitter.
//!
//! Invariant: no CUDA. The compiler hard-codes no layer sequence: it comes from `graphs/qwen2.toml`.
pub mod architecture;
pub mod compile;
pub mod derive;
pub mod description;
pub mod emit;
pub mod error;
pub mod expr;
pub mod finite;
pub mod gguf;
pub mod graph;
pub mod hparams;
pub mod memory;
pub mod pack;
pub mod passes;
pub mod repack;
pub mod schedule;
pub mod shapes;
pub mod source;
pub mod synthetic;
pub mod tokenizer_from_gguf;
