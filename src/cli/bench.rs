//! `qwen-aot bench`: end-to-end speed of the CUDA backend on a model (`--backend cpu`: the CPU
//! executor's, `bench_cpu.rs`): decode tokens/s for 128
//! tokens at depth 0 and at depth 2048, prefill tokens/s for a 512-token prompt, launches per
//! decode step, and decode as a percentage of the weight-streaming floor (bytes of weights read
//! per token / measured device copy bandwidth).
//!
//! Timings are medians over repeated runs, timed with CUDA events on the executor's stream around
//! whole steps, each of which ends by reading the token id back: the GPU's clock over the same
//! interval a user waits for (host turnaround between tokens included). One more line times the
//! decode graph replayed back to back with no host round trip: the GPU's own time per step, so the
//! difference to the user-visible step is what the host turnaround costs.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use qwen_aot_compiler::compile::CompileOptions;
use qwen_aot_compiler::synthetic::{
    compile_random, default_model_mix, q4_k_m_1_5b_mix, q4_k_m_tied_mix, qwen05b_hparams, qwen15b_hparams,
    qwen3b_hparams, qwen7b_hparams, FormatMix, Rng,
};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cuda::bench::{copy_bandwidth_gbps, GpuTimer};
use qwen_aot_runtime::cuda::{CudaExecutor, PrefillPath};
use qwen_aot_runtime::executor::{Executor, LogitsWanted};
use qwen_aot_runtime::plan::{GemvEpilogue, HyperParams, Plan, Step};
use serde::Serialize;

use qwen_aot::backend::BackendChoice;
use qwen_aot::kernels::{image, KERNELS_AVAILABLE};
use qwen_aot::model;

#[derive(Serialize)]
struct BenchReport {
    device: String,
    model: String,
    decode_tok_s_depth0: f64,
    decode_tok_s_depth2048: f64,
    /// Decode rate at the depths between (each over the next 128 positions): a chat's answer runs
    /// at these depths, where attention splits its keys and merges the splits.
    decode_tok_s_by_depth: Vec<DepthRate>,
    /// GPU microseconds per decode step at depth 0 with steps enqueued back to back (no host
    /// turnaround): what `decode_tok_s_depth0` would be if the host never made the GPU wait.
    decode_step_us_back_to_back: f64,
    prefill_tok_s_512: f64,
    /// Short prompts on each prefill path (a chat turn's lengths).
    short_prefills: Vec<ShortPrefill>,
    /// The first cuBLAS prefill of SHORT_PROMPTS[2] tokens right after `warm_up` (ms): what a
    /// chat's second turn waits for.
    first_gemm_prefill_after_warm_up_ms: f64,
    launches_per_decode_step: usize,
    cuda_graph: bool,
    weight_bytes_per_token: u64,
    copy_bandwidth_gb_s: f64,
    floor_tok_s: f64,
    decode_pct_of_floor: f64,
}

/// `bench --depth`: the decode rate at one depth, alone.
#[derive(Serialize)]
struct DepthReport {
    device: String,
    model: String,
    depth: usize,
    decode_tok_s: f64,
    launches_per_decode_step: usize,
    layers: usize,
}

/// Decode tokens/s (median) over the 128 positions after `depth` cached tokens.
#[derive(Serialize)]
struct DepthRate {
    depth: usize,
    tok_s: f64,
}

/// The depths between 0 and 2048 that `bench` also decodes at.
const SWEEP_DEPTHS: [usize; 4] = [128, 256, 512, 1024];

/// Milliseconds (GPU clock, median) of one prefill of `tokens` tokens on each path.
#[derive(Serialize)]
struct ShortPrefill {
    tokens: usize,
    gemv_ms: f64,
    gemm_ms: f64,
}

/// Prompt lengths of the short-prefill lines (37: the chat haiku prompt of issue 17).
const SHORT_PROMPTS: [usize; 5] = [4, 16, 37, 64, 128];

/// GPU milliseconds of one prefill of `prompt` at position 0.
fn prefill_ms(exec: &mut CudaExecutor, prompt: &[u32]) -> Result<f64> {
    let timer = GpuTimer::start(exec.device())?;
    exec.prefill(prompt, 0, LogitsWanted::None)?;
    Ok(timer.stop_secs(exec.device())? * 1e3)
}

/// Median of `reps` timed prefills of `prompt` after one untimed (first-use costs).
fn median_prefill_ms(exec: &mut CudaExecutor, prompt: &[u32], reps: usize) -> Result<f64> {
    prefill_ms(exec, prompt)?;
    Ok(median((0..reps).map(|_| prefill_ms(exec, prompt)).collect::<Result<_>>()?))
}

/// Shapes (and formats) of `bench --random`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RandomShape {
    /// Qwen2.5-0.5B, 24 layers, the default model's formats.
    #[default]
    #[value(name = "0.5b")]
    Half,
    /// Qwen2.5-1.5B, 28 layers, Q4_K with Q6_K ffn_down and output (a Q4_K_M file's mix).
    #[value(name = "1.5b")]
    OneAndHalf,
    /// Qwen2.5-3B, 36 layers, hidden 2048, its embedding tied to the LM head (Q6_K); Q4_K with
    /// Q6_K ffn_down.
    #[value(name = "3b")]
    Three,
    /// Qwen2.5-7B, 28 layers, hidden 3584, 28/4 heads; Q4_K with Q6_K ffn_down and output.
    #[value(name = "7b")]
    Seven,
}

impl RandomShape {
    /// The name `--random-shape` takes.
    pub fn label(self) -> &'static str {
        match self {
            RandomShape::Half => "0.5b",
            RandomShape::OneAndHalf => "1.5b",
            RandomShape::Three => "3b",
            RandomShape::Seven => "7b",
        }
    }

    /// The shape's sizes, its formats and whether its embedding is tied to the LM head.
    pub fn model(self) -> (HyperParams, FormatMix, bool) {
        match self {
            RandomShape::Half => (qwen05b_hparams(24), default_model_mix(), false),
            RandomShape::OneAndHalf => (qwen15b_hparams(), q4_k_m_1_5b_mix(), false),
            RandomShape::Three => (qwen3b_hparams(), q4_k_m_tied_mix(), true),
            RandomShape::Seven => (qwen7b_hparams(), q4_k_m_1_5b_mix(), false),
        }
    }
}

/// Weights of `bench --random`: the shape's formats, or every matrix f16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RandomWeights {
    #[default]
    Native,
    F16,
}

/// Bytes of weights one decode step reads: every weight once, except the embedding table, of
/// which only one row is gathered (unless it is also the tied LM head).
pub fn weight_bytes_per_token(plan: &Plan) -> u64 {
    let mut full = BTreeSet::new();
    let mut rows = 0u64;
    for s in &plan.decode.steps {
        match s {
            Step::Embed { table, .. } => {
                // One row of the table, in its own format (its bytes over its rows).
                let w = &plan.weights[table.0 as usize];
                rows += w.bytes / w.shape[0].max(1) as u64;
            }
            Step::RmsNorm { weight, .. } | Step::AddRmsNorm { weight, .. } | Step::MatMul { weight, .. } => {
                full.insert(*weight);
            }
            Step::BiasRopeKvWrite { rope, .. } => {
                full.extend(rope.bias);
            }
            Step::Gemv { norm, weight, epilogue, .. } => {
                full.insert(*weight);
                full.extend(norm.map(|n| n.weight));
                if let GemvEpilogue::BiasRopeKvWrite { rope, .. } = epilogue {
                    full.extend(rope.bias);
                }
            }
            _ => {}
        }
    }
    rows + full.iter().map(|w| plan.weights[w.0 as usize].bytes).sum::<u64>()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The prompt's length and the KV cache's rows of a GPU bench: the full bench's (`depth` cached
/// tokens, `n_decode` decoded, so that `--depth` at most that deep runs the same attention split
/// geometry and its rate is the full bench's at that depth), or longer for a deeper `--depth`.
/// A depth past the model's context is refused before anything is allocated for it.
fn kv_cache_len(
    only_depth: Option<usize>,
    depth: usize,
    n_decode: usize,
    context_length: usize,
) -> Result<(usize, usize)> {
    let prompt_len = only_depth.map_or(depth, |d| d.max(depth));
    match prompt_len.checked_add(n_decode + 1) {
        Some(max_seq) if max_seq <= context_length => Ok((prompt_len, max_seq)),
        _ => bail!("--depth {prompt_len} leaves no room for {n_decode} decoded tokens in the model's context of {context_length}"),
    }
}

/// Seconds to decode `n` tokens after a prompt of `depth` tokens (prefill, in chunks, not timed).
fn decode_secs(exec: &mut CudaExecutor, prompt: &[u32], n: usize) -> Result<f64> {
    let chunk = exec.max_prefill_tokens();
    let mut next = 0;
    for (i, part) in prompt.chunks(chunk).enumerate() {
        next = exec.prefill(part, i * chunk, LogitsWanted::None)?.next_token;
    }
    let timer = GpuTimer::start(exec.device())?;
    for i in 0..n {
        next = exec.decode(next, prompt.len() + i, false)?.next_token;
    }
    Ok(timer.stop_secs(exec.device())?)
}

fn random_compiled(dir: &Path, shape: RandomShape, weights: RandomWeights) -> Result<()> {
    let (hp, mix, tied) = shape.model();
    let mix = if weights == RandomWeights::F16 { FormatMix::f16() } else { mix };
    Ok(compile_random(&hp, tied, 7, &mix, &CompileOptions::default(), dir)?)
}

/// `random`: the random model's shape and weights instead of a model file.
pub fn run(
    model_arg: Option<&Path>,
    random: Option<(RandomShape, RandomWeights)>,
    json: bool,
    backend: BackendChoice,
    reps: usize,
    only_depth: Option<usize>,
    quiet: bool,
) -> Result<()> {
    let on_gpu = match backend {
        BackendChoice::Cpu => false,
        BackendChoice::Cuda => true,
        BackendChoice::Auto => {
            let usable = qwen_aot::gpu::probe();
            if let Err(e) = &usable {
                if !quiet {
                    eprintln!("note: no usable GPU ({e:#}); benchmarking the CPU executor");
                }
            }
            usable.is_ok()
        }
    };
    if !on_gpu && only_depth.is_some() {
        bail!("--depth is measured on the GPU only (the CPU bench decodes at depth 0)");
    }
    if on_gpu && !KERNELS_AVAILABLE {
        bail!("this binary was built without nvcc: no CUDA kernels to benchmark (--backend cpu measures the CPU)");
    }
    let reps = reps.max(1);
    let dir = if let Some((shape, weights)) = random {
        let d = std::env::temp_dir().join(format!("qwen-aot-bench-random-{}", std::process::id()));
        random_compiled(&d, shape, weights)?;
        d
    } else {
        // On the GPU: one that is missing fails now, not after compiling a new model.
        model::compiled_model_checked(model_arg, quiet, || if on_gpu { qwen_aot::gpu::probe() } else { Ok(()) })?
    };
    if !on_gpu {
        return super::bench_cpu::run(&dir, json, reps);
    }
    let compiled = CompiledModel::open(&dir, Integrity::Sampled)?;
    let depth = 2048;
    let n_decode = 128;
    let (prompt_len, max_seq) = kv_cache_len(only_depth, depth, n_decode, compiled.plan.hparams.context_length)?;
    let mut exec = CudaExecutor::new(&compiled, image()?, max_seq).context("loading the model on the GPU")?;
    let vocab = compiled.plan.hparams.vocab as u64;
    let mut rng = Rng::new(3);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| (rng.next_u64() % vocab.min(100_000)) as u32).collect();

    // Warm-up: graph capture, module load, cuBLAS handles.
    decode_secs(&mut exec, &prompt[..4], 8)?;
    if !quiet && !json {
        // What loading took (context, module, upload, capture): the start-up phases.
        eprint!("{}", qwen_aot_runtime::phases::report(&qwen_aot_runtime::phases::recorded()));
    }
    if let Some(d) = only_depth {
        // Nothing else runs: after the warm-up's 8 steps, `reps` runs of 128 steps at depth d.
        let runs = (0..reps).map(|_| decode_secs(&mut exec, &prompt[..d.max(1)], n_decode));
        let tok_s = median(runs.map(|s| s.map(|s| n_decode as f64 / s)).collect::<Result<_>>()?);
        let r = DepthReport {
            device: exec.device().name().to_string(),
            model: dir.display().to_string(),
            depth: d,
            decode_tok_s: tok_s,
            launches_per_decode_step: exec.decode_launches(),
            layers: compiled.plan.hparams.n_layers,
        };
        if json {
            qwen_aot::outln!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            qwen_aot::outln!("device                      {}", r.device);
            qwen_aot::outln!("model                       {}", r.model);
            qwen_aot::outln!("decode, depth {:<14}{:>9.1} tokens/s  (median of {reps} x {n_decode} tokens)", d, tok_s);
        }
        return Ok(());
    }
    // Short prompts: the GEMV path first (it needs no cuBLAS), then cuBLAS after the warm-up a
    // chat does between turns.
    let short_lens: Vec<usize> = SHORT_PROMPTS.iter().copied().filter(|&n| n <= exec.max_prefill_tokens()).collect();
    exec.set_prefill_path(PrefillPath::Gemv);
    let mut gemv_ms = Vec::new();
    for &n in &short_lens {
        gemv_ms.push(median_prefill_ms(&mut exec, &prompt[..n], reps)?);
    }
    exec.set_prefill_path(PrefillPath::Auto);
    exec.warm_up()?;
    exec.set_prefill_path(PrefillPath::Gemm);
    let first_after_warm_up = prefill_ms(&mut exec, &prompt[..SHORT_PROMPTS[2]])?;
    let mut short_prefills = Vec::new();
    for (&n, &gemv_ms) in short_lens.iter().zip(&gemv_ms) {
        let gemm_ms = median_prefill_ms(&mut exec, &prompt[..n], reps)?;
        short_prefills.push(ShortPrefill { tokens: n, gemv_ms, gemm_ms });
    }
    exec.set_prefill_path(PrefillPath::Auto);
    let mut rate_at = |depth: usize| -> Result<f64> {
        let runs = (0..reps).map(|_| decode_secs(&mut exec, &prompt[..depth.max(1)], n_decode));
        Ok(median(runs.map(|s| s.map(|s| n_decode as f64 / s)).collect::<Result<_>>()?))
    };
    let d0 = rate_at(0)?;
    let by_depth = SWEEP_DEPTHS
        .iter()
        .map(|&depth| Ok(DepthRate { depth, tok_s: rate_at(depth)? }))
        .collect::<Result<Vec<_>>>()?;
    let d2k = rate_at(depth)?;
    let replay = median(
        (0..reps)
            .map(|_| exec.decode_replay_secs(prompt[0], 64, n_decode).map(|s| s * 1e6 / n_decode as f64))
            .collect::<Result<_, _>>()?,
    );
    let pf =
        median((0..reps).map(|_| prefill_ms(&mut exec, &prompt[..512]).map(|ms| 512e3 / ms)).collect::<Result<_>>()?);
    let bw = copy_bandwidth_gbps(exec.device())?;
    let bytes = weight_bytes_per_token(&compiled.plan);
    let floor = bw * 1e9 / bytes as f64;
    let r = BenchReport {
        device: exec.device().name().to_string(),
        model: dir.display().to_string(),
        decode_tok_s_depth0: d0,
        decode_tok_s_depth2048: d2k,
        decode_tok_s_by_depth: by_depth,
        decode_step_us_back_to_back: replay,
        prefill_tok_s_512: pf,
        short_prefills,
        first_gemm_prefill_after_warm_up_ms: first_after_warm_up,
        launches_per_decode_step: exec.decode_launches(),
        cuda_graph: exec.uses_graph(),
        weight_bytes_per_token: bytes,
        copy_bandwidth_gb_s: bw,
        floor_tok_s: floor,
        decode_pct_of_floor: 100.0 * d0 / floor,
    };
    if json {
        qwen_aot::outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    qwen_aot::outln!("device                      {}", r.device);
    qwen_aot::outln!("model                       {}", r.model);
    qwen_aot::outln!(
        "decode, depth 0             {:>9.1} tokens/s  (median of {reps} x {n_decode} tokens)",
        r.decode_tok_s_depth0
    );
    for d in &r.decode_tok_s_by_depth {
        qwen_aot::outln!("decode, depth {:<14}{:>9.1} tokens/s", d.depth, d.tok_s);
    }
    qwen_aot::outln!("decode, depth {depth}          {:>9.1} tokens/s", r.decode_tok_s_depth2048);
    qwen_aot::outln!(
        "decode step, back to back   {:>9.1} us  (no host turnaround; user-visible: {:.1} us)",
        r.decode_step_us_back_to_back,
        1e6 / r.decode_tok_s_depth0
    );
    qwen_aot::outln!("prefill, 512-token prompt   {:>9.1} tokens/s", r.prefill_tok_s_512);
    for p in &r.short_prefills {
        qwen_aot::outln!(
            "prefill, {:>3}-token prompt   {:>9.2} ms on the GEMV kernels, {:.2} ms on cuBLAS",
            p.tokens,
            p.gemv_ms,
            p.gemm_ms
        );
    }
    qwen_aot::outln!(
        "first cuBLAS prefill after warm-up {:.2} ms ({} tokens)",
        r.first_gemm_prefill_after_warm_up_ms,
        SHORT_PROMPTS[2]
    );
    qwen_aot::outln!(
        "launches per decode step    {:>9}  ({})",
        r.launches_per_decode_step,
        if r.cuda_graph { "one CUDA graph" } else { "no graph" }
    );
    qwen_aot::outln!("weights read per token      {:>9.1} MB", bytes as f64 / 1e6);
    qwen_aot::outln!("device copy bandwidth       {:>9.1} GB/s (read + write)", bw);
    qwen_aot::outln!("weight-streaming floor      {:>9.1} tokens/s", floor);
    qwen_aot::outln!("decode vs floor             {:>9.1} %", r.decode_pct_of_floor);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::kv_cache_len;

    #[test]
    fn kv_cache_len_is_the_full_bench_s_or_the_deeper_depth_s() {
        assert_eq!(kv_cache_len(None, 2048, 128, 32768).unwrap(), (2048, 2177));
        assert_eq!(kv_cache_len(Some(512), 2048, 128, 32768).unwrap(), (2048, 2177));
        assert_eq!(kv_cache_len(Some(4096), 2048, 128, 32768).unwrap(), (4096, 4225));
        assert_eq!(kv_cache_len(Some(32639), 2048, 128, 32768).unwrap(), (32639, 32768));
    }

    #[test]
    fn kv_cache_len_refuses_a_depth_past_the_context_without_overflow() {
        let err = kv_cache_len(Some(32640), 2048, 128, 32768).unwrap_err().to_string();
        assert!(err.contains("--depth 32640 leaves no room for 128 decoded tokens"), "{err}");
        let err = kv_cache_len(Some(usize::MAX), 2048, 128, 32768).unwrap_err().to_string();
        assert!(err.contains("in the model's context of 32768"), "{err}");
    }
}
