//! How the executor turns a plan's program into launches: device addresses of its buffers,
//! weights and KV cache, and one [`Op`] list per program (and per decode form: the attention's
//! split count and fold, the LM head with or without its argmax epilogue).

use super::{
    launch, qmma, ArgmaxScratch, AttnFold, AttnScratch, BufId, CudaExecutor, DequantJob, GemvEpilogue, GemvNorm,
    GemvOut, Heads, LogitsWanted, MatMulMode, Op, Program, QParts, RopeArgs, RopeKvWrite, RuntimeError, Step, WeightId,
    ARGMAX_MAX_BLOCKS, K_ELEM_BYTES, V_ELEM_BYTES,
};

impl CudaExecutor {
    pub(super) fn buf_ptr(&self, prog: &Program, id: crate::plan::BufId) -> u64 {
        self.arena.ptr() + prog.buffers[id.0 as usize].offset
    }

    pub(super) fn weight_ptr(&self, id: crate::plan::WeightId) -> u64 {
        self.weights.ptr() + self.weight_offsets[id.0 as usize]
    }

    /// The device parts of a weight in a quantized (or non-f16) format; None: all F16.
    pub(super) fn parts(&self, id: WeightId) -> Option<QParts> {
        self.weight_parts[id.0 as usize]
    }

    /// This layer's K cache (f32) and V cache (f16), each [max_seq, Hkv, d], K then V per layer.
    fn kv_ptrs(&self, layer: usize) -> (u64, u64) {
        let hp = &self.hparams;
        let elems = (self.max_seq * hp.n_kv_heads * hp.head_dim) as u64;
        let k = self.kv.ptr() + layer as u64 * elems * (K_ELEM_BYTES + V_ELEM_BYTES) as u64;
        (k, k + elems * K_ELEM_BYTES as u64)
    }

    fn rope_table(&self, theta: f32, head_dim: usize) -> u64 {
        let key = (theta.to_bits(), head_dim);
        self.rope_tables.iter().find(|(k, _)| *k == key).map(|(_, b)| b.ptr()).expect("RoPE table built at load")
    }

    /// Device addresses of a bias + RoPE + KV write (the step, or a GEMV epilogue) writing q to `q_out`.
    fn rope_args(&self, r: &RopeKvWrite, q_out: u64) -> RopeArgs {
        let (k_cache, v_cache) = self.kv_ptrs(r.layer);
        RopeArgs {
            // No bias: a null pointer, which the kernels read as an all-zero bias.
            bias: r.bias.map_or(0, |b| self.weight_ptr(b)),
            inv_freq: self.rope_table(r.rope_theta, r.head_dim),
            q_out,
            k_cache,
            v_cache,
            heads: Heads { n_heads: r.n_heads, n_kv_heads: r.n_kv_heads, head_dim: r.head_dim },
        }
    }

    /// The step of `prog` whose LM head can take the argmax epilogue: a one-row program's last-row
    /// store GEMV, without a residual, straight followed by the argmax of its output, on weights
    /// a tensor-core argmax entry point takes (`qmma::argmax_kernel`).
    pub(super) fn fused_lm_head(&self, prog: &Program) -> Option<usize> {
        prog.steps.windows(2).position(|w| match (&w[0], &w[1]) {
            (
                Step::Gemv {
                    weight,
                    n,
                    k,
                    epilogue: GemvEpilogue::Store { out, residual: None, logit_rows: true },
                    ..
                },
                Step::Argmax { logits, .. },
            ) => {
                *logits == *out
                    && prog.max_tokens == 1
                    && self.parts(*weight).is_some_and(|p| qmma::argmax_kernel(&p, *n, *k).is_some())
            }
            _ => false,
        })
    }

    /// Translates a program into launches for `rows` rows (the grid sizes; kernels still read
    /// n_tokens from the device state). `fuse_argmax`: the LM head takes the argmax epilogue
    /// where it can ([`Self::fused_lm_head`]; the token is then read from `argmax_key`).
    /// `fold_max` > 0: an attention followed by a GEMV that takes the fold leaves rows of up to
    /// `fold_max` active splits for that GEMV to merge (kernels/attn_fold.cuh).
    pub(super) fn build_ops(
        &self,
        prog: &Program,
        rows: usize,
        logits: LogitsWanted,
        splits: usize,
        fuse_argmax: bool,
        fold_max: usize,
    ) -> Result<Vec<Op>, RuntimeError> {
        let st = self.state.ptr();
        let b = |id| self.buf_ptr(prog, id);
        let attn = AttnScratch {
            part_o: self.attn_scratch.0.ptr(),
            part_ml: self.attn_scratch.1.ptr(),
            counters: self.attn_scratch.2.ptr(),
        };
        let am = self.argmax_scratch.ptr();
        let argmax_scratch = ArgmaxScratch {
            part_v: am,
            part_i: am + ARGMAX_MAX_BLOCKS as u64 * 4,
            counter: am + ARGMAX_MAX_BLOCKS as u64 * 8,
        };
        let sm = self.dev.sm_count();
        let fused = if fuse_argmax { self.fused_lm_head(prog) } else { None };
        let key = if fused.is_some() { self.argmax_key.ptr() } else { 0 };
        let mut ops = Vec::new();
        // The quantized weights whose f16 copies are in the dequantisation scratch now.
        let mut dequantised: Vec<(WeightId, DequantJob)> = Vec::new();
        // Set by an attention that leaves its merge to the GEMV after it (up to fold_max splits).
        let mut pending_fold: Option<AttnFold> = None;
        for (index, step) in prog.steps.iter().enumerate() {
            match *step {
                Step::Embed { tokens, table, out } => {
                    // The program's token input is read from the sampler's `fed` buffer.
                    let tokens = if tokens == prog.tokens { self.sampler.fed_ptr() } else { b(tokens) };
                    let (hidden, vocab) = (self.hparams.hidden, self.hparams.vocab);
                    ops.push(match self.parts(table) {
                        Some(parts) => launch::embed_q(st, tokens, parts, b(out), hidden, vocab, rows, key),
                        None => launch::embed(st, tokens, self.weight_ptr(table), b(out), hidden, vocab, rows, key),
                    });
                }
                Step::RmsNorm { x, weight, out, eps } => {
                    let n = prog.buffers[x.0 as usize].row_elems;
                    ops.push(launch::rms_norm(st, b(x), self.weight_ptr(weight), b(out), n, eps, rows));
                }
                Step::AddRmsNorm { a, b: bb, weight, eps, sum_out, norm_out } => {
                    let n = prog.buffers[a.0 as usize].row_elems;
                    ops.push(launch::add_rms_norm(
                        st,
                        b(a),
                        b(bb),
                        self.weight_ptr(weight),
                        b(sum_out),
                        b(norm_out),
                        n,
                        eps,
                        rows,
                    ));
                }
                Step::MatMul { x, weight, n, k, out, residual, logit_rows } => {
                    let mode = self.matmul_mode(logit_rows, rows, logits);
                    let mut w16 = dequantised.iter().find(|(w, _)| *w == weight).map(|(_, j)| j.out);
                    if w16.is_none() && mode == MatMulMode::Gemm && self.parts(weight).is_some() {
                        // Dequantise this weight and the next ones that fit, in one launch per
                        // four (they replace what the scratch held: those GEMMs ran).
                        dequantised = self.dequant_batch(prog, index, rows, logits);
                        let jobs: Vec<DequantJob> = dequantised.iter().map(|(_, j)| *j).collect();
                        ops.extend(launch::dequant_q_f16_batch(&jobs));
                        w16 = jobs.first().map(|j| j.out);
                    }
                    ops.extend(self.matmul_ops(weight, b(x), b(out), residual.map(b), n, k, rows, mode, w16));
                }
                Step::BiasRopeKvWrite { qkv, ref rope, q_out } => {
                    ops.push(launch::bias_rope_kv_write(st, b(qkv), self.rope_args(rope, b(q_out)), rows));
                }
                Step::Attention { q, layer, n_heads, n_kv_heads, head_dim, scale, out } => {
                    let (kc, vc) = self.kv_ptrs(layer);
                    let h = Heads { n_heads, n_kv_heads, head_dim };
                    let folds = if splits > 1 && self.next_gemv_takes_fold(prog, index, out) { fold_max } else { 0 };
                    pending_fold = (folds > 0).then_some(AttnFold { scratch: attn, heads: h, splits, fold_max: folds });
                    ops.extend(launch::attention(st, b(q), kc, vc, b(out), h, scale, rows, splits, attn, folds));
                }
                Step::SwiGlu { gate_up, ffn, out } => ops.push(launch::swiglu(st, b(gate_up), b(out), ffn, rows)),
                // The LM head before it took the argmax as its epilogue.
                Step::Argmax { .. } if fused.is_some_and(|f| f + 1 == index) => {}
                Step::Argmax { logits: l, vocab, out } => {
                    ops.push(launch::argmax(st, b(l), b(out), vocab, sm, argmax_scratch))
                }
                Step::Gemv { x, norm, weight, n, k, ref epilogue } => {
                    let norm = norm.map(|nm| GemvNorm { weight: self.weight_ptr(nm.weight), eps: nm.eps });
                    if fused == Some(index) {
                        let (GemvEpilogue::Store { out, .. }, Some(parts)) = (epilogue, self.parts(weight)) else {
                            return Err(RuntimeError::Cuda("the fused LM head is not a quantized store".into()));
                        };
                        let op = launch::qgemv_argmax(&self.dev, st, b(x), norm, parts, n, k, b(*out), key);
                        ops.push(op.ok_or_else(|| RuntimeError::Cuda("no argmax entry point for the LM head".into()))?);
                        continue;
                    }
                    let epilogue = match *epilogue {
                        GemvEpilogue::Store { out, residual, logit_rows } => GemvOut::Store {
                            out: b(out),
                            residual: residual.map(b),
                            last_row: logit_rows && logits != LogitsWanted::All,
                        },
                        GemvEpilogue::SwiGlu { out, .. } => GemvOut::SwiGlu { out: b(out) },
                        GemvEpilogue::BiasRopeKvWrite { ref rope, q_out } => {
                            GemvOut::Rope(self.rope_args(rope, b(q_out)))
                        }
                    };
                    if let Some(fold) = pending_fold.take() {
                        let parts = self.parts(weight);
                        let op = parts
                            .and_then(|p| launch::qgemv_attn_fold(&self.dev, st, b(x), p, n, k, rows, epilogue, fold));
                        ops.push(op.ok_or_else(|| {
                            RuntimeError::Cuda("the GEMV after a folded attention does not take the fold".into())
                        })?);
                        continue;
                    }
                    ops.push(match self.parts(weight) {
                        Some(parts) => launch::qgemv(&self.dev, st, b(x), norm, parts, n, k, rows, epilogue),
                        None => launch::gemv(&self.dev, st, b(x), norm, self.weight_ptr(weight), n, k, rows, epilogue),
                    });
                }
            }
        }
        Ok(ops)
    }

    /// Whether the step after the attention step `index` is a GEMV reading the attention's `out`
    /// that can merge its split partials itself ([`launch::takes_attn_fold`]), so the attention
    /// need not.
    fn next_gemv_takes_fold(&self, prog: &Program, index: usize, out: BufId) -> bool {
        let Some(&Step::Gemv { x, norm: None, weight, n, k, ref epilogue }) = prog.steps.get(index + 1) else {
            return false;
        };
        let store = matches!(epilogue, GemvEpilogue::Store { logit_rows: false, .. });
        store && x == out && self.parts(weight).is_some_and(|p| launch::takes_attn_fold(&p, n, k))
    }
}
