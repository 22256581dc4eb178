//! The greedy argmax as one 64-bit key per candidate (kernels/argmax.cuh `argmax_key`): the LM
//! head's argmax epilogue (`launch::qgemv_argmax`) maximises these with one `atomicMax` per block,
//! and the host decodes the winner's index. The order is the CPU twin's (`cpu::argmax`): numbers
//! above NaN, larger values first, ties to the lowest index, and among NaNs (only when every value
//! is NaN) the last index. This file is the key's CPU twin and its decoder.

/// The key of value `v` at index `j` (`j < 2^31`), exactly as the device computes it: a NaN's
/// high word is 0 and its low word `j`; a number's high word is its order-preserving bits (never
/// 0; -0 taken as +0) and its low word `!j`, so a lower index wins a tie.
#[cfg(test)]
fn key(v: f32, j: u32) -> u64 {
    if v.is_nan() {
        return u64::from(j);
    }
    let b = if v == 0.0 { 0 } else { v.to_bits() };
    let ordered = if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 };
    (u64::from(ordered) << 32) | u64::from(!j)
}

/// The index a key names (the greatest key of a row is its argmax).
pub(crate) fn decode(key: u64) -> u32 {
    let (hi, lo) = ((key >> 32) as u32, key as u32);
    if hi == 0 {
        lo
    } else {
        !lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kernels::argmax;

    fn argmax_by_keys(row: &[f32]) -> usize {
        let best = row.iter().enumerate().map(|(j, &v)| key(v, j as u32)).max().unwrap_or(0);
        decode(best) as usize
    }

    /// The largest key names the CPU argmax's index: distinct values, ties (the lowest index),
    /// -0 against +0, infinities, NaNs among numbers (never chosen) and rows of NaN only (the
    /// last index).
    #[test]
    fn the_largest_key_is_the_cpu_argmax() {
        let nan = f32::NAN;
        let rows: &[&[f32]] = &[
            &[1.0, 3.0, 2.0],
            &[-5.0, -1.0, -3.0],
            &[2.0, 7.0, 7.0, 1.0],
            &[0.0, -0.0, -1.0],
            &[-0.0, 0.0, -1.0],
            &[-0.0, -0.0],
            &[nan, 1.0, nan, 0.5],
            &[nan, nan, nan],
            &[nan],
            &[f32::NEG_INFINITY, -1e30],
            &[f32::NEG_INFINITY, f32::NEG_INFINITY],
            &[1.0, f32::INFINITY, f32::INFINITY],
            &[nan, f32::NEG_INFINITY],
            &[f32::MIN_POSITIVE / 4.0, -f32::MIN_POSITIVE / 4.0, 0.0],
        ];
        for row in rows {
            assert_eq!(argmax_by_keys(row), argmax(row), "{row:?}");
        }
        // Random rows with many ties (values from a small set) and a few NaNs.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let n = 1 + (state % 64) as usize;
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    match state % 11 {
                        0 => nan,
                        1 => -0.0,
                        r => (r as f32 - 6.0) * 0.5,
                    }
                })
                .collect();
            assert_eq!(argmax_by_keys(&row), argmax(&row), "{row:?}");
        }
    }

    /// Keys decode to their index, and 0 (the identity the epilogue starts from) is the worst
    /// candidate: a NaN at index 0.
    #[test]
    fn keys_decode_to_their_index() {
        for j in [0u32, 1, 151_935, (1 << 31) - 1] {
            for v in [f32::NAN, -1.5, 0.0, 2.25, f32::INFINITY, f32::NEG_INFINITY] {
                assert_eq!(decode(key(v, j)), j, "{v} at {j}");
            }
        }
        assert_eq!(key(f32::NAN, 0), 0);
        assert!(key(f32::NEG_INFINITY, (1 << 31) - 1) > key(f32::NAN, u32::MAX >> 1));
    }
}
