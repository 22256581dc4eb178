//! Which quantized weights a prefill on cuBLAS dequantises together, in one `dequant_q_f16_x4`
//! launch before the first of their GEMMs, and where each goes in the dequantisation scratch.
//! One launch per batch instead of one per weight: a layer of the default model (29.8 MB of f16)
//! is one batch.

/// The least dequantisation scratch a model with quantized prefill weights gets: a layer of the
/// default model (29.8 MB of f16) fits whole, so its four matmuls' weights are one launch.
pub(crate) const SCRATCH_MIN: usize = 32 << 20;

/// The scratch's share of the quantized weights' bytes, at most (1/12: with everything else the
/// device holds for weights, well inside issue 15's 1.1x of the file's tensor bytes).
const SCRATCH_SHARE: usize = 12;

/// Bytes of the dequantisation scratch: enough for every quantized prefill weight's f16 copy
/// (`f16_total`) when that is small, else [`SCRATCH_MIN`] or a twelfth of the quantized weights'
/// bytes (`quantized`), whichever is more. A scratch smaller than a weight sends it through in
/// slices, one dequantisation and one narrow GEMM each, and narrow GEMMs are slow: a 7B model's
/// 512-token prefill took 88.7 ms through 32 MB slices and 25.5 ms through a 512 MB scratch
/// (H100, thirty-third session). `QWEN_AOT_DEQUANT_SCRATCH_MB` overrides the cap (experiments).
pub(crate) fn scratch_bytes(quantized: usize, f16_total: usize) -> usize {
    let cap = std::env::var("QWEN_AOT_DEQUANT_SCRATCH_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or_else(|| scratch_cap(quantized), |mb| mb.clamp(1, 4096) << 20);
    f16_total.min(cap)
}

/// The cap [`scratch_bytes`] puts on the scratch for `quantized` bytes of quantized weights.
fn scratch_cap(quantized: usize) -> usize {
    (quantized / SCRATCH_SHARE).max(SCRATCH_MIN)
}

/// A weight too tall for the scratch goes through it in slices of a multiple of this many rows
/// (when the scratch holds that many). Unrounded slices were what made small scratches slow: a
/// 7B model's 512-token prefill through 32 MB took 88.1 ms with slices of whatever fit and 27.4
/// with 128-row multiples (H100, thirty-fourth session; cuBLAS picks slow kernels for odd row
/// counts and output offsets). `QWEN_AOT_SLICE_ALIGN` overrides it (experiments; 1: no rounding).
const SLICE_ROW_ALIGN: usize = 128;

/// Rows per slice of an [n, k] weight dequantised through `bytes` of scratch: what fits,
/// rounded down to a multiple of [`SLICE_ROW_ALIGN`] when at least that many fit; at least one,
/// at most n.
pub(crate) fn slice_rows(bytes: usize, n: usize, k: usize) -> usize {
    let align = std::env::var("QWEN_AOT_SLICE_ALIGN")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(SLICE_ROW_ALIGN, |a| a.clamp(1, 4096));
    let fits = (bytes / (2 * k).max(1)).max(1);
    let rounded = if fits >= align { fits / align * align } else { fits };
    rounded.min(n.max(1))
}

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

    /// The default model keeps the 32 MB it has always had; a 7B model's (4.68 GB of Q4_K and
    /// Q6_K) takes its layer's qkv, o and gate|up in one batch and no weight but the LM head
    /// goes in slices.
    #[test]
    fn the_scratch_grows_with_the_model_to_a_twelfth_of_its_weights() {
        assert_eq!(scratch_cap(401_814_272), MB32, "the default model: 383 MiB of weights");
        let cap = scratch_cap(4_681_300_000);
        assert_eq!(cap, 390_108_333);
        // Qwen2.5-7B: qkv [4608, 3584], o [3584, 3584], gate|up [37888, 3584], down [3584, 18944].
        let (qkv, o, gu, down) = (f16(4608, 3584), f16(3584, 3584), f16(37888, 3584), f16(3584, 18944));
        let steps = [(0, qkv), (1, o), (2, gu), (3, down)];
        assert_eq!(batch_offsets(steps, cap).len(), 3, "qkv, o and gate|up in one launch");
        assert_eq!(batch_offsets(steps[3..].iter().copied(), cap), vec![(3, 0)], "down whole");
        assert!(batch_offsets([(9, f16(152064, 3584))], cap).is_empty(), "the LM head in slices");
        assert_eq!(scratch_bytes(4_681_300_000, 1000), 1000, "never more than the weights' f16 copies");
    }

    #[test]
    fn slices_are_whole_multiples_of_128_rows_where_the_scratch_holds_that_many() {
        // A 7B gate|up [37888, 3584] through 32 MiB: 4,681 rows fit, 4,608 are taken.
        assert_eq!(slice_rows(MB32, 37888, 3584), 4608);
        // Fewer than 128 rows fit: what fits.
        assert_eq!(slice_rows(100 * 3584 * 2, 37888, 3584), 100);
        assert_eq!(slice_rows(10, 37888, 3584), 1, "at least one row");
        // Never more than the weight has.
        assert_eq!(slice_rows(MB32, 300, 896), 300);
        assert_eq!(slice_rows(200 * 896 * 2, 301, 896), 128, "the check's 200-row scratch");
    }

    #[test]
    fn repeats_are_skipped_and_sizes_are_aligned() {
        let b = batch_offsets([(7, 100), (7, 100), (8, 10), (9, 1)], 1000);
        assert_eq!(b, vec![(7, 0), (8, 256), (9, 512)]);
        assert!(batch_offsets([(1, 1001)], 1000).is_empty());
        assert_eq!(batch_offsets([(1, 1000)], 1000), vec![(1, 0)], "exactly full");
    }
}
