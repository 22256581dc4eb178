//! Token sampling, defined so that the CPU executor and the device kernel compute exactly the
//! same function of (logits, recent tokens, parameters, seed, position):
//!
//! 1. Penalties over the distinct ids among the last `penalty_window` tokens: repetition
//!    (a positive logit is divided by `repeat_penalty`, a negative one multiplied) and presence
//!    (`presence_penalty` subtracted).
//! 2. Temperature 0 is greedy: the argmax (lowest id on ties).
//! 3. Otherwise the candidates are the `k` highest logits (`top_k`, 0 = no limit, always capped
//!    at [`MAX_CANDIDATES`]: beyond a few hundred tokens the tail carries no mass that changes a
//!    sample), sorted by logit descending, ties by lower id.
//! 4. Softmax of `logit / temperature` over the candidates (f32, max subtracted).
//! 5. min-p: drop candidates with `p < min_p * p_max`; top-p: keep the shortest prefix whose
//!    cumulative probability reaches `top_p`.
//! 6. Draw: `u` in [0, 1) from a counter-based generator of (`seed`, position), so the same seed
//!    and prompt give the same text; the first candidate whose cumulative mass exceeds
//!    `u * total` is chosen.
use crate::error::RuntimeError;

/// Largest candidate set after top-k.
pub const MAX_CANDIDATES: usize = crate::kernel_constants::SAMPLE_MAX_CANDIDATES;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    /// How many recent tokens (prompt included) the penalties look at.
    pub penalty_window: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, no penalties.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            penalty_window: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Rejects values that have no meaning, with the flag name in the message.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::InvalidArgument(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("--temperature must be >= 0 and finite, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("--top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("--min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("--repeat-penalty must be > 0, got {}", self.repeat_penalty));
        }
        if !self.presence_penalty.is_finite() {
            return bad(format!("--presence-penalty must be finite, got {}", self.presence_penalty));
        }
        if self.penalty_window > 4096 {
            return bad(format!("--penalty-window must be at most 4096, got {}", self.penalty_window));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform number in [0, 1) used to sample the token at `pos` (24 bits, exact in f32).
pub fn uniform(seed: u64, pos: u64) -> f32 {
    let z = mix(seed.wrapping_add(pos.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Applies the penalties of `p` for `recent` tokens to `logits` in place.
pub fn apply_penalties(logits: &mut [f32], recent: &[u32], p: &SamplingParams) {
    if !has_penalties(p) {
        return;
    }
    for t in penalised_tokens(recent, p) {
        if let Some(l) = logits.get_mut(t as usize) {
            penalise(l, p);
        }
    }
}

/// The tokens the penalties apply to: those in the last `penalty_window` of `recent`, each once.
fn penalised_tokens(recent: &[u32], p: &SamplingParams) -> Vec<u32> {
    let mut seen = recent[recent.len().saturating_sub(p.penalty_window)..].to_vec();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// The vocabulary-sized buffers a draw needs (the penalised copy of the logits, the candidate
/// order), kept by the caller between tokens instead of allocated per sampled token (0.6 MB each
/// for the default model's vocabulary).
#[derive(Debug, Default)]
pub struct SampleScratch {
    logits: Vec<f32>,
    idx: Vec<u32>,
    probs: Vec<f32>,
    top: TopK,
}

impl SampleScratch {
    /// The candidate heap, emptied, keeping the best [`candidates`]`(p)`: offer it a grammar's
    /// allowed tokens, then draw with [`sample_top`].
    pub fn top_for(&mut self, p: &SamplingParams) -> &mut TopK {
        self.top.reset(candidates(p));
        &mut self.top
    }
}

/// Chooses the next token from `logits` (already penalised) with uniform draw `u`.
pub fn choose(logits: &[f32], p: &SamplingParams, u: f32) -> u32 {
    choose_with(&mut Vec::new(), &mut Vec::new(), &mut TopK::default(), logits, p, u)
}

/// [`choose`] with the caller's candidate buffers.
fn choose_with(
    idx: &mut Vec<u32>,
    probs: &mut Vec<f32>,
    top: &mut TopK,
    logits: &[f32],
    p: &SamplingParams,
    u: f32,
) -> u32 {
    if p.is_greedy() {
        return crate::cpu::kernels::argmax(logits) as u32;
    }
    best_k(top, idx, logits, candidates(p).min(logits.len()));
    pick(idx, probs, logits, p, u)
}

/// How many candidates a sampled draw looks at: `top_k`, at most [`MAX_CANDIDATES`] (0: all of
/// those).
pub fn candidates(p: &SamplingParams) -> usize {
    if p.top_k == 0 {
        MAX_CANDIDATES
    } else {
        p.top_k.min(MAX_CANDIDATES)
    }
}

/// The sampled draw from the candidates `idx` (ids into `logits`, best first, not empty):
/// temperature, min-p, top-p, then the cumulative walk with `u`.
fn pick(idx: &[u32], probs: &mut Vec<f32>, logits: &[f32], p: &SamplingParams, u: f32) -> u32 {
    let inv_t = 1.0 / p.temperature;
    let top = logits[idx[0] as usize] * inv_t;
    probs.clear();
    probs.extend(idx.iter().map(|&i| (logits[i as usize] * inv_t - top).exp()));
    let sum: f32 = probs.iter().sum();
    // min-p relative to the best candidate (whose unnormalised weight is exactly 1).
    let mut n = probs.iter().take_while(|&&q| q >= p.min_p).count().max(1);
    // top-p: shortest prefix reaching top_p of the mass.
    let mut acc = 0.0;
    for (i, &q) in probs[..n].iter().enumerate() {
        acc += q;
        if acc >= p.top_p * sum {
            n = i + 1;
            break;
        }
    }
    let total: f32 = probs[..n].iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    for (i, &q) in probs[..n].iter().enumerate() {
        acc += q;
        if acc > target {
            return idx[i];
        }
    }
    idx[n - 1]
}

/// The `k` best positions of `logits` into `out`, best first: by value descending (the total
/// order of `f32::total_cmp`), ties to the lower position -- the first `k` of every position
/// sorted that way. One pass with a heap of `k` keys: most positions cost one comparison, where
/// selecting over an index array paid an indirect load per comparison (benches/grammar.rs, the
/// sampled draw: experiments/LOG.md, twenty-fifth session).
fn best_k(top: &mut TopK, out: &mut Vec<u32>, logits: &[f32], k: usize) {
    top.reset(k);
    for (i, &v) in logits.iter().enumerate() {
        top.offer(i as u32, v);
    }
    top.best_first(out);
}

/// The best `k` of the (id, value) pairs offered to it, in any order: by value descending (the
/// total order of `f32::total_cmp`), ties to the lower id. A heap of `k` keys, each the value's
/// order-preserving bits above the id's complement (a larger key is the better candidate; keys
/// are distinct): once full, an offer costs one comparison.
#[derive(Debug, Default)]
pub struct TopK {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<u64>>,
    k: usize,
    /// The worst key kept once `k` are: an offer at or below it is dropped by one comparison,
    /// without touching the heap.
    floor: Option<u64>,
}

impl TopK {
    /// Empty, to keep the best `k` of what is offered next (the heap's memory is kept).
    pub fn reset(&mut self, k: usize) {
        self.heap.clear();
        self.k = k;
        self.floor = None;
    }

    #[inline]
    pub fn offer(&mut self, id: u32, v: f32) {
        let b = v.to_bits();
        let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
        let key = (u64::from(ordered) << 32) | u64::from(!id);
        if self.k == 0 || self.floor.is_some_and(|f| key <= f) {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(std::cmp::Reverse(key));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // `Reverse`: the heap's top is the smallest key kept; `key` beats it (above the floor).
            *worst = std::cmp::Reverse(key);
        }
        if self.heap.len() == self.k {
            self.floor = self.heap.peek().map(|w| w.0);
        }
    }

    /// The ids kept, best first, into `out`; the heap is left empty (its memory kept).
    pub fn best_first(&mut self, out: &mut Vec<u32>) {
        out.clear();
        // Ascending `Reverse` is descending keys: best first.
        let mut sorted = std::mem::take(&mut self.heap).into_sorted_vec();
        out.extend(sorted.iter().map(|&std::cmp::Reverse(c)| !(c as u32)));
        sorted.clear();
        self.heap = sorted.into();
        self.floor = None;
    }
}

/// The sampled draw (`p` not greedy, no penalties) at position `pos` among the candidates the
/// scratch's heap ([`SampleScratch::top_for`]) gathered from `logits`: what [`sample_with`] draws
/// from a row whose entries outside the offered ids are -inf, when the heap was offered every such
/// id with its logit. A grammar's allowed tokens are offered straight from its mask, so the row
/// is never copied or filtered (structured outputs, `host_draw`).
pub fn sample_top(scratch: &mut SampleScratch, logits: &[f32], p: &SamplingParams, pos: usize) -> u32 {
    debug_assert!(!p.is_greedy() && !has_penalties(p));
    let SampleScratch { idx, probs, top, .. } = scratch;
    top.best_first(idx);
    pick(idx, probs, logits, p, uniform(p.seed, pos as u64))
}

/// Penalties + choice for the token at position `pos`, on a copy of the logits.
pub fn sample(logits: &[f32], recent: &[u32], p: &SamplingParams, pos: usize) -> u32 {
    sample_with(&mut SampleScratch::default(), logits, recent, p, pos)
}

/// [`sample`] with the caller's buffers (the same token: the same arithmetic on the same values).
pub fn sample_with(scratch: &mut SampleScratch, logits: &[f32], recent: &[u32], p: &SamplingParams, pos: usize) -> u32 {
    let u = uniform(p.seed, pos as u64);
    let SampleScratch { logits: penalised, idx, probs, top } = scratch;
    if !has_penalties(p) {
        return choose_with(idx, probs, top, logits, p, u);
    }
    penalised.clear();
    penalised.extend_from_slice(logits);
    apply_penalties(penalised, recent, p);
    choose_with(idx, probs, top, penalised, p, u)
}

/// [`sample_with`] restricted to the tokens `ids` (ascending, not empty), whose logits are
/// `values` (changed in place by the penalties): the token `sample_with` draws from the whole row
/// with every other logit -inf, at the cost of `ids.len()` instead of the row's length. This is
/// how a grammar's few allowed tokens are drawn (structured outputs).
pub fn sample_among(
    scratch: &mut SampleScratch,
    ids: &[u32],
    values: &mut [f32],
    recent: &[u32],
    p: &SamplingParams,
    pos: usize,
) -> u32 {
    debug_assert_eq!(ids.len(), values.len());
    debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascending");
    let u = uniform(p.seed, pos as u64);
    if has_penalties(p) {
        for t in penalised_tokens(recent, p) {
            if let Ok(k) = ids.binary_search(&t) {
                penalise(&mut values[k], p);
            }
        }
    }
    let SampleScratch { idx, probs, top, .. } = scratch;
    // Candidate order is by value, then by position: positions ascend with the ids, so ties go to
    // the lower id as in the whole row.
    ids[choose_with(idx, probs, top, values, p, u) as usize]
}

/// One seen token's logit under the repetition and presence penalties.
fn penalise(l: &mut f32, p: &SamplingParams) {
    *l = if *l > 0.0 { *l / p.repeat_penalty } else { *l * p.repeat_penalty };
    *l -= p.presence_penalty;
}

/// Whether [`apply_penalties`] changes anything.
pub fn has_penalties(p: &SamplingParams) -> bool {
    p.repeat_penalty != 1.0 || p.presence_penalty != 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams { temperature: t, ..Default::default() }
    }

    /// Drawing among a subset of the row (a grammar's allowed tokens) gives the token of the whole
    /// row with every other logit at -inf, for every kind of draw: greedy with ties, temperature
    /// with top-k / top-p / min-p, penalties on drawn tokens inside and outside the subset, and
    /// subsets larger than the candidate limit.
    #[test]
    fn sample_among_is_the_whole_row_with_the_rest_at_minus_infinity() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = mix(state.wrapping_add(1));
            state
        };
        let kinds = [
            params(0.0),
            params(0.8),
            SamplingParams { temperature: 1.2, top_k: 5, ..Default::default() },
            SamplingParams { temperature: 1.0, top_p: 0.9, min_p: 0.05, ..Default::default() },
            SamplingParams { temperature: 0.7, repeat_penalty: 1.3, presence_penalty: 0.5, ..Default::default() },
            SamplingParams { temperature: 0.0, repeat_penalty: 2.0, ..Default::default() },
        ];
        let mut scratch = SampleScratch::default();
        let mut draws = std::collections::HashSet::new();
        for case in 0..300 {
            let vocab = 1000;
            // Values from a small set, so ties happen.
            let row: Vec<f32> = (0..vocab).map(|_| (next() % 40) as f32 / 8.0 - 2.0).collect();
            let size = [1, 3, 40, 300, 999][case % 5];
            let mut ids: Vec<u32> = (0..size).map(|_| (next() % vocab as u64) as u32).collect();
            ids.sort_unstable();
            ids.dedup();
            let recent: Vec<u32> =
                (0..20).map(|_| (next() % vocab as u64) as u32).chain(ids.iter().take(3).copied()).collect();
            let mut dense = vec![f32::NEG_INFINITY; vocab];
            for &i in &ids {
                dense[i as usize] = row[i as usize];
            }
            for (k, p) in kinds.iter().enumerate() {
                let p = SamplingParams { seed: case as u64, ..p.clone() };
                let mut values: Vec<f32> = ids.iter().map(|&i| row[i as usize]).collect();
                let among = sample_among(&mut scratch, &ids, &mut values, &recent, &p, case);
                let whole = sample(&dense, &recent, &p, case);
                assert_eq!(among, whole, "case {case}, kind {k}, {} ids", ids.len());
                assert!(ids.contains(&among));
                draws.insert(among);
            }
        }
        assert!(draws.len() > 200, "the draws vary: {} distinct", draws.len());
    }

    /// `best_k` keeps exactly the first `k` positions of the row sorted by value (total order)
    /// descending, ties to the lower position -- the selection it replaced, kept here as the
    /// reference -- on rows with ties, signed zeros, infinities and NaNs, for k from 1 to past
    /// the row's length.
    #[test]
    fn best_k_is_the_sorted_rows_first_k() {
        let reference = |logits: &[f32], k: usize| {
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b)));
            idx.truncate(k);
            idx
        };
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1.5, -1.5];
        let mut state = 99u64;
        let (mut out, mut top) = (Vec::new(), TopK::default());
        for case in 0..400 {
            let n = [1, 2, 7, 300, 1000][case % 5];
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    state = mix(state.wrapping_add(1));
                    match state % 10 {
                        0 => specials[(state >> 8) as usize % specials.len()],
                        _ => ((state >> 16) % 50) as f32 / 4.0 - 6.0,
                    }
                })
                .collect();
            for k in [1, 2, 5, 256, n, n + 3] {
                best_k(&mut top, &mut out, &row, k.min(n));
                assert_eq!(out, reference(&row, k.min(n)), "case {case}, n {n}, k {k}");
            }
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let l = [0.1, 3.0, -2.0, 3.0];
        assert_eq!(choose(&l, &params(0.0), 0.99), 1, "lowest id on ties");
    }

    #[test]
    fn u_walks_the_cumulative_distribution_in_candidate_order() {
        // Weights after softmax at T=1: token 2 (logit ln 3) 3/6, token 0 (ln 2) 2/6, token 1 (0) 1/6.
        let l = [2f32.ln(), 0.0, 3f32.ln()];
        let p = params(1.0);
        assert_eq!(choose(&l, &p, 0.0), 2);
        assert_eq!(choose(&l, &p, 0.49), 2);
        assert_eq!(choose(&l, &p, 0.51), 0);
        assert_eq!(choose(&l, &p, 0.83), 0);
        assert_eq!(choose(&l, &p, 0.85), 1);
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let l = [2f32.ln(), 0.0, 3f32.ln()];
        assert_eq!(choose(&l, &SamplingParams { top_k: 1, ..params(1.0) }, 0.99), 2);
        // top_p 0.5: token 2 alone holds 3/6.
        assert_eq!(choose(&l, &SamplingParams { top_p: 0.5, ..params(1.0) }, 0.99), 2);
        // top_p 0.8: tokens 2 and 0 (5/6); u = 0.99 picks the last kept one.
        assert_eq!(choose(&l, &SamplingParams { top_p: 0.8, ..params(1.0) }, 0.99), 0);
        // min_p 0.5: token 1 (1/3 of the best) is dropped, token 0 (2/3) kept.
        assert_eq!(choose(&l, &SamplingParams { min_p: 0.5, ..params(1.0) }, 0.99), 0);
    }

    #[test]
    fn penalties_push_recent_tokens_down() {
        let (pos, neg) = (2.0, -1.0);
        let mut l = vec![pos, neg, 1.5];
        let p = SamplingParams { repeat_penalty: 2.0, presence_penalty: 0.25, ..params(0.0) };
        apply_penalties(&mut l, &[0, 0, 1, 99], &p);
        // A positive logit is divided by the penalty, a negative one multiplied.
        assert_eq!(l, vec![pos / 2.0 - 0.25, neg * 2.0 - 0.25, 1.5]);
        assert_eq!(sample(&[2.0, -1.0, 1.5], &[0, 1], &p, 5), 2, "greedy after penalties");
    }

    #[test]
    fn same_seed_same_draws_and_draws_spread_over_the_unit_interval() {
        assert_eq!(uniform(7, 3), uniform(7, 3));
        assert_ne!(uniform(7, 3), uniform(8, 3));
        let us: Vec<f32> = (0..10_000).map(|i| uniform(42, i)).collect();
        assert!(us.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = us.iter().sum::<f32>() / us.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn invalid_values_are_rejected_with_the_flag_name() {
        for (p, flag) in [
            (SamplingParams { top_p: 1.5, ..Default::default() }, "--top-p"),
            (SamplingParams { top_p: 0.0, ..Default::default() }, "--top-p"),
            (SamplingParams { temperature: -1.0, ..Default::default() }, "--temperature"),
            (SamplingParams { min_p: 2.0, ..Default::default() }, "--min-p"),
            (SamplingParams { repeat_penalty: 0.0, ..Default::default() }, "--repeat-penalty"),
        ] {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
        assert!(SamplingParams::default().validate().is_ok());
    }
}
