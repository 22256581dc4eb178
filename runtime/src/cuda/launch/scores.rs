//! Launches of the device-side scoring of logits rows (kernels/row_scores.cu: log-probabilities and
//! up to 20 alternatives, a decode row cut into slices over many SMs) and of the greedy argmax
//! (kernels/argmax.cu).

use super::{div_ceil, i, kernel, Arg, Kernel, Op};

/// Words of one row's result from [`row_scores`] with `top_n` alternatives: the target's
/// log-probability, the non-finite flag, then max(top_n, 1) (id, log-probability) pairs.
pub(crate) fn row_score_words(top_n: usize) -> usize {
    2 + 2 * top_n.max(1)
}

/// How a [`row_scores`] launch cuts each row: `slices` blocks per row, whose partial results the
/// last one to finish merges (kernels/row_scores.cu). One slice reads no scratch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScoreSlices {
    pub slices: usize,
    /// u32 [rows][slices][ROW_SCORE_PART_WORDS].
    pub partials: u64,
    /// u32 [rows], zero between launches.
    pub tickets: u64,
}

/// Fewest logits a slice of a row takes ([`row_score_slices`]): enough that each of the block's
/// threads has two float4s or more to load.
pub(crate) const ROW_SCORE_MIN_SLICE: usize = 4096;

/// Slices per row for `rows` rows of `vocab` logits on `sm_count` SMs: about two blocks per SM
/// over all rows, each slice at least ROW_SCORE_MIN_SLICE logits, at most ROW_SCORE_MAX_SLICES.
/// A decode step's one row of 151,936 logits: 37 slices (one block on one SM took ~80 us on an
/// H100); a prefill's hundreds of rows: 1. With more than one slice, rows x slices <= 2 x
/// sm_count and rows <= sm_count ([`row_score_scratch_words`]).
pub(crate) fn row_score_slices(rows: usize, vocab: usize, sm_count: u32) -> usize {
    use crate::kernel_constants::ROW_SCORE_MAX_SLICES;
    (2 * sm_count as usize / rows.max(1)).min(vocab / ROW_SCORE_MIN_SLICE).clamp(1, ROW_SCORE_MAX_SLICES)
}

/// u32 words of the partials and of the tickets that every split [`row_score_slices`] picks on
/// `sm_count` SMs needs.
pub(crate) fn row_score_scratch_words(sm_count: u32) -> (usize, usize) {
    let sm = sm_count as usize;
    (2 * sm * crate::kernel_constants::ROW_SCORE_PART_WORDS, sm)
}

/// Bytes of the (zeroed) scratch [`ScoreSlices::in_scratch`] lays its partials, then its
/// tickets, out in.
pub(crate) fn row_score_scratch_bytes(sm_count: u32) -> usize {
    let (parts, tickets) = row_score_scratch_words(sm_count);
    (parts + tickets) * 4
}

impl ScoreSlices {
    /// The split [`row_score_slices`] picks for `rows` rows of `vocab` logits, its partials and
    /// tickets in the scratch at `scratch` ([`row_score_scratch_bytes`] bytes).
    pub fn in_scratch(scratch: u64, rows: usize, vocab: usize, sm_count: u32) -> Self {
        let (parts, _) = row_score_scratch_words(sm_count);
        ScoreSlices {
            slices: row_score_slices(rows, vocab, sm_count),
            partials: scratch,
            tickets: scratch + parts as u64 * 4,
        }
    }
}

/// Rows `0..n_tokens` of logits f32 [rows, vocab] scored against targets i32 [rows] with `top_n`
/// (<= ROW_SCORE_MAX_TOP) alternatives: out u32 [rows][row_score_words(top_n)]
/// (kernels/row_scores.cu), each row cut as `split` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_scores(
    st: u64,
    logits: u64,
    targets: u64,
    vocab: usize,
    rows: usize,
    top_n: usize,
    out: u64,
    split: ScoreSlices,
) -> Op {
    debug_assert!(top_n <= crate::kernel_constants::ROW_SCORE_MAX_TOP);
    debug_assert!((1..=crate::kernel_constants::ROW_SCORE_MAX_SLICES).contains(&split.slices));
    kernel(
        Kernel::RowScores,
        (rows, split.slices, 1),
        crate::kernel_constants::ROW_SCORE_THREADS as u32,
        vec![
            Arg::Ptr(st),
            Arg::Ptr(logits),
            Arg::Ptr(targets),
            i(vocab),
            i(top_n),
            Arg::Ptr(out),
            Arg::Ptr(split.partials),
            Arg::Ptr(split.tickets),
        ],
    )
}

/// Argmax scratch: part_v f32 / part_i i32 [ARGMAX_MAX_BLOCKS], counter u32 (zero).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArgmaxScratch {
    pub part_v: u64,
    pub part_i: u64,
    pub counter: u64,
}

pub(crate) const ARGMAX_MAX_BLOCKS: usize = 1024;

/// logits f32 [rows, vocab] (row n_tokens - 1 is read); out i32 [1].
pub(crate) fn argmax(st: u64, logits: u64, out: u64, vocab: usize, sm_count: u32, scratch: ArgmaxScratch) -> Op {
    let threads = crate::kernel_constants::ARGMAX_THREADS;
    let blocks = (2 * sm_count as usize).min(div_ceil(vocab, threads)).clamp(1, ARGMAX_MAX_BLOCKS);
    kernel(
        Kernel::Argmax,
        (blocks, 1, 1),
        threads as u32,
        vec![
            Arg::Ptr(st),
            Arg::Ptr(logits),
            Arg::Ptr(out),
            Arg::Ptr(scratch.part_v),
            Arg::Ptr(scratch.part_i),
            Arg::Ptr(scratch.counter),
            i(vocab),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decode row of the real vocabulary is cut into 37 slices on an H100's 132 SMs; many rows
    /// (a prefill) are not cut; a split always fits the scratch `row_score_scratch_words` sizes.
    #[test]
    fn row_score_slices_fit_their_scratch() {
        use crate::kernel_constants::{ROW_SCORE_MAX_SLICES, ROW_SCORE_PART_WORDS};
        assert_eq!(row_score_slices(1, 151_936, 132), 37);
        assert_eq!(row_score_slices(7, 151_936, 132), 37);
        assert_eq!(row_score_slices(40, 151_936, 132), 6);
        assert_eq!(row_score_slices(512, 151_936, 132), 1);
        assert_eq!(row_score_slices(1, 1_003, 132), 1, "a vocabulary shorter than a slice");
        assert_eq!(row_score_slices(1, 1 << 22, 132), ROW_SCORE_MAX_SLICES);
        // The executor's scratch: the partials from its start, the tickets after them, within it.
        let split = ScoreSlices::in_scratch(4096, 1, 151_936, 132);
        assert_eq!((split.slices, split.partials, split.tickets), (37, 4096, 4096 + 2 * 132 * 44 * 4));
        assert_eq!(row_score_scratch_bytes(132), 2 * 132 * 44 * 4 + 132 * 4);
        for sm in [1u32, 16, 78, 132, 144] {
            let (parts, tickets) = row_score_scratch_words(sm);
            for rows in 1..600 {
                for vocab in [7, 4_095, 4_096, 32_000, 151_936, 1 << 22] {
                    let slices = row_score_slices(rows, vocab, sm);
                    assert!((1..=ROW_SCORE_MAX_SLICES).contains(&slices));
                    if slices > 1 {
                        assert!(rows * slices * ROW_SCORE_PART_WORDS <= parts && rows <= tickets);
                        assert!(vocab / slices >= ROW_SCORE_MIN_SLICE);
                    }
                }
            }
        }
    }
}
