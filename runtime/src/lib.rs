//! qwen-aot runtime: loads a compiled plan and replays it.
//!
//! Invariant: no petgraph, no GGUF. The runtime only knows plans (see [`plan`]).
pub mod bounded_read;
pub mod chat_template;
pub mod compiled;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod derived;
pub mod error;
pub mod executor;
pub mod integrity;
/// Constants the CUDA kernels share with the runtime, defined once (build.rs writes the kernels'
/// header from this same file).
pub mod kernel_constants;
pub mod phases;
/// The plan types, weight formats and SplitMix64 live in the `qwen-aot-plan` crate, which the
/// compiler shares; these paths keep the runtime's own (`crate::plan::Step`, `crate::quant`).
pub use qwen_aot_plan as plan;
pub use qwen_aot_plan::{quant, rng};
pub mod sampler;
pub mod scores;
pub mod session;
pub mod speculative;
pub mod tokenizer;
