//! The one error type of the GGUF reader.
//!
//! Every variant names the problem, the offending value and, where it comes from the file, the
//! byte offset at which it was found, so that a user holding a broken or unusual file can tell what
//! is wrong without a hex editor. The reader never panics on file data: every failure ends here.
use std::path::PathBuf;

use super::dtype::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read GGUF file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("not a GGUF file: it starts with {} (a GGUF starts with \"GGUF\")", show_magic(found))]
    BadMagic { found: Vec<u8> },

    #[error("unsupported GGUF version {version} (qwen-aot reads versions 2 and 3)")]
    UnsupportedVersion { version: u32 },

    #[error("big-endian GGUF file (version field reads {version:#010x}); qwen-aot reads only little-endian GGUF")]
    BigEndian { version: u32 },

    #[error(
        "truncated GGUF file: reading {what} at offset {offset} needs {needed} bytes, but only {available} remain"
    )]
    Truncated { what: String, offset: u64, needed: u64, available: u64 },

    #[error("{what} {count} at offset {offset} is impossible: it needs at least {min_bytes} bytes, but only {available} remain (corrupt or truncated file)")]
    CountTooLarge { what: String, count: u64, offset: u64, min_bytes: u128, available: u64 },

    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        what: String,
        offset: u64,
        #[source]
        source: std::str::Utf8Error,
    },

    #[error("unknown metadata value type id {type_id} at offset {offset} (key {key:?})")]
    UnknownValueType { type_id: u32, offset: u64, key: String },

    #[error("invalid bool value {value} at offset {offset} (key {key:?}); expected 0 or 1")]
    InvalidBool { value: u8, offset: u64, key: String },

    #[error("arrays nested deeper than {max} levels at offset {offset} (key {key:?})")]
    ArrayTooDeep { max: usize, offset: u64, key: String },

    #[error("duplicate metadata key {key:?} at offset {offset}")]
    DuplicateKey { key: String, offset: u64 },

    #[error("invalid general.alignment {value}: must be an integer, a non-zero power of two that fits in u32")]
    BadAlignment { value: String },

    #[error("duplicate tensor name {name:?} at offset {offset}")]
    DuplicateTensor { name: String, offset: u64 },

    #[error("tensor {name:?} (info at offset {offset}) has {n_dims} dimensions; at most 4 are supported")]
    TooManyDims { name: String, n_dims: u32, offset: u64 },

    #[error("tensor {name:?} (info at offset {offset}) has an unknown ggml type id {type_id}")]
    UnknownDtype { name: String, type_id: u32, offset: u64 },

    #[error("tensor {name:?} (info at offset {offset}): element count of dims {dims:?} overflows")]
    ElementCountOverflow { name: String, dims: Vec<u64>, offset: u64 },

    #[error("tensor {name:?} (info at offset {offset}): row length {row} is not a multiple of the {dtype} block size {block}")]
    RowNotBlockMultiple { name: String, dtype: GgmlType, row: u64, block: u64, offset: u64 },

    #[error("tensor {name:?}: data offset {data_offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor { name: String, data_offset: u64, alignment: u64 },

    #[error(
        "tensor {name:?}: data [{start}, {end}) (absolute file offsets) lies outside the file of {file_len} bytes"
    )]
    TensorOutOfBounds { name: String, start: u128, end: u128, file_len: u64 },

    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },

    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: &'static str },

    #[error("metadata key {key:?} has value {value}, which is out of range for {expected}")]
    OutOfRange { key: String, value: String, expected: &'static str },

    #[error("dequantisation of {dtype} is not supported")]
    UnsupportedDequant { dtype: GgmlType },

    #[error("cannot dequantize {n_elements} {dtype} elements: not a multiple of the block size {block}")]
    DequantNotBlockMultiple { dtype: GgmlType, n_elements: usize, block: usize },

    #[error("cannot dequantize {n_elements} {dtype} elements: need {expected} bytes, got {got}")]
    DequantSize { dtype: GgmlType, n_elements: usize, expected: u128, got: usize },

    #[error("cannot write metadata key {key:?} as GGUF: {reason}")]
    Unencodable { key: String, reason: String },
}

/// The first bytes of a file as a quoted string, non-printable bytes escaped (`"\x00\x01ab"`).
fn show_magic(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}
