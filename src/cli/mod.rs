//! Subcommands of the `qwen-aot` binary, one file each.
pub mod compile;
pub mod inspect;
pub mod tokenize;
