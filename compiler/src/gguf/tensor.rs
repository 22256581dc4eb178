//! Tensor infos: the per-tensor header records (name, dims, ggml type, data offset) and their
//! validation: dims count, element-count overflow, block divisibility and byte size. Placement
//! (alignment, bounds) is checked by the file parser once the data section's start is known.
use super::dtype::GgmlType;
use super::error::GgufError;
use super::reader::Cursor;

/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: u32 = 4;

/// Smallest encoded tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
pub(crate) const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: GgmlType,
    /// GGUF order: `dims[0]` is the fastest-varying dimension (the row length).
    pub dims: Vec<u64>,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in row-major (C) order, slowest-varying first: the reverse of `dims`. A GGUF
    /// matrix with `dims = [k, n]` is `[n, k]` here.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Elements per row (`dims[0]`; 1 for a 0-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// Reads one tensor info record at the cursor.
pub(crate) fn read_tensor_info(c: &mut Cursor<'_>) -> Result<TensorInfo, GgufError> {
    let offset = c.pos() as u64;
    let name = c.string("tensor name")?;
    let n_dims = c.u32("tensor n_dims")?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims { name, n_dims, offset });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("tensor dimension")?);
    }
    let type_id = c.u32("tensor type")?;
    let Some(dtype) = GgmlType::from_id(type_id) else {
        return Err(GgufError::UnknownDtype { name, type_id, offset });
    };
    let data_offset = c.u64("tensor data offset")?;

    // ggml stores sizes as int64: keep the element count within i64 like llama.cpp does. Zero
    // dims count as 1 in the check, so that no partial product (rows, shape) overflows either.
    let fits = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1))).is_some_and(|n| n <= i64::MAX as u64);
    if !fits {
        return Err(GgufError::ElementCountOverflow { name, dims, offset });
    }
    let n_elements: u64 = dims.iter().product();
    let row = dims.first().copied().unwrap_or(1);
    let block = dtype.block_size();
    if !row.is_multiple_of(block) {
        return Err(GgufError::RowNotBlockMultiple { name, dtype, row, block, offset });
    }
    // n_elements is a multiple of row, hence of block; the byte size is at most ~2.3x the element
    // count for any known type, but check anyway.
    let Some(n_bytes) = dtype.bytes_for(n_elements) else {
        return Err(GgufError::ElementCountOverflow { name, dims, offset });
    };
    Ok(TensorInfo { name, dtype, dims, offset: data_offset, n_elements, n_bytes })
}
