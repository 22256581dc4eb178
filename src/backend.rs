//! Opening a compiled model on a backend: `--backend auto|cpu|cuda`.
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use qwen_aot_runtime::compiled::CompiledModel;
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::Executor;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The GPU when one is usable, else the CPU (with a note).
    Auto,
    Cpu,
    Cuda,
}

/// Default KV-cache size: enough for long chats without reserving the model's full context.
pub const DEFAULT_CTX: usize = 4096;

pub struct Loaded {
    pub session: Session,
    pub tokenizer: Tokenizer,
    pub model: CompiledModel,
}

/// Loads `dir` and builds an executor on the chosen backend. `ctx` caps the KV cache (the model's
/// context length caps it too).
pub fn load(dir: &Path, backend: BackendChoice, ctx: Option<usize>, quiet: bool) -> Result<Loaded> {
    let model = CompiledModel::open(dir, true).with_context(|| format!("loading compiled model {}", dir.display()))?;
    let tokenizer = Tokenizer::load(&model.tokenizer_path())
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let max_ctx = model.plan.hparams.context_length;
    let max_seq = match ctx {
        Some(0) => bail!("--ctx-size must be at least 1"),
        Some(c) if c > max_ctx => bail!("a context of {c} tokens exceeds the model's context length {max_ctx}"),
        Some(c) => c,
        None => DEFAULT_CTX.min(max_ctx),
    };
    let exec: Box<dyn Executor> = match backend {
        BackendChoice::Cpu => Box::new(CpuExecutor::new(&model, max_seq)?),
        BackendChoice::Cuda => crate::gpu::cuda_executor(&model, max_seq, quiet)?,
        BackendChoice::Auto => match crate::gpu::cuda_executor(&model, max_seq, quiet) {
            Ok(e) => e,
            Err(e) => {
                if !quiet {
                    eprintln!("note: no usable GPU ({e:#}); running on the CPU");
                }
                Box::new(CpuExecutor::new(&model, max_seq)?)
            }
        },
    };
    Ok(Loaded { session: Session::new(exec), tokenizer, model })
}
