//! The compiler driver: description → unfused graph → passes → schedule → weight table →
//! prefill and decode programs → compiled directory (plan.json, weights.bin, tokenizer.json).
use std::io::Read;
use std::path::Path;

use qwen_aot_plan::integrity::seal_plan;
use qwen_aot_plan::{HyperParams, Plan, PLAN_FILE, PLAN_FORMAT_VERSION, TOKENIZER_FILE, WEIGHTS_FILE};
use sha2::{Digest, Sha256};

use crate::architecture::{Architecture, QWEN2};
use crate::description::Description;
use crate::emit::emit_program;
use crate::error::CompileError;
use crate::graph::{lower::lower, OpGraph};
pub use crate::pack::WeightMode;
use crate::pack::{hex, weight_table, write_weights, WeightTable};
use crate::passes;
use crate::schedule::schedule;
use crate::shapes::check_tensor_shapes;
use crate::source::TensorSource;

/// Compiler version baked into every plan; a runtime only loads plans of its own format.
pub const COMPILER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Rows of the prefill program (longer prompts run in chunks of this many tokens).
    pub prefill_tokens: usize,
    /// How matrices are stored: the GGUF's own formats (default) or all F16.
    pub weights: WeightMode,
    /// The architecture whose description is compiled: a GGUF's is `ModelConfig::architecture`
    /// (from `general.architecture`); random-weight models use the default, Qwen2.
    pub architecture: &'static Architecture,
    /// Store the weights a recipe rebuilds from another one (a tied embedding stored twice) as
    /// that recipe plus a correction ([`crate::derive`]; `qwen-aot compile --no-derive` turns it
    /// off). Native weights only.
    pub derive: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { prefill_tokens: 512, weights: WeightMode::Native, architecture: &QWEN2, derive: true }
    }
}

/// Everything the compiler produced, for writing and for reports.
pub struct Compiled {
    pub plan: Plan,
    pub weights: WeightTable,
    pub unfused: OpGraph,
    pub fused: OpGraph,
    pub pass_report: Vec<(&'static str, usize)>,
    /// The fused graph after the decode passes: what the decode program is emitted from.
    pub decode_graph: OpGraph,
    pub decode_pass_report: Vec<(&'static str, usize)>,
    /// Whether [`write_dir`] derives the weights it can (`CompileOptions::derive`, native only).
    pub derive: bool,
}

/// Compiles the description of `opts.architecture` for `hp` with tensors from `src`.
pub fn build(
    hp: &HyperParams,
    src: &dyn TensorSource,
    model_sha256: &str,
    opts: &CompileOptions,
) -> Result<Compiled, CompileError> {
    if opts.prefill_tokens == 0 || opts.prefill_tokens > 8192 {
        return Err(CompileError::Graph(format!(
            "prefill chunk of {} tokens is out of range 1..=8192",
            opts.prefill_tokens
        )));
    }
    let desc = Description::parse(opts.architecture.description)?;
    let unfused = lower(&desc, hp, &|n| src.dims(n).is_some())?;
    check_tensor_shapes(&unfused, hp, src)?;
    let mut fused = unfused.clone();
    let pass_report = passes::run_all(&mut fused)?;
    let order = schedule(&fused)?;
    let weights = weight_table(&fused, &order, src, opts.weights)?;
    let prefill = emit_program(&fused, &order, opts.prefill_tokens, &weights)?;
    // The decode program (one row, GEMV kernels) folds norms, residual adds, SwiGLU and
    // bias+RoPE+KV write into its matmuls; it uses the same weights as the prefill graph.
    let mut decode_graph = fused.clone();
    let decode_pass_report = passes::run_decode(&mut decode_graph)?;
    let decode_order = schedule(&decode_graph)?;
    let decode = emit_program(&decode_graph, &decode_order, 1, &weights)?;
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        compiler_version: COMPILER_VERSION.to_string(),
        model_sha256: model_sha256.to_string(),
        model_name: None,
        hparams: hp.clone(),
        weights_bytes: weights.total_bytes,
        weights_sha256: String::new(),
        weights_windows: String::new(),
        weights: weights.infos.clone(),
        derived: Vec::new(),
        prefill,
        decode,
        plan_sha256: String::new(),
    };
    let derive = opts.derive && opts.weights == WeightMode::Native;
    Ok(Compiled { plan, weights, unfused, fused, pass_report, decode_graph, decode_pass_report, derive })
}

/// Writes the compiled directory atomically: into `DIR.tmp` first, renamed when complete, so an
/// interrupted compile never leaves a directory that looks valid. A failed write removes its
/// `DIR.tmp` (up to the size of the packed weights) instead of leaving it behind.
pub fn write_dir(
    c: &mut Compiled,
    src: &dyn TensorSource,
    tokenizer_json: Option<&str>,
    dir: &Path,
    progress: impl Fn(u64) + Sync,
) -> Result<(), CompileError> {
    write_dir_with(c, src, tokenizer_json, dir, progress, |_| Ok(()))
}

/// [`write_dir`], with `finish_plan` called on the plan after the weights are written, just
/// before it is sealed and saved: for what is only known by then (the model's SHA-256, when the
/// caller hashes the GGUF while the weights are packed).
pub fn write_dir_with(
    c: &mut Compiled,
    src: &dyn TensorSource,
    tokenizer_json: Option<&str>,
    dir: &Path,
    progress: impl Fn(u64) + Sync,
    finish_plan: impl FnOnce(&mut Plan) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    let dir = &output_path(dir)?;
    check_output_dir(dir)?;
    let tmp = sibling(dir, "tmp");
    check_output_dir(&tmp)?; // a leftover of an interrupted compile, or a user's directory
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| CompileError::io(&tmp, e))?;
    }
    let written = write_into(c, src, tokenizer_json, &tmp, progress, finish_plan).and_then(|()| {
        // Again: packing the weights took a while, and the directory may have changed meanwhile.
        check_output_dir(dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| CompileError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| CompileError::io(dir, e))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // never leave a gigabyte of partial output behind
    }
    written
}

/// Whether a compiled model may be written to `dir`, which [`write_dir`] replaces as a whole: it
/// must not exist, or be an empty directory, or hold a compiled model (no file but the ones
/// `write_dir` writes). Anything else is refused, so that `-o` never deletes a user's files.
pub fn check_output_dir(dir: &Path) -> Result<(), CompileError> {
    let refuse = |why| Err(CompileError::OutputDir { path: dir.display().to_string(), why });
    let dir = &output_path(dir)?;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CompileError::io(dir, e)),
    };
    if meta.is_symlink() {
        return refuse("it is a symbolic link (give the directory it points to)");
    }
    if !meta.is_dir() {
        return refuse("it exists and is not a directory");
    }
    let entries = std::fs::read_dir(dir).map_err(|e| CompileError::io(dir, e))?;
    for entry in entries {
        let name = entry.map_err(|e| CompileError::io(dir, e))?.file_name();
        if ![PLAN_FILE, WEIGHTS_FILE, TOKENIZER_FILE].iter().any(|f| name == *f) {
            return refuse(
                "it is a directory with other files in it (only an empty directory or a compiled model is replaced)",
            );
        }
    }
    Ok(())
}

/// The files of a compiled directory, written into `tmp`.
fn write_into(
    c: &mut Compiled,
    src: &dyn TensorSource,
    tokenizer_json: Option<&str>,
    tmp: &Path,
    progress: impl Fn(u64) + Sync,
    finish_plan: impl FnOnce(&mut Plan) -> Result<(), CompileError>,
) -> Result<(), CompileError> {
    std::fs::create_dir_all(tmp).map_err(|e| CompileError::io(tmp, e))?;
    let wpath = tmp.join(WEIGHTS_FILE);
    let file = std::fs::File::create(&wpath).map_err(|e| CompileError::io(&wpath, e))?;
    // Derived weights leave the file: the table is laid out again before anything is written.
    let mut derived = if c.derive { crate::derive::find(&c.weights, &c.plan, src)? } else { Vec::new() };
    if !derived.is_empty() {
        c.plan.derived = crate::derive::relayout(&mut c.weights, &mut derived);
        c.plan.weights = c.weights.infos.clone();
        c.plan.weights_bytes = c.weights.total_bytes;
    }
    let digest = write_weights(&c.weights, &derived, src, &file, progress)?;
    (c.plan.weights_sha256, c.plan.weights_windows) = (digest.sha256, digest.windows);
    finish_plan(&mut c.plan)?;
    let json = seal_plan(&mut c.plan).map_err(|e| CompileError::Graph(e.to_string()))?;
    std::fs::write(tmp.join(PLAN_FILE), json).map_err(|e| CompileError::io(tmp.join(PLAN_FILE), e))?;
    if let Some(t) = tokenizer_json {
        std::fs::write(tmp.join(TOKENIZER_FILE), t).map_err(|e| CompileError::io(tmp.join(TOKENIZER_FILE), e))?;
    }
    Ok(())
}

/// `dir` made absolute with its `.` components dropped (`-o .` is the current directory, whose
/// temporary sibling must lie outside it), refused when it names no directory of its own (`..`,
/// `/`, a path ending in `..`): replacing it would take its parent's other files along.
fn output_path(dir: &Path) -> Result<std::path::PathBuf, CompileError> {
    let abs = std::path::absolute(dir).map_err(|e| CompileError::io(dir, e))?;
    let clean: std::path::PathBuf = abs.components().filter(|c| *c != std::path::Component::CurDir).collect();
    if clean.file_name().is_none() || clean.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(CompileError::OutputDir {
            path: dir.display().to_string(),
            why: "give a path without `..` that names the output directory itself",
        });
    }
    Ok(clean)
}

/// `DIR.suffix` beside `dir` (not `Path::with_extension`, which would replace a dotted version
/// in the name, `model-v0.1.0` -> `model-v0.1.tmp`, and make different directories share it).
pub fn sibling(dir: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

/// sha256 of a file (hex), streamed.
pub fn sha256_file(path: &Path) -> Result<String, CompileError> {
    sha256_file_with(path, |_| {})
}

/// [`sha256_file`], telling `progress` the bytes hashed so far.
pub fn sha256_file_with(path: &Path, mut progress: impl FnMut(u64)) -> Result<String, CompileError> {
    let mut f = std::fs::File::open(path).map_err(|e| CompileError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| CompileError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex(&h.finalize()))
}
