//! `qwen-aot check`: the GPU against the CPU oracle. First every CUDA kernel against its CPU
//! twin (seeded random inputs, model shapes and odd shapes), then the whole model: GPU logits vs
//! CPU-executor logits for a few prompts, through prefill and graph-replayed decode steps. On the
//! given model, or on seeded random-weight models with the 0.5B shapes when none is given (native
//! formats, f16, and native without q/k/v biases), or on one of `--random-shape`'s sizes and
//! formats (1.5B, 3B with its tied Q6_K embedding, 7B: four of their layers).
//! Last, sampling through the executor: every device-sampled id against `sampler::sample` on the
//! GPU's own logits row (prefill and graph-replayed decode, after greedy steps too), and the same
//! seeded generation twice.
//! Prints a PASS/FAIL table; exits non-zero on any failure. `--backend cpu`, and `--backend auto`
//! without a usable GPU, check the CPU executor instead (`check_cpu.rs`).
use std::path::Path;

use anyhow::{bail, Context, Result};
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::synthetic::{
    compile_random, default_model_mix, qwen05b_hparams, random_model_mix, remove_qkv_bias, FormatMix, Rng,
};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::cuda::check::{check_kernels, format_rows, CheckShape};
use qwen_aot_runtime::cuda::CudaExecutor;
use qwen_aot_runtime::executor::{Executor, LogitsWanted};
use qwen_aot_runtime::plan::HyperParams;
use qwen_aot_runtime::sampler::{self, SamplingParams};
use qwen_aot_runtime::scores::RowScore;
use qwen_aot_runtime::tokenizer::Tokenizer;

use super::bench::RandomShape;
use qwen_aot::backend::BackendChoice;
use qwen_aot::kernels::{image, TEST_IMAGE};
use qwen_aot::model;

/// One prompt's comparison over all its rows (prefill rows, then decode steps).
struct ModelRow {
    prompt: String,
    rows: usize,
    max_abs: f32,
    mean_abs: f32,
    top1_agree: usize,
    /// Rows where the CPU's top-1/top-2 margin exceeds the error bound, so top-1 must agree.
    top1_decided: usize,
    top1_decided_agree: usize,
}

fn top2(row: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    (best.0, best.1 - second)
}

fn compare(prompt: &str, cpu: &[f32], gpu: &[f32], vocab: usize, margin: f32) -> ModelRow {
    let rows = cpu.len() / vocab;
    let mut r = ModelRow {
        prompt: prompt.to_string(),
        rows,
        max_abs: 0.0,
        mean_abs: 0.0,
        top1_agree: 0,
        top1_decided: 0,
        top1_decided_agree: 0,
    };
    let mut sum = 0.0f64;
    for (c, g) in cpu.chunks(vocab).zip(gpu.chunks(vocab)) {
        for (a, b) in c.iter().zip(g) {
            let d = if a.is_finite() && b.is_finite() { (a - b).abs() } else { f32::INFINITY };
            r.max_abs = r.max_abs.max(d);
            sum += d as f64;
        }
        let ((ci, cm), (gi, _)) = (top2(c), top2(g));
        r.top1_agree += (ci == gi) as usize;
        if cm > margin {
            r.top1_decided += 1;
            r.top1_decided_agree += (ci == gi) as usize;
        }
    }
    r.mean_abs = (sum / cpu.len().max(1) as f64) as f32;
    r
}

/// Prefill `prompt` then `decode_steps` steps, returning every row's logits and the ids fed to the
/// decode steps: the executor's own greedy picks, or `forced` ones. The GPU side is fed the CPU's
/// picks so that one near-tie (a top-1 the tolerance lets differ) cannot send the two runs down
/// different continuations and fail every later row.
fn run_logits(
    exec: &mut dyn Executor,
    prompt: &[u32],
    decode_steps: usize,
    forced: Option<&[u32]>,
) -> Result<(Vec<f32>, Vec<u32>)> {
    let out = exec.prefill(prompt, 0, LogitsWanted::All)?;
    let mut logits = out.logits;
    let mut fed = Vec::with_capacity(decode_steps);
    let mut next = out.next_token;
    for i in 0..decode_steps {
        let id = forced.map_or(next, |f| f[i]);
        fed.push(id);
        let step = exec.decode(id, prompt.len() + i, true)?;
        logits.extend(step.logits);
        next = step.next_token;
    }
    Ok((logits, fed))
}

/// A seeded random-weight model of `shape`'s sizes (4 of its layers, to keep the CPU side quick),
/// in `mix`'s formats, its embedding `tied` to the LM head or not; without q/k/v biases when
/// `!qkv_bias` (the kernels' null-bias path).
fn random_compiled(dir: &Path, shape: &HyperParams, mix: &FormatMix, tied: bool, qkv_bias: bool) -> Result<()> {
    let hp = HyperParams { n_layers: shape.n_layers.min(4), context_length: 4096, ..shape.clone() };
    if qkv_bias {
        return Ok(compile_random(&hp, tied, 42, mix, &CompileOptions::default(), dir)?);
    }
    let mut src = random_model_mix(&hp, tied, 42, mix);
    remove_qkv_bias(&mut src);
    let mut c = build(&hp, &src, "random-seed-42-no-qkv-bias", &CompileOptions::default())?;
    Ok(write_dir(&mut c, &src, None, dir, |_| {})?)
}

/// `random_shape`: the whole-model check's random model (else the three with the 0.5B shapes).
pub fn run(
    model_arg: Option<&Path>,
    random_shape: Option<RandomShape>,
    backend: BackendChoice,
    seed: u64,
    model_only: bool,
    quiet: bool,
) -> Result<()> {
    // The CPU check covers the CPU executor's kernels only: a model named for it would not be
    // checked at all, and a PASS would claim otherwise.
    let cpu_check = || -> Result<()> {
        if model_arg.is_some() || model_only || random_shape.is_some() {
            anyhow::bail!(
                "on the CPU, `check` checks the executor's kernels only; --model, --random-shape and --model-only are \
                 the GPU's whole-model check (a model on the CPU: `qwen-aot refcheck --backend cpu`, `qwen-aot verify`)"
            );
        }
        super::check_cpu::run(seed)
    };
    let dev = match backend {
        BackendChoice::Cpu => return cpu_check(),
        BackendChoice::Cuda => qwen_aot::gpu::open_device()?,
        BackendChoice::Auto => match qwen_aot::gpu::open_device() {
            Ok(dev) => dev,
            Err(e) => {
                if !quiet {
                    eprintln!("note: no usable GPU ({e:#}); checking the CPU executor instead");
                }
                return cpu_check();
            }
        },
    };
    let mut failed = 0;

    // 1. Kernels against their CPU twins.
    qwen_aot::outln!(
        "device: {} (sm_{}{}, {} SMs)\n",
        dev.name(),
        dev.compute_capability().0,
        dev.compute_capability().1,
        dev.sm_count()
    );
    if !model_only {
        let rows = check_kernels(&dev, TEST_IMAGE, seed, &CheckShape::default_set())?;
        qwen_aot::outln!("kernels vs CPU twins (seed {seed})\n{}", format_rows(&rows));
        failed += rows.iter().filter(|r| !r.pass).count();
    }
    drop(dev);

    // 2. The whole model (a given one; or random ones: the default model's formats, f16, and the
    //    default formats without q/k/v biases, whose RoPE steps get a null bias pointer).
    match (model_arg, random_shape) {
        (Some(_), _) => failed += check_model(&model::compiled_model(model_arg, quiet)?, seed, true)?,
        (None, Some(shape)) => {
            let (hp, mix, tied) = shape.model();
            let d = tempfile_dir()?.join(format!("random-{}-shapes", shape.label()));
            random_compiled(&d, &hp, &mix, tied, true)?;
            failed += check_model(&d, seed, true)?;
        }
        (None, None) => {
            let tmp = tempfile_dir()?;
            let models = [
                ("native", default_model_mix(), true),
                ("f16", FormatMix::f16(), true),
                ("native-no-qkv-bias", default_model_mix(), false),
            ];
            for (i, (name, mix, qkv_bias)) in models.iter().enumerate() {
                let d = tmp.join(format!("random-0.5b-shapes-{name}"));
                random_compiled(&d, &qwen05b_hparams(24), mix, false, *qkv_bias)?;
                failed += check_model(&d, seed, i == 0)?;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} check(s) FAILED");
    }
    qwen_aot::outln!("\nall checks PASS");
    Ok(())
}

/// GPU vs CPU executor logits on the model in `dir` (and, with `sampling`, the device sampler);
/// returns the number of failed rows.
fn check_model(dir: &Path, seed: u64, sampling: bool) -> Result<usize> {
    let mut failed = 0;
    let compiled = CompiledModel::open(dir, Integrity::Full)?;
    let hp = compiled.plan.hparams.clone();
    let prompts: Vec<(String, Vec<u32>)> = match Tokenizer::load(&compiled.tokenizer_path()) {
        Ok(tok) => [
            "Write a haiku about GPU computing.",
            "fn main() {\n    let v: Vec<u32> = (0..10).collect();",
            "The capital of France is",
        ]
        .iter()
        .map(|s| (format!("{s:?}"), tok.encode(s)))
        .collect(),
        Err(_) => {
            let mut rng = Rng::new(seed);
            [7usize, 40, 300]
                .iter()
                .map(|&n| {
                    (format!("{n} random ids"), (0..n).map(|_| (rng.next_u64() % hp.vocab as u64) as u32).collect())
                })
                .collect()
        }
    };
    let decode_steps = 8;
    let mut cpu = CpuExecutor::new(&compiled, 1024)?;
    let mut gpu = CudaExecutor::new(&compiled, image()?, 1024)?;
    // Every decode graph (both forms, greedy and sampled) captured before the first step, as
    // `warm_up` does: the rows below replay these (the folded form at the 300-id prompt).
    gpu.capture_decode_graphs()?;
    let captured = gpu.decode_graphs_captured();
    failed += (!captured) as usize;
    qwen_aot::outln!(
        "\ndecode graphs captured before the first step (every form, greedy and sampled)  {}",
        if captured { "PASS" } else { "FAIL" }
    );
    // Tolerances: both sides read the same weights (quantized ones dequantised to the same f32
    // values on both) and accumulate in f32; they differ in summation order and in the GPU's f16
    // intermediates (prefill GEMM inputs, KV cache), which over 24 layers moves logits (magnitude
    // ~10-30) by a few 1e-2. 0.25 absolute / 0.02 mean still catches any real indexing or fusion
    // bug, which moves logits by whole units.
    let (tol_max, tol_mean, margin) = (0.25f32, 0.02f32, 0.5f32);
    qwen_aot::outln!(
        "\nwhole model: GPU vs CPU executor logits ({}, prefill + {decode_steps} decode steps fed the CPU's ids, decode via {})",
        dir.display(),
        if gpu.uses_graph() { "CUDA graph" } else { "direct launches" }
    );
    qwen_aot::outln!(
        "  {:<58} {:>5} {:>9} {:>9} {:>9} {:>6}",
        "prompt",
        "rows",
        "max_abs",
        "mean_abs",
        "top1",
        "result"
    );
    for (label, ids) in &prompts {
        let (c, cpu_ids) = run_logits(&mut cpu, ids, decode_steps, None)?;
        let (g, _) = run_logits(&mut gpu, ids, decode_steps, Some(&cpu_ids))?;
        let r = compare(label, &c, &g, hp.vocab, margin);
        let pass = r.max_abs <= tol_max && r.mean_abs <= tol_mean && r.top1_decided_agree == r.top1_decided;
        failed += (!pass) as usize;
        let short: String = r.prompt.chars().take(56).collect();
        qwen_aot::outln!(
            "  {:<58} {:>5} {:>9.4} {:>9.5} {:>3}/{:<3}  {}",
            short,
            r.rows,
            r.max_abs,
            r.mean_abs,
            r.top1_agree,
            r.rows,
            if pass { "PASS" } else { "FAIL" }
        );
    }
    qwen_aot::outln!(
        "  (tolerance: max_abs <= {tol_max}, mean_abs <= {tol_mean}, top-1 equal wherever the CPU margin > {margin})"
    );
    failed += prefill_graph_checks(&mut gpu, &mut cpu, &prompts, hp.vocab, tol_max)?;
    failed += decode_score_checks(&mut gpu, &prompts[0].1, 32)?;

    // 3. Sampling on the device.
    if sampling {
        let prompt = &prompts[prompts.len().min(2) - 1].1;
        failed += sampling_checks(&mut gpu, prompt, 24)?;
    }
    Ok(failed)
}

/// A difference for a max: NaN (which `f32::max` would drop) as infinite, so that it fails.
fn nan_is_infinite(d: f32) -> f32 {
    if d.is_nan() {
        f32::INFINITY
    } else {
        d
    }
}

/// How far two scores of a row lie apart: the largest |Δ| of their log-probabilities (the
/// target's and every listed one's; NaN as infinite) and whether they list the same ids.
fn score_gap(a: &RowScore, b: &RowScore) -> (f32, bool) {
    let d = a
        .top
        .iter()
        .zip(&b.top)
        .map(|(x, y)| (x.1 - y.1).abs())
        .fold(nan_is_infinite((a.logprob - b.logprob).abs()), |m, d| m.max(nan_is_infinite(d)));
    let same = a.top.len() == b.top.len() && a.top.iter().zip(&b.top).all(|(x, y)| x.0 == y.0);
    (d, same)
}

/// Alternatives asked of the device's scores in turn (`top_logprobs` 1, 5 and the most).
const CHECK_TOP_N: [usize; 3] = [1, 5, qwen_aot_runtime::scores::MAX_TOP];

/// Each greedy decode step's row scored on the device (`last_decode_score`: the log-probability
/// of the token the step chose, and the top 1, 5 or 20 tokens in turn) against the same row copied
/// and scored on the host (f64): within 2e-5, the same ids, the first the step's token; then what
/// a step with its log-probabilities costs either way (µs, back to back). Returns the number of
/// failed rows.
fn decode_score_checks(gpu: &mut CudaExecutor, prompt: &[u32], steps: usize) -> Result<usize> {
    use qwen_aot_runtime::scores::row_score;
    use std::time::Instant;
    let mut token = gpu.prefill(prompt, 0, LogitsWanted::None)?.next_token;
    let (mut worst, mut same) = (0.0f32, true);
    for i in 0..steps {
        let pos = prompt.len() + i;
        let next = gpu.decode(token, pos, false)?.next_token;
        let top_n = CHECK_TOP_N[i % CHECK_TOP_N.len()];
        let on_device = gpu.last_decode_score(next, pos, top_n)?;
        let on_host = row_score(&gpu.last_decode_logits()?, next, top_n);
        let (d, ids) = score_gap(&on_device, &on_host);
        worst = worst.max(d);
        same &= ids && on_device.top.first().map(|p| p.0) == Some(next);
        token = next;
    }
    let pass = same && worst <= 2e-5;
    qwen_aot::outln!(
        "\ndecode log-probabilities: {steps} greedy steps scored on the device (top 1, 5, 20 in turn) vs the copied rows: max |Δ| {worst:.3e}, same ids, first = chosen token {}  {}",
        if same { "every step" } else { "NOT ALWAYS" },
        if pass { "PASS" } else { "FAIL" }
    );
    // Time per step with the token's log-probability and `top_n` alternatives: scored on the
    // device, or the row copied and scored on the host (what the server did before).
    let mut timed = |on_device: bool, top_n: usize| -> Result<f64> {
        let start = Instant::now();
        let mut t = token;
        for i in 0..steps {
            let pos = prompt.len() + i;
            if on_device {
                t = gpu.decode(t, pos, false)?.next_token;
                std::hint::black_box(gpu.last_decode_score(t, pos, top_n)?);
            } else {
                let out = gpu.decode(t, pos, true)?;
                t = out.next_token;
                std::hint::black_box(row_score(&out.logits, t, top_n));
            }
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / steps as f64)
    };
    for top_n in CHECK_TOP_N {
        let (device_us, host_us) = (timed(true, top_n)?, timed(false, top_n)?);
        qwen_aot::outln!(
            "  a decode step with its log-probability and top {top_n}: {device_us:.1} µs scored on the device, {host_us:.1} µs with the row copied and scored on the host"
        );
    }
    // Where a scored step's time goes: the same steps without scores, and the scoring call
    // alone, repeated on the last step's row.
    let start = Instant::now();
    let mut t = token;
    for i in 0..steps {
        t = gpu.decode(t, prompt.len() + i, false)?.next_token;
    }
    let plain_us = start.elapsed().as_secs_f64() * 1e6 / steps as f64;
    let mut alone_us = Vec::new();
    for top_n in CHECK_TOP_N {
        let start = Instant::now();
        for _ in 0..steps {
            std::hint::black_box(gpu.last_decode_score(t, prompt.len() + steps - 1, top_n)?);
        }
        alone_us.push(format!("top {top_n} {:.1}", start.elapsed().as_secs_f64() * 1e6 / steps as f64));
    }
    qwen_aot::outln!(
        "  a decode step without scores: {plain_us:.1} µs; the scoring call alone: {} µs",
        alone_us.join(", ")
    );
    Ok((!pass) as usize)
}

/// Prefills replayed from CUDA graphs against the same prefill launched directly: each prompt's
/// every-row logits with prefill graphs off, then from three runs with them on (the first sighting
/// of a shape runs directly, the second captures, the third replays) -- equal bit for bit (the
/// same launches on the same path at the same GEMM row counts), and the shape must then have a
/// graph unless it is one that is never captured (a GEMV prefill of more than 8 rows); then,
/// after `warm_up` (which captures the cuBLAS buckets' graphs), the last row's logits, directly
/// or from a graph twice, equal, and against the CPU's within `tol`. Returns the number of
/// failed rows.
fn prefill_graph_checks(
    gpu: &mut CudaExecutor,
    cpu: &mut CpuExecutor,
    prompts: &[(String, Vec<u32>)],
    vocab: usize,
    tol: f32,
) -> Result<usize> {
    let mut failed = 0;
    let max_diff = |a: &[f32], b: &[f32]| -> f32 {
        if a.len() != b.len() {
            return f32::INFINITY;
        }
        a.iter()
            .zip(b)
            .map(|(x, y)| if x.to_bits() == y.to_bits() { 0.0 } else { (x - y).abs().max(f32::MIN_POSITIVE) })
            .fold(0.0, f32::max)
    };
    qwen_aot::outln!(
        "\nprefill graphs: direct vs captured vs replayed (every row's logits, bit for bit), then after warm_up"
    );
    for (label, ids) in prompts {
        gpu.set_prefill_graphs(false);
        let direct = gpu.prefill(ids, 0, LogitsWanted::All)?.logits;
        gpu.set_prefill_graphs(true);
        let runs: Vec<Vec<f32>> =
            (0..3).map(|_| Ok(gpu.prefill(ids, 0, LogitsWanted::All)?.logits)).collect::<Result<_>>()?;
        let d = runs.iter().map(|r| max_diff(&direct, r)).fold(0.0, f32::max);
        // A shape that can have a graph must have one after three runs.
        let replayed = gpu.prefill_replays_graph(ids.len(), LogitsWanted::All);
        let pass = d == 0.0 && replayed != Some(false);
        failed += (!pass) as usize;
        let short: String = label.chars().take(40).collect();
        qwen_aot::outln!(
            "  {short:<40} {:>4} rows  max |direct - graph| {d:>9.3e}  {:<8}  {}",
            ids.len(),
            match replayed {
                Some(true) => "replayed",
                Some(false) => "no graph",
                None => "direct",
            },
            if pass { "PASS" } else { "FAIL" }
        );
        // Every row scored on the device (kernels/row_scores.cu) against the same rows copied
        // and scored on the host (f64): log-probabilities within 2e-5, the same ids listed.
        let targets: Vec<u32> = ids[1..].iter().chain(&ids[..1]).copied().collect();
        let top_n = CHECK_TOP_N[(ids.len() / 7) % CHECK_TOP_N.len()];
        let on_device = gpu.prefill_scores(ids, 0, &targets, top_n)?;
        let on_host = qwen_aot_runtime::scores::score_rows(&direct, vocab, &targets, top_n)?;
        let (mut d, mut same_ids) = (0.0f32, on_device.len() == on_host.len());
        for (g, c) in on_device.iter().zip(&on_host) {
            let (gap, ids) = score_gap(g, c);
            d = d.max(gap);
            same_ids &= ids;
        }
        let pass = on_device.len() == ids.len() && same_ids && d <= 2e-5;
        failed += (!pass) as usize;
        qwen_aot::outln!(
            "  {short:<40} {:>4} rows  scores on the device (top {top_n}) vs the copied rows: max |Δ log-prob| {d:>9.3e}, ids {}  {}",
            ids.len(),
            if same_ids { "equal" } else { "DIFFER" },
            if pass { "PASS" } else { "FAIL" }
        );
    }
    gpu.warm_up()?;
    for (label, ids) in prompts {
        let want = cpu.prefill(ids, 0, LogitsWanted::Last)?.logits;
        let got = (0..2).map(|_| Ok(gpu.prefill(ids, 0, LogitsWanted::Last)?.logits)).collect::<Result<Vec<_>>>()?;
        let d = want.iter().zip(&got[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let pass = got[0].len() == vocab && max_diff(&got[0], &got[1]) == 0.0 && d <= tol;
        failed += (!pass) as usize;
        let short: String = label.chars().take(40).collect();
        qwen_aot::outln!(
            "  {short:<40} {:>4} rows  last row vs CPU {d:>9.4}  {}",
            ids.len(),
            if pass { "PASS" } else { "FAIL" }
        );
    }
    Ok(failed)
}

/// Device-sampled ids against `sampler::sample` on the GPU's own logits and the executor's history
/// (exact), for a few parameter sets: (a) greedy prefill then sampled decode (the device history
/// is uploaded from the host mirror), (b) sampled prefill and decode, (c) (b) again without
/// logits: the same ids. Then the decode step time, greedy graph vs sampled graph. Returns the
/// number of failed rows.
fn sampling_checks(gpu: &mut CudaExecutor, prompt: &[u32], steps: usize) -> Result<usize> {
    let cases = [
        (
            "T=0.8 top-k 40 top-p 0.95 rp 1.1",
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                repeat_penalty: 1.1,
                seed: 7,
                ..Default::default()
            },
        ),
        (
            "T=1.2 k=0 min-p 0.02 presence 0.4",
            SamplingParams { temperature: 1.2, min_p: 0.02, presence_penalty: 0.4, seed: 8, ..Default::default() },
        ),
        (
            "T=0 rp 1.5 presence 1 (penalised argmax)",
            SamplingParams {
                repeat_penalty: 1.5,
                presence_penalty: 1.0,
                penalty_window: 16,
                seed: 9,
                ..Default::default()
            },
        ),
    ];
    let n = prompt.len();
    // Prefill then `steps` decodes; with `check`, every id against the CPU sampler on the GPU logits.
    let run = |gpu: &mut CudaExecutor,
               p: &SamplingParams,
               sampled_prefill: bool,
               check: bool|
     -> Result<(Vec<u32>, usize, usize)> {
        let greedy = SamplingParams::default();
        gpu.set_sampling(if sampled_prefill { p } else { &greedy })?;
        let out = gpu.prefill(prompt, 0, if check { LogitsWanted::Last } else { LogitsWanted::None })?;
        let mut hist = prompt.to_vec();
        let (mut draws, mut misses) = (0, 0);
        if check && sampled_prefill {
            draws += 1;
            misses += (sampler::sample(&out.logits, &hist, p, n) != out.next_token) as usize;
        }
        gpu.set_sampling(p)?;
        let mut ids = vec![out.next_token];
        for i in 0..steps {
            let step = gpu.decode(ids[i], n + i, check)?;
            hist.push(ids[i]);
            if check {
                draws += 1;
                misses += (sampler::sample(&step.logits, &hist, p, n + i + 1) != step.next_token) as usize;
            }
            ids.push(step.next_token);
        }
        Ok((ids, draws, misses))
    };
    qwen_aot::outln!("\nsampling on the device vs sampler::sample on the GPU logits ({n}-token prompt, {steps} decode steps, decode via {})", if gpu.uses_graph() { "CUDA graph" } else { "direct launches" });
    qwen_aot::outln!(
        "  {:<44} {:>6} {:>10} {:>9} {:>10}  result",
        "parameters",
        "draws",
        "mismatches",
        "distinct",
        "repeatable"
    );
    let mut failed = 0;
    for (label, p) in &cases {
        let (_, da, ma) = run(gpu, p, false, true)?;
        let (ids_b, db, mb) = run(gpu, p, true, true)?;
        let (ids_c, _, _) = run(gpu, p, true, false)?;
        let mut distinct = ids_b.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let pass = ma + mb == 0 && ids_b == ids_c;
        failed += (!pass) as usize;
        qwen_aot::outln!(
            "  {:<44} {:>6} {:>10} {:>9} {:>10}  {}",
            label,
            da + db,
            ma + mb,
            distinct.len(),
            if ids_b == ids_c { "yes" } else { "NO" },
            if pass { "PASS" } else { "FAIL" }
        );
    }
    // Decode step time: greedy graph vs sampled graph (host wall time per step, median).
    let mut step_us = |p: &SamplingParams| -> Result<f64> {
        gpu.set_sampling(p)?;
        let mut next = gpu.prefill(prompt, 0, LogitsWanted::None)?.next_token;
        let mut t = Vec::new();
        for i in 0..64 {
            let start = std::time::Instant::now();
            next = gpu.decode(next, n + i, false)?.next_token;
            t.push(start.elapsed().as_secs_f64() * 1e6);
        }
        t.sort_by(|a, b| a.total_cmp(b));
        Ok(t[t.len() / 2])
    };
    let greedy = step_us(&SamplingParams::default())?;
    let sampled = step_us(&cases[0].1)?;
    gpu.set_sampling(&SamplingParams::default())?;
    qwen_aot::outln!(
        "  decode step, median of 64: greedy {greedy:.1} us, sampled {sampled:.1} us ({:+.1} us)",
        sampled - greedy
    );
    if let Some(used) = gpu.device_memory_used() {
        qwen_aot::outln!("  device memory in use: {:.1} MiB", used as f64 / (1u64 << 20) as f64);
    }
    Ok(failed)
}

/// A fresh temporary directory under the system temp dir (removed by the OS, not by us: the
/// random model is small and useful to look at after a failure).
fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("qwen-aot-check-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
