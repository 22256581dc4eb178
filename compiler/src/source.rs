//! Where the compiler gets tensors from: a GGUF file, or (for tests and random-weight models) an
//! in-memory table. Dims are in GGUF order: `dims[0]` is the row length.
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::error::CompileError;
use crate::gguf::{dequantize, GgmlType, GgufError, GgufFile};

/// A tensor's bytes exactly as ggml lays them out, with their type.
pub struct RawTensor<'a> {
    pub dtype: GgmlType,
    /// Borrowed from the mapped file where possible (no copy of a GGUF's weights).
    pub bytes: Cow<'a, [u8]>,
}

pub trait TensorSource: Sync {
    fn dims(&self, name: &str) -> Option<Vec<u64>>;
    /// The tensor's ggml type (what the packer keeps in native mode).
    fn ggml_type(&self, name: &str) -> Option<GgmlType>;
    /// The tensor dequantised to f32, row-major.
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError>;
    /// The tensor's own ggml bytes.
    fn load_raw(&self, name: &str) -> Result<RawTensor<'_>, CompileError>;
}

impl TensorSource for GgufFile {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.tensor(name).map(|t| t.dims.clone())
    }
    fn ggml_type(&self, name: &str) -> Option<GgmlType> {
        self.tensor(name).map(|t| t.dtype)
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError> {
        let t = self.tensor(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))?;
        // Name the tensor: "dequantisation of IQ2_XXS is not supported" alone does not say where.
        self.dequantize(t).map_err(|source| CompileError::Tensor { name: name.to_string(), source })
    }
    fn load_raw(&self, name: &str) -> Result<RawTensor<'_>, CompileError> {
        let t = self.tensor(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))?;
        Ok(RawTensor { dtype: t.dtype, bytes: Cow::Borrowed(self.tensor_bytes(t)) })
    }
}

/// What a [`MemorySource`] tensor holds.
#[derive(Clone, Debug)]
pub enum MemData {
    /// f32 values (served as an F32 tensor).
    F32(Vec<f32>),
    /// Raw ggml blocks of `dtype` (e.g. a random quantized model).
    Blocks { dtype: GgmlType, bytes: Vec<u8> },
}

#[derive(Clone, Debug)]
pub struct MemTensor {
    pub dims: Vec<u64>,
    pub data: MemData,
}

/// Tensors held in memory, e.g. a seeded random-weight model.
#[derive(Default, Clone)]
pub struct MemorySource {
    pub tensors: BTreeMap<String, MemTensor>,
}

impl MemorySource {
    pub fn insert_f32(&mut self, name: impl Into<String>, dims: Vec<u64>, values: Vec<f32>) {
        self.tensors.insert(name.into(), MemTensor { dims, data: MemData::F32(values) });
    }

    pub fn insert_blocks(&mut self, name: impl Into<String>, dims: Vec<u64>, dtype: GgmlType, bytes: Vec<u8>) {
        self.tensors.insert(name.into(), MemTensor { dims, data: MemData::Blocks { dtype, bytes } });
    }

    fn get(&self, name: &str) -> Result<&MemTensor, CompileError> {
        self.tensors.get(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))
    }
}

impl TensorSource for MemorySource {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.tensors.get(name).map(|t| t.dims.clone())
    }
    fn ggml_type(&self, name: &str) -> Option<GgmlType> {
        self.tensors.get(name).map(|t| match &t.data {
            MemData::F32(_) => GgmlType::F32,
            MemData::Blocks { dtype, .. } => *dtype,
        })
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError> {
        let t = self.get(name)?;
        match &t.data {
            MemData::F32(v) => Ok(v.clone()),
            MemData::Blocks { dtype, bytes } => {
                let n = t.dims.iter().product::<u64>();
                let n = usize::try_from(n).map_err(|_| CompileError::Tensor {
                    name: name.to_string(),
                    source: GgufError::DequantSize {
                        dtype: *dtype,
                        n_elements: usize::MAX,
                        expected: bytes.len() as u128,
                        got: bytes.len(),
                    },
                })?;
                dequantize(*dtype, bytes, n).map_err(|source| CompileError::Tensor { name: name.to_string(), source })
            }
        }
    }
    fn load_raw(&self, name: &str) -> Result<RawTensor<'_>, CompileError> {
        let t = self.get(name)?;
        Ok(match &t.data {
            MemData::F32(v) => {
                RawTensor { dtype: GgmlType::F32, bytes: Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()) }
            }
            MemData::Blocks { dtype, bytes } => RawTensor { dtype: *dtype, bytes: Cow::Borrowed(bytes) },
        })
    }
}
