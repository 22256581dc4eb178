//! The interface every backend implements. A backend owns the loaded weights, its activation
//! arena and its KV cache; it runs one program invocation at a time. Position bookkeeping,
//! chunking of long prompts and context limits live in [`crate::session`], not here.
use crate::error::RuntimeError;
use crate::plan::HyperParams;
use crate::sampler::SamplingParams;
use crate::scores::RowScore;

/// Which backend runs the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// Which logits rows a prefill should return to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// Only the greedy next token (the device argmax of the last row).
    None,
    /// The last row (`vocab` floats).
    Last,
    /// Every row (`n_tokens * vocab` floats), e.g. for teacher-forced log-probs and perplexity.
    All,
}

/// Result of one program invocation.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// Argmax of the last row's logits, computed on the executing device.
    pub next_token: u32,
    /// Row-major `[rows, vocab]` as requested by [`LogitsWanted`]; empty for `None`.
    pub logits: Vec<f32>,
}

pub trait Executor {
    fn backend(&self) -> Backend;
    fn hparams(&self) -> &HyperParams;
    /// KV-cache capacity in tokens chosen at load time.
    fn max_seq(&self) -> usize;
    /// Largest `tokens.len()` accepted by [`Executor::prefill`].
    fn max_prefill_tokens(&self) -> usize;
    /// Runs the prefill program over `tokens` at positions `pos..pos + tokens.len()`, appending
    /// their K/V to the cache. Requires `1 <= tokens.len() <= max_prefill_tokens()` and
    /// `pos + tokens.len() <= max_seq()`; token ids must be `< vocab`.
    fn prefill(&mut self, tokens: &[u32], pos: usize, logits: LogitsWanted) -> Result<StepOutput, RuntimeError>;
    /// [`Executor::prefill`] of `tokens` with every row scored against `targets` (the same
    /// length, each `< vocab`; row i's target follows `tokens[..=i]`) with `top_n` (<=
    /// [`crate::scores::MAX_TOP`]) alternatives, instead of returned: [`crate::scores`].
    /// Non-finite logits are refused as [`crate::session::check_logits`] refuses them. By default
    /// the rows cross to the host and are scored there; the GPU scores them where they are.
    fn prefill_scores(
        &mut self,
        tokens: &[u32],
        pos: usize,
        targets: &[u32],
        top_n: usize,
    ) -> Result<Vec<RowScore>, RuntimeError> {
        let vocab = self.hparams().vocab;
        crate::scores::check_targets(tokens.len(), targets, vocab, top_n)?;
        let out = self.prefill(tokens, pos, LogitsWanted::All)?;
        crate::session::check_logits(&out.logits, vocab, pos)?;
        crate::scores::score_rows(&out.logits, vocab, targets, top_n)
    }
    /// Whether [`Executor::prefill_scores`] and [`Executor::last_decode_score`] score the rows
    /// where they are computed (only the scores cross to the host), so that a caller need not
    /// bound how many rows it scores at once by the host memory their logits would take.
    fn scores_on_device(&self) -> bool {
        false
    }
    /// Runs the decode program for one token at position `pos` (same preconditions). `logits`
    /// false means only the token id crosses to the host.
    fn decode(&mut self, token: u32, pos: usize, logits: bool) -> Result<StepOutput, RuntimeError>;
    /// [`Executor::decode`] with `beside` run on the calling thread while the step computes, where
    /// the backend computes asynchronously (the GPU: after the step's launch, before its
    /// read-back), else before the step: host work that the next token's choice needs and that
    /// does not depend on this step (a grammar's next mask) then costs no time of its own.
    fn decode_beside(
        &mut self,
        token: u32,
        pos: usize,
        logits: bool,
        beside: &mut dyn FnMut(),
    ) -> Result<StepOutput, RuntimeError> {
        beside();
        self.decode(token, pos, logits)
    }
    /// The logits row of the [`Executor::decode`] just run (called with `logits` false: the row
    /// stays where it was computed until the next call), for a caller that learns only from the
    /// step's token whether it needs the row (a grammar that allows the greedy token does not).
    /// Only meaningful directly after a decode: [`crate::session::Session::last_decode_logits`]
    /// guards that.
    fn last_decode_logits(&mut self) -> Result<Vec<f32>, RuntimeError>;
    /// The row of [`Executor::last_decode_logits`] scored against `target` (< vocab) with `top_n`
    /// (<= [`crate::scores::MAX_TOP`]) alternatives: [`crate::scores::row_score`]. `pos` is the
    /// step's position (for a non-finite logit's error). By default the row crosses to the host;
    /// the GPU scores it where it is.
    fn last_decode_score(&mut self, target: u32, pos: usize, top_n: usize) -> Result<RowScore, RuntimeError> {
        crate::scores::check_targets(1, &[target], self.hparams().vocab, top_n)?;
        let row = self.last_decode_logits()?;
        crate::session::check_logits(&row, self.hparams().vocab, pos)?;
        Ok(crate::scores::row_score(&row, target, top_n))
    }
    /// Whether [`Executor::verify`] is available (one pass over several rows that gives every
    /// row's next token exactly as that many decode steps would: speculative decoding's check),
    /// and if so what each row after the first adds to the pass, in decode steps: how long a
    /// draft pays for itself ([`crate::speculative::Speculator`]).
    fn verify_row_cost(&self) -> Option<f32> {
        None
    }
    /// Runs `tokens` at positions `pos..pos + tokens.len()` in one pass, appending their K/V to
    /// the cache, and returns, row by row, the token a decode step fed that row would choose next
    /// (the argmax, or the sampler at that row's position with the tokens up to that row as its
    /// history): bit for bit what [`Executor::decode`] would return. It stops after the first row
    /// whose token is not the next row's input (the rows after it are moot), so the result has
    /// `1..=tokens.len()` entries. Speculative decoding feeds the last token and a draft of
    /// guessed continuations, and keeps the draft's tokens up to the first returned one that
    /// differs. Same preconditions
    /// as [`Executor::prefill`]. Backends without it ([`Executor::verify_row_cost`] None) refuse.
    fn verify(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<u32>, RuntimeError> {
        let _ = (tokens, pos);
        Err(RuntimeError::InvalidCall(format!("the {} backend has no multi-row verify", self.backend().name())))
    }
    /// Pays now the one-time costs a later prompt would otherwise wait for (on the GPU: cuBLAS'
    /// handle and the loading of its GEMM kernels, ~0.2 s); for idle moments, such as a chat
    /// waiting for its next message. The conversation (KV cache, positions) is unchanged.
    fn warm_up(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Device memory in use on the executor's device (bytes), where the backend can tell.
    fn device_memory_used(&self) -> Option<u64> {
        None
    }
    /// How `next_token` is chosen from now on (see [`crate::sampler`]); greedy by default. The
    /// penalties look at the tokens the executor was fed, by position.
    fn set_sampling(&mut self, params: &SamplingParams) -> Result<(), RuntimeError> {
        if params.is_greedy() && params.repeat_penalty == 1.0 && params.presence_penalty == 0.0 {
            Ok(())
        } else {
            Err(RuntimeError::InvalidCall(format!("the {} backend only decodes greedily", self.backend().name())))
        }
    }
}
