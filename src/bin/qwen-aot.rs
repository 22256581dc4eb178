//! `qwen-aot`: inspect, tokenize, compile, check and benchmark Qwen2-family models.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use qwen_aot::backend::BackendChoice;

#[path = "../cli/mod.rs"]
mod cli;

#[derive(Parser, Debug)]
#[command(name = "qwen-aot", version, about = "Ahead-of-time compiler and runtime for Qwen2-family GGUF models")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Hyperparameters, metadata and tensor table of a GGUF.
    Inspect {
        /// GGUF file (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Text to token ids, or ids back to text with --decode.
    Tokenize {
        /// GGUF file or compiled directory (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print {"ids": [...]} (or {"text": ...} with --decode).
        #[arg(long)]
        json: bool,
        /// Treat the arguments as ids and print the text.
        #[arg(long)]
        decode: bool,
        /// The text (joined with spaces), or the ids with --decode.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Compile a GGUF into a directory (plan, packed weights, tokenizer).
    Compile {
        /// GGUF file (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output directory: a new path, an empty directory or an earlier compiled model (replaced).
        #[arg(short, long)]
        out: PathBuf,
        /// Write layer 0 of the graph before and after fusion as Graphviz DOT.
        #[arg(long)]
        dot: Option<PathBuf>,
        /// Draw layer 0 before and after fusion as SVG (needs Graphviz's `dot`).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Rows of the prefill program (longer prompts run in chunks).
        #[arg(long, default_value_t = 512)]
        prefill_tokens: usize,
        /// How matrices are stored: the GGUF's own quantization, or all dequantised to f16 (for comparison).
        #[arg(long, value_enum, default_value_t = cli::compile::WeightsChoice::Native)]
        weights: cli::compile::WeightsChoice,
        /// Store every weight as it is, even one that another rebuilds losslessly (by default a
        /// tied embedding stored twice is kept once plus a small correction, rebuilt at load).
        #[arg(long)]
        no_derive: bool,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a compiled model in full: every byte of weights.bin against the hashes the compiler
    /// recorded (a load checks only a sample), the plan's seal and structure, the tokenizer.
    /// Exits non-zero naming each damaged byte range.
    Verify {
        /// GGUF file (its compile-cache entry) or compiled directory (default: the default model).
        #[arg(value_name = "MODEL_OR_DIR", conflicts_with = "model")]
        target: Option<PathBuf>,
        /// The same, as a flag.
        #[arg(long)]
        model: Option<PathBuf>,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Check the GPU against the CPU oracle: every kernel, then the whole model's logits. On the
    /// CPU (`--backend cpu`, or `auto` without a usable GPU): the CPU executor's quantized kernels
    /// against the reference dequantisation.
    Check {
        /// A GGUF or compiled directory (default: a random-weight model with the 0.5B shapes).
        #[arg(long)]
        model: Option<PathBuf>,
        /// `cuda` fails without a GPU; `auto` falls back to the CPU checks.
        #[arg(long, value_enum, default_value_t = BackendChoice::Cuda)]
        backend: BackendChoice,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Skip the kernel-by-kernel checks (about 100 s on an H200): only the whole model and
        /// the device sampler.
        #[arg(long)]
        model_only: bool,
        /// The whole model on a random-weight model of this shape and its formats (4 of its
        /// layers) instead of the three with the 0.5B shapes: `bench --random-shape`'s shapes.
        #[arg(long, value_enum, conflicts_with = "model")]
        random_shape: Option<cli::bench::RandomShape>,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// The whole model against an independent implementation's recorded outputs (a
    /// `generation-*.json` of tests/refs): greedy ids, teacher-forced log-probs and top-5 logits,
    /// prefilled and decoded, on any backend. Exits non-zero when a case is off.
    Refcheck {
        /// GGUF file or compiled directory (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The reference file.
        #[arg(long)]
        refs: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Perplexity of a text file (llama.cpp method: windows of --ctx tokens, second half scored).
    Perplexity {
        /// GGUF file or compiled directory (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// UTF-8 text file to score.
        #[arg(long)]
        file: PathBuf,
        /// Tokens per window (at least 4).
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Print one JSON object instead of the report.
        #[arg(long)]
        json: bool,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Many generations in one process; fails if host RSS or device memory grows.
    Soak {
        /// GGUF file or compiled directory (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Generations to run.
        #[arg(long, default_value_t = 200)]
        n: usize,
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
        /// The generations draft as `generate`'s do (the same flags and default).
        #[command(flatten)]
        speculation: qwen_aot::speculation_args::SpeculationArgs,
    },
    /// OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions (streamed or not),
    /// /v1/models, /v1/models/{id}, /tokenize, /detokenize, /health, /metrics.
    Serve(qwen_aot::server::ServeOptions),
    /// The compiled models in the cache ($QWEN_AOT_CACHE or ~/.cache/qwen-aot): sizes, the model
    /// file each came from, which are stale; `cache clean` removes the stale ones.
    Cache {
        #[command(subcommand)]
        action: Option<CacheAction>,
        /// Print one JSON object (the cache directory and its entries) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Decode and prefill speed on the GPU, launches per step, % of the weight-streaming floor (or
    /// on the CPU with --backend cpu).
    Bench {
        /// GGUF file or compiled directory (default: the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Use a seeded random-weight model instead of a model file: the default model's shapes
        /// and formats (Q5_0, Q6_K ffn_down, Q8_0 attn_v and output), unless --random-shape says
        /// otherwise.
        #[arg(long, conflicts_with = "model")]
        random: bool,
        /// The random model: `0.5b` (the default model's shapes and formats), `1.5b` (28 layers,
        /// hidden 1536, Q4_K with Q6_K ffn_down and output), `3b` (36 layers, hidden 2048, the
        /// embedding tied to the LM head in Q6_K) or `7b` (28 layers, hidden 3584, 28/4 heads).
        /// Implies --random.
        #[arg(long, value_enum, conflicts_with = "model")]
        random_shape: Option<cli::bench::RandomShape>,
        /// Weights of the random model: `native` (the formats above) or `f16` (every matrix f16,
        /// today's `compile --weights f16`), for comparison.
        #[arg(long, value_enum, default_value_t = cli::bench::RandomWeights::Native)]
        random_weights: cli::bench::RandomWeights,
        /// Print one JSON object instead of the report.
        #[arg(long)]
        json: bool,
        /// `cpu` measures the CPU executor (decode and prefill tokens/s); `auto` the GPU when
        /// one is usable, else the CPU.
        #[arg(long, value_enum, default_value_t = BackendChoice::Cuda)]
        backend: BackendChoice,
        /// Repetitions (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Decode only after this many cached tokens (128 timed tokens a run) and report that
        /// rate alone: the speed at one context length, and a short, predictable window of
        /// launches for a profiler (scripts/device-attn-depth.sh). GPU only.
        #[arg(long)]
        depth: Option<usize>,
        /// No progress bars or notes on stderr.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Remove the stale compiled models: compiled for an older plan format, from a model file that
    /// changed or is gone, or abandoned mid-compile. The downloaded default model is kept.
    Clean {
        /// Remove every compiled model (they are compiled again on next use).
        #[arg(long)]
        all: bool,
    },
}

fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Inspect { model } => cli::inspect::run(model.as_deref()),
        Cmd::Tokenize { model, json, decode, args } => cli::tokenize::run(model.as_deref(), json, decode, &args),
        Cmd::Compile { model, out, dot, svg, prefill_tokens, weights, no_derive, quiet } => cli::compile::run(
            model.as_deref(),
            &out,
            dot.as_deref(),
            svg.as_deref(),
            prefill_tokens,
            weights,
            !no_derive,
            quiet,
        ),
        Cmd::Verify { target, model, quiet } => cli::verify::run(target.or(model).as_deref(), quiet),
        Cmd::Check { model, backend, seed, model_only, random_shape, quiet } => {
            cli::check::run(model.as_deref(), random_shape, backend, seed, model_only, quiet)
        }
        Cmd::Refcheck { model, refs, backend, quiet } => cli::refcheck::run(model.as_deref(), &refs, backend, quiet),
        Cmd::Perplexity { model, file, ctx, backend, json, quiet } => {
            cli::perplexity::run(model.as_deref(), &file, ctx, backend, json, quiet)
        }
        Cmd::Soak { model, backend, n, max_tokens, quiet, speculation } => {
            cli::soak::run(model.as_deref(), backend, n, max_tokens, speculation.drafter()?, quiet)
        }
        Cmd::Serve(opts) => qwen_aot::server::run(opts),
        Cmd::Cache { action: None, json } => cli::cache::list(json),
        Cmd::Cache { action: Some(CacheAction::Clean { all }), .. } => cli::cache::clean(all),
        Cmd::Bench { model, random, random_shape, random_weights, json, backend, reps, depth, quiet } => {
            let random = (random || random_shape.is_some()).then(|| (random_shape.unwrap_or_default(), random_weights));
            cli::bench::run(model.as_deref(), random, json, backend, reps, depth, quiet)
        }
    }
}

fn main() {
    qwen_aot_runtime::phases::start(); // `bench` prints where loading went
    qwen_aot::sigpipe::restore_default();
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
