//! The CPU executor: interprets plan programs step by step with the CPU twins in
//! [`super::kernels`], in f32 on all cores (rayon; the prefill matmuls use a blocked SGEMM).
//! Matrices are read in place from the shared memory map of `weights.bin` (a derived embedding
//! from its rows' frames, rebuilt the first time a lookup reads them: [`crate::derived`]), in their packed
//! formats ([`super::qmatmul`]): no copy and no widening at load, so host memory stays about the
//! size of the file and decode reads as few bytes as the GGUF's quantization allows. Norm weights
//! and biases (small f32 vectors) are copied.
use super::kernels::{self, AttnShape};
use super::qdot::{self, DotPath};
use super::qmatmul::{self, PartRef, QMatrix};
use crate::compiled::{CompiledModel, WeightStore};
use crate::error::RuntimeError;
use crate::executor::{Backend, Executor, LogitsWanted, StepOutput};
use crate::plan::{BufId, GemvEpilogue, HyperParams, Plan, Program, Step, WeightId};
use crate::sampler::{SampleScratch, SamplingParams};

pub struct CpuExecutor {
    plan: Plan,
    /// `weights.bin`, mapped once, and the derived weights, shared with the [`CompiledModel`].
    store: WeightStore,
    /// Indexed by `WeightId`: a matrix's parts (offsets in its bytes), a vector's f32 values (the
    /// other is empty).
    parts: Vec<Vec<PartRef>>,
    weights: Vec<Vec<f32>>,
    /// One activation arena shared by both programs (they never run at the same time).
    arena: Vec<f32>,
    /// Per layer `[max_seq, n_kv_heads, head_dim]`.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    max_seq: usize,
    sampling: SamplingParams,
    /// The sampler's buffers, kept between tokens.
    sample_scratch: SampleScratch,
    /// Token fed at each position (for the sampler's penalties).
    history: Vec<u32>,
    /// Scratch of `Step::Gemv`: the normalised input rows and the product rows.
    gemv_x: Vec<f32>,
    gemv_y: Vec<f32>,
    /// The dot of one-row matmuls on quantized weights ([`qdot::decode_path`] unless set).
    dot_path: DotPath,
}

/// `len` zeros, or [`RuntimeError::OutOfHostMemory`] where the allocator refuses (a `vec!` alone
/// would abort the process instead).
fn zeroed(len: u64, what: &'static str) -> Result<Vec<f32>, RuntimeError> {
    let oom = || RuntimeError::OutOfHostMemory { what, mib: len as f64 * 4.0 / (1 << 20) as f64 };
    let len = usize::try_from(len).map_err(|_| oom())?;
    // A probe that is dropped at once: the refusal becomes an error, and the buffer itself still
    // comes from `vec!`'s zeroed allocation, whose pages stay untouched (and out of the RSS) until
    // used, where writing the zeros would commit all of them at load.
    Vec::<f32>::new().try_reserve_exact(len).map_err(|_| oom())?;
    Ok(vec![0.0; len])
}

impl CpuExecutor {
    pub fn new(model: &CompiledModel, max_seq: usize) -> Result<CpuExecutor, RuntimeError> {
        let plan = model.plan.clone();
        let hp = &plan.hparams;
        if max_seq == 0 || max_seq > hp.context_length {
            return Err(RuntimeError::InvalidCall(format!(
                "KV cache of {max_seq} tokens; the model allows 1..={}",
                hp.context_length
            )));
        }
        let store = model.weight_store();
        store.prefault_in_background();
        let (parts, weights): (Vec<Vec<PartRef>>, Vec<Vec<f32>>) = plan
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if w.shape.len() == 1 {
                    // A vector is one F32 part (validated at open).
                    let bytes = store.weight(&plan, WeightId(i as u32));
                    (Vec::new(), bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                } else {
                    (qmatmul::part_refs(w), Vec::new())
                }
            })
            .unzip();
        let arena_bytes = plan.prefill.arena_bytes.max(plan.decode.arena_bytes);
        let kv = max_seq * hp.n_kv_heads * hp.head_dim;
        let arena = zeroed(arena_bytes / 4, "activation arena")?;
        let mut k_cache = Vec::with_capacity(hp.n_layers);
        let mut v_cache = Vec::with_capacity(hp.n_layers);
        for _ in 0..hp.n_layers {
            k_cache.push(zeroed(kv as u64, "KV cache")?);
            v_cache.push(zeroed(kv as u64, "KV cache")?);
        }
        Ok(CpuExecutor {
            store,
            parts,
            weights,
            arena,
            k_cache,
            v_cache,
            max_seq,
            plan,
            sampling: SamplingParams::default(),
            sample_scratch: SampleScratch::default(),
            history: Vec::new(),
            gemv_x: Vec::new(),
            gemv_y: Vec::new(),
            dot_path: qdot::decode_path(),
        })
    }

    /// Selects the dot of one-row matmuls on quantized weights (decode, and a prefill's last-row
    /// LM head): the integer dot on two digits by default, on all three, or [`DotPath::F32`] for
    /// the dequantisation's exact arithmetic. Prefill's multi-row matmuls take the same integer
    /// dot up to [`qmatmul::int_prefill_max_rows`] rows (bit for bit each row alone), and
    /// dequantise exactly for SGEMM beyond that or on [`DotPath::F32`].
    pub fn set_dot_path(&mut self, path: DotPath) {
        self.dot_path = path;
    }

    fn check(&self, tokens: &[u32], pos: usize, max_tokens: usize) -> Result<(), RuntimeError> {
        if tokens.is_empty() || tokens.len() > max_tokens {
            return Err(RuntimeError::InvalidCall(format!(
                "{} tokens for a program of 1..={max_tokens}",
                tokens.len()
            )));
        }
        if pos + tokens.len() > self.max_seq {
            return Err(RuntimeError::ContextFull { needed: pos + tokens.len(), max_seq: self.max_seq });
        }
        let vocab = self.plan.hparams.vocab;
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(RuntimeError::TokenOutOfRange { id, vocab });
        }
        Ok(())
    }

    /// One invocation of a program: its steps, then what the host reads of it.
    fn run(
        &mut self,
        decode: bool,
        tokens: &[u32],
        pos: usize,
        logits: LogitsWanted,
    ) -> Result<StepOutput, RuntimeError> {
        self.run_steps(decode, tokens, pos, logits)?;
        let n = tokens.len();
        let vocab = self.plan.hparams.vocab;
        let last = &logits_rows(&self.plan, &self.arena, decode, n)[(n - 1) * vocab..];
        // The LM head's last row is here on the CPU anyway: refuse NaN/Inf before a token is
        // chosen from it (the argmax of NaNs is an arbitrary id, printed as garbage).
        crate::session::check_logits(last, vocab, pos + n - 1)?;
        let next_token = if self.sampled() {
            // The LM head always computed the last row, so the sampler can replace the argmax.
            crate::sampler::sample_with(&mut self.sample_scratch, last, &self.history, &self.sampling, pos + n)
        } else {
            let prog = if decode { &self.plan.decode } else { &self.plan.prefill };
            self.arena[prog.buffers[prog.next_token.0 as usize].offset as usize / 4].to_bits()
        };
        let all = logits_rows(&self.plan, &self.arena, decode, n);
        let logits = match logits {
            LogitsWanted::None => Vec::new(),
            LogitsWanted::Last => all[(n - 1) * vocab..].to_vec(),
            LogitsWanted::All => all.to_vec(),
        };
        Ok(StepOutput { next_token, logits })
    }

    /// Whether the sampler, not the plan's argmax, chooses the next token.
    fn sampled(&self) -> bool {
        self.sampling != SamplingParams::default()
    }

    /// Whether the prefill program's rows come out bit for bit as decode steps' do, so that
    /// [`Executor::verify`] can run them in one pass: the integer dot (the multi-input dot of a
    /// few rows is the one-row dot's arithmetic, `qmatmul::matmul_q`) and no matrix product of
    /// float parts only (those take SGEMM for several rows, which rounds differently).
    fn rows_match_decode(&self, rows: usize) -> bool {
        self.dot_path.int_digits().is_some()
            && rows <= qmatmul::int_prefill_max_rows()
            && self.plan.prefill.steps.iter().all(|s| match s {
                Step::MatMul { weight, .. } | Step::Gemv { weight, .. } => {
                    self.plan.weights[weight.0 as usize].parts.iter().any(|p| !p.format.is_float())
                }
                _ => true,
            })
    }

    /// The steps of one program invocation; the results stay in the arena.
    fn run_steps(
        &mut self,
        decode: bool,
        tokens: &[u32],
        pos: usize,
        logits: LogitsWanted,
    ) -> Result<(), RuntimeError> {
        let prog: &Program = if decode { &self.plan.decode } else { &self.plan.prefill };
        let path = self.dot_path;
        self.check(tokens, pos, prog.max_tokens)?;
        let n = tokens.len();
        let hp = &self.plan.hparams;
        let base = self.arena.as_mut_ptr();
        let arena_len = self.arena.len();
        // SAFETY (for every `view`/`view_mut` below): `CompiledModel::open` validated that each
        // buffer lies inside its program's arena (and the arena is sized for the larger program),
        // that each buffer holds `max_tokens * row_elems` elements (>= n rows), and that no step
        // writes a buffer overlapping another buffer it reads or writes. So within one step the
        // mutable and shared slices are disjoint, and none outlives the step.
        let view = |id: BufId, rows: usize| -> &[f32] {
            let b = &prog.buffers[id.0 as usize];
            debug_assert!(b.offset as usize / 4 + rows * b.row_elems <= arena_len);
            unsafe { std::slice::from_raw_parts(base.add(b.offset as usize / 4), rows * b.row_elems) }
        };
        let view_mut = |id: BufId, rows: usize| -> &mut [f32] {
            let b = &prog.buffers[id.0 as usize];
            debug_assert!(b.offset as usize / 4 + rows * b.row_elems <= arena_len);
            unsafe { std::slice::from_raw_parts_mut(base.add(b.offset as usize / 4), rows * b.row_elems) }
        };
        for (dst, &t) in view_mut(prog.tokens, n).iter_mut().zip(tokens) {
            *dst = f32::from_bits(t);
        }
        let shape = AttnShape { n_heads: hp.n_heads, n_kv_heads: hp.n_kv_heads, head_dim: hp.head_dim };
        for step in &prog.steps {
            let w = |id: WeightId| self.weights[id.0 as usize].as_slice();
            let (store, parts, plan) = (&self.store, &self.parts, &self.plan);
            let wq =
                |id: WeightId, k: usize| QMatrix { bytes: store.weight(plan, id), parts: &parts[id.0 as usize], k };
            match *step {
                Step::Embed { tokens: t, table, out } => {
                    let ids: Vec<usize> = view(t, n).iter().map(|v| v.to_bits() as usize).collect();
                    if store.derived().is_derived(table) {
                        // Rebuilt frame by frame: the first lookups wait for their rows' frames only.
                        store.derived().dequant_rows(table, &ids, view_mut(out, n))?;
                    } else {
                        qmatmul::embed_q(&ids, &wq(table, hp.hidden), hp.hidden, view_mut(out, n));
                    }
                }
                Step::RmsNorm { x, weight, out, eps } => {
                    kernels::rms_norm(view(x, n), w(weight), eps, hp.hidden, view_mut(out, n))
                }
                Step::AddRmsNorm { a, b, weight, eps, sum_out, norm_out } => kernels::add_rms_norm(
                    view(a, n),
                    view(b, n),
                    w(weight),
                    eps,
                    hp.hidden,
                    view_mut(sum_out, n),
                    view_mut(norm_out, n),
                ),
                Step::MatMul { x, weight, n: cols, k, out, residual, logit_rows } => {
                    // The LM head computes only the last row unless every row's logits are wanted.
                    let first = if logit_rows && logits != LogitsWanted::All { n - 1 } else { 0 };
                    let rows = n - first;
                    let res = residual.map(|r| &view(r, n)[first * cols..]);
                    qmatmul::matmul_q(
                        &view(x, n)[first * k..],
                        &wq(weight, k),
                        rows,
                        cols,
                        k,
                        res,
                        &mut view_mut(out, n)[first * cols..],
                        path,
                    );
                }
                Step::BiasRopeKvWrite { qkv, rope, q_out } => kernels::bias_rope_kv_write(
                    view(qkv, n),
                    rope.bias.map(w),
                    shape,
                    rope.rope_theta,
                    pos,
                    n,
                    &mut self.k_cache[rope.layer],
                    &mut self.v_cache[rope.layer],
                    view_mut(q_out, n),
                ),
                Step::Attention { q, layer, scale, out, .. } => kernels::attention(
                    view(q, n),
                    &self.k_cache[layer],
                    &self.v_cache[layer],
                    shape,
                    scale,
                    pos,
                    n,
                    view_mut(out, n),
                ),
                Step::SwiGlu { gate_up, ffn, out } => kernels::swiglu(view(gate_up, n), ffn, n, view_mut(out, n)),
                Step::Gemv { x, norm, weight, n: cols, k, ref epilogue } => {
                    // The twins in sequence: norm, matmul, then the epilogue on the product rows.
                    let logit_rows = matches!(epilogue, GemvEpilogue::Store { logit_rows: true, .. });
                    let first = if logit_rows && logits != LogitsWanted::All { n - 1 } else { 0 };
                    let rows = n - first;
                    let xin = &view(x, n)[first * k..];
                    let xr: &[f32] = match norm {
                        Some(nm) => {
                            // Reused across steps: no allocation once the largest row was seen.
                            self.gemv_x.resize(rows * k, 0.0);
                            kernels::rms_norm(xin, w(nm.weight), nm.eps, k, &mut self.gemv_x);
                            &self.gemv_x
                        }
                        None => xin,
                    };
                    let y = &mut self.gemv_y;
                    match *epilogue {
                        GemvEpilogue::Store { out, residual, .. } => {
                            let res = residual.map(|r| &view(r, n)[first * cols..]);
                            qmatmul::matmul_q(
                                xr,
                                &wq(weight, k),
                                rows,
                                cols,
                                k,
                                res,
                                &mut view_mut(out, n)[first * cols..],
                                path,
                            );
                        }
                        GemvEpilogue::SwiGlu { ffn, out } => {
                            y.resize(rows * cols, 0.0);
                            qmatmul::matmul_q(xr, &wq(weight, k), rows, cols, k, None, y, path);
                            kernels::swiglu(y, ffn, rows, view_mut(out, n));
                        }
                        GemvEpilogue::BiasRopeKvWrite { rope, q_out } => {
                            y.resize(rows * cols, 0.0);
                            qmatmul::matmul_q(xr, &wq(weight, k), rows, cols, k, None, y, path);
                            let (kc, vc) = (&mut self.k_cache[rope.layer], &mut self.v_cache[rope.layer]);
                            kernels::bias_rope_kv_write(
                                y,
                                rope.bias.map(w),
                                shape,
                                rope.rope_theta,
                                pos,
                                n,
                                kc,
                                vc,
                                view_mut(q_out, n),
                            );
                        }
                    }
                }
                Step::Argmax { logits: l, vocab, out } => {
                    let best = kernels::argmax(&view(l, n)[(n - 1) * vocab..]);
                    view_mut(out, 1)[0] = f32::from_bits(best as u32);
                }
            }
        }
        self.history.truncate(pos);
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    /// [`Executor::verify`]: one prefill pass with every row's logits, each row's token chosen as
    /// the decode step would choose it; decode steps one by one where the prefill's arithmetic
    /// would differ (see [`Self::rows_match_decode`]).
    fn verify_rows(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<u32>, RuntimeError> {
        // Row i's token, then whether row i + 1 was fed what it chose (else the rest is moot).
        let go_on = |chosen: &[u32]| chosen.len() < tokens.len() && chosen.last() == tokens.get(chosen.len());
        let mut chosen = Vec::with_capacity(tokens.len());
        if !self.rows_match_decode(tokens.len()) {
            for (i, &t) in tokens.iter().enumerate() {
                chosen.push(self.run(true, &[t], pos + i, LogitsWanted::None)?.next_token);
                if !go_on(&chosen) {
                    break;
                }
            }
            return Ok(chosen);
        }
        self.run_steps(false, tokens, pos, LogitsWanted::All)?;
        let vocab = self.plan.hparams.vocab;
        let sampled = self.sampled();
        let rows = logits_rows(&self.plan, &self.arena, false, tokens.len());
        for (i, row) in rows.chunks_exact(vocab).enumerate() {
            // Only rows a decode step would have reached are checked and chosen from: a non-finite
            // logit in a row past the first wrong guess is not the plain run's error.
            crate::session::check_logits(row, vocab, pos + i)?;
            // The decode step fed row i sees the history through row i and samples for the
            // position after it; greedy, it takes the plan's argmax, the same function.
            chosen.push(match sampled {
                true => crate::sampler::sample_with(
                    &mut self.sample_scratch,
                    row,
                    &self.history[..pos + i + 1],
                    &self.sampling,
                    pos + i + 1,
                ),
                false => kernels::argmax(row) as u32,
            });
            if !go_on(&chosen) {
                break;
            }
        }
        Ok(chosen)
    }
}

impl Executor for CpuExecutor {
    fn backend(&self) -> Backend {
        Backend::Cpu
    }
    fn hparams(&self) -> &HyperParams {
        &self.plan.hparams
    }
    fn max_seq(&self) -> usize {
        self.max_seq
    }
    fn max_prefill_tokens(&self) -> usize {
        self.plan.prefill.max_tokens
    }
    fn prefill(&mut self, tokens: &[u32], pos: usize, logits: LogitsWanted) -> Result<StepOutput, RuntimeError> {
        self.run(false, tokens, pos, logits)
    }
    fn decode(&mut self, token: u32, pos: usize, logits: bool) -> Result<StepOutput, RuntimeError> {
        // The whole step on a pool thread: each of its ~100 parallel loops then starts from a
        // worker (work stealing) instead of a blocked caller woken by the OS after each loop.
        rayon::scope(|_| self.run(true, &[token], pos, if logits { LogitsWanted::Last } else { LogitsWanted::None }))
    }
    fn last_decode_logits(&mut self) -> Result<Vec<f32>, RuntimeError> {
        Ok(logits_rows(&self.plan, &self.arena, true, 1).to_vec())
    }
    fn verify_row_cost(&self) -> Option<f32> {
        // Measured on a 2-core Zen 4 with the default model (`qwen-aot bench --backend cpu`): a
        // pass of 2 / 4 / 8 rows costs 1.3-1.5 / 2.2-2.4 / 4.2-4.7 decode steps. The integer dot
        // is compute-bound, so a row shares only the unpacking of the weights with the others.
        // Where the pass runs as decode steps (see `rows_match_decode`), a row is a whole step,
        // and no draft pays.
        Some(if self.rows_match_decode(2) { 0.48 } else { 1.0 })
    }
    fn verify(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<u32>, RuntimeError> {
        // On a pool thread, as a decode step (see `decode`).
        rayon::scope(|_| self.verify_rows(tokens, pos))
    }
    fn set_sampling(&mut self, params: &SamplingParams) -> Result<(), RuntimeError> {
        params.validate()?;
        self.sampling = params.clone();
        Ok(())
    }
}

/// `plan`'s logits buffer's first `n` rows in `arena` after a run of its decode or prefill program
/// (a function of those two fields, not a method, so that the sampler's scratch can be borrowed
/// mutably beside it).
fn logits_rows<'a>(plan: &Plan, arena: &'a [f32], decode: bool, n: usize) -> &'a [f32] {
    let prog = if decode { &plan.decode } else { &plan.prefill };
    let b = &prog.buffers[prog.logits.0 as usize];
    let at = b.offset as usize / 4;
    &arena[at..at + n * b.row_elems]
}
