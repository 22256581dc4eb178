//! Log-probabilities of generated tokens (the server's `logprobs` / `top_logprobs`): the
//! log-softmax of the raw logits row that produced each token -- before temperature, penalties,
//! top-k/top-p or min-p, as OpenAI's API and vLLM report by default -- and that row's most
//! likely tokens.

use qwen_aot_runtime::scores::{row_score, RowScore, MAX_TOP};

/// Most alternatives a request may ask for per token (OpenAI's limit for `top_logprobs`; the
/// device's scores list as many).
pub const MAX_TOP_LOGPROBS: usize = MAX_TOP;

/// One generated token: its log-probability and the row's `top` most likely tokens (most likely
/// first, ties by lower id).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `id` under `logits` (finite: the session checks every row it returns)
/// and the `top_n` most likely tokens: `scores::row_score` (the device's twin), the normaliser
/// summed in f64 from the row's maximum, so a 150,000-entry row loses nothing to f32 rounding.
/// An id past the row (which no caller passes) has log-probability -inf.
pub fn token_logprob(logits: &[f32], id: u32, top_n: usize) -> TokenLogprob {
    match logits.len() {
        0 => TokenLogprob { id, logprob: f32::NEG_INFINITY, top: Vec::new() },
        n if id as usize >= n => TokenLogprob { id, logprob: f32::NEG_INFINITY, top: row_score(logits, 0, top_n).top },
        _ => from_score(id, row_score(logits, id, top_n)),
    }
}

/// [`token_logprob`] from a row's score (`session.prefill_scores` / `last_decode_score`: computed
/// where the row is, so the row need not cross to the host).
pub fn from_score(id: u32, score: RowScore) -> TokenLogprob {
    TokenLogprob { id, logprob: score.logprob, top: score.top }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's alternatives: equal logits by lower id, as many as asked (all when asked more),
    /// and an id past the row (or an empty row) gets -inf instead of a panic.
    #[test]
    fn alternatives_ties_and_ids_past_the_row() {
        let logits = [0.5f32, 2.0, -1.0, 2.0, 1.5];
        let ids = |t: &TokenLogprob| t.top.iter().map(|&(j, _)| j).collect::<Vec<_>>();
        assert_eq!(ids(&token_logprob(&logits, 4, 3)), [1, 3, 4]);
        assert_eq!(ids(&token_logprob(&logits, 4, 9)), [1, 3, 4, 0, 2]);
        let t = token_logprob(&logits, 4, 2);
        assert_eq!(t.top[0].1, t.top[1].1, "tokens 1 and 3: equal logits");
        let past = token_logprob(&logits, 5, 1);
        assert_eq!((past.logprob, ids(&past)), (f32::NEG_INFINITY, vec![1]));
        let empty = token_logprob(&[], 3, 1);
        assert_eq!((empty.logprob, empty.top.len()), (f32::NEG_INFINITY, 0));
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
        let log_z = qwen_aot_runtime::scores::log_normaliser(&logits);
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
