//! Subcommands of the `qwen-aot` binary, one file each.
pub mod bench;
pub mod bench_cpu;
pub mod cache;
pub mod check;
pub mod check_cpu;
pub mod compile;
pub mod inspect;
pub mod perplexity;
pub mod refcheck;
pub mod soak;
pub mod tokenize;
pub mod verify;
