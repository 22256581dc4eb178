//! qwen-aot runtime: loads a compiled plan and replays it.
//!
//! Invariant: no petgraph, no GGUF. The runtime only knows plans (see [`plan`]).
pub mod chat_template;
pub mod compiled;
pub mod cpu;
pub mod error;
pub mod executor;
pub mod plan;
pub mod sampler;
pub mod session;
pub mod tokenizer;
#[cfg(feature = "cuda")]
pub mod cuda;
