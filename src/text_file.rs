//! Reading a small UTF-8 text file a flag names (a grammar, a schema, a chat template) with one
//! clear error for each way it can be wrong, and a size bound so that a wrong path (a model, a
//! device) is refused instead of read into memory.
use std::path::Path;

use anyhow::{Context, Result};

/// The text of `path`, at most `limit` bytes; `what` names it in the errors.
pub fn read_utf8(path: &Path, limit: u64, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a file", path.display());
    anyhow::ensure!(meta.len() <= limit, "{} is {} bytes: too large for {what}", path.display(), meta.len());
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))
}
