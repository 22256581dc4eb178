//! Reading a whole file whose size a user or a file controls, with a bound: a path to a device
//! (`/dev/zero`), a FIFO or a file far larger than its kind ever is would otherwise be read into
//! memory until the machine runs out. The bound is checked against the file's metadata first (one
//! clear error before any read) and enforced while reading (a file that grows, or one whose size the
//! metadata does not tell, stops at the bound).
use std::io::{self, Read};
use std::path::Path;

/// The bytes of the regular file at `path`, at most `limit` of them. `what` names the file's role
/// in the error ("a prompt file", "tokenizer.json").
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{what} must be a regular file")));
    }
    if meta.len() > limit {
        return Err(too_large(format!("{what} is {} bytes, more than the {limit} it may be", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(format!("{what} grew past {limit} bytes, the most it may be")));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text; invalid UTF-8 is an error naming the first bad byte's offset.
pub fn read_utf8_bounded(path: &Path, limit: u64, what: &str) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit, what)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn too_large(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_file_whole() {
        let dir = std::env::temp_dir().join(format!("qa-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.txt");
        std::fs::write(&f, "héllo").unwrap();
        assert_eq!(read_utf8_bounded(&f, 6, "a test file").unwrap(), "héllo");
        // One byte over the bound: refused from the metadata, before reading.
        let e = read_utf8_bounded(&f, 5, "a test file").unwrap_err();
        assert_eq!(e.to_string(), "a test file is 6 bytes, more than the 5 it may be");
        std::fs::write(&f, b"ab\xffc").unwrap();
        let e = read_utf8_bounded(&f, 100, "a test file").unwrap_err();
        assert!(e.to_string().contains("invalid byte at offset 2"), "{e}");
        // A directory is not read.
        let e = read_bounded(&dir, 100, "a test file").unwrap_err();
        assert!(e.to_string().contains("must be a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_device_is_refused_without_reading() {
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20, "a prompt file").unwrap_err();
        assert!(e.to_string().contains("a prompt file must be a regular file"), "{e}");
    }
}
