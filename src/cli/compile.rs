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
    qwen_aot::outln!("ops before and after fusion (prefill: fused; decode: fused + decode passes)");
    qwen_aot::outln!("  {:<24} {:>7} {:>7} {:>7}", "op", "before", "prefill", "decode");
    for n in names {
        qwen_aot::outln!(
            "  {:<24} {:>7} {:>7} {:>7}",
            n,
            count(&hist_before, n),
            count(&hist_after, n),
            count(&hist_decode, n)
        );
    }
    qwen_aot::outln!(
        "  {:<24} {:>7} {:>7} {:>7}",
        "total",
        c.unfused.op_count(),
        c.fused.op_count(),
        c.decode_graph.op_count()
    );
    qwen_aot::outln!("\npasses (in order)");
    for (name, n) in &c.pass_report {
        qwen_aot::outln!("  {name:<26} {n:>5} rewrites");
    }
    qwen_aot::outln!("decode passes (in order, on a copy of the fused graph)");
    for (name, n) in &c.decode_pass_report {
        qwen_aot::outln!("  {name:<26} {n:>5} rewrites");
    }
    let prog = |name: &str, p: &Program| {
        qwen_aot::outln!(
            "  {name:<8} {:>4} launches | arena {} (naive {}, {:.1}x smaller) | {} rows",
            p.steps.len(),
            mib(p.arena_bytes),
            mib(p.naive_arena_bytes),
            p.naive_arena_bytes as f64 / p.arena_bytes.max(1) as f64,
            p.max_tokens
        );
    };
    qwen_aot::outln!("\nprograms");
    prog("decode", &c.plan.decode);
    prog("prefill", &c.plan.prefill);
    let by_format: Vec<String> =
        bytes_by_format(&c.plan.weights).iter().map(|(f, b)| format!("{} {}", f.name(), mib(*b))).collect();
    qwen_aot::outln!(
        "\nweights: {} tensors, {} in weights.bin ({} as used: {})",
        c.plan.weights.len(),
        mib(c.plan.weights_bytes),
        mib(c.plan.weights_len()),
        by_format.join(", ")
    );
    for d in &c.plan.derived {
        let (t, b) = (&c.plan.weights[d.target.0 as usize], &c.plan.weights[d.base.0 as usize]);
        qwen_aot::outln!(
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

/// Refuses a `--dot`/`--svg` path that cannot be written as a file, before the compile: the
/// picture is written last, so a bad path found then cost the whole compile (and its ≈400 MB of
/// weights) first. The path may exist as a file (it is replaced) or be new in an existing
/// directory -- or in `out`, which the compile creates.
fn check_picture_path(p: &Path, out: &Path) -> Result<()> {
    let same_as_out = std::path::absolute(p).ok() == std::path::absolute(out).ok();
    anyhow::ensure!(!same_as_out, "cannot write {}: it is the output directory (--out)", p.display());
    anyhow::ensure!(!p.is_dir(), "cannot write {}: it is a directory (give a file name in it)", p.display());
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // The output directory itself is created by the compile.
    if std::path::absolute(parent).ok() == std::path::absolute(out).ok() && !parent.exists() {
        return Ok(());
    }
    anyhow::ensure!(parent.is_dir(), "cannot write {}: {} is not a directory", p.display(), parent.display());
    // Opened for writing as the real write will, without truncating an existing file; a file
    // created only by this probe is removed again.
    let existed = p.exists();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .with_context(|| format!("cannot write {}", p.display()))?;
    if !existed {
        let _ = std::fs::remove_file(p);
    }
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
        check_picture_path(p, out)?;
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
            qwen_aot::outln!("layer 0 before and after fusion written to {} (Graphviz DOT)", dot_path.display());
        }
        if let Some(svg_path) = svg {
            render_svg(&text, svg_path)?;
            qwen_aot::outln!("layer 0 before and after fusion drawn to {}", svg_path.display());
        }
    }
    let how = if cached { "up to date (same model sha256, compiler version and weight formats)" } else { "compiled" };
    qwen_aot::outln!("{how}: {} -> {} in {:.1} s", gguf.display(), out.display(), start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory (the reviewer's `--dot /tmp`), the output directory itself, or a path in a
    /// missing directory is refused with one line; a new file, an existing file, or a file inside
    /// the output directory the compile will create is accepted -- and the check leaves no file
    /// behind and does not empty an existing one.
    #[test]
    fn picture_paths_are_checked_before_compiling() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let out = t.join("compiled");
        let err = |p: &Path| format!("{:#}", check_picture_path(p, &out).unwrap_err());

        assert_eq!(err(t), format!("cannot write {}: it is a directory (give a file name in it)", t.display()));
        assert_eq!(err(&out), format!("cannot write {}: it is the output directory (--out)", out.display()));
        let missing = t.join("no/such/dir/x.dot");
        assert_eq!(
            err(&missing),
            format!("cannot write {}: {} is not a directory", missing.display(), t.join("no/such/dir").display())
        );
        let under_file = t.join("file.txt/x.dot");
        std::fs::write(t.join("file.txt"), "keep").unwrap();
        assert_eq!(
            err(&under_file),
            format!("cannot write {}: {} is not a directory", under_file.display(), t.join("file.txt").display())
        );

        let fresh = t.join("layer0.dot");
        check_picture_path(&fresh, &out).unwrap();
        assert!(!fresh.exists(), "the probe removes the file it created");
        check_picture_path(&t.join("file.txt"), &out).unwrap();
        assert_eq!(std::fs::read_to_string(t.join("file.txt")).unwrap(), "keep", "an existing file is not emptied");
        check_picture_path(&out.join("layer0.dot"), &out).unwrap();
        assert!(!out.exists(), "the output directory is the compile's to create");
    }
}
