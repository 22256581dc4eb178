//! Dequantisation of ggml tensor data to f32, for every type qwen-aot packs.
//!
//! One file per family: [`float`] (F32, F16, BF16), [`legacy`] (the 32-element block quants
//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and [`kquants`] (the 256-element super-block quants Q2_K … Q6_K).
//! Each kernel converts a run of whole blocks; this module checks sizes before allocating and
//! spreads big tensors over threads with rayon. The arithmetic follows ggml's
//! `dequantize_row_*` operation for operation (no fused multiply-add), so results are bit-exact
//! with ggml and with the `gguf` Python package.
mod float;
mod kquants;

pub(crate) use kquants::q3_k_scales;
mod legacy;

use rayon::prelude::*;

use super::dtype::GgmlType;
use super::error::GgufError;

/// Converts a run of whole blocks: `bytes.len() == k * type_size`, `out.len() == k * block_size`.
type BlockKernel = fn(&[u8], &mut [f32]);

/// Elements per parallel task: big enough to amortise scheduling, small enough to balance.
const CHUNK_ELEMS: usize = 1 << 16;

/// Dequantizes `n_elements` elements of type `dtype` stored in `bytes` (exactly the tensor's
/// bytes) to f32.
pub fn dequantize(dtype: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, GgufError> {
    let kernel: BlockKernel = match dtype {
        GgmlType::F32 => float::f32_blocks,
        GgmlType::F16 => float::f16_blocks,
        GgmlType::BF16 => float::bf16_blocks,
        GgmlType::Q4_0 => legacy::q4_0_blocks,
        GgmlType::Q4_1 => legacy::q4_1_blocks,
        GgmlType::Q5_0 => legacy::q5_0_blocks,
        GgmlType::Q5_1 => legacy::q5_1_blocks,
        GgmlType::Q8_0 => legacy::q8_0_blocks,
        GgmlType::Q2_K => kquants::q2_k_blocks,
        GgmlType::Q3_K => kquants::q3_k_blocks,
        GgmlType::Q4_K => kquants::q4_k_blocks,
        GgmlType::Q5_K => kquants::q5_k_blocks,
        GgmlType::Q6_K => kquants::q6_k_blocks,
        _ => return Err(GgufError::UnsupportedDequant { dtype }),
    };
    let block = dtype.block_size() as usize;
    let type_size = dtype.type_size() as usize;
    if !n_elements.is_multiple_of(block) {
        return Err(GgufError::DequantNotBlockMultiple { dtype, n_elements, block });
    }
    let n_blocks = n_elements / block;
    let expected = n_blocks as u128 * type_size as u128;
    if bytes.len() as u128 != expected {
        return Err(GgufError::DequantSize { dtype, n_elements, expected, got: bytes.len() });
    }
    // The output size is now bounded by the input size (at most 64 elements per byte for any type
    // here), so this allocation is not controlled by an unchecked number.
    let mut out = vec![0f32; n_elements];
    let blocks_per_chunk = (CHUNK_ELEMS / block).max(1);
    if n_blocks <= blocks_per_chunk {
        kernel(bytes, &mut out);
    } else {
        out.par_chunks_mut(blocks_per_chunk * block)
            .zip(bytes.par_chunks(blocks_per_chunk * type_size))
            .for_each(|(o, b)| kernel(b, o));
    }
    Ok(out)
}

/// Reads the little-endian f16 at `b[i..i + 2]` as f32.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}
