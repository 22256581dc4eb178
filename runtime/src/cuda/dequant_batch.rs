//! Which quantized weights a prefill on cuBLAS dequantises together, in one `dequant_q_f16_x4`
//! launch before the first of their GEMMs, and where each goes in the dequantisation scratch.
//! One launch per batch instead of one per weight: a layer of the default model (29.8 MB of f16)
//! is one batch.

/// Most weights per batch: the four weights one `dequant_q_f16_x4` launch takes.
pub(crate) const MAX_BATCH: usize = 4;

/// Alignment of each weight's f16 copy in the scratch (cuBLAS reads it as a matrix).
const ALIGN: usize = 256;

/// The batch starting at the current matmul: `candidates` are the quantized weights of the cuBLAS
/// matmuls from it on, in program order, as (weight, bytes of its f16 copy). Takes them while they
/// fit `cap` bytes whole, at most [`MAX_BATCH`], skipping repeats; returns each with its offset in
/// the scratch. Empty when the first alone does not fit (it then goes in slices).
pub(crate) fn batch_offsets<W: Copy + PartialEq>(
    candidates: impl IntoIterator<Item = (W, usize)>,
    cap: usize,
) -> Vec<(W, usize)> {
    let mut used = 0usize;
    let mut batch: Vec<(W, usize)> = Vec::new();
    for (w, bytes) in candidates {
        if batch.iter().any(|&(b, _)| b == w) {
            continue;
        }
        if batch.len() == MAX_BATCH || used + bytes > cap {
            break;
        }
        batch.push((w, used));
        used = (used + bytes).next_multiple_of(ALIGN);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB32: usize = 32 << 20;

    /// f16 bytes of an [n, k] weight.
    fn f16(n: usize, k: usize) -> usize {
        n * k * 2
    }

    #[test]
    fn a_default_model_layer_is_one_batch() {
        // qkv, o, gate|up, down of Qwen2.5-0.5B, then the next layer's.
        let layer = [f16(1152, 896), f16(896, 896), f16(9728, 896), f16(896, 4864)];
        let steps: Vec<(usize, usize)> = (0..8).map(|i| (i, layer[i % 4])).collect();
        let b = batch_offsets(steps.iter().copied(), MB32);
        assert_eq!(b.iter().map(|&(w, _)| w).collect::<Vec<_>>(), vec![0, 1, 2, 3], "four per batch");
        assert_eq!(b[0].1, 0);
        assert_eq!(b[1].1, f16(1152, 896));
        assert_eq!(b[2].1, f16(1152, 896) + f16(896, 896));
        assert!(b.iter().all(|&(_, off)| off % ALIGN == 0));
        let end = b[3].1 + layer[3];
        assert!(end <= MB32, "{end} bytes");
    }

    #[test]
    fn a_weight_too_tall_for_the_scratch_ends_the_batch_and_goes_alone_in_slices() {
        // Qwen2.5-1.5B: qkv 6.3 MB, o 4.7 MB, gate|up 55 MB, down 27.5 MB.
        let (qkv, o, gu, down) = (f16(2048, 1536), f16(1536, 1536), f16(17920, 1536), f16(1536, 8960));
        let steps = [(0, qkv), (1, o), (2, gu), (3, down), (4, qkv)];
        assert_eq!(batch_offsets(steps, MB32), vec![(0, 0), (1, qkv)]);
        assert!(batch_offsets(steps[2..].iter().copied(), MB32).is_empty(), "gate|up: slices");
        assert_eq!(batch_offsets(steps[3..].iter().copied(), MB32), vec![(3, 0)], "qkv no longer fits");
    }

    #[test]
    fn repeats_are_skipped_and_sizes_are_aligned() {
        let b = batch_offsets([(7, 100), (7, 100), (8, 10), (9, 1)], 1000);
        assert_eq!(b, vec![(7, 0), (8, 256), (9, 512)]);
        assert!(batch_offsets([(1, 1001)], 1000).is_empty());
        assert_eq!(batch_offsets([(1, 1000)], 1000), vec![(1, 0)], "exactly full");
    }
}
