//! Log-probabilities of generated tokens (the server's `logprobs` / `top_logprobs`): the
//! log-softmax of the raw logits row that produced each token -- before temperature, penalties,
//! top-k/top-p or min-p, as OpenAI's API and vLLM report by default -- and that row's most
//! likely tokens.

use qwen_aot_runtime::scores::{log_normaliser, RowScore};

/// Most alternatives a request may ask for per token (OpenAI's limit for `top_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One generated token: its log-probability and the row's `top` most likely tokens (most likely
/// first, ties by lower id).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `id` under `logits` (finite: the session checks every row it returns)
/// and the `top_n` most likely tokens. The normaliser log(sum(exp(l))) is summed in f64 from the
/// row's maximum, so a 150,000-entry row loses nothing to f32 rounding.
pub fn token_logprob(logits: &[f32], id: u32, top_n: usize) -> TokenLogprob {
    let log_z = log_normaliser(logits);
    let lp = |l: f32| (f64::from(l) - log_z) as f32;
    TokenLogprob {
        id,
        logprob: logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| lp(l)),
        top: top_ids(logits, top_n).into_iter().map(|j| (j, lp(logits[j as usize]))).collect(),
    }
}

/// [`token_logprob`] with at most one alternative, from a row's score (`session.prefill_scores`:
/// computed where the row is, so the row need not cross to the host).
pub fn from_score(id: u32, score: &RowScore, top_n: usize) -> TokenLogprob {
    debug_assert!(top_n <= 1, "a score holds one alternative");
    let top = if top_n == 0 { Vec::new() } else { vec![(score.top_id, score.top_logprob)] };
    TokenLogprob { id, logprob: score.logprob, top }
}

/// The ids of the `n` largest logits, largest first, ties by lower id: one pass keeping a sorted
/// list of at most `n` (n is small; most logits fall below the list's last entry at once).
fn top_ids(logits: &[f32], n: usize) -> Vec<u32> {
    let mut top: Vec<u32> = Vec::with_capacity(n + 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's score gives what token_logprob gives with one alternative or none.
    #[test]
    fn a_score_is_token_logprob_with_one_alternative() {
        let logits = [0.5f32, 2.0, -1.0, 2.0, 1.5];
        let score = qwen_aot_runtime::scores::row_score(&logits, 4);
        for top_n in 0..=1 {
            assert_eq!(from_score(4, &score, top_n), token_logprob(&logits, 4, top_n), "top {top_n}");
        }
    }

    /// Values worked by hand: logits [ln 1, ln 2, ln 3, ln 2] sum to 8 in probability space, so
    /// token 2 has log(3/8) and the top three are 2, then 1 and 3 (equal: lower id first).
    #[test]
    fn log_softmax_and_top_tokens_of_a_small_row() {
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 2.0].iter().map(|v| v.ln()).collect();
        let t = token_logprob(&logits, 2, 3);
        assert_eq!(t.id, 2);
        assert!((t.logprob - (3.0f32 / 8.0).ln()).abs() < 1e-6, "{}", t.logprob);
        let ids: Vec<u32> = t.top.iter().map(|&(j, _)| j).collect();
        assert_eq!(ids, [2, 1, 3]);
        assert!((t.top[1].1 - (2.0f32 / 8.0).ln()).abs() < 1e-6);
        assert_eq!(t.top[1].1, t.top[2].1);
        assert!(token_logprob(&logits, 0, 0).top.is_empty());
        // More alternatives than tokens: every token, in order.
        assert_eq!(token_logprob(&logits, 0, 10).top.len(), 4);
    }

    /// A large row with a large common offset: the probabilities still sum to 1 and the top list
    /// is the sorted head of the row.
    #[test]
    fn probabilities_of_a_vocabulary_sized_row_sum_to_one() {
        let mut state = 7u64;
        let logits: Vec<f32> = (0..151_936)
            .map(|_| 1000.0 + (qwen_aot_runtime::rng::splitmix64(&mut state) % 20_000) as f32 / 1000.0)
            .collect();
        let log_z = log_normaliser(&logits);
        let total: f64 = logits.iter().map(|&l| (f64::from(l) - log_z).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let t = token_logprob(&logits, 7, MAX_TOP_LOGPROBS);
        assert!((f64::from(t.logprob) - (f64::from(logits[7]) - log_z)).abs() < 1e-6);
        let mut sorted: Vec<u32> = (0..logits.len() as u32).collect();
        sorted.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
        let ids: Vec<u32> = t.top.iter().map(|&(j, _)| j).collect();
        assert_eq!(ids, sorted[..MAX_TOP_LOGPROBS]);
    }
}
