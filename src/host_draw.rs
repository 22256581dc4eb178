//! Drawing tokens on the host: for what the executors' samplers do not do -- JSON mode and
//! structured outputs (`grammar`), OpenAI's `frequency_penalty` and `logit_bias` -- with the
//! session's sampling parameters and the same sampler the executors use (so a row left as it is
//! gives their token). In order: `logit_bias` added, `frequency_penalty` times each token's count
//! in the answer so far subtracted, the grammar's mask applied, then the sampler (its own
//! repetition and presence penalties included). Under a grammar only the allowed tokens are
//! looked at (`sampler::sample_among`), and a greedy draw that nothing but the grammar changes
//! keeps the device's own argmax where the grammar allows it (`HostSteps::takes`), so most steps
//! bring no logits row back.
use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use qwen_aot_runtime::sampler::{self, SamplingParams};

use crate::grammar::{Grammar, GrammarSteps};

/// How a request's tokens are drawn on the host (besides the session's sampling parameters).
#[derive(Clone)]
pub struct HostDraw {
    /// Structured outputs: the answer is a sentence of this grammar (a JSON schema's, say).
    pub grammar: Option<Arc<Grammar>>,
    /// Subtracted from a token's logit once per time it is already in the answer.
    pub frequency_penalty: f32,
    /// Added to these tokens' logits.
    pub logit_bias: Vec<(u32, f32)>,
}

impl std::fmt::Debug for HostDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostDraw")
            .field("grammar", &self.grammar.is_some())
            .field("frequency_penalty", &self.frequency_penalty)
            .field("logit_bias", &self.logit_bias)
            .finish()
    }
}

/// A [`HostDraw`] through one answer.
pub struct HostSteps<'a> {
    draw: &'a HostDraw,
    sampling: SamplingParams,
    /// The row being changed (or, under a grammar, the allowed ids and their logits) and the
    /// sampler's buffers, reused from step to step (no allocation per token).
    row: Vec<f32>,
    ids: Vec<u32>,
    scratch: sampler::SampleScratch,
    /// The grammar's matcher after the answer so far (structured outputs).
    grammar: Option<GrammarSteps<'a>>,
    /// The session's tokens (for the sampler's penalties).
    history: Vec<u32>,
    /// How often each token is in the answer so far.
    counts: HashMap<u32, u32>,
}

impl<'a> HostSteps<'a> {
    /// Steps of `draw` with `sampling` (the session's) after `history` (the tokens the session
    /// holds).
    pub fn new(draw: &'a HostDraw, sampling: SamplingParams, history: Vec<u32>) -> HostSteps<'a> {
        let grammar = draw.grammar.as_deref().map(Grammar::start);
        let (row, ids, scratch) = (Vec::new(), Vec::new(), sampler::SampleScratch::default());
        HostSteps { draw, sampling, row, ids, scratch, grammar, history, counts: HashMap::new() }
    }

    /// Token `id` was fed to the session.
    pub fn fed(&mut self, id: u32) {
        self.history.push(id);
    }

    /// Whether a grammar constrains the draw (then [`HostSteps::prepare`] has work to do).
    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    /// Computes the grammar's mask for the next draw now (it depends only on the tokens drawn so
    /// far), so that it can run beside the step that computes the logits.
    pub fn prepare(&mut self) -> Result<()> {
        if let Some(g) = self.grammar.as_mut() {
            g.prepare()?;
        }
        Ok(())
    }

    /// Takes `token`, the device's own choice (the whole row's argmax), when it is this draw's
    /// choice too: greedy, nothing but the grammar changes the row, and the grammar allows it
    /// (then it is the allowed tokens' argmax, ties to the lower id as in the whole row). The
    /// row then need not cross to the host. False: draw with [`HostSteps::next`].
    ///
    /// A taken token's logit is not checked for being finite (its row never reaches the host),
    /// as in plain greedy decoding.
    pub fn takes(&mut self, token: u32) -> Result<bool> {
        if !self.may_take() {
            return Ok(false);
        }
        if let Some(g) = self.grammar.as_mut() {
            if !g.allows(token)? {
                return Ok(false);
            }
            g.advance(token)?;
        }
        *self.counts.entry(token).or_default() += 1;
        Ok(true)
    }

    /// Whether [`HostSteps::takes`] may take the device's choice (greedy, nothing but the grammar
    /// changes the row): if not, every step needs its row, best fetched with the token.
    pub fn may_take(&self) -> bool {
        self.sampling.is_greedy() && self.row_unchanged()
    }

    /// Whether nothing but the grammar changes the row before the draw: no `logit_bias`, no
    /// `frequency_penalty`, no repetition or presence penalty.
    fn row_unchanged(&self) -> bool {
        self.draw.logit_bias.is_empty() && self.draw.frequency_penalty == 0.0 && !sampler::has_penalties(&self.sampling)
    }

    /// The token drawn at position `pos` from `logits` (finite: the session refuses other rows),
    /// the row after the tokens fed so far.
    pub fn next(&mut self, logits: &[f32], pos: usize) -> Result<u32> {
        let unchanged = self.row_unchanged();
        let id = match self.grammar.as_mut() {
            // Nothing changes the row: the allowed ids go from the mask straight to the argmax or
            // the sampler's candidates, no list built (a JSON string allows ~100,000 tokens).
            Some(g) if unchanged && self.sampling.is_greedy() => {
                // The first largest in id order (the ids come ascending), as `kernels::argmax`
                // over the list would find.
                let mut best = (u32::MAX, f32::NEG_INFINITY);
                g.for_each_allowed(logits.len(), |id| {
                    let v = logits[id as usize];
                    if v > best.1 || best.0 == u32::MAX {
                        best = (id, v);
                    }
                })?;
                best.0
            }
            Some(g) if unchanged => {
                let top = self.scratch.top_for(&self.sampling);
                g.for_each_allowed(logits.len(), |id| top.offer(id, logits[id as usize]))?;
                sampler::sample_top(&mut self.scratch, logits, &self.sampling, pos)
            }
            // Only the allowed tokens are looked at: the same draw as the whole row with the rest
            // at -inf (`sample_among`), at the cost of what the grammar allows.
            Some(g) => {
                g.allowed(logits.len(), &mut self.ids)?;
                self.row.clear();
                self.row.extend(self.ids.iter().map(|&i| logits[i as usize]));
                adjust(&mut self.row, |id| self.ids.binary_search(&id).ok(), self.draw, &self.counts);
                sampler::sample_among(&mut self.scratch, &self.ids, &mut self.row, &self.history, &self.sampling, pos)
            }
            None => {
                self.row.clear();
                self.row.extend_from_slice(logits);
                adjust(&mut self.row, |id| Some(id as usize), self.draw, &self.counts);
                sampler::sample_with(&mut self.scratch, &self.row, &self.history, &self.sampling, pos)
            }
        };
        if let Some(g) = self.grammar.as_mut() {
            g.advance(id)?;
        }
        *self.counts.entry(id).or_default() += 1;
        Ok(id)
    }
}

/// Adds `draw`'s `logit_bias` to `values` and subtracts its `frequency_penalty` times each
/// token's count; `at` gives a token's place in `values` (None: not there, ignored).
fn adjust(values: &mut [f32], at: impl Fn(u32) -> Option<usize>, draw: &HostDraw, counts: &HashMap<u32, u32>) {
    for &(id, bias) in &draw.logit_bias {
        if let Some(l) = at(id).and_then(|k| values.get_mut(k)) {
            *l += bias;
        }
    }
    if draw.frequency_penalty != 0.0 {
        for (&id, &n) in counts {
            if let Some(l) = at(id).and_then(|k| values.get_mut(k)) {
                *l -= draw.frequency_penalty * n as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, ..SamplingParams::default() }
    }

    /// Greedy draws: a row left alone gives its argmax; a bias moves the choice; the frequency
    /// penalty lowers a token once per time it was drawn, until another wins.
    #[test]
    fn bias_and_frequency_penalty_move_the_draw() {
        let logits = [1.0f32, 3.0, 2.5, 0.0];
        let plain = HostDraw { grammar: None, frequency_penalty: 0.0, logit_bias: vec![] };
        assert_eq!(HostSteps::new(&plain, greedy(), vec![]).next(&logits, 0).unwrap(), 1);
        let biased = HostDraw { logit_bias: vec![(3, 5.0), (99, 1.0)], ..plain.clone() };
        assert_eq!(
            HostSteps::new(&biased, greedy(), vec![]).next(&logits, 0).unwrap(),
            3,
            "ids past the row are ignored"
        );
        let freq = HostDraw { frequency_penalty: 0.4, ..plain };
        let mut steps = HostSteps::new(&freq, greedy(), vec![]);
        // 1 (3.0), 1 (3.0 - 0.4 = 2.6 > 2.5), then 2 (3.0 - 0.8 = 2.2 < 2.5), then 1 again (2.2 vs 2.1).
        let drawn: Vec<u32> = (0..4).map(|p| steps.next(&logits, p).unwrap()).collect();
        assert_eq!(drawn, [1, 1, 2, 1]);
    }

    /// Under a grammar the three ways to a token agree token for token through a JSON answer, on
    /// rows with ties and signed zeros: the allowed list with the row changed (a bias on an id
    /// past the vocabulary changes nothing but takes that path), the mask straight into the
    /// argmax or the sampler's candidates (nothing changes the row), and, greedy, the device's
    /// own choice where the grammar allows it. Greedy and sampled, with top-k, top-p and min-p.
    #[test]
    fn the_ways_to_a_token_under_a_grammar_agree() {
        let env = crate::grammar::tests::byte_env();
        let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}, "required": ["n", "s"]});
        let grammar = Some(Arc::new(Grammar::json_schema(&env, schema).unwrap()));
        let draw = HostDraw { grammar, frequency_penalty: 0.0, logit_bias: vec![] };
        let listed = HostDraw { logit_bias: vec![(9999, 1.0)], ..draw.clone() };
        let kinds = [
            greedy(),
            SamplingParams { temperature: 0.8, seed: 4, ..SamplingParams::default() },
            SamplingParams { temperature: 1.5, top_k: 3, top_p: 0.8, min_p: 0.1, seed: 5, ..SamplingParams::default() },
        ];
        let answer = br#"{"n": 4217, "s": "a cat"}"#;
        for (k, sampling) in kinds.iter().enumerate() {
            let mut list = HostSteps::new(&listed, sampling.clone(), vec![]);
            let mut fused = HostSteps::new(&draw, sampling.clone(), vec![]);
            let mut device = HostSteps::new(&draw, sampling.clone(), vec![]);
            let (mut taken, mut refused, mut state) = (0, 0, 7u64 + k as u64);
            for pos in 0..60 {
                // Values from a small set with both zeros (ties); every other row favours the
                // answer's next byte.
                let mut row: Vec<f32> = (0..257)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        [0.0, -0.0, 1.0, 2.0, 2.5, -1.0][((state >> 33) % 6) as usize]
                    })
                    .collect();
                if pos % 2 == 0 {
                    row[*answer.get(pos).unwrap_or(&b'}') as usize] = 9.0;
                }
                let want = list.next(&row, pos).unwrap();
                assert_eq!(fused.next(&row, pos).unwrap(), want, "kind {k}, step {pos}: mask into the draw");
                let argmax = qwen_aot_runtime::cpu::kernels::argmax(&row) as u32;
                let got = match device.takes(argmax).unwrap() {
                    true => {
                        taken += 1;
                        argmax
                    }
                    false => {
                        refused += 1;
                        device.next(&row, pos).unwrap()
                    }
                };
                assert_eq!(got, want, "kind {k}, step {pos}: the device's choice");
                if want == 256 {
                    break;
                }
            }
            if sampling.is_greedy() {
                assert!(taken > 0 && refused > 0, "both paths ran: {taken} taken, {refused} refused");
            } else {
                assert_eq!(taken, 0, "a sampled draw never takes the device's choice");
            }
        }
        // A row the host changes (a bias) is never the device's choice.
        let biased = HostDraw { logit_bias: vec![(5, 1.0)], ..draw.clone() };
        assert!(!HostSteps::new(&biased, greedy(), vec![]).takes(b'{' as u32).unwrap());
    }
}
