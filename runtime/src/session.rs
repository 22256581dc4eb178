//! A generation session over any [`Executor`]: tracks the position in the KV cache, splits long
//! prompts into prefill chunks, enforces the context limit. `generate`, `perplexity`, `check` and
//! the benchmarks all drive models through this API.
use crate::error::RuntimeError;
use crate::executor::{Executor, LogitsWanted, StepOutput};
use crate::scores::RowScore;

pub struct Session {
    exec: Box<dyn Executor>,
    pos: usize,
    /// What the executor samples with (the last [`Session::set_sampling`]), for callers that
    /// draw on the host with the same parameters.
    sampling: crate::sampler::SamplingParams,
    /// Whether the executor's last call was a decode step (its logits row is still there).
    decoded_last: bool,
}

impl Session {
    pub fn new(exec: Box<dyn Executor>) -> Session {
        Session { exec, pos: 0, sampling: Default::default(), decoded_last: false }
    }

    pub fn executor(&self) -> &dyn Executor {
        self.exec.as_ref()
    }

    /// Sampling for every following token (greedy by default).
    pub fn set_sampling(&mut self, params: &crate::sampler::SamplingParams) -> Result<(), RuntimeError> {
        params.validate()?;
        self.exec.set_sampling(params)?;
        self.sampling = params.clone();
        Ok(())
    }

    /// The sampling parameters in effect ([`Session::set_sampling`]; greedy by default).
    pub fn sampling(&self) -> &crate::sampler::SamplingParams {
        &self.sampling
    }

    /// See [`Executor::warm_up`]: for idle moments (the conversation is unchanged).
    pub fn warm_up(&mut self) -> Result<(), RuntimeError> {
        self.decoded_last = false;
        self.exec.warm_up()
    }

    /// Tokens currently in the KV cache.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Room left in the KV cache.
    pub fn remaining(&self) -> usize {
        self.exec.max_seq() - self.pos
    }

    /// Forgets the conversation (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.decoded_last = false;
        self.pos = 0;
    }

    /// Keeps only the first `pos` cached tokens (entries past it are overwritten later), so a
    /// chat can reuse the cache for the common prefix of the old and new conversation.
    pub fn rewind(&mut self, pos: usize) {
        self.decoded_last = false;
        self.pos = self.pos.min(pos);
    }

    /// Appends `tokens` to the cache. Returns the next greedy token and the requested logits
    /// (for `All`, one row per token of `tokens`).
    pub fn prefill(&mut self, tokens: &[u32], logits: LogitsWanted) -> Result<StepOutput, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::InvalidCall("empty prompt".into()));
        }
        if self.pos + tokens.len() > self.exec.max_seq() {
            return Err(RuntimeError::ContextFull { needed: self.pos + tokens.len(), max_seq: self.exec.max_seq() });
        }
        self.decoded_last = false;
        let chunk = self.exec.max_prefill_tokens();
        let mut out = StepOutput::default();
        let n_chunks = tokens.len().div_ceil(chunk);
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let last = i + 1 == n_chunks;
            let want = match logits {
                LogitsWanted::All => LogitsWanted::All,
                other if last => other,
                _ => LogitsWanted::None,
            };
            let step = self.exec.prefill(part, self.pos, want)?;
            // The rows returned are the last ones of the chunk (all of them, or only the last).
            let vocab = self.exec.hparams().vocab.max(1);
            check_logits(&step.logits, vocab, self.pos + part.len() - step.logits.len() / vocab)?;
            self.pos += part.len();
            out.next_token = step.next_token;
            out.logits.extend(step.logits);
        }
        Ok(out)
    }

    /// Appends `tokens` to the cache as [`Session::prefill`] does and returns each row's score
    /// against `targets` with `top_n` alternatives ([`crate::scores::RowScore`]; the same length,
    /// `targets[i]` follows `tokens[..=i]`), chunk by chunk: what perplexity and a prompt's
    /// log-probabilities need, without the rows themselves crossing to the host where the backend
    /// can score them.
    pub fn prefill_scores(
        &mut self,
        tokens: &[u32],
        targets: &[u32],
        top_n: usize,
    ) -> Result<Vec<RowScore>, RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::InvalidCall("empty prompt".into()));
        }
        crate::scores::check_targets(tokens.len(), targets, self.exec.hparams().vocab, top_n)?;
        if self.pos + tokens.len() > self.exec.max_seq() {
            return Err(RuntimeError::ContextFull { needed: self.pos + tokens.len(), max_seq: self.exec.max_seq() });
        }
        self.decoded_last = false;
        let chunk = self.exec.max_prefill_tokens();
        let mut out = Vec::with_capacity(tokens.len());
        for (part, want) in tokens.chunks(chunk).zip(targets.chunks(chunk)) {
            out.extend(self.exec.prefill_scores(part, self.pos, want, top_n)?);
            self.pos += part.len();
        }
        Ok(out)
    }

    /// Whether [`Session::verify_draft`] is available on this backend.
    pub fn can_verify(&self) -> bool {
        self.exec.verify_row_cost().is_some()
    }

    /// See [`Executor::verify_row_cost`].
    pub fn verify_row_cost(&self) -> Option<f32> {
        self.exec.verify_row_cost()
    }

    /// Feeds `token` and a `draft` of guessed next tokens in one pass ([`Executor::verify`]) and
    /// keeps the draft up to its first token that differs from the model's choice: the result is
    /// what decoding `token` and then each returned token but the last would give, and the cache
    /// ends as it would (the rejected rows' K/V lie past the position and are overwritten later).
    /// `1 + draft.len()` must fit both the cache's room and one prefill chunk.
    pub fn verify_draft(&mut self, token: u32, draft: &[u32]) -> Result<Verified, RuntimeError> {
        let rows = 1 + draft.len();
        if self.pos + rows > self.exec.max_seq() {
            return Err(RuntimeError::ContextFull { needed: self.pos + rows, max_seq: self.exec.max_seq() });
        }
        if rows > self.exec.max_prefill_tokens() {
            return Err(RuntimeError::InvalidCall(format!(
                "a draft of {} tokens; one pass holds {}",
                draft.len(),
                self.exec.max_prefill_tokens() - 1
            )));
        }
        let mut fed = Vec::with_capacity(rows);
        fed.push(token);
        fed.extend_from_slice(draft);
        self.decoded_last = false;
        let chosen = self.exec.verify(&fed, self.pos)?;
        let accepted = draft.iter().zip(&chosen).take_while(|(d, c)| d == c).count();
        // The executor stops at the first wrong guess, so its last token is the one after the
        // accepted ones.
        if chosen.len() != accepted + 1 {
            return Err(RuntimeError::InvalidCall(format!(
                "verify returned {} tokens for {rows} rows, {accepted} guesses right",
                chosen.len()
            )));
        }
        self.pos += 1 + accepted;
        Ok(Verified { tokens: chosen, accepted })
    }

    /// Feeds one token; returns the next greedy token (and its logits if asked).
    pub fn decode(&mut self, token: u32, logits: bool) -> Result<StepOutput, RuntimeError> {
        self.decode_beside(token, logits, &mut || {})
    }

    /// [`Session::decode`] with `beside` run on this thread while the step computes (see
    /// [`Executor::decode_beside`]).
    pub fn decode_beside(
        &mut self,
        token: u32,
        logits: bool,
        beside: &mut dyn FnMut(),
    ) -> Result<StepOutput, RuntimeError> {
        if self.pos + 1 > self.exec.max_seq() {
            return Err(RuntimeError::ContextFull { needed: self.pos + 1, max_seq: self.exec.max_seq() });
        }
        self.decoded_last = false;
        let out = self.exec.decode_beside(token, self.pos, logits, beside)?;
        check_logits(&out.logits, self.exec.hparams().vocab, self.pos)?;
        self.pos += 1;
        self.decoded_last = true;
        Ok(out)
    }

    /// The logits row of the decode step just taken ([`Session::decode`] with `logits` false),
    /// fetched after the fact: for a caller that needs the row only for some tokens. An error
    /// after any other call (the row would be another step's).
    pub fn last_decode_logits(&mut self) -> Result<Vec<f32>, RuntimeError> {
        if !self.decoded_last {
            return Err(RuntimeError::InvalidCall("last_decode_logits: the last call was not a decode step".into()));
        }
        let row = self.exec.last_decode_logits()?;
        check_logits(&row, self.exec.hparams().vocab, self.pos - 1)?;
        Ok(row)
    }

    /// The row of [`Session::last_decode_logits`] scored against `target` (the token the step
    /// chose, for its log-probability) with `top_n` alternatives: on the GPU a few bytes cross
    /// instead of the row.
    pub fn last_decode_score(&mut self, target: u32, top_n: usize) -> Result<RowScore, RuntimeError> {
        if !self.decoded_last {
            return Err(RuntimeError::InvalidCall("last_decode_score: the last call was not a decode step".into()));
        }
        crate::scores::check_targets(1, &[target], self.exec.hparams().vocab, top_n)?;
        self.exec.last_decode_score(target, self.pos - 1, top_n)
    }
}

/// What [`Session::verify_draft`] kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The next tokens, in order: the draft's first `accepted` tokens (each the one the model
    /// chose), then the model's own choice after them. Every token but the last is in the cache.
    pub tokens: Vec<u32>,
    /// How many of the draft's tokens were kept.
    pub accepted: usize,
}

/// Refuses logits that are not finite wherever they are read (the GPU's device argmax returns
/// only an index, so this is where its logits can be checked at no extra transfer). `first_pos`
/// is the position of the first row.
pub fn check_logits(logits: &[f32], vocab: usize, first_pos: usize) -> Result<(), RuntimeError> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(RuntimeError::NonFiniteLogit {
            value: logits[i],
            token: i % vocab.max(1),
            pos: first_pos + i / vocab.max(1),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_logit_is_reported_by_token_and_position() {
        assert!(check_logits(&[0.0, 1.0, -3.0, 2.0], 2, 5).is_ok());
        assert!(check_logits(&[], 2, 0).is_ok());
        // Row 1 (position 6), token 0.
        let e = check_logits(&[0.0, 1.0, f32::NAN, 2.0], 2, 5).unwrap_err();
        assert!(matches!(e, RuntimeError::NonFiniteLogit { token: 0, pos: 6, value } if value.is_nan()), "{e}");
        let e = check_logits(&[f32::NEG_INFINITY, 1.0], 2, 0).unwrap_err();
        assert!(matches!(e, RuntimeError::NonFiniteLogit { token: 0, pos: 0, .. }), "{e}");
    }
}
