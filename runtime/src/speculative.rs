//! Speculative decoding by prompt lookup: guess the next tokens by finding the context's latest
//! n-gram earlier in the context and copying what followed it (code edits, quotes, repeated
//! identifiers and boilerplate repeat their context), then check the guesses in one multi-row
//! pass ([`crate::session::Session::verify_draft`]). The check keeps a guessed token only when it
//! is the token the model would have chosen anyway, so the output is the plain decode's, token
//! for token, greedy or seeded sampling alike; a wrong guess costs one row of the pass.

/// How drafts are made: the longest suffix of the context, from `max_ngram` down to `min_ngram`
/// tokens, that occurred earlier; up to `max_draft` tokens that followed its latest occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NgramDrafter {
    pub max_draft: usize,
    pub min_ngram: usize,
    pub max_ngram: usize,
}

/// The n-gram sizes `generate --draft-max` uses unless told otherwise.
pub const DEFAULT_MIN_NGRAM: usize = 2;
pub const DEFAULT_MAX_NGRAM: usize = 4;
/// The largest n-gram size and draft accepted: a lookup costs O(context x n-gram) per token, and
/// a draft longer than a few dozen tokens is never all right.
pub const MAX_NGRAM_LIMIT: usize = 32;
pub const MAX_DRAFT_LIMIT: usize = 32;

impl NgramDrafter {
    pub fn new(max_draft: usize) -> NgramDrafter {
        NgramDrafter { max_draft, min_ngram: DEFAULT_MIN_NGRAM, max_ngram: DEFAULT_MAX_NGRAM }
    }

    /// Checks the sizes (named as the flags that set them).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_ngram > MAX_NGRAM_LIMIT {
            return Err(format!("--draft-ngram-max {} is more than {MAX_NGRAM_LIMIT}", self.max_ngram));
        }
        if self.max_draft > MAX_DRAFT_LIMIT {
            return Err(format!("--draft-max {} is more than {MAX_DRAFT_LIMIT}", self.max_draft));
        }
        if self.min_ngram == 0 || self.min_ngram > self.max_ngram {
            return Err(format!(
                "--draft-ngram-min {} must be at least 1 and at most --draft-ngram-max {}",
                self.min_ngram, self.max_ngram
            ));
        }
        Ok(())
    }

    /// Up to `min(max_draft, limit)` tokens guessed to follow `context` (empty: no guess).
    /// `context` is everything the model has seen and produced, oldest first, ending with the
    /// token the draft would follow.
    pub fn draft(&self, context: &[u32], limit: usize) -> Vec<u32> {
        match self.lookup(context) {
            Some((_, from)) => {
                context[from..from.saturating_add(limit.min(self.max_draft)).min(context.len())].to_vec()
            }
            None => Vec::new(),
        }
    }

    /// The longest matching n-gram's size and where what followed its latest earlier occurrence
    /// starts in `context` (at least one token follows it).
    fn lookup(&self, context: &[u32]) -> Option<(usize, usize)> {
        let len = context.len();
        (self.min_ngram..=self.max_ngram.min(len.saturating_sub(1))).rev().find_map(|n| {
            let suffix = &context[len - n..];
            // The latest occurrence that starts before the suffix itself.
            (0..len - n).rev().find(|&i| &context[i..i + n] == suffix).map(|start| (n, start + n))
        })
    }
}

/// The estimated chance that a drafted token is the model's, before any draft was checked.
const PRIOR_ACCEPTANCE: f32 = 0.6;
/// How fast the estimate follows the checks (each checked token moves it this far toward 0 or
/// 1): fast enough that a copied passage gets long drafts within a line of code (0.125 was
/// 6-10 points of speed slower on the edits measured in experiments/LOG.md).
const LEARNING_RATE: f32 = 0.25;
/// A draft the estimate says not to check is checked anyway (one token) once in this many
/// lookups, so that an estimate driven down early can recover.
const PROBE_EVERY: u32 = 16;

/// A draft and what its check teaches the speculator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    pub tokens: Vec<u32>,
    /// The size of the n-gram that found it.
    ngram: usize,
}

/// Decides how much of a lookup's draft to check: each matched n-gram size keeps an estimate of
/// how often a drafted token is the model's choice (given the ones before it were), and a draft
/// is cut to the length that gives the most tokens per decode step of work, against the backend's
/// cost of a row ([`crate::executor::Executor::verify_row_cost`]). On the CPU a row costs about
/// half a decode step, so a wrong guess is not free: natural-language text, whose n-grams repeat
/// but whose continuations rarely do, ends up checking almost nothing.
#[derive(Clone, Debug)]
pub struct Speculator {
    drafter: NgramDrafter,
    row_cost: f32,
    /// By n-gram size.
    acceptance: Vec<f32>,
    declined: u32,
}

impl Speculator {
    pub fn new(drafter: NgramDrafter, row_cost: f32) -> Speculator {
        Speculator { drafter, row_cost, acceptance: vec![PRIOR_ACCEPTANCE; drafter.max_ngram + 1], declined: 0 }
    }

    /// The draft to check after `context` (empty: decode one token), at most `limit` tokens.
    pub fn draft(&mut self, context: &[u32], limit: usize) -> Draft {
        let Some((ngram, from)) = self.drafter.lookup(context) else {
            return Draft::default();
        };
        let available = (context.len() - from).min(limit).min(self.drafter.max_draft);
        let mut len = best_draft_len(self.acceptance[ngram], self.row_cost, available);
        // Probe only where a right guess would pay at all (not where a row costs a whole step).
        if len == 0 && best_draft_len(1.0, self.row_cost, available) > 0 {
            self.declined += 1;
            if self.declined >= PROBE_EVERY {
                self.declined = 0;
                len = 1;
            }
        }
        Draft { tokens: context[from..from + len].to_vec(), ngram }
    }

    /// Learns from a check of `draft` that kept its first `accepted` tokens.
    pub fn record(&mut self, draft: &Draft, accepted: usize) {
        let a = &mut self.acceptance[draft.ngram];
        // The tokens after the first rejected one were not tested.
        let rejected = usize::from(accepted < draft.tokens.len());
        for hit in std::iter::repeat_n(1.0, accepted).chain(std::iter::repeat_n(0.0, rejected)) {
            *a += LEARNING_RATE * (hit - *a);
        }
    }

    /// The current estimate for drafts found by an n-gram of `ngram` tokens.
    pub fn acceptance(&self, ngram: usize) -> f32 {
        self.acceptance[ngram]
    }
}

/// The draft length in `0..=max` that gives the most tokens per decode step of work when each
/// token is accepted with chance `acceptance` after the ones before it: a pass of `1 + k` rows
/// costs `1 + row_cost * k` steps and yields `1 + a + a^2 + ... + a^k` tokens on average.
/// 0 (a plain decode step, rate 1) unless a draft does better.
pub fn best_draft_len(acceptance: f32, row_cost: f32, max: usize) -> usize {
    let (mut best, mut best_rate) = (0, 1.0f32);
    let (mut expected, mut p) = (1.0f32, 1.0f32);
    for k in 1..=max {
        p *= acceptance;
        expected += p;
        let rate = expected / (1.0 + row_cost * k as f32);
        if rate > best_rate * (1.0 + 1e-4) {
            (best, best_rate) = (k, rate);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(max_draft: usize, min_ngram: usize, max_ngram: usize) -> NgramDrafter {
        NgramDrafter { max_draft, min_ngram, max_ngram }
    }

    #[test]
    fn the_longest_suffix_seen_before_gives_what_followed_its_latest_occurrence() {
        // Suffix [1, 2] occurs at 0 (followed by 3, 4) and at 5 (followed by 9, 8, 1): latest wins.
        let ctx = [1, 2, 3, 4, 0, 1, 2, 9, 8, 1, 2];
        assert_eq!(d(2, 1, 3).draft(&ctx, 10), vec![9, 8]);
        assert_eq!(d(5, 1, 3).draft(&ctx, 10), vec![9, 8, 1, 2]);
        // The limit caps the draft below max_draft.
        assert_eq!(d(5, 1, 3).draft(&ctx, 1), vec![9]);
        assert!(d(5, 1, 3).draft(&ctx, 0).is_empty());
        // A 3-gram [8, 1, 2] was never seen before, but [1, 2] was: the longest that matches.
        assert_eq!(d(3, 3, 3).draft(&ctx, 10), Vec::<u32>::new());
        // The 3-gram [0, 1, 2] occurred at 0, the 2-gram [1, 2] last at 6: the longer one decides.
        let ctx = [0, 1, 2, 5, 6, 7, 1, 2, 8, 0, 1, 2];
        assert_eq!(d(2, 2, 3).draft(&ctx, 10), vec![5, 6]);
        assert_eq!(d(2, 2, 2).draft(&ctx, 10), vec![8, 0]);
    }

    #[test]
    fn no_match_short_contexts_and_runs_of_one_token() {
        assert!(d(4, 2, 4).draft(&[1, 2, 3, 4], 8).is_empty());
        assert!(d(4, 1, 4).draft(&[], 8).is_empty());
        assert!(d(4, 1, 4).draft(&[7], 8).is_empty());
        // A run: the suffix [5, 5] last occurred one token earlier, followed by the final 5.
        assert_eq!(d(4, 2, 2).draft(&[5, 5, 5], 8), vec![5]);
        assert_eq!(d(4, 1, 1).draft(&[3, 5], 8), Vec::<u32>::new());
        assert_eq!(d(4, 1, 1).draft(&[5, 3, 5], 8), vec![3, 5]);
    }

    #[test]
    fn the_best_length_grows_with_acceptance_and_shrinks_with_row_cost() {
        // At half a step a row, a token must be accepted more often than not to pay.
        assert_eq!(best_draft_len(0.45, 0.5, 8), 0);
        assert_eq!(best_draft_len(0.6, 0.5, 8), 1);
        // a = 0.9, c = 0.48: k = 3 gives 3.439 / 2.44 = 1.409 tokens a step, k = 4 4.095 / 2.92 = 1.402.
        assert_eq!(best_draft_len(0.9, 0.48, 8), 3);
        assert_eq!(best_draft_len(0.9, 0.48, 2), 2);
        // Always right: the longest draft allowed.
        assert_eq!(best_draft_len(1.0, 0.48, 8), 8);
        // Nearly free rows (a GPU's multi-row pass): long drafts even at modest acceptance, up to
        // where a row's cost outgrows its chance (a = 0.6: k = 6 gives 2.430 / 1.12 = 2.170,
        // k = 5 2.383 / 1.10 = 2.167, k = 7 2.458 / 1.14 = 2.156).
        assert_eq!(best_draft_len(0.6, 0.02, 8), 6);
        assert_eq!(best_draft_len(0.0, 0.02, 8), 0);
        assert_eq!(best_draft_len(1.0, 0.5, 0), 0);
    }

    #[test]
    fn the_speculator_learns_per_ngram_size_and_probes_after_declining() {
        let mut s = Speculator::new(d(4, 1, 2), 0.48);
        // [1, 2] occurred before, followed by 3, 4, 5.
        let ctx = [1, 2, 3, 4, 5, 9, 1, 2];
        let first = s.draft(&ctx, 8);
        assert_eq!(first.tokens, vec![3], "the prior (0.6) checks one token");
        // One rejected check brings the 2-gram's estimate below the break-even (0.48).
        s.record(&first, 0);
        assert!((s.acceptance(2) - 0.45).abs() < 1e-6);
        assert_eq!(s.acceptance(1), PRIOR_ACCEPTANCE);
        for _ in 1..PROBE_EVERY {
            assert!(s.draft(&ctx, 8).tokens.is_empty());
        }
        assert_eq!(s.draft(&ctx, 8).tokens, vec![3], "a probe after {PROBE_EVERY} declined lookups");
        // Accepted drafts raise it until longer drafts pay; the limit still caps them.
        for _ in 0..40 {
            let d = Draft { tokens: vec![3, 4, 5], ngram: 2 };
            s.record(&d, 3);
        }
        assert_eq!(s.draft(&ctx, 8).tokens, vec![3, 4, 5, 9]);
        assert_eq!(s.draft(&ctx, 2).tokens, vec![3, 4]);
        // A partial acceptance counts the accepted tokens and the first rejected one only.
        let before = s.acceptance(2);
        s.record(&Draft { tokens: vec![3, 4, 5], ngram: 2 }, 2);
        let expected = before + LEARNING_RATE * (1.0 - before);
        let expected = expected + LEARNING_RATE * (1.0 - expected);
        assert!((s.acceptance(2) - expected * (1.0 - LEARNING_RATE)).abs() < 1e-6);
        // No lookup match: nothing to check.
        assert!(s.draft(&[7, 8, 9], 8).tokens.is_empty());
        // Where a row costs a whole step, nothing is ever checked, not even a probe.
        let mut whole = Speculator::new(d(4, 1, 2), 1.0);
        assert!((0..3 * PROBE_EVERY).all(|_| whole.draft(&ctx, 8).tokens.is_empty()));
    }

    #[test]
    fn sizes_are_validated() {
        assert!(NgramDrafter::new(3).validate().is_ok());
        assert!(d(3, 0, 2).validate().unwrap_err().contains("--draft-ngram-min 0"));
        assert!(d(3, 3, 2).validate().is_err());
        assert!(d(3, 1, MAX_NGRAM_LIMIT + 1).validate().unwrap_err().contains("--draft-ngram-max 33"));
        assert!(d(usize::MAX, 1, 4).validate().unwrap_err().contains("--draft-max"));
        assert!(d(MAX_DRAFT_LIMIT, 1, MAX_NGRAM_LIMIT).validate().is_ok());
    }
}
