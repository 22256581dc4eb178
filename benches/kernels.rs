//! Every CUDA kernel at Qwen2.5-0.5B decode shapes (attention at 1k and 4k cached tokens),
//! reported by criterion as bytes/s of the bytes the kernel must move, with the measured
//! device-to-device copy bandwidth printed first as the practical peak.
//!
//! Timing is GPU time from CUDA events around graph replays of 20 back-to-back launches
//! (runtime::cuda::bench), after warm-up, on random (not zero) data. On a machine without a GPU
//! (or a build without nvcc) the bench prints why and does nothing.
//!
//! A second group times whole decode steps of a seeded random-weight model with the full
//! Qwen2.5-0.5B shapes (24 layers), through the CUDA graph and through direct launches: host wall
//! time per token (the latency a user sees: memsets, graph launch, 4-byte copy back, sync).
//!
//! Run on the GPU machine: `cargo bench --bench kernels` (or the carried binary with `--bench`;
//! see scripts/device-test.sh).
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qwen_aot::kernels::IMAGE;
use qwen_aot_compiler::compile::{build, write_dir, CompileOptions};
use qwen_aot_compiler::synthetic::{qwen05b_hparams, random_model_mix, FormatMix};
use qwen_aot_runtime::compiled::{CompiledModel, Integrity};
use qwen_aot_runtime::cuda::bench::{copy_bandwidth_gbps, KernelBench};
use qwen_aot_runtime::cuda::{CudaDevice, CudaExecutor};
use qwen_aot_runtime::executor::{Executor, LogitsWanted};

fn kernels(c: &mut Criterion) {
    let dev = match CudaDevice::new(IMAGE) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kernel benches skipped: {e}");
            return;
        }
    };
    let peak = copy_bandwidth_gbps(&dev).expect("bandwidth probe");
    println!("device: {} ({} SMs); device-to-device copy: {peak:.0} GB/s (read + write)", dev.name(), dev.sm_count());
    let mut summary = Vec::new();
    for ctx_len in [1024usize, 4096] {
        let bench = KernelBench::qwen05b(&dev, ctx_len).expect("bench setup");
        let mut group = c.benchmark_group(format!("decode-0.5b-ctx{ctx_len}"));
        for (i, case) in bench.cases.iter().enumerate() {
            if ctx_len != 1024 && !case.name.starts_with("attention") {
                continue; // only attention depends on the context length
            }
            group.throughput(Throughput::Bytes(case.bytes));
            group.bench_function(&case.name, |b| b.iter_custom(|iters| bench.time(i, iters).expect("bench run")));
            let us = bench.median_us(i, 9).expect("bench run");
            summary.push((case.name.clone(), case.bytes, us));
        }
        group.finish();
    }
    println!("\n{:<40} {:>12} {:>10} {:>10} {:>8}", "kernel", "bytes", "us", "GB/s", "% peak");
    for (name, bytes, us) in summary {
        let gbps = bytes as f64 / (us * 1e-6) / 1e9;
        println!("{name:<40} {bytes:>12} {us:>10.2} {gbps:>10.1} {:>7.1}%", 100.0 * gbps / peak);
    }
}

/// Seeded random weights, Qwen2.5-0.5B shapes, compiled into a temporary directory.
fn random_05b() -> Option<std::path::PathBuf> {
    let hp = qwen05b_hparams(24);
    let dir = std::env::temp_dir().join(format!("qwen-aot-bench-{}", std::process::id())).join("random-0.5b");
    let src = random_model_mix(&hp, true, 7, &FormatMix::f16());
    let mut c = build(&hp, &src, "random-seed-7", &CompileOptions::default()).ok()?;
    write_dir(&mut c, &src, None, &dir, |_| {}).ok()?;
    Some(dir)
}

fn decode_step(c: &mut Criterion) {
    if CudaDevice::new(IMAGE).is_err() {
        return; // reported by the kernel group
    }
    let Some(dir) = random_05b() else {
        eprintln!("decode bench skipped: could not compile the random model");
        return;
    };
    let model = CompiledModel::open(&dir, Integrity::Sampled).expect("open the random model");
    // Tied embedding: the LM head streams the whole table, so every weight is read once per token.
    let weight_bytes: u64 = model.plan.weights.iter().map(|w| w.bytes).sum();
    let mut summary = Vec::new();
    for graph in [true, false] {
        // SAFETY (set_var): single-threaded at this point; read once by CudaExecutor::new.
        std::env::set_var("QWEN_AOT_NO_GRAPH", if graph { "0" } else { "1" });
        let mut ex = CudaExecutor::new(&model, IMAGE, 4096).expect("CUDA executor");
        let prompt: Vec<u32> = (0..64u32).map(|i| (i * 7919) % 151936).collect();
        let mut next = ex.prefill(&prompt, 0, LogitsWanted::None).expect("prefill").next_token;
        let mut pos = prompt.len();
        let mut step = |ex: &mut CudaExecutor| -> Duration {
            if pos + 1 >= 4096 {
                pos = prompt.len();
            }
            let t0 = Instant::now();
            next = ex.decode(next, pos, false).expect("decode").next_token;
            pos += 1;
            t0.elapsed()
        };
        for _ in 0..20 {
            step(&mut ex); // warm-up (and graph capture)
        }
        let name = if graph { "decode step (graph)" } else { "decode step (direct launches)" };
        let mut group = c.benchmark_group("decode-0.5b-random");
        group.throughput(Throughput::Bytes(weight_bytes));
        group.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| step(&mut ex)).sum()));
        group.finish();
        let mut v: Vec<f64> = (0..300).map(|_| step(&mut ex).as_secs_f64() * 1e6).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        summary.push((name, v[v.len() / 2], ex.decode_launches(), ex.device().pdl()));
    }
    std::env::remove_var("QWEN_AOT_NO_GRAPH");
    println!(
        "\n{:<32} {:>10} {:>10} {:>10} {:>9} {:>5}",
        "decode (random 0.5B, ctx ~64-364)", "us/token", "tokens/s", "GB/s", "launches", "PDL"
    );
    for (name, us, launches, pdl) in summary {
        println!(
            "{name:<32} {us:>10.1} {:>10.0} {:>10.0} {launches:>9} {pdl:>5}",
            1e6 / us,
            weight_bytes as f64 / (us * 1e-6) / 1e9
        );
    }
    println!("(weights streamed per token, tied embedding = LM head: {:.3} GB)", weight_bytes as f64 / 1e9);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
}

criterion_group!(benches, kernels, decode_step);
criterion_main!(benches);
