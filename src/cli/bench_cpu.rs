//! `qwen-aot bench --backend cpu`: the CPU executor's speed on a model: decode tokens/s after a
//! one-token prompt, prefill tokens/s for one prompt chunk, and the weight bytes each decoded
//! token streams (with the rate that makes). Wall-clock medians over `--reps`; the sizes shrink
//! to fit a small model's context. Also what speculative decoding's verify pass of 2, 4 and 8
//! rows costs against a decode step.
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use qwen_aot_compiler::synthetic::Rng;
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cpu::qdot::{has_avx2, has_vnni};
use qwen_aot_runtime::cpu::CpuExecutor;
use qwen_aot_runtime::executor::{Executor, LogitsWanted};
use serde::Serialize;

use super::bench::{median, weight_bytes_per_token};

#[derive(Serialize)]
struct CpuBenchReport {
    backend: &'static str,
    model: String,
    threads: usize,
    /// `avx2` or `portable`: the quantized dot products' path on this CPU.
    kernels: &'static str,
    decode_tokens: usize,
    decode_tok_s: f64,
    prefill_tokens: usize,
    prefill_tok_s: f64,
    weight_bytes_per_token: u64,
    /// Weight bytes streamed per second while decoding.
    decode_weight_gb_s: f64,
    /// Speculative decoding's check: one pass over `rows` rows, in ms and in decode steps.
    verify: Vec<VerifyCost>,
}

#[derive(Serialize)]
struct VerifyCost {
    rows: usize,
    ms: f64,
    decode_steps: f64,
}

pub fn run(dir: &Path, json: bool, reps: usize) -> Result<()> {
    let compiled =
        CompiledModel::open(dir, Integrity::Sampled).with_context(|| format!("loading {}", dir.display()))?;
    let hp = compiled.plan.hparams.clone();
    // 32 decoded tokens and one 128-token prefill chunk, fewer when the context is smaller.
    let n_decode = 32.min(hp.context_length / 2).max(1);
    let mut exec = CpuExecutor::new(&compiled, (n_decode + 1).max(128.min(hp.context_length)))?;
    let n_prefill = 128.min(exec.max_seq()).min(exec.max_prefill_tokens());
    let mut rng = Rng::new(3);
    let prompt: Vec<u32> = (0..n_prefill).map(|_| (rng.next_u64() % hp.vocab as u64) as u32).collect();

    let decode = |exec: &mut CpuExecutor| -> Result<f64> {
        let mut next = exec.prefill(&prompt[..1], 0, LogitsWanted::None)?.next_token;
        let start = Instant::now();
        for i in 0..n_decode {
            next = exec.decode(next, 1 + i, false)?.next_token;
        }
        Ok(n_decode as f64 / start.elapsed().as_secs_f64())
    };
    decode(&mut exec)?; // warm-up: page in the weights, start the thread pool
    let decode_tok_s = median((0..reps).map(|_| decode(&mut exec)).collect::<Result<_>>()?);
    let prefill_tok_s = median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                exec.prefill(&prompt, 0, LogitsWanted::None)?;
                Ok(n_prefill as f64 / start.elapsed().as_secs_f64())
            })
            .collect::<Result<_>>()?,
    );
    // A verify pass at the depth the decode runs ended at, rows of the same random tokens.
    let (room, chunk) = (exec.max_seq() - 1 - n_decode, exec.max_prefill_tokens());
    let verify = [2, 4, 8]
        .into_iter()
        .filter(|&r| r <= room && r <= chunk)
        .map(|rows| {
            let ms = median(
                (0..reps.max(3))
                    .map(|_| {
                        let start = Instant::now();
                        exec.verify(&prompt[..rows], 1 + n_decode)?;
                        Ok(start.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect::<Result<_>>()?,
            );
            Ok(VerifyCost { rows, ms, decode_steps: ms * decode_tok_s / 1e3 })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = weight_bytes_per_token(&compiled.plan);
    let r = CpuBenchReport {
        backend: "cpu",
        model: dir.display().to_string(),
        threads: rayon::current_num_threads(),
        // The integer dot's instruction set (AVX512-VNNI where present and not turned off).
        kernels: if has_vnni() {
            "avx512-vnni"
        } else if has_avx2() {
            "avx2"
        } else {
            "portable"
        },
        decode_tokens: n_decode,
        decode_tok_s,
        prefill_tokens: n_prefill,
        prefill_tok_s,
        weight_bytes_per_token: bytes,
        decode_weight_gb_s: bytes as f64 * decode_tok_s / 1e9,
        verify,
    };
    if json {
        qwen_aot::outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    qwen_aot::outln!("backend                     CPU ({} threads, {} kernels)", r.threads, r.kernels);
    qwen_aot::outln!("model                       {}", r.model);
    qwen_aot::outln!(
        "decode, depth 0             {:>9.1} tokens/s  (median of {reps} x {n_decode} tokens)",
        r.decode_tok_s
    );
    qwen_aot::outln!("prefill, {:>4}-token prompt  {:>9.1} tokens/s", n_prefill, r.prefill_tok_s);
    qwen_aot::outln!("weights read per token      {:>9.1} MB", bytes as f64 / 1e6);
    qwen_aot::outln!("weights streamed, decoding  {:>9.2} GB/s", r.decode_weight_gb_s);
    for v in &r.verify {
        qwen_aot::outln!("verify pass, {} rows         {:>9.1} ms = {:.2} decode steps", v.rows, v.ms, v.decode_steps);
    }
    Ok(())
}
