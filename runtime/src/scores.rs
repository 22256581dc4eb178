//! Teacher-forced scores of prefilled rows: each row's log-probability of the token that follows
//! it, and the row's most likely tokens with their log-probabilities -- what perplexity and a
//! prompt's or a generated token's log-probabilities need, without the rows themselves. The GPU
//! computes them on the device (kernels/row_scores.cu); this is its CPU twin and every other
//! backend's way.
use rayon::prelude::*;

use crate::error::RuntimeError;

/// Most alternatives a score may list per row (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP: usize = crate::kernel_constants::ROW_SCORE_MAX_TOP;

/// One row's score.
#[derive(Clone, Debug, PartialEq)]
pub struct RowScore {
    /// log-softmax(row)[target].
    pub logprob: f32,
    /// The row's `top_n` most likely tokens with their log-probabilities, most likely first, equal
    /// logits by lower id (fewer when the row is shorter).
    pub top: Vec<(u32, f32)>,
}

/// log(sum_j exp(l_j)) over a row of finite logits, summed in f64 from the row's maximum, so that
/// a 150,000-entry row loses nothing to f32 rounding.
pub fn log_normaliser(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - f64::from(max)).exp()).sum();
    f64::from(max) + sum.ln()
}

/// The ids of the `n` largest logits, largest first, ties by lower id: one pass keeping a sorted
/// list of at most `n` (n is small; most logits fall below the list's last entry at once).
pub fn top_ids(logits: &[f32], n: usize) -> Vec<u32> {
    let mut top: Vec<u32> = Vec::with_capacity(n.min(logits.len()) + 1);
    if n == 0 {
        return top;
    }
    for (j, &l) in logits.iter().enumerate() {
        if top.len() == n && l <= logits[top[n - 1] as usize] {
            continue;
        }
        // After every entry at least as large (an earlier id wins a tie).
        let at = top.partition_point(|&t| logits[t as usize] >= l);
        top.insert(at, j as u32);
        top.truncate(n);
    }
    top
}

/// The score of a row of finite logits against `target` (< the row's length), with its `top_n`
/// most likely tokens.
pub fn row_score(row: &[f32], target: u32, top_n: usize) -> RowScore {
    let log_z = log_normaliser(row);
    let lp = |l: f32| (f64::from(l) - log_z) as f32;
    RowScore {
        logprob: lp(row[target as usize]),
        top: top_ids(row, top_n).into_iter().map(|j| (j, lp(row[j as usize]))).collect(),
    }
}

/// Refuses scoring `tokens` rows against `targets` with `top_n` alternatives unless there is one
/// target per row, every target is a token (`< vocab`) and `top_n <= MAX_TOP`: the one check every
/// scoring entry point makes before it runs.
pub fn check_targets(tokens: usize, targets: &[u32], vocab: usize, top_n: usize) -> Result<(), RuntimeError> {
    if targets.len() != tokens {
        return Err(RuntimeError::InvalidCall(format!("{tokens} tokens to score against {} targets", targets.len())));
    }
    if top_n > MAX_TOP {
        return Err(RuntimeError::InvalidCall(format!("{top_n} alternatives per row asked; at most {MAX_TOP}")));
    }
    match targets.iter().find(|&&t| t as usize >= vocab) {
        Some(&id) => Err(RuntimeError::TokenOutOfRange { id, vocab }),
        None => Ok(()),
    }
}

/// Scores of `rows` logits rows ([rows.len() / vocab, vocab], finite) against `targets` with
/// `top_n` alternatives each, a row per core.
pub fn score_rows(logits: &[f32], vocab: usize, targets: &[u32], top_n: usize) -> Result<Vec<RowScore>, RuntimeError> {
    check_targets(logits.len() / vocab.max(1), targets, vocab, top_n)?;
    if logits.len() != targets.len() * vocab {
        return Err(RuntimeError::InvalidCall(format!(
            "{} logits for {} targets of a {vocab}-token vocabulary",
            logits.len(),
            targets.len()
        )));
    }
    Ok(logits
        .par_chunks_exact(vocab.max(1))
        .zip(targets.par_iter())
        .map(|(row, &t)| row_score(row, t, top_n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked by hand: [ln 1, ln 2, ln 3, ln 2] sum to 8 in probability space, so the top
    /// three are 2, then 1 and 3 (equal: the lower id first).
    #[test]
    fn a_small_row_scored_by_hand() {
        let row = [1f32.ln(), 2f32.ln(), 3f32.ln(), 2f32.ln()];
        let s = row_score(&row, 1, 3);
        assert!((s.logprob - (2.0f32 / 8.0).ln()).abs() < 1e-6, "{s:?}");
        assert_eq!(s.top.iter().map(|&(j, _)| j).collect::<Vec<_>>(), [2, 1, 3]);
        assert!((s.top[0].1 - (3.0f32 / 8.0).ln()).abs() < 1e-6, "{s:?}");
        assert_eq!(s.top[1].1, s.logprob);
        assert_eq!(s.top[1].1, s.top[2].1);
        assert!(row_score(&row, 1, 0).top.is_empty());
        // More alternatives than tokens: every token, in order.
        assert_eq!(row_score(&row, 1, MAX_TOP).top.len(), 4);
    }

    #[test]
    fn ties_go_to_the_lower_id_and_a_huge_row_keeps_its_precision() {
        let mut row = vec![-5.0f32; 150_000];
        row[70_000] = 10.0;
        row[20_000] = 10.0;
        let s = row_score(&row, 20_000, 3);
        // The two maxima, then the first of the 149,998 equal others.
        assert_eq!(s.top.iter().map(|&(j, _)| j).collect::<Vec<_>>(), [20_000, 70_000, 0]);
        // Two tokens at e^10 and 149,998 at e^-5: log p = -ln(2 + 149,998 e^-15).
        let expect = -(2.0f64 + 149_998.0 * (-15.0f64).exp()).ln();
        assert!((f64::from(s.logprob) - expect).abs() < 1e-6, "{} vs {expect}", s.logprob);
        assert_eq!(s.logprob, s.top[0].1);
        assert!((f64::from(s.top[2].1) - (expect - 15.0)).abs() < 1e-5, "{:?}", s.top[2]);
    }

    #[test]
    fn rows_are_scored_in_order_and_bad_calls_are_refused() {
        let logits = [0.0, 1.0, 2.0, 5.0, 1.0, 0.0];
        let s = score_rows(&logits, 3, &[2, 0], 2).unwrap();
        assert_eq!(s.iter().map(|r| r.top[0].0).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(s[0], row_score(&logits[..3], 2, 2));
        assert_eq!(s[1].top.iter().map(|&(j, _)| j).collect::<Vec<_>>(), [0, 1]);
        assert!(score_rows(&logits, 3, &[2], 1).is_err(), "two rows, one target");
        let e = score_rows(&logits, 3, &[2, 3], 1).unwrap_err();
        assert!(matches!(e, RuntimeError::TokenOutOfRange { id: 3, vocab: 3 }), "{e}");
        assert!(score_rows(&logits, 3, &[2, 0], MAX_TOP + 1).is_err(), "too many alternatives");
    }
}
