//! Teacher-forced scores of prefilled rows: each row's log-probability of the token that follows
//! it, and the row's most likely token with its log-probability -- what perplexity and a prompt's
//! log-probabilities (top 1) need, without the rows themselves. The GPU computes them on the
//! device (kernels/row_scores.cu); this is its CPU twin and every other backend's way.
use rayon::prelude::*;

use crate::error::RuntimeError;

/// One row's score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowScore {
    /// log-softmax(row)[target].
    pub logprob: f32,
    /// The row's most likely token (the lowest id among equal maxima).
    pub top_id: u32,
    /// Its log-probability.
    pub top_logprob: f32,
}

/// log(sum_j exp(l_j)) over a row of finite logits, summed in f64 from the row's maximum, so that
/// a 150,000-entry row loses nothing to f32 rounding.
pub fn log_normaliser(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - f64::from(max)).exp()).sum();
    f64::from(max) + sum.ln()
}

/// The score of a row of finite logits against `target` (< the row's length).
pub fn row_score(row: &[f32], target: u32) -> RowScore {
    let log_z = log_normaliser(row);
    // The first maximum: ties go to the lower id.
    let (top, top_l) = row.iter().enumerate().fold(
        (0usize, f32::NEG_INFINITY),
        |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        },
    );
    RowScore {
        logprob: (f64::from(row[target as usize]) - log_z) as f32,
        top_id: top as u32,
        top_logprob: (f64::from(top_l) - log_z) as f32,
    }
}

/// Refuses scoring `tokens` rows against `targets` unless there is one target per row and every
/// target is a token (`< vocab`): the one check every scoring entry point makes before it runs.
pub fn check_targets(tokens: usize, targets: &[u32], vocab: usize) -> Result<(), RuntimeError> {
    if targets.len() != tokens {
        return Err(RuntimeError::InvalidCall(format!("{tokens} tokens to score against {} targets", targets.len())));
    }
    match targets.iter().find(|&&t| t as usize >= vocab) {
        Some(&id) => Err(RuntimeError::TokenOutOfRange { id, vocab }),
        None => Ok(()),
    }
}

/// Scores of `rows` logits rows ([rows.len() / vocab, vocab], finite) against `targets`, a row per
/// core.
pub fn score_rows(logits: &[f32], vocab: usize, targets: &[u32]) -> Result<Vec<RowScore>, RuntimeError> {
    check_targets(logits.len() / vocab.max(1), targets, vocab)?;
    if logits.len() != targets.len() * vocab {
        return Err(RuntimeError::InvalidCall(format!(
            "{} logits for {} targets of a {vocab}-token vocabulary",
            logits.len(),
            targets.len()
        )));
    }
    Ok(logits.par_chunks_exact(vocab.max(1)).zip(targets.par_iter()).map(|(row, &t)| row_score(row, t)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked by hand: [ln 1, ln 2, ln 3, ln 2] sum to 8 in probability space.
    #[test]
    fn a_small_row_scored_by_hand() {
        let row = [1f32.ln(), 2f32.ln(), 3f32.ln(), 2f32.ln()];
        let s = row_score(&row, 1);
        assert!((s.logprob - (2.0f32 / 8.0).ln()).abs() < 1e-6, "{s:?}");
        assert_eq!(s.top_id, 2);
        assert!((s.top_logprob - (3.0f32 / 8.0).ln()).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn ties_go_to_the_lower_id_and_a_huge_row_keeps_its_precision() {
        let mut row = vec![-5.0f32; 150_000];
        row[70_000] = 10.0;
        row[20_000] = 10.0;
        let s = row_score(&row, 20_000);
        assert_eq!(s.top_id, 20_000);
        // Two tokens at e^10 and 149,998 at e^-5: log p = -ln(2 + 149,998 e^-15).
        let expect = -(2.0f64 + 149_998.0 * (-15.0f64).exp()).ln();
        assert!((f64::from(s.logprob) - expect).abs() < 1e-6, "{} vs {expect}", s.logprob);
        assert_eq!(s.logprob, s.top_logprob);
    }

    #[test]
    fn rows_are_scored_in_order_and_bad_calls_are_refused() {
        let logits = [0.0, 1.0, 2.0, 5.0, 1.0, 0.0];
        let s = score_rows(&logits, 3, &[2, 0]).unwrap();
        assert_eq!(s.iter().map(|r| r.top_id).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(s[0], row_score(&logits[..3], 2));
        assert!(score_rows(&logits, 3, &[2]).is_err(), "two rows, one target");
        let e = score_rows(&logits, 3, &[2, 3]).unwrap_err();
        assert!(matches!(e, RuntimeError::TokenOutOfRange { id: 3, vocab: 3 }), "{e}");
    }
}
