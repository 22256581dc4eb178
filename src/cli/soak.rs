//! `qwen-aot soak`: many generations in one process, reporting host RSS and device memory
//! before and after; fails if either grows (a leak per generation would show as steady growth).
use std::path::Path;

use anyhow::{bail, Result};

use qwen_aot::backend::{self, BackendChoice};
use qwen_aot::generation::{generate, GenOptions};
use qwen_aot_runtime::executor::Backend;
use qwen_aot_runtime::sampler::SamplingParams;
use qwen_aot_runtime::speculative::NgramDrafter;

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages * 4096
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// `speculation`: the drafter of the generations (`--draft-max`, as `generate`'s; None: plain decoding).
pub fn run(
    model_arg: Option<&Path>,
    backend: BackendChoice,
    n: usize,
    max_tokens: usize,
    speculation: Option<NgramDrafter>,
    quiet: bool,
) -> Result<()> {
    // The context generate would take (its default, at most the model's own): a fixed 1,024 refused
    // models with shorter contexts.
    let mut loaded = backend::load_model(model_arg, backend, None, quiet)?;
    // Alternate greedy and seeded sampling where the backend samples; else greedy only.
    let samples = loaded.session.set_sampling(&SamplingParams { temperature: 0.8, ..Default::default() }).is_ok();
    let prompts = [
        "Write a haiku about GPU computing.",
        "fn fibonacci(n: u64) -> u64 {",
        "The quick brown fox",
        "List three prime numbers:",
    ];
    let one = |i: usize, loaded: &mut backend::Loaded| -> Result<usize> {
        loaded.session.reset();
        let sampling = if i.is_multiple_of(2) || !samples {
            SamplingParams::default()
        } else {
            SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, seed: i as u64, ..Default::default() }
        };
        loaded.session.set_sampling(&sampling)?;
        let ids = loaded.tokenizer.encode(prompts[i % prompts.len()]);
        let g = generate(
            &mut loaded.session,
            &loaded.tokenizer,
            &ids,
            &GenOptions { max_tokens, speculation, ..Default::default() },
            |_| {},
        )?;
        Ok(g.ids.len())
    };
    // Warm-up: first-use allocations (graph capture, caches) are not leaks. On the CPU that
    // includes the derived embedding's frames, which lookups rebuild as new tokens first appear
    // (up to the table's size, 89 MiB for the default model): all of them now.
    for i in 0..5 {
        one(i, &mut loaded)?;
    }
    if loaded.session.executor().backend() == Backend::Cpu {
        loaded.model.weight_store().derived().build_all()?;
    }
    let (rss0, dev0) = (rss_bytes(), loaded.session.executor().device_memory_used());
    let mut tokens = 0;
    let start = std::time::Instant::now();
    for i in 0..n {
        tokens += one(i, &mut loaded)?;
    }
    let (rss1, dev1) = (rss_bytes(), loaded.session.executor().device_memory_used());
    let backend_name = loaded.session.executor().backend().name();
    qwen_aot::outln!(
        "soak: {n} generations, {tokens} tokens in {:.1} s on {backend_name}",
        start.elapsed().as_secs_f64()
    );
    qwen_aot::outln!(
        "  host RSS       before {:>9.1} MiB   after {:>9.1} MiB   growth {:>+8.2} MiB",
        mib(rss0),
        mib(rss1),
        mib(rss1) - mib(rss0)
    );
    match (dev0, dev1) {
        (Some(a), Some(b)) => qwen_aot::outln!(
            "  device memory  before {:>9.1} MiB   after {:>9.1} MiB   growth {:>+8.2} MiB",
            mib(a),
            mib(b),
            mib(b) - mib(a)
        ),
        _ => qwen_aot::outln!("  device memory  (not applicable to this backend)"),
    }
    // Allocator noise is a few pages; a per-generation leak over 200 runs would be far larger.
    if rss1 > rss0 + (8 << 20) {
        bail!("host RSS grew by {:.1} MiB over {n} generations", mib(rss1) - mib(rss0));
    }
    if let (Some(a), Some(b)) = (dev0, dev1) {
        if b > a {
            bail!("device memory grew by {:.1} MiB over {n} generations", mib(b) - mib(a));
        }
    }
    qwen_aot::outln!("  no growth: PASS");
    Ok(())
}
