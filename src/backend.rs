//! Opening a compiled model on a backend: `--backend auto|cpu|cuda`.
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::Executor;
use qwen_aot_runtime::phases;
use qwen_aot_runtime::plan::tokenizer::check_model_vocab;
use qwen_aot_runtime::session::Session;
use qwen_aot_runtime::tokenizer::Tokenizer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The GPU when one is usable, else the CPU (with a note).
    Auto,
    Cpu,
    /// The GPU (`gpu` is accepted too: clap would otherwise suggest `cpu` for it).
    #[value(alias = "gpu")]
    Cuda,
}

/// Default KV-cache size: enough for long chats without reserving the model's full context.
pub const DEFAULT_CTX: usize = 4096;

pub struct Loaded {
    /// What to call the model: its GGUF's `general.name`, else its file or directory name.
    pub name: String,
    pub session: Session,
    pub tokenizer: Tokenizer,
    pub model: CompiledModel,
}

/// Resolves `--model` to a compiled directory ([`crate::model::compiled_model`]) and loads it. A
/// cache entry that fails validation (a damaged `weights.bin`, a broken plan or tokenizer) is
/// removed and compiled again, once, with a note: "recompile with `qwen-aot compile`" would not
/// repair the cache, and every later run would fail the same way. A directory the user named is
/// never touched.
pub fn load_model(model: Option<&Path>, backend: BackendChoice, ctx: Option<usize>, quiet: bool) -> Result<Loaded> {
    // `--backend cuda` without a GPU fails now, not after compiling a new model.
    let gpu_first = || if backend == BackendChoice::Cuda { crate::gpu::probe() } else { Ok(()) };
    let dir = phases::time("resolve the model (cache lookup; compile on first use)", || {
        crate::model::compiled_model_checked(model, quiet, gpu_first)
    })?;
    let loaded = match load(&dir, backend, ctx, quiet) {
        Err(e) if crate::model::is_cache_entry(&dir) && is_damaged(&e) => {
            if !quiet {
                eprintln!("note: the cached compile {} is damaged ({e:#}); compiling it again", dir.display());
            }
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing the damaged {}", dir.display()))?;
            let dir = crate::model::compiled_model_checked(model, quiet, gpu_first)?;
            load(&dir, backend, ctx, quiet)
        }
        other => other,
    };
    // A plan compiled before it recorded `general.name` is named from its source GGUF (a cache
    // entry's own name is a hash).
    loaded.map(|mut l| {
        let source = match model {
            None => Some(crate::model::cache_dir().join(crate::model::DEFAULT_MODEL_FILE)),
            Some(m) => m.is_file().then(|| m.to_path_buf()),
        };
        if let (None, Some(gguf)) = (&l.model.plan.model_name, source) {
            l.name = crate::model::gguf_display_name(&gguf);
        }
        l
    })
}

/// Whether `e` says `weights.bin` differs from what the compiler wrote.
fn is_corrupt(e: &anyhow::Error) -> bool {
    use qwen_aot_runtime::error::RuntimeError;
    e.chain().any(|c| matches!(c.downcast_ref::<RuntimeError>(), Some(RuntimeError::CorruptWeights { .. })))
}

/// Whether `e` says the compiled directory's files are bad (not the GPU, not the arguments).
fn is_damaged(e: &anyhow::Error) -> bool {
    use qwen_aot_runtime::error::RuntimeError;
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<RuntimeError>(),
            Some(
                RuntimeError::BadPlan(_)
                    | RuntimeError::CorruptWeights { .. }
                    | RuntimeError::PlanVersion { .. }
                    | RuntimeError::Io { .. }
            )
        ) || c.downcast_ref::<qwen_aot_runtime::tokenizer::TokenizerError>().is_some()
    })
}

/// Loads `dir` and builds an executor on the chosen backend. `ctx` caps the KV cache (the model's
/// context length caps it too).
pub fn load(dir: &Path, backend: BackendChoice, ctx: Option<usize>, quiet: bool) -> Result<Loaded> {
    // What takes time here is building the executor (on the GPU: context, kernels, the weights'
    // upload); the weights' check is a sample of 16 windows, about a millisecond.
    let spin = crate::progress::spinner("loading the model", quiet);
    let model = phases::time("open the compiled model", || CompiledModel::open(dir, Integrity::Sampled))
        .with_context(|| format!("loading compiled model {}", dir.display()))?;
    // The tokenizer (~70-120 ms of JSON and tables) loads on its own thread while the executor
    // starts (on the GPU ~0.4 s of context, kernels and weight upload), off the first token's path.
    let tokenizer_path = model.tokenizer_path();
    let tokenizer_loader = std::thread::spawn(move || {
        phases::time("tokenizer (beside the executor)", || Tokenizer::load(&tokenizer_path))
    });
    let max_ctx = model.plan.hparams.context_length;
    let max_seq = match ctx {
        Some(0) => bail!("--ctx-size must be at least 1"),
        Some(c) if c > max_ctx => bail!("a context of {c} tokens exceeds the model's context length {max_ctx}"),
        Some(c) => c,
        None => DEFAULT_CTX.min(max_ctx),
    };
    let executor_span = phases::span("executor: devices, weights, buffers");
    let exec: Box<dyn Executor> = match backend {
        BackendChoice::Cpu => Box::new(CpuExecutor::new(&model, max_seq)?),
        BackendChoice::Cuda => crate::gpu::cuda_executor(&model, max_seq, quiet)?,
        BackendChoice::Auto => match crate::gpu::cuda_executor(&model, max_seq, quiet) {
            Ok(e) => e,
            // A corrupt weights.bin (the derived weights' rebuild, which finishes during the
            // GPU's start-up, reports there) is not a missing GPU: the CPU would fail the same
            // way. (A plan the GPU kernels do not support, `BadPlan`, still falls back.)
            Err(e) if is_corrupt(&e) => return Err(e),
            Err(e) => {
                drop(spin); // cleared before the note
                if !quiet {
                    eprintln!("note: no usable GPU ({e:#}); running on the CPU");
                }
                Box::new(CpuExecutor::new(&model, max_seq)?)
            }
        },
    };
    drop(executor_span);
    let tokenizer = tokenizer_loader
        .join()
        .map_err(|_| anyhow::anyhow!("the tokenizer loader panicked"))?
        .and_then(|t| check_model_vocab(t.vocab_size(), model.plan.hparams.vocab).map(|()| t))
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let name = model.plan.model_name.clone().unwrap_or_else(|| {
        dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    });
    Ok(Loaded { name, session: Session::new(exec), tokenizer, model })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qwen_aot_runtime::error::RuntimeError;

    /// `--backend auto` gives up on the GPU for a plan its kernels lack (`BadPlan`, the CPU may
    /// run it) but not for a corrupt weights.bin, which the CPU would refuse too.
    #[test]
    fn only_corrupt_weights_stop_the_cpu_fallback() {
        let corrupt = anyhow::Error::new(RuntimeError::CorruptWeights { path: "w".into(), what: "frame 3".into() })
            .context("starting the CUDA executor");
        let unsupported = anyhow::Error::new(RuntimeError::BadPlan("head_dim 96".into())).context("CUDA");
        let no_gpu = anyhow::anyhow!("CUDA backend unavailable: no driver");
        assert!(is_corrupt(&corrupt));
        assert!(!is_corrupt(&unsupported) && !is_corrupt(&no_gpu));
        assert!(is_damaged(&corrupt) && is_damaged(&unsupported) && !is_damaged(&no_gpu));
    }
}
