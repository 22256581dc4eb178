//! What the compile cache holds (`qwen-aot cache`) and which of it is stale (`qwen-aot cache
//! clean`). An entry's source model is known from the sha256 index, which records every model
//! file hashed with its size and modification time: an entry whose recorded sources all changed
//! or disappeared can never be used again, only compiled anew.
use std::path::{Path, PathBuf};

use qwen_aot_runtime::plan::PLAN_FORMAT_VERSION;
use serde::Serialize;

use crate::model::{cache_entry_key, dir_bytes, index_key, parse_index_line, process_gone, staging_owner};

/// One directory under the cache's `compiled/`.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// The model file it was compiled from, when the index records one that is unchanged.
    pub source: Option<PathBuf>,
    /// Why it can be removed; `None` for an entry that may still be used.
    pub stale: Option<String>,
    /// Something to know about a kept entry (its source is not recorded, a compile is running).
    pub note: Option<String>,
}

/// The index's lines, `(key, path, sha256)`, of files that are still as they were hashed, and the
/// others.
struct Index {
    current: Vec<(String, String, String)>,
    changed: Vec<(String, String, String)>,
}

fn read_index(file: &Path) -> Index {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut index = Index { current: Vec::new(), changed: Vec::new() };
    for (key, path, sha) in text.lines().filter_map(parse_index_line) {
        let line = (key.to_string(), path.to_string(), sha.to_string());
        if index_key(Path::new(path)).is_ok_and(|k| k == key) {
            index.current.push(line);
        } else {
            index.changed.push(line);
        }
    }
    index
}

/// Every entry of the cache at `cache` (`$QWEN_AOT_CACHE` or `~/.cache/qwen-aot`), sorted by name.
pub fn entries(cache: &Path) -> Vec<Entry> {
    let index = read_index(&cache.join(crate::model::SHA_INDEX));
    let Ok(dir) = std::fs::read_dir(cache.join("compiled")) else { return Vec::new() };
    let mut out: Vec<Entry> = dir
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let Verdict { stale, note, source } = judge(&name, &index)?;
            let path = e.path();
            Some(Entry { bytes: dir_bytes(&path), name, path, source, stale, note })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What is known of one entry: [`Entry`]'s last three fields.
#[derive(Default)]
struct Verdict {
    stale: Option<String>,
    note: Option<String>,
    source: Option<PathBuf>,
}

/// The verdict on the entry called `name`; `None` for a directory that is not ours.
fn judge(name: &str, index: &Index) -> Option<Verdict> {
    if let Some((_, pid)) = staging_owner(name) {
        return Some(if process_gone(pid) {
            Verdict { stale: Some(format!("an abandoned compile (process {pid} is gone)")), ..Default::default() }
        } else {
            Verdict { note: Some(format!("being compiled by process {pid}")), ..Default::default() }
        });
    }
    let (sha, format) = cache_entry_key(name)?;
    let source = index.current.iter().find(|(_, _, s)| s.starts_with(sha)).map(|(_, p, _)| PathBuf::from(p));
    if format < PLAN_FORMAT_VERSION {
        let why = format!("compiled for plan format {format}; this binary reads {PLAN_FORMAT_VERSION}");
        return Some(Verdict { stale: Some(why), note: None, source });
    }
    let note = (format > PLAN_FORMAT_VERSION).then(|| format!("plan format {format}, for a newer binary"));
    if source.is_some() {
        return Some(Verdict { stale: None, note, source });
    }
    Some(match index.changed.iter().rev().find(|(_, _, s)| s.starts_with(sha)) {
        Some((_, path, _)) => {
            Verdict { stale: Some(format!("its source {path} changed or is gone")), ..Default::default() }
        }
        None => Verdict { note: Some(note.unwrap_or_else(|| "source not recorded".to_string())), ..Default::default() },
    })
}

/// Removes the stale entries (every entry but running compiles with `all`); returns the removed
/// ones. Lines of the sha256 index for files that changed or are gone are dropped too. Best
/// effort: an entry that cannot be removed is left and not returned.
pub fn clean(cache: &Path, all: bool) -> Vec<Entry> {
    let mut removed = Vec::new();
    for e in entries(cache) {
        let running = e.stale.is_none() && staging_owner(&e.name).is_some();
        if (e.stale.is_some() || (all && !running)) && std::fs::remove_dir_all(&e.path).is_ok() {
            removed.push(e);
        }
    }
    prune_index(&cache.join(crate::model::SHA_INDEX));
    removed
}

/// Rewrites the sha256 index without the lines of files that changed or are gone (a new line is
/// added whenever a file is hashed, so they pile up). Written beside and renamed over it, so a
/// reader sees the old index or the new one; a line another process appends meanwhile may be
/// lost, which only costs that model one more hash.
fn prune_index(file: &Path) {
    let index = read_index(file);
    if index.changed.is_empty() {
        return;
    }
    let text: String = index.current.iter().map(|(k, _, sha)| format!("{k}\t{sha}\n")).collect();
    let tmp = file.with_extension(format!("tsv.{}", std::process::id()));
    if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Megabytes, for reports.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
