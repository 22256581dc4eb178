//! `qwen-aot compile`: build-time model compilation with a report of what the compiler did.
use std::path::Path;

use anyhow::{Context, Result};
use qwen_aot_compiler::compile::{build, CompileOptions, Compiled, WeightMode, COMPILER_VERSION};
use qwen_aot_compiler::graph::dot::side_by_side;
use qwen_aot_compiler::hparams::ModelConfig;
use qwen_aot_compiler::pack::bytes_by_format;
use qwen_aot_runtime::plan::{Plan, Program, PLAN_FILE, PLAN_FORMAT_VERSION, WEIGHTS_FILE};

use qwen_aot::model;

/// `--weights`: how matrices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// The GGUF's own formats (quantized weights stay quantized).
    Native,
    /// Every matrix dequantised to f16 (the path before plan format 5, for comparison).
    F16,
}

impl From<WeightsChoice> for WeightMode {
    fn from(w: WeightsChoice) -> Self {
        match w {
            WeightsChoice::Native => WeightMode::Native,
            WeightsChoice::F16 => WeightMode::F16,
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

pub fn report(c: &Compiled) {
    let hist_before = c.unfused.op_histogram();
    let hist_after = c.fused.op_histogram();
    let hist_decode = c.decode_graph.op_histogram();
    let mut names: Vec<&str> =
        hist_before.iter().chain(&hist_after).chain(&hist_decode).map(|(n, _)| *n).filter(|n| *n != "tokens").collect();
    names.sort();
    names.dedup();
    let count = |h: &[(&str, usize)], n: &str| h.iter().find(|(k, _)| *k == n).map_or(0, |(_, c)| *c);
    println!("ops before and after fusion (prefill: fused; decode: fused + decode passes)");
    println!("  {:<24} {:>7} {:>7} {:>7}", "op", "before", "prefill", "decode");
    for n in names {
        println!(
            "  {:<24} {:>7} {:>7} {:>7}",
            n,
            count(&hist_before, n),
            count(&hist_after, n),
            count(&hist_decode, n)
        );
    }
    println!(
        "  {:<24} {:>7} {:>7} {:>7}",
        "total",
        c.unfused.op_count(),
        c.fused.op_count(),
        c.decode_graph.op_count()
    );
    println!("\npasses (in order)");
    for (name, n) in &c.pass_report {
        println!("  {name:<26} {n:>5} rewrites");
    }
    println!("decode passes (in order, on a copy of the fused graph)");
    for (name, n) in &c.decode_pass_report {
        println!("  {name:<26} {n:>5} rewrites");
    }
    let prog = |name: &str, p: &Program| {
        println!(
            "  {name:<8} {:>4} launches | arena {} (naive {}, {:.1}x smaller) | {} rows",
            p.steps.len(),
            mib(p.arena_bytes),
            mib(p.naive_arena_bytes),
            p.naive_arena_bytes as f64 / p.arena_bytes.max(1) as f64,
            p.max_tokens
        );
    };
    println!("\nprograms");
    prog("decode", &c.plan.decode);
    prog("prefill", &c.plan.prefill);
    let by_format: Vec<String> =
        bytes_by_format(&c.plan.weights).iter().map(|(f, b)| format!("{} {}", f.name(), mib(*b))).collect();
    println!(
        "\nweights: {} tensors, {} in weights.bin ({} as used: {})",
        c.plan.weights.len(),
        mib(c.plan.weights_bytes),
        mib(c.plan.weights_len()),
        by_format.join(", ")
    );
    for d in &c.plan.derived {
        let (t, b) = (&c.plan.weights[d.target.0 as usize], &c.plan.weights[d.base.0 as usize]);
        println!(
            "  {} ({}) derived from {} at load: correction {} in {} frames",
            t.name,
            mib(t.bytes),
            b.name,
            mib(d.frames.iter().sum()),
            d.frames.len()
        );
    }
}

/// The plan in `out` if it was compiled from this model by this compiler with `opts`' prefill
/// size (whether its weight formats match `opts` is decided by the caller, from the weight table).
fn previous_plan(out: &Path, sha: &str, opts: &CompileOptions) -> Option<Plan> {
    let text = std::fs::read_to_string(out.join(PLAN_FILE)).ok()?;
    let plan = serde_json::from_str::<Plan>(&text).ok()?;
    let same = plan.model_sha256 == sha
        && plan.compiler_version == COMPILER_VERSION
        && plan.format_version == PLAN_FORMAT_VERSION
        && plan.prefill.max_tokens == opts.prefill_tokens
        && out.join(WEIGHTS_FILE).metadata().is_ok_and(|m| m.len() == plan.weights_bytes);
    same.then_some(plan)
}

/// Whether `plan` holds the weights `c` would write: the same table (names, shapes, formats)
/// and, derived or not, as `c`'s options say (offsets differ once weights are derived).
fn same_weights(c: &Compiled, plan: &Plan) -> bool {
    let key = |w: &qwen_aot_runtime::plan::WeightInfo| {
        (w.name.clone(), w.shape.clone(), w.parts.iter().map(|p| (p.rows, p.format)).collect::<Vec<_>>())
    };
    let derivable = c.derive && qwen_aot_compiler::derive::has_candidates(&c.weights, &c.plan);
    c.plan.weights.len() == plan.weights.len()
        && c.plan.weights.iter().zip(&plan.weights).all(|(a, b)| key(a) == key(b))
        && derivable != plan.derived.is_empty()
}

/// Renders DOT to SVG with Graphviz's `dot`, which must be installed.
fn render_svg(dot_text: &str, out: &Path) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .arg("-o")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context(
            "--svg needs Graphviz's `dot` on PATH (e.g. apt-get install graphviz); --dot writes the DOT text instead",
        )?;
    child.stdin.take().context("dot stdin")?.write_all(dot_text.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "Graphviz `dot` failed ({status})");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    model_arg: Option<&Path>,
    out: &Path,
    dot: Option<&Path>,
    svg: Option<&Path>,
    prefill_tokens: usize,
    weights: WeightsChoice,
    derive: bool,
    quiet: bool,
) -> Result<()> {
    let gguf = model::gguf_path(model_arg)?;
    let sha = model::model_sha256(&gguf)?;
    let opts = CompileOptions { prefill_tokens, weights: weights.into(), derive, ..Default::default() };
    // Up to date when the weight table `opts` gives (graph work only, no packing) is the one in
    // `out`: that tells `--weights f16` from native plans.
    let up_to_date = match previous_plan(out, &sha, &opts) {
        Some(plan) => {
            let g = model::open_gguf(&gguf)?;
            let cfg = ModelConfig::from_gguf(&g)?;
            let c = build(&cfg.hparams, &g, &sha, &CompileOptions { architecture: cfg.architecture, ..opts.clone() })?;
            // Reported as compiled before: the plan on disk (derived weights laid out) is the truth.
            same_weights(&c, &plan).then_some(Compiled { plan, ..c })
        }
        None => None,
    };
    let cached = up_to_date.is_some();
    // Everything that can be refused is refused before the minute of compiling.
    if !cached {
        qwen_aot_compiler::compile::check_output_dir(out)?;
    }
    for p in dot.iter().chain(svg.iter()) {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // The output directory itself is created by the compile.
        let will_exist = std::path::absolute(parent).ok() == std::path::absolute(out).ok();
        anyhow::ensure!(
            parent.is_dir() || will_exist,
            "cannot write {}: {} is not a directory",
            p.display(),
            parent.display()
        );
    }
    if svg.is_some() {
        std::process::Command::new("dot")
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("--svg needs Graphviz's `dot` on PATH (e.g. apt-get install graphviz); --dot writes the DOT text instead")?;
    }
    let start = std::time::Instant::now();
    let compiled = match up_to_date {
        Some(c) => c,
        None => model::compile_gguf(&gguf, out, &opts, Some(&sha), quiet)?,
    };
    report(&compiled);
    if dot.is_some() || svg.is_some() {
        let text = side_by_side(
            &compiled.unfused,
            "layer 0, unfused (description)",
            &compiled.fused,
            "layer 0, fused (plan)",
            Some(0),
        );
        if let Some(dot_path) = dot {
            std::fs::write(dot_path, &text).with_context(|| format!("writing {}", dot_path.display()))?;
            println!("layer 0 before and after fusion written to {} (Graphviz DOT)", dot_path.display());
        }
        if let Some(svg_path) = svg {
            render_svg(&text, svg_path)?;
            println!("layer 0 before and after fusion drawn to {}", svg_path.display());
        }
    }
    let how = if cached { "up to date (same model sha256, compiler version and weight formats)" } else { "compiled" };
    println!("{how}: {} -> {} in {:.1} s", gguf.display(), out.display(), start.elapsed().as_secs_f64());
    Ok(())
}
