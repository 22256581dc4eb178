//! Where the compiler gets tensors from: a GGUF file, or (for tests and random-weight models) an
//! in-memory table. Dims are in GGUF order: `dims[0]` is the row length.
use std::collections::BTreeMap;

use crate::error::CompileError;
use crate::gguf::GgufFile;

pub trait TensorSource: Sync {
    fn dims(&self, name: &str) -> Option<Vec<u64>>;
    /// The tensor dequantised to f32, row-major.
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError>;
}

impl TensorSource for GgufFile {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.tensor(name).map(|t| t.dims.clone())
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError> {
        let t = self.tensor(name).ok_or_else(|| CompileError::MissingTensor(name.to_string()))?;
        // Name the tensor: "dequantisation of IQ2_XXS is not supported" alone does not say where.
        self.dequantize(t).map_err(|source| CompileError::Tensor { name: name.to_string(), source })
    }
}

/// Tensors held in memory (f32), e.g. a seeded random-weight model.
#[derive(Default, Clone)]
pub struct MemorySource {
    pub tensors: BTreeMap<String, (Vec<u64>, Vec<f32>)>,
}

impl TensorSource for MemorySource {
    fn dims(&self, name: &str) -> Option<Vec<u64>> {
        self.tensors.get(name).map(|(d, _)| d.clone())
    }
    fn load_f32(&self, name: &str) -> Result<Vec<f32>, CompileError> {
        self.tensors.get(name).map(|(_, v)| v.clone()).ok_or_else(|| CompileError::MissingTensor(name.to_string()))
    }
}
