//! The `qwen-aot` and `generate` binaries share this small library: model location and the
//! compile cache, backend selection, progress bars and the embedded CUDA kernels.
pub mod backend;
pub mod cache;
pub mod chat;
pub mod chat_input;
pub mod cli_args;
pub mod gbnf;
pub mod generation;
pub mod gpu;
pub mod grammar;
pub mod grammar_args;
pub mod host_draw;
pub mod kernels;
pub mod logprobs;
pub mod model;
pub mod perplexity;
pub mod progress;
pub mod refcheck;
pub mod server;
pub mod sigpipe;
pub mod speculation_args;
pub mod stdout;
pub mod template_args;
pub mod text_file;
