//! The decode integer dot per format at the default model's matrix shapes (random weights and
//! input): best of many passes over every row, as ns per group of 32 per thread. A matrix that
//! fits the L2 cache, the L3 cache or neither tells compute from memory limits; one thread runs
//! without rayon (no fork/join cost), more threads split 16-row chunks as `qmatmul` does.
//! `cargo run --release -p qwen-aot-runtime --features harness --example qdot_shapes -- [threads]`
//! (`ONLY=q5_0` runs the cases whose name contains it; the digits are the decode path's:
//! `QWEN_AOT_CPU_DOT=int3` for all three).
use std::time::Instant;

use qwen_aot_runtime::cpu::qdot::check::{random_part, Rng};
use qwen_aot_runtime::cpu::qdot::{decode_path, dot_rows_int, Digits, IntDigits};
use qwen_aot_runtime::quant::{PartView, WeightFormat};
use rayon::prelude::*;

fn main() {
    let threads: usize = match std::env::args().nth(1).map(|s| s.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: qdot_shapes [THREADS] (a positive thread count; default 1)");
            std::process::exit(2);
        }
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
    let only = std::env::var("ONLY").unwrap_or_default();
    let n = decode_path().int_digits().unwrap_or(IntDigits::Two);
    let cases = [
        ("q5_0 gate_up (L3)", WeightFormat::Q5_0, 9728, 896),
        ("q5_0 l2", WeightFormat::Q5_0, 256, 896),
        ("q5_0 dram", WeightFormat::Q5_0, 9728 * 24, 896),
        ("q5_0 k4864", WeightFormat::Q5_0, 1792, 4864),
        ("q6_k down (L3)", WeightFormat::Q6_K, 896, 4864),
        ("q4_k down (L3)", WeightFormat::Q4_K, 896, 4864),
        ("q8_0 l2", WeightFormat::Q8_0, 256, 896),
        ("q8_0 lm head (dram)", WeightFormat::Q8_0, 151936, 896),
    ];
    let mut rng = Rng(7);
    for (name, f, rows, k) in cases.into_iter().filter(|c| c.0.contains(only.as_str())) {
        let bytes = random_part(f, rows, k, &mut rng);
        let v = PartView::new(f, rows, k, &bytes).expect("a valid part");
        let x: Vec<f32> = (0..k).map(|_| rng.unit()).collect();
        let d = Digits::quantize(&x);
        let mut out = vec![0.0f32; rows];
        let mut best = f64::MAX;
        for _ in 0..(400_000_000 / (rows * k)).max(3) {
            let t = Instant::now();
            if threads == 1 {
                out.chunks_mut(16).enumerate().for_each(|(c, o)| dot_rows_int(&v, 16 * c, &d, o, n));
            } else {
                pool.install(|| {
                    out.par_chunks_mut(16).enumerate().for_each(|(c, o)| dot_rows_int(&v, 16 * c, &d, o, n))
                });
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let groups = (rows * k / 32) as f64;
        println!(
            "{name:20} {:8.3} ms {:6.2} ns/group/thread {:6.2} GB/s",
            best * 1e3,
            best * 1e9 * threads as f64 / groups,
            bytes.len() as f64 / best / 1e9
        );
        std::hint::black_box(&out);
    }
}
