//! `qwen-aot cache`: the compiled models in the cache with their sizes and sources;
//! `qwen-aot cache clean [--all]` removes the stale ones (or all of them).
use anyhow::Result;
use qwen_aot::cache::{self, megabytes, Entry};
use qwen_aot::model::{cache_dir, DEFAULT_MODEL_FILE};

/// Lists the cache's entries (`--json`: one object with the cache directory and the entries).
pub fn list(json: bool) -> Result<()> {
    let dir = cache_dir();
    let entries = cache::entries(&dir);
    if json {
        qwen_aot::outln!("{}", serde_json::json!({ "cache": dir, "entries": entries }));
        return Ok(());
    }
    qwen_aot::outln!("compiled models in {}:", dir.join("compiled").display());
    if entries.is_empty() {
        qwen_aot::outln!("  (none)");
    }
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    for e in &entries {
        let what = match (&e.stale, &e.note, &e.source) {
            (Some(why), _, _) => format!("stale: {why}"),
            (None, Some(note), Some(src)) => format!("from {} ({note})", src.display()),
            (None, Some(note), None) => note.clone(),
            (None, None, Some(src)) => format!("from {}", src.display()),
            (None, None, None) => String::new(),
        };
        qwen_aot::outln!("  {:width$}  {:>10}  {what}", e.name, megabytes(e.bytes));
    }
    let (stale, stale_bytes) = totals(entries.iter().filter(|e| e.stale.is_some()));
    let (_, all_bytes) = totals(entries.iter());
    qwen_aot::outln!(
        "{} entr{}, {}; {stale} stale ({}){}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        megabytes(all_bytes),
        megabytes(stale_bytes),
        if stale > 0 { ": `qwen-aot cache clean` removes them" } else { "" }
    );
    let default = dir.join(DEFAULT_MODEL_FILE);
    if let Ok(meta) = std::fs::metadata(&default) {
        qwen_aot::outln!("default model: {} ({}; cache clean keeps it)", default.display(), megabytes(meta.len()));
    }
    Ok(())
}

/// Removes the stale entries, or every entry with `all` (compiles still running are left).
pub fn clean(all: bool) -> Result<()> {
    let removed = cache::clean(&cache_dir(), all);
    for e in &removed {
        let why = e.stale.as_deref().unwrap_or("--all");
        qwen_aot::outln!("removed {} ({}): {why}", e.path.display(), megabytes(e.bytes));
    }
    let (n, bytes) = totals(removed.iter());
    qwen_aot::outln!("removed {n} entr{}, {}", if n == 1 { "y" } else { "ies" }, megabytes(bytes));
    Ok(())
}

fn totals<'a>(entries: impl Iterator<Item = &'a Entry>) -> (usize, u64) {
    entries.fold((0, 0), |(n, b), e| (n + 1, b + e.bytes))
}
