//! Drawing tokens on the host: for what the executors' samplers do not do -- JSON mode and
//! structured outputs (`grammar`), OpenAI's `frequency_penalty` and `logit_bias` -- each step's
//! logits row is copied back, changed, and the token drawn with `sampler::sample` and the
//! session's sampling parameters, the same function and parameters the executors use (so a row
//! left as it is gives their token). In order: `logit_bias` added, `frequency_penalty` times each
//! token's count in the answer so far subtracted, the grammar's mask applied, then the sampler
//! (its own repetition and presence penalties included).
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
    /// The row being changed and the sampler's buffers, reused from step to step (no allocation
    /// per token).
    row: Vec<f32>,
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
        let (row, scratch) = (Vec::new(), sampler::SampleScratch::default());
        HostSteps { draw, sampling, row, scratch, grammar, history, counts: HashMap::new() }
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

    /// The token drawn at position `pos` from `logits`, the row after the tokens fed so far.
    pub fn next(&mut self, logits: &[f32], pos: usize) -> Result<u32> {
        let row = &mut self.row;
        row.clear();
        row.extend_from_slice(logits);
        for &(id, bias) in &self.draw.logit_bias {
            if let Some(l) = row.get_mut(id as usize) {
                *l += bias;
            }
        }
        if self.draw.frequency_penalty != 0.0 {
            for (&id, &n) in &self.counts {
                if let Some(l) = row.get_mut(id as usize) {
                    *l -= self.draw.frequency_penalty * n as f32;
                }
            }
        }
        if let Some(g) = self.grammar.as_mut() {
            g.apply(row)?;
        }
        let id = sampler::sample_with(&mut self.scratch, row, &self.history, &self.sampling, pos);
        if let Some(g) = self.grammar.as_mut() {
            g.advance(id)?;
        }
        *self.counts.entry(id).or_default() += 1;
        Ok(id)
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
}
