//! `qwen-aot check --backend cpu` (and `--backend auto` without a usable GPU): the CPU executor's
//! quantized dot products and dequantisation, the paths this CPU takes (AVX2 or portable), against
//! the reference dequantisation on random blocks of every format. The CPU executor is the oracle
//! the GPU is checked against; these checks are what make it one on this machine.
use anyhow::{bail, Result};
use qwen_aot_runtime::cpu::qdot::{check::check_every_format, has_avx2};

pub fn run(seed: u64) -> Result<()> {
    let path = if has_avx2() { "AVX2" } else { "portable" };
    qwen_aot::outln!(
        "CPU executor ({path} path): quantized dot products and dequantisation vs the reference (seed {seed})"
    );
    qwen_aot::outln!(
        "  {:<6} {:<16} {:>5} {:>12} {:>14}  result",
        "format",
        "row lengths",
        "dots",
        "worst error",
        "dequant"
    );
    let rows = check_every_format(seed);
    for c in &rows {
        let ks = c.ks.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",");
        qwen_aot::outln!(
            "  {:<6} {:<16} {:>5} {:>11.3}x {:>14}  {}",
            c.format.name(),
            ks,
            c.dots,
            c.worst,
            if c.dequant_exact { "bit-exact" } else { "DIFFERS" },
            if c.pass() { "PASS" } else { "FAIL" }
        );
    }
    qwen_aot::outln!("  (worst error: |dot - exact| over its rounding bound; at most 1x passes)");
    let failed = rows.iter().filter(|c| !c.pass()).count();
    if failed > 0 {
        bail!("{failed} check(s) FAILED");
    }
    qwen_aot::outln!("\nall checks PASS");
    Ok(())
}
