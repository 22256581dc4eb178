//! Reading a UTF-8 text file a flag names (a prompt, a perplexity text, a reference file, a
//! grammar, a schema, a chat template) with one clear error for each way it can be wrong, and a
//! size bound so that a wrong path (a model, a device such as `/dev/zero`) is refused instead of
//! read into memory until the machine runs out.
use std::path::Path;

use anyhow::Result;
use qwen_aot_runtime::bounded_read::read_utf8_bounded;

/// A prompt file (`generate -f`): a context of 32 K tokens is ≈ 130 KB of text; the bound leaves
/// room for much longer contexts and refuses what no prompt is.
pub const MAX_PROMPT_FILE_BYTES: u64 = 64 << 20;
/// A text to score (`perplexity --file`): corpora such as wikitext-103's test split are a few MB.
pub const MAX_PERPLEXITY_FILE_BYTES: u64 = 1 << 30;
/// A reference file (`refcheck --refs`): the default model's is 0.1 MB.
pub const MAX_REFS_FILE_BYTES: u64 = 64 << 20;

/// The text of `path`, at most `limit` bytes (`qwen_aot_runtime::bounded_read`); `what` names it
/// in the errors, which start with "reading PATH".
pub fn read_utf8(path: &Path, limit: u64, what: &str) -> Result<String> {
    read_utf8_bounded(path, limit, what).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_errors() {
        let dir = std::env::temp_dir().join(format!("qa-text-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.txt");
        std::fs::write(&f, "def f():").unwrap();
        assert_eq!(read_utf8(&f, 8, "a prompt").unwrap(), "def f():");
        let e = read_utf8(&f, 7, "a prompt").unwrap_err().to_string();
        assert_eq!(e, format!("reading {}: a prompt is 8 bytes, more than the 7 it may be", f.display()));
        std::fs::write(&f, b"ok\xc3").unwrap();
        let e = read_utf8(&f, 100, "a prompt").unwrap_err().to_string();
        assert_eq!(e, format!("reading {}: a prompt is not UTF-8 text (invalid byte at offset 2)", f.display()));
        let e = read_utf8(&dir, 100, "a prompt").unwrap_err().to_string();
        assert_eq!(e, format!("reading {}: a prompt must be a regular file", dir.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_not_read() {
        let e = read_utf8(Path::new("/dev/zero"), MAX_PROMPT_FILE_BYTES, "a prompt").unwrap_err().to_string();
        assert_eq!(e, "reading /dev/zero: a prompt must be a regular file");
    }
}
