//! [`GgufFile`]: a parsed GGUF v2/v3 file, memory-mapped (or owned), with its metadata in file
//! order, its tensor infos and bounds-checked access to each tensor's bytes.
//!
//! All validation happens once, in [`GgufFile::parse_bytes`] / [`GgufFile::open`]: after that,
//! [`GgufFile::tensor_bytes`] cannot fail for the file's own tensors. Layout (little-endian):
//! magic "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata key/value pairs,
//! tensor infos, padding to `general.alignment` (default 32), then the data section.
use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;

use super::dequant;
use super::error::GgufError;
use super::reader::Cursor;
use super::tensor::{read_tensor_info, TensorInfo, MIN_TENSOR_INFO_SIZE};
use super::value::{read_value, GgufValue};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of each tensor's data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Smallest encoded metadata pair: key length (8) + value type (4) + a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_len", &self.storage.bytes().len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// What the parser extracts from the bytes; everything is owned so the storage can move.
struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Memory-maps and parses the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            // Mapping an empty file is not portable; there is nothing to map anyway.
            return Self::parse_bytes(Vec::new());
        }
        // SAFETY: the map is read-only and private to this process, and `GgufFile` only ever
        // hands out shared slices of it. The usual mmap caveat applies: a model file must not be
        // truncated or rewritten by another process while it is open (that would be a SIGBUS or
        // changed bytes, as with every mmap-based model loader); qwen-aot never writes GGUF files.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let parsed = parse(&map)?;
        Ok(Self::from_parts(Storage::Mmap(map), parsed))
    }

    /// Parses a GGUF file held in memory (tests, the fuzzer).
    pub fn parse_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let parsed = parse(&bytes)?;
        Ok(Self::from_parts(Storage::Owned(bytes), parsed))
    }

    fn from_parts(storage: Storage, p: Parsed) -> GgufFile {
        GgufFile {
            storage,
            version: p.version,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
            alignment: p.alignment,
            data_offset: p.data_offset,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata key/value pairs in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// Any integer type with a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        match (v.as_u64(), v.as_i64()) {
            (Some(u), _) => Ok(u),
            (None, Some(i)) => Err(GgufError::OutOfRange {
                key: key.to_string(),
                value: i.to_string(),
                expected: "an unsigned integer",
            }),
            (None, None) => Err(wrong_type(key, "an integer", v)),
        }
    }

    /// f32 or f64 (an f64 is rounded to the nearest f32).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64().map(|f| f as f32).ok_or_else(|| wrong_type(key, "a float", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| wrong_type(key, "bool", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&[GgufValue], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "array", v))
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of tensor `t`. Bounds were validated at parse time; a `TensorInfo` that does
    /// not come from this file and lies outside it yields an empty slice.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let range = (|| {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.n_bytes).ok()?)?;
            Some(start..end)
        })();
        range.and_then(|r| self.storage.bytes().get(r)).unwrap_or(&[])
    }

    /// Tensor `t` converted to f32, in GGUF element order (row-major with `dims[0]` fastest).
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let n = usize::try_from(t.n_elements).map_err(|_| GgufError::DequantSize {
            dtype: t.dtype,
            n_elements: usize::MAX,
            expected: t.n_bytes.into(),
            got: 0,
        })?;
        dequant::dequantize(t.dtype, self.tensor_bytes(t), n)
    }

    /// The data alignment in force (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }
}

fn wrong_type(key: &str, expected: &'static str, v: &GgufValue) -> GgufError {
    GgufError::WrongType { key: key.to_string(), expected, found: v.type_name() }
}

fn parse(bytes: &[u8]) -> Result<Parsed, GgufError> {
    let prefix = &bytes[..bytes.len().min(4)];
    if prefix != &GGUF_MAGIC[..prefix.len()] {
        return Err(GgufError::BadMagic { found: prefix.to_vec() });
    }
    let mut c = Cursor::new(bytes);
    c.take(4, "magic")?;
    let version = c.u32("version")?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 1..=3) => return Err(GgufError::BigEndian { version: v }),
        v => return Err(GgufError::UnsupportedVersion { version: v }),
    }
    let tensor_count_offset = c.pos();
    let tensor_count = c.u64("tensor count")?;
    let kv_count_offset = c.pos();
    let kv_count = c.u64("metadata count")?;
    let kv_cap = c.check_count(kv_count, MIN_KV_SIZE, "metadata count", kv_count_offset)?;
    let tensor_cap = c.check_count(tensor_count, MIN_TENSOR_INFO_SIZE, "tensor count", tensor_count_offset)?;

    let mut metadata = Vec::with_capacity(kv_cap);
    let mut key_index = HashMap::with_capacity(kv_cap);
    for _ in 0..kv_count {
        let key_offset = c.pos();
        let key = c.string("metadata key")?;
        let type_offset = c.pos();
        let type_id = c.u32("metadata value type")?;
        let value = read_value(&mut c, type_id, type_offset, &key, 0)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key, offset: key_offset as u64 });
        }
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => a,
            _ => {
                let value = match v.as_i64() {
                    Some(i) => i.to_string(),
                    None => v.as_u64().map_or_else(|| format!("of type {}", v.type_name()), |u| u.to_string()),
                };
                return Err(GgufError::BadAlignment { value });
            }
        },
    };

    let mut tensors = Vec::with_capacity(tensor_cap);
    let mut tensor_index = HashMap::with_capacity(tensor_cap);
    for _ in 0..tensor_count {
        let info_offset = c.pos();
        let t = read_tensor_info(&mut c)?;
        if tensor_index.contains_key(&t.name) {
            return Err(GgufError::DuplicateTensor { name: t.name, offset: info_offset as u64 });
        }
        tensor_index.insert(t.name.clone(), tensors.len());
        tensors.push(t);
    }

    // pos <= len <= isize::MAX and alignment <= 2^31, so this cannot overflow u64.
    let pos = c.pos() as u64;
    let data_offset = pos.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    for t in &tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor { name: t.name.clone(), data_offset: t.offset, alignment });
        }
        let start = data_offset as u128 + t.offset as u128;
        let end = start + t.n_bytes as u128;
        if t.n_bytes > 0 && end > file_len as u128 {
            return Err(GgufError::TensorOutOfBounds { name: t.name.clone(), start, end, file_len });
        }
    }

    Ok(Parsed { version, metadata, key_index, tensors, tensor_index, alignment, data_offset })
}
