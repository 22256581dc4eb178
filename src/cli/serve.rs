//! `qwen-aot serve`: the OpenAI-compatible HTTP server (the work is in `qwen_aot::server`).
use anyhow::Result;
pub use qwen_aot::server::ServeOptions;

pub fn run(opts: ServeOptions) -> Result<()> {
    qwen_aot::server::run(opts)
}
