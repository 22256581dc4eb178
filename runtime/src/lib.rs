//! qwen-aot runtime: loads a compiled plan and replays it.
//!
//! Invariant: no petgraph, no GGUF. The runtime only knows plans (see [`plan`]).
pub mod plan;
pub mod cpu;
pub mod error;
pub mod executor;
pub mod tokenizer;
pub mod chat_template;
