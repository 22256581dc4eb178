//! A minimal GGUF writer ([`GgufBuilder`]): builds well-formed GGUF v2/v3 files in memory.
//!
//! The compiler itself never writes GGUF; this exists so that tests (here and in other crates),
//! synthetic models and the fuzzer's seed corpus can make small valid files without Python. It
//! writes exactly the layout [`super::GgufFile`] reads: header, metadata, tensor infos, padding to
//! the alignment, then each tensor's bytes at an aligned offset.
use super::dtype::GgmlType;
use super::error::GgufError;
use super::file::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::value::{GgufValue, TYPE_U8};

#[derive(Debug, Clone)]
pub struct GgufBuilder {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// An empty GGUF v3 file.
    pub fn new() -> Self {
        GgufBuilder { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Sets the version field (2 and 3 share one layout; others make files the reader rejects).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Appends a metadata pair (`general.alignment` also sets the layout's alignment).
    pub fn kv(mut self, key: &str, value: GgufValue) -> Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Replaces the value of `key` (appends the pair when there is none): a reader refuses a file
    /// with a key twice, so changing one field of a prepared file goes through here.
    pub fn set(mut self, key: &str, value: GgufValue) -> Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Appends a tensor: `dims` in GGUF order (row length first), `data` its raw bytes.
    pub fn tensor(mut self, name: &str, dtype: GgmlType, dims: &[u64], data: Vec<u8>) -> Self {
        self.tensors.push((name.to_string(), dtype, dims.to_vec(), data));
        self
    }

    /// Appends an F32 tensor.
    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, GgmlType::F32, dims, data)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .rev()
            .find(|(k, _)| k == ALIGNMENT_KEY)
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Serialises the file. Fails only for values GGUF cannot encode (arrays whose elements do not
    /// all have the same type).
    pub fn build(&self) -> Result<Vec<u8>, GgufError> {
        let align = self.alignment() as usize;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut out, key, value)?;
        }
        let mut offset = 0usize;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, dtype, dims, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&dtype.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(align) * align;
        }
        // The data section starts at the next multiple of the alignment; padding is written only
        // up to the last tensor with data (zero-byte tensors need none).
        let data_start = out.len().div_ceil(align) * align;
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            if !data.is_empty() {
                out.resize(data_start + off, 0);
                out.extend_from_slice(data);
            }
        }
        Ok(out)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, key: &str, v: &GgufValue) -> Result<(), GgufError> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(items) => {
            // An empty array has no element to take the type from: write it as u8[0].
            let elem_type = items.first().map_or(TYPE_U8, GgufValue::type_id);
            if items.iter().any(|i| i.type_id() != elem_type) {
                return Err(GgufError::Unencodable {
                    key: key.to_string(),
                    reason: "array elements have different types".to_string(),
                });
            }
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, key, item)?;
            }
        }
    }
    Ok(())
}
