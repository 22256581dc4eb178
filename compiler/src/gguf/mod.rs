//! GGUF reader: parses GGUF v2/v3 files (llama.cpp's model format) into metadata, tensor infos and
//! tensor bytes, and dequantizes ggml tensor types to f32.
//!
//! Untrusted input is the normal case here (users point the compiler at downloaded files), so the
//! reader validates everything up front, never panics on file data and never allocates by a count
//! from the file before checking it against the bytes that remain. Files:
//! - [`error`]: the [`GgufError`] enum;
//! - `reader`: the bounds-checked little-endian cursor;
//! - [`value`]: metadata values;
//! - [`tensor`]: tensor infos;
//! - [`dtype`]: ggml type ids and block sizes;
//! - `file`: [`GgufFile`], the parsed file;
//! - `dequant`: per-family dequantisation kernels;
//! - `writer`: [`GgufBuilder`], a small GGUF writer for tests, synthetic models and the fuzzer.
mod dequant;
pub mod dtype;
pub mod error;
mod file;
mod reader;
pub mod tensor;
pub mod value;
mod writer;

pub use dequant::dequantize;
pub(crate) use dequant::q3_k_scales;
pub use dtype::{GgmlType, QK_K};
pub use error::GgufError;
pub use file::{GgufFile, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use tensor::{TensorInfo, MAX_DIMS};
pub use value::{GgufValue, MAX_ARRAY_DEPTH};
pub use writer::GgufBuilder;
