//! Refuses weights that are not finite numbers. A NaN or Inf in a weight does not fail at run
//! time: it turns every logit into NaN and the argmax into token 0 or the last id, so the output
//! is silently garbage. Checked once, where the packer reads each tensor's bytes: every element of
//! an F32/F16/BF16 tensor, and the f16 scale fields (`d`, `dmin`, `m`) of each quantized block
//! (the integer codes cannot be non-finite).
use half::{bf16, f16};
use thiserror::Error;

use crate::gguf::GgmlType;

#[derive(Debug, Error, PartialEq)]
pub enum NonFinite {
    #[error("element {index} is {value} (weights must be finite numbers)")]
    Element { index: u64, value: f32 },
    #[error("block {block} (elements {first}..{end}) has scale `{field}` = {value} (weights must be finite numbers)")]
    Scale { block: u64, first: u64, end: u64, field: &'static str, value: f32 },
}

/// Byte offsets of the f16 scale fields in one ggml block of `dtype` (ggml's `block_*` structs).
fn scale_fields(dtype: GgmlType) -> &'static [(&'static str, usize)] {
    use GgmlType::*;
    match dtype {
        Q4_0 | Q5_0 | Q8_0 => &[("d", 0)],
        Q4_1 | Q5_1 => &[("d", 0), ("m", 2)],
        Q4_K | Q5_K => &[("d", 0), ("dmin", 2)],
        Q2_K => &[("d", 80), ("dmin", 82)],
        Q3_K => &[("d", 108)],
        Q6_K => &[("d", 208)],
        _ => &[],
    }
}

/// The first non-finite value in `bytes`, a tensor's ggml data of type `dtype`. Types without
/// floats (or that the compiler cannot read anyway) pass; their own errors come later.
pub fn check(dtype: GgmlType, bytes: &[u8]) -> Result<(), NonFinite> {
    let elements = |size: usize, get: fn(&[u8]) -> f32| {
        for (i, c) in bytes.chunks_exact(size).enumerate() {
            let value = get(c);
            if !value.is_finite() {
                return Err(NonFinite::Element { index: i as u64, value });
            }
        }
        Ok(())
    };
    match dtype {
        GgmlType::F32 => elements(4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        GgmlType::F16 => elements(2, |c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        GgmlType::BF16 => elements(2, |c| bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        _ => {
            let fields = scale_fields(dtype);
            let (size, per) = (dtype.type_size() as usize, dtype.block_size());
            if fields.is_empty() || size == 0 {
                return Ok(());
            }
            for (b, block) in bytes.chunks_exact(size).enumerate() {
                for &(field, at) in fields {
                    let value = f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
                    if !value.is_finite() {
                        let (block, first) = (b as u64, b as u64 * per);
                        return Err(NonFinite::Scale { block, first, end: first + per, field, value });
                    }
                }
            }
            Ok(())
        }
    }
}

/// The first non-finite value among already-dequantised elements.
pub fn check_f32(values: &[f32]) -> Result<(), NonFinite> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(NonFinite::Element { index: i as u64, value: values[i] }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_inf_are_found_with_their_index() {
        let f: Vec<u8> = [1.0f32, 2.0, f32::INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(check(GgmlType::F32, &f), Err(NonFinite::Element { index: 2, value: f32::INFINITY }));
        let h: Vec<u8> = [f16::ONE, f16::NAN].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(matches!(check(GgmlType::F16, &h), Err(NonFinite::Element { index: 1, value }) if value.is_nan()));
        let b: Vec<u8> = [bf16::ONE, bf16::NEG_INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(matches!(check(GgmlType::BF16, &b), Err(NonFinite::Element { index: 1, .. })));
    }

    #[test]
    fn quantized_scales_are_checked_but_codes_are_not() {
        // Two Q4_1 blocks (20 bytes: d, m, 16 code bytes); codes of 0xff are fine, m = Inf is not.
        let mut q = vec![0xffu8; 40];
        q[..2].copy_from_slice(&f16::ONE.to_le_bytes());
        q[2..4].copy_from_slice(&f16::ZERO.to_le_bytes());
        q[20..22].copy_from_slice(&f16::ONE.to_le_bytes());
        q[22..24].copy_from_slice(&f16::INFINITY.to_le_bytes());
        let e = check(GgmlType::Q4_1, &q).unwrap_err();
        assert_eq!(e, NonFinite::Scale { block: 1, first: 32, end: 64, field: "m", value: f32::INFINITY });
        assert_eq!(e.to_string(), "block 1 (elements 32..64) has scale `m` = inf (weights must be finite numbers)");
        q[22..24].copy_from_slice(&f16::ONE.to_le_bytes());
        assert_eq!(check(GgmlType::Q4_1, &q), Ok(()));
    }

    #[test]
    fn dequantised_values_report_the_first_bad_element() {
        assert_eq!(check_f32(&[0.0, 1.0]), Ok(()));
        assert!(matches!(check_f32(&[0.0, f32::NAN, f32::INFINITY]), Err(NonFinite::Element { index: 1, .. })));
    }
}
