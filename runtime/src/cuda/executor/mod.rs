//! The CUDA executor: uploads the packed weights once, owns one activation arena (buffers at
//! their planned offsets), a KV cache (K f32, V f16) and a small device-side run state, and replays the
//! plan's programs.
//!
//! Per decode token the host does: two 4-byte memsets (pos, token id; n_tokens only when it
//! changed), one graph launch, one 4-byte copy back (plus the logits row when asked), and one
//! stream synchronisation to read it. The decode program is captured into a CUDA graph on the
//! first decode and replayed afterwards; `QWEN_AOT_NO_GRAPH=1` issues the same launches directly.
//! It has two forms, each its own graph ([`super::decode_forms`]): contexts whose attention runs
//! in 2..=`launch::ATTN_FOLD_MAX_SPLITS` splits replay the one where o_proj merges the splits
//! (kernels/attn_fold.cuh); every other context the plain one.
//!
//! Sampling ([`super::sample`]): with anything but greedy-without-penalties, the sampling kernels
//! replace the argmax launch (prefill, and a second decode graph); the embed kernel reads the
//! tokens from the sampler's `fed` buffer so that they can be recorded in the device history.
//!
//! The greedy decode graph has no argmax launch where a tensor-core kernel takes the LM head
//! (`launch::qgemv_argmax`): the LM head's blocks maximise the winner's key into `argmax_key`
//! (zeroed by the program's embed kernel), and the host decodes it (`super::argmax_key`).
use cudarc::driver::{sys, CudaGraph};

use super::prefill_graphs::{self, PrefillGraphs, PrefillKey};

use super::decode_forms::DecodeForms;
use super::dequant_batch::{batch_offsets, scratch_bytes};
use super::device::{CudaDevice, DevBuf};
use super::launch::{
    self, ArgmaxScratch, AttnFold, AttnScratch, DequantJob, Dequantised, GemmScratch, GemvNorm, GemvOut, Heads,
    MatMulMode, Op, QParts, RopeArgs, ARGMAX_MAX_BLOCKS,
};
use super::sample::{self, DeviceSampler};
use super::validate::validate;
use super::CudaCtx;
use super::{argmax_key, qmma};
use crate::compiled::CompiledModel;
use crate::error::RuntimeError;
use crate::executor::{Backend, Executor, LogitsWanted, StepOutput};
use crate::phases;
use crate::plan::{BufId, GemvEpilogue, HyperParams, Program, RopeKvWrite, Step, WeightFormat, WeightId};
use crate::sampler::SamplingParams;
use crate::scores::RowScore;

mod matmul_path;
mod program_ops;

pub use matmul_path::PrefillPath;
use matmul_path::ALWAYS_GEMV_ROWS;

/// KV-cache element sizes: K f32, V f16 (kernels/rope.cu says why).
const K_ELEM_BYTES: usize = 4;
const V_ELEM_BYTES: usize = 2;

/// `warm_up` covers GEMM row counts up to this many (11 buckets; a compile with a larger prefill
/// chunk has more, each costing a kernel load on its first use).
const WARM_UP_MAX_ROWS: usize = 512;

pub struct CudaExecutor {
    // Device memory first: dropped before the device (context) below.
    /// The greedy decode step's launches (plain and folded) and their graphs.
    decode_forms: DecodeForms,
    /// Keys the next decode step's attention sees (its position + 1): which form it runs.
    decode_len: usize,
    /// Prefill graphs by launch shape (`prefill_graphs`), captured on first use.
    prefill_graphs: PrefillGraphs,
    /// Sampling parameters, history, `fed` tokens, scratch and the sampled decode graph.
    sampler: DeviceSampler,
    weights: DevBuf,
    arena: DevBuf,
    kv: DevBuf,
    state: DevBuf,
    attn_scratch: (DevBuf, DevBuf, DevBuf),
    argmax_scratch: DevBuf,
    /// u64 [1]: the greedy decode's argmax key when its LM head has the argmax epilogue.
    argmax_key: DevBuf,
    /// The row scores' targets (i32 per prefill row) and results (`launch::row_score_words(MAX_TOP)`
    /// u32 per row; a call reads `row_score_words(top_n)` per row).
    score_targets: DevBuf,
    score_out: DevBuf,
    /// The row scores' slice partials then tickets (`launch::ScoreSlices::in_scratch`, zero).
    score_scratch: DevBuf,
    gemm_scratch: (DevBuf, DevBuf),
    /// Prefill GEMMs on quantized weights: f16 copies of a few whole weights (a batch, one
    /// launch) or of one slice of a taller weight, dequantised just before their GEMMs.
    dequant_scratch: DevBuf,
    prefill_path: PrefillPath,
    rope_tables: Vec<((u32, usize), DevBuf)>,
    dev: CudaDevice,

    hparams: HyperParams,
    prefill: Program,
    decode: Program,
    weight_offsets: Vec<u64>,
    /// Per weight: its parts on the device, or None when it is all F16 (the f16 kernels' layout).
    weight_parts: Vec<Option<QParts>>,
    max_seq: usize,
    decode_splits: usize,
    /// Whether the decode forms end in the LM head's argmax epilogue (the token is in `argmax_key`)
    /// instead of an argmax launch (in the plan's `next_token` buffer).
    decode_argmax_fused: bool,
    use_graph: bool,
    /// Whether prefills replay graphs (`prefill_graphs::enabled`).
    use_prefill_graphs: bool,
    /// n_tokens currently stored in the device state (skip the memset when unchanged).
    state_n_tokens: Option<i32>,
}

/// Bytes per host-to-device copy of the weights: large enough that a copy's fixed cost is noise
/// (64 MiB moves in a few ms), small enough that the host holds little of the file at once.
const UPLOAD_CHUNK: usize = 64 << 20;

impl CudaExecutor {
    /// Loads `model` (its plan and weights.bin) on GPU 0, using the kernel `image`
    /// (`qwen_aot::kernels::IMAGE`), with a KV cache of `max_seq` tokens
    /// (`1 <= max_seq <= hparams.context_length`).
    pub fn new(model: &CompiledModel, image: &[u8], max_seq: usize) -> Result<CudaExecutor, RuntimeError> {
        let plan = &model.plan;
        validate(plan)?;
        let hp = plan.hparams.clone();
        if max_seq == 0 || max_seq > hp.context_length {
            return Err(RuntimeError::InvalidCall(format!("max_seq {max_seq} must be in 1..={}", hp.context_length)));
        }
        // The derived weights (uploaded whole) rebuild on a thread beside the kernels' load and the
        // file's upload (≈ 180 ms on the H200 host, against a rebuild of ≈ 135 ms) -- once a GPU's
        // context exists: without one this executor fails, and the CPU executor that `--backend
        // auto` falls back to never needs them whole.
        let dev = CudaDevice::new_then(image, || model.start_derived_rebuild())?;

        // Straight from the file's mapping, a chunk at a time: each chunk's pages leave the host's
        // resident set once the driver has staged them, so the host never holds the whole file.
        let span = phases::span("CUDA: weights upload");
        // The file and the derived weights past its end (`stream_weights` hands over both).
        let weights_buf = dev.alloc(model.weights_len() as usize, "weights")?;
        let weights_ptr = weights_buf.ptr();
        model.stream_weights(UPLOAD_CHUNK, |offset, bytes| dev.htod(weights_ptr + offset, bytes, "weights"))?;
        drop(span);
        let buffers = phases::span("CUDA: arena, KV cache, scratch, tables");
        let arena_bytes = plan.prefill.arena_bytes.max(plan.decode.arena_bytes) as usize;
        let arena = dev.alloc(arena_bytes, "activation arena")?;
        let layer_kv = max_seq * hp.n_kv_heads * hp.head_dim * (K_ELEM_BYTES + V_ELEM_BYTES);
        let kv = dev.alloc(hp.n_layers * layer_kv, "KV cache")?;
        let state = dev.alloc(16, "run state")?;

        let decode_splits = launch::attention_splits(hp.n_kv_heads, dev.sm_count(), max_seq);
        let part_rows = hp.n_heads * decode_splits;
        let attn_scratch = (
            dev.alloc(part_rows * hp.head_dim * 4, "attention partials")?,
            dev.alloc(part_rows * 2 * 4, "attention partials")?,
            dev.alloc(hp.n_heads * 4, "attention split counters")?,
        );
        // part_v [1024] f32 | part_i [1024] i32 | counter u32
        let argmax_scratch = dev.alloc(ARGMAX_MAX_BLOCKS * 8 + 16, "argmax scratch")?;
        let argmax_key = dev.alloc(8, "argmax key")?;
        let score_targets = dev.alloc(plan.prefill.max_tokens * 4, "row score targets")?;
        let score_out =
            dev.alloc(plan.prefill.max_tokens * launch::row_score_words(crate::scores::MAX_TOP) * 4, "row scores")?;
        let score_scratch = dev.alloc(launch::row_score_scratch_bytes(dev.sm_count()), "row score slices")?;

        // cuBLAS path: f16 copy of the largest matmul input of the prefill program.
        let max_k = plan
            .prefill
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::MatMul { k, .. } => Some(*k),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let rows = plan.prefill.max_tokens;
        let gemm_scratch = (dev.alloc(rows * max_k * 2, "GEMM f16 input")?, dev.alloc(rows * 4, "GEMM row scales")?);
        // Quantized prefill weights are dequantised into this before their GEMMs (a few whole
        // weights at a time, see `dequant_batch`): sized by `dequant_batch::scratch_bytes`, no
        // more than all of them take (taller ones, such as the LM head, go in slices).
        let quantized = |w: &WeightId| !plan.weights[w.0 as usize].all_parts(WeightFormat::F16);
        let f16_total = plan
            .prefill
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::MatMul { weight, n, k, .. } if quantized(weight) => Some((n * k * 2).next_multiple_of(256)),
                _ => None,
            })
            .sum::<usize>();
        let quantized_bytes =
            plan.weights.iter().filter(|w| !w.all_parts(WeightFormat::F16)).map(|w| w.bytes as usize).sum::<usize>();
        let dequant_bytes = scratch_bytes(quantized_bytes, f16_total);
        let dequant_scratch = dev.alloc(dequant_bytes.max(256), "dequantised prefill weights")?;

        // RoPE inverse frequencies, computed exactly as the CPU twin does (bit-identical factors).
        let mut rope_tables: Vec<((u32, usize), DevBuf)> = Vec::new();
        for s in plan.prefill.steps.iter().chain(&plan.decode.steps) {
            if let Step::BiasRopeKvWrite { rope, .. }
            | Step::Gemv { epilogue: GemvEpilogue::BiasRopeKvWrite { rope, .. }, .. } = s
            {
                let key = (rope.rope_theta.to_bits(), rope.head_dim);
                if !rope_tables.iter().any(|(k, _)| *k == key) {
                    rope_tables.push((key, dev.upload(&inv_freq_table(rope.rope_theta, rope.head_dim), "RoPE table")?));
                }
            }
        }

        let sampler = DeviceSampler::new(&dev, hp.vocab, max_seq, plan.prefill.max_tokens.max(plan.decode.max_tokens))?;
        drop(buffers);

        let _span = phases::span("CUDA: launch lists, wait for the copies");
        let use_graph = !std::env::var("QWEN_AOT_NO_GRAPH").is_ok_and(|v| v == "1");
        let mut ex = CudaExecutor {
            decode_forms: DecodeForms::empty(),
            decode_len: 1,
            prefill_graphs: PrefillGraphs::default(),
            sampler,
            weights: weights_buf,
            arena,
            kv,
            state,
            attn_scratch,
            argmax_scratch,
            argmax_key,
            score_targets,
            score_out,
            score_scratch,
            gemm_scratch,
            dequant_scratch,
            prefill_path: PrefillPath::Auto,
            rope_tables,
            dev,
            hparams: hp,
            prefill: plan.prefill.clone(),
            decode: plan.decode.clone(),
            weight_offsets: plan.weights.iter().map(|w| w.offset).collect(),
            weight_parts: plan
                .weights
                .iter()
                .map(|w| (!w.all_parts(WeightFormat::F16)).then(|| QParts::of(w, weights_ptr)))
                .collect(),
            max_seq,
            decode_splits,
            decode_argmax_fused: false,
            use_graph,
            use_prefill_graphs: prefill_graphs::enabled(use_graph),
            state_n_tokens: None,
        };
        // Each decode program in its plain form and, where attention splits exist, folded.
        let (splits, fold_max) = (ex.decode_splits, launch::attn_fold_max());
        let folds = if splits > 1 { fold_max } else { 0 };
        let forms = |ex: &CudaExecutor, fused: bool| -> Result<(Vec<Op>, Option<Vec<Op>>), RuntimeError> {
            let plain = ex.build_ops(&ex.decode, 1, LogitsWanted::Last, splits, fused, 0)?;
            let folded = (folds > 0).then(|| ex.build_ops(&ex.decode, 1, LogitsWanted::Last, splits, fused, folds));
            Ok((plain, folded.transpose()?))
        };
        let (plain, folded) = forms(&ex, true)?;
        ex.decode_forms = DecodeForms::new(plain, folded, splits, folds);
        ex.decode_argmax_fused = ex.fused_lm_head(&ex.decode).is_some();
        // The sampling kernels replace an argmax launch: the sampled graph keeps the plain LM head.
        let (plain, folded) = forms(&ex, false)?;
        let plain = ex.with_sampler(&ex.decode, plain)?;
        let folded = folded.map(|f| ex.with_sampler(&ex.decode, f)).transpose()?;
        ex.sampler.decode = DecodeForms::new(plain, folded, splits, folds);
        ex.dev.sync("loading the model")?;
        Ok(ex)
    }

    /// The GPU this executor runs on.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Kernel launches (including cuBLAS calls) of one decode step (the plain form's; the folded
    /// form has as many, o_proj on `gemv_q5_direct_store_fold`).
    pub fn decode_launches(&self) -> usize {
        self.decode_forms.plain.ops.len()
    }

    /// Names of the decode step's launches, in order (for reports; the plain form's).
    pub fn decode_launch_names(&self) -> Vec<&'static str> {
        self.decode_forms.plain.ops.iter().map(|o| o.name()).collect()
    }

    /// GPU seconds of `n` greedy decode steps of `token` at `pos` enqueued back to back, with no
    /// host round trip in between (every step recomputes the same position): the device's own
    /// time per step, without the per-token turnaround `decode` pays. For benchmarks (feature
    /// `harness`).
    #[cfg(feature = "harness")]
    pub fn decode_replay_secs(&mut self, token: u32, pos: usize, n: usize) -> Result<f64, RuntimeError> {
        self.prepare_decode(token, pos)?;
        self.launch_greedy_decode()?; // one untimed step: captures the graph on first use
        let timer = super::bench::GpuTimer::start(&self.dev)?;
        for _ in 0..n {
            self.launch_greedy_decode()?;
        }
        timer.stop_secs(&self.dev)
    }

    /// Turns prefill graphs off (every prefill launched directly) or back on where decode uses
    /// graphs: `qwen-aot check` compares a direct prefill with captured and replayed ones
    /// (feature `harness`).
    #[cfg(feature = "harness")]
    pub fn set_prefill_graphs(&mut self, on: bool) {
        self.use_prefill_graphs = on && prefill_graphs::enabled(self.use_graph);
    }

    /// Whether a prefill of `tokens` tokens (greedy, `logits` as given) would replay a captured
    /// graph now; `None` for a shape that is never captured (prefill graphs off, or a GEMV
    /// prefill of more than `GEMV_GRAPH_MAX_ROWS` rows). Feature `harness`.
    #[cfg(feature = "harness")]
    pub fn prefill_replays_graph(&self, tokens: usize, logits: LogitsWanted) -> Option<bool> {
        let gemm = tokens > 1 && self.use_gemm(tokens);
        let key = PrefillKey::new(tokens, gemm, self.prefill.max_tokens, logits, self.sampler.active());
        let never = !self.use_prefill_graphs || (!gemm && key.rows > prefill_graphs::GEMV_GRAPH_MAX_ROWS);
        (!never).then(|| self.prefill_graphs.get(&key).is_some())
    }

    /// Whether decode replays a captured CUDA graph (false with `QWEN_AOT_NO_GRAPH=1`).
    pub fn uses_graph(&self) -> bool {
        self.use_graph
    }

    /// Splits of the decode attention kernel (flash-decoding).
    pub fn decode_attention_splits(&self) -> usize {
        self.decode_splits
    }

    /// The first `targets.len()` rows of the `decode` (else prefill) program's logits scored on
    /// the device (kernels/row_scores.cu) against `targets` (each < vocab) with `top_n` (<=
    /// MAX_TOP) alternatives, both checked by the caller, after the work enqueued so far; a few
    /// bytes a row cross to the host. `pos` is the first row's position, for a non-finite logit's
    /// error.
    fn score_on_device(
        &self,
        decode: bool,
        targets: &[u32],
        pos: usize,
        top_n: usize,
    ) -> Result<Vec<RowScore>, RuntimeError> {
        let (t, vocab) = (targets.len(), self.hparams.vocab);
        let prog = if decode { &self.decode } else { &self.prefill };
        let ids: Vec<i32> = targets.iter().map(|&x| x as i32).collect();
        self.dev.htod(self.score_targets.ptr(), &ids, "score targets")?;
        let logits = self.buf_ptr(prog, prog.logits);
        let split = launch::ScoreSlices::in_scratch(self.score_scratch.ptr(), t, vocab, self.dev.sm_count());
        let op = launch::row_scores(
            self.state.ptr(),
            logits,
            self.score_targets.ptr(),
            vocab,
            t,
            top_n,
            self.score_out.ptr(),
            split,
        );
        // SAFETY: the program's logits buffer holds max_tokens >= t rows of vocab floats,
        // written by the launch the caller enqueued (every row of a prefill with `All` logits,
        // the one row of a decode); the state's n_tokens is that launch's, t for a prefill and
        // 1 for a decode; the targets buffer holds the prefill's max_tokens >= t entries and the
        // results buffer as many rows of row_score_words(MAX_TOP) >= row_score_words(top_n)
        // words; every target is < vocab and top_n <= MAX_TOP (the caller's check); the slices'
        // scratch holds what row_score_slices' split of t rows needs, its tickets zero between
        // launches (the kernel's last block of a row resets its own).
        unsafe { self.dev.run_ops(&[op])? };
        let stride = launch::row_score_words(top_n);
        let mut words = vec![0u32; stride * t];
        self.dev.dtoh(self.score_out.ptr(), &mut words, "reading the row scores")?;
        words
            .chunks_exact(stride)
            .enumerate()
            .map(|(r, w)| {
                if w[1] != 0 {
                    // The row's first non-finite logit, reported as the copied rows' check would.
                    let token = (w[1] - 1) as usize;
                    let mut value = [0f32];
                    self.dev.dtoh(logits + ((r * vocab + token) * 4) as u64, &mut value, "reading a logit")?;
                    return Err(RuntimeError::NonFiniteLogit { value: value[0], token, pos: pos + r });
                }
                // Pairs past the vocabulary's length are the kernel's empty slots.
                let top = w[2..]
                    .chunks_exact(2)
                    .take(top_n)
                    .filter(|p| (p[0] as usize) < vocab)
                    .map(|p| (p[0], f32::from_bits(p[1])))
                    .collect();
                Ok(RowScore { logprob: f32::from_bits(w[0]), top })
            })
            .collect()
    }

    /// Starts the prefill program over `tokens` at `pos` (its graph, or its launches) with the
    /// `logits` rows it keeps on the device; returns whether the sampler ran (for `after_run`,
    /// once the outputs are read).
    fn launch_prefill(&mut self, tokens: &[u32], pos: usize, logits: LogitsWanted) -> Result<bool, RuntimeError> {
        let t = tokens.len();
        if t == 0 || t > self.prefill.max_tokens {
            return Err(RuntimeError::InvalidCall(format!(
                "prefill of {t} tokens (1..={} allowed)",
                self.prefill.max_tokens
            )));
        }
        self.check_tokens(tokens, pos)?;
        let ids: Vec<i32> = tokens.iter().map(|&x| x as i32).collect();
        self.dev.htod(self.sampler.fed_ptr(), &ids, "prompt tokens")?;
        self.set_state(pos, t)?;
        let sampled = self.sampler.active();
        self.sampler.before_run(&self.dev, pos, sampled)?;
        let gemm = t > 1 && self.use_gemm(t);
        let key = PrefillKey::new(t, gemm, self.prefill.max_tokens, logits, sampled);
        // SAFETY: the ops come from `prefill_ops` over this executor's validated plan and
        // allocations (arena sized for max(prefill, decode), each buffer max_tokens rows, so the
        // bucketed rows (<= max_tokens) and the padded GEMM rows of `gemm_rows` fit; pos + t <=
        // max_seq checked above, and rows past t are skipped by every kernel (they read t from
        // the device state) or computed into scratch rows nothing reads; GEMM scratch sized for
        // max_tokens x max k; dequantised copies only where they fit the dequantisation scratch:
        // `batch_offsets`, or slices of at most its size). All of it lives in self, as do the
        // graphs that record them.
        unsafe {
            if self.use_prefill_graphs
                && self.prefill_graphs.get(&key).is_none()
                && self.prefill_graphs.capture_now(key)
            {
                self.try_capture_prefill(key, logits);
            }
            match self.prefill_graphs.get(&key) {
                Some(graph) => graph.launch().cuda_ctx(|| "launching the prefill graph".into())?,
                None => {
                    // Directly, at the prompt's own row count (as without graphs).
                    let ops = self.prefill_ops(PrefillKey { rows: t, ..key }, logits)?;
                    self.dev.run_ops(&ops)?;
                }
            }
        }
        Ok(sampled)
    }

    fn set_state(&mut self, pos: usize, n_tokens: usize) -> Result<(), RuntimeError> {
        self.dev.memset_u32(self.state.ptr(), pos as u32, 1, "run state (pos)")?;
        if self.state_n_tokens != Some(n_tokens as i32) {
            self.dev.memset_u32(self.state.ptr() + 4, n_tokens as u32, 1, "run state (n_tokens)")?;
            self.state_n_tokens = Some(n_tokens as i32);
        }
        Ok(())
    }

    fn check_tokens(&self, tokens: &[u32], pos: usize) -> Result<(), RuntimeError> {
        for &id in tokens {
            if id as usize >= self.hparams.vocab {
                return Err(RuntimeError::TokenOutOfRange { id, vocab: self.hparams.vocab });
            }
        }
        if pos + tokens.len() > self.max_seq {
            return Err(RuntimeError::ContextFull { needed: pos + tokens.len(), max_seq: self.max_seq });
        }
        Ok(())
    }

    /// Writes the step's token and run state for a decode at `pos`.
    fn prepare_decode(&mut self, token: u32, pos: usize) -> Result<(), RuntimeError> {
        self.check_tokens(&[token], pos)?;
        self.dev.memset_u32(self.sampler.fed_ptr(), token, 1, "decode token")?;
        self.decode_len = pos + 1;
        self.set_state(pos, 1)
    }

    /// Enqueues one greedy decode step (see [`launch_decode`]).
    fn launch_greedy_decode(&mut self) -> Result<(), RuntimeError> {
        let form = self.decode_forms.for_len(self.decode_len);
        // SAFETY: the forms' ops were built by build_ops from this executor's allocations (arena
        // offsets and weights validated against their sizes at load, KV cache of max_seq
        // positions, scratch sized for these launch shapes); they and the graphs live in self.
        unsafe { launch_decode(&self.dev, self.use_graph, &mut form.graph, &form.ops, "decode") }
    }

    /// Captures both decode programs (greedy and sampled) in every form, so that a generation
    /// never pauses for a capture -- the folded form is first needed at 129 keys, mid-answer.
    /// Nothing with `QWEN_AOT_NO_GRAPH=1`. `warm_up` runs it; `qwen-aot check` before its first
    /// decode, so that the whole-model rows replay the graphs captured here.
    pub fn capture_decode_graphs(&mut self) -> Result<(), RuntimeError> {
        if !self.use_graph {
            return Ok(());
        }
        let _span = phases::span("CUDA: decode graph captures");
        // SAFETY: as in launch_greedy_decode (the sampled forms: as in decode_beside); recording
        // launches nothing, and the graphs live in self beside the buffers their ops address.
        unsafe {
            self.decode_forms.capture_all(&self.dev, "decode")?;
            self.sampler.decode.capture_all(&self.dev, "sampled decode")
        }
    }

    /// Whether every decode graph is captured (`capture_decode_graphs`), or graphs are off.
    pub fn decode_graphs_captured(&self) -> bool {
        !self.use_graph || (self.decode_forms.all_captured() && self.sampler.decode.all_captured())
    }

    /// Captures the prefill graphs a prompt on cuBLAS needs (every bucket `warm_up` covers, the
    /// LM head on the last row, the sampler as it is set now), so that no prompt pays a capture;
    /// others are captured on first use. Recording launches nothing.
    fn capture_prefill_graphs(&mut self) -> Result<(), RuntimeError> {
        if !self.use_prefill_graphs {
            return Ok(());
        }
        let _span = phases::span("CUDA: prefill graphs");
        let cap = self.prefill.max_tokens;
        let sampled = self.sampler.active();
        for rows in launch::gemm_row_buckets(cap).into_iter().filter(|&r| r <= WARM_UP_MAX_ROWS) {
            let key = PrefillKey::new(rows, true, cap, LogitsWanted::Last, sampled);
            if rows <= ALWAYS_GEMV_ROWS || self.prefill_graphs.get(&key).is_some() {
                continue;
            }
            self.try_capture_prefill(key, LogitsWanted::Last);
        }
        Ok(())
    }

    /// Captures the prefill graph of `key` (logits as asked); a capture that fails marks the key
    /// to run directly from then on (`PrefillGraphs::refuse`), so a shape that cannot be
    /// captured costs one failed attempt, never a failed prefill.
    fn try_capture_prefill(&mut self, key: PrefillKey, logits: LogitsWanted) {
        let captured = self.prefill_ops(key, logits).and_then(|ops| {
            phases::time("CUDA: prefill graph capture", || {
                // SAFETY: as in `prefill`: the launches of a validated plan on this executor's
                // allocations, recorded (not run) into a graph that lives in self with them.
                unsafe { self.dev.capture_graph(&ops, "prefill") }
            })
        });
        match captured {
            Ok(graph) => {
                self.prefill_graphs.insert(key, graph);
            }
            Err(_) => self.prefill_graphs.refuse(key),
        }
    }

    /// A prefill's launches for `key` (its row count, path and sampler; `logits` as asked, which
    /// gives the same launches for None and Last). Prefill attention splits: one per row (direct
    /// output); rows already give the parallelism.
    fn prefill_ops(&self, key: PrefillKey, logits: LogitsWanted) -> Result<Vec<Op>, RuntimeError> {
        let ops = self.build_ops(&self.prefill, key.rows, logits, 1, false, 0)?;
        if key.sampled {
            self.with_sampler(&self.prefill, ops)
        } else {
            Ok(ops)
        }
    }

    /// `ops` (built from `prog`) with the sampling launches in place of the argmax launch.
    fn with_sampler(&self, prog: &Program, ops: Vec<Op>) -> Result<Vec<Op>, RuntimeError> {
        let Some(&Step::Argmax { logits, vocab, out }) = prog.steps.iter().find(|s| matches!(s, Step::Argmax { .. }))
        else {
            return Err(RuntimeError::Cuda("the program has no argmax step for the sampler to replace".into()));
        };
        let with = self.sampler.ops(
            self.state.ptr(),
            self.buf_ptr(prog, logits),
            self.buf_ptr(prog, out),
            vocab,
            self.dev.sm_count(),
        );
        sample::replace_argmax(ops, with)
    }

    /// Copies the requested logits rows and the device argmax of `prog` back (one synchronisation):
    /// from `argmax_key` when `fused` (the greedy decode's LM head epilogue), else from the
    /// program's `next_token` buffer.
    fn read_outputs(
        &self,
        decode: bool,
        rows: usize,
        want: LogitsWanted,
        fused: bool,
    ) -> Result<StepOutput, RuntimeError> {
        let prog = if decode { &self.decode } else { &self.prefill };
        let vocab = self.hparams.vocab;
        let mut logits = match want {
            LogitsWanted::None => Vec::new(),
            LogitsWanted::Last => vec![0f32; vocab],
            LogitsWanted::All => vec![0f32; rows * vocab],
        };
        let base = self.buf_ptr(prog, prog.logits);
        let first_row = if want == LogitsWanted::All { 0 } else { rows - 1 };
        if !logits.is_empty() {
            // Enqueued before the token copy; dtoh below synchronises once for both.
            self.dev.ctx.bind_to_thread().cuda_ctx(|| "binding the context".into())?;
            // SAFETY: the logits buffer holds max_tokens >= rows rows of vocab floats (validated);
            // `logits` is sized for what is copied and outlives the synchronisation in dtoh below.
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    logits.as_mut_ptr() as *mut std::ffi::c_void,
                    base + (first_row * vocab * 4) as u64,
                    logits.len() * 4,
                    self.dev.cu_stream(),
                )
            }
            .result()
            .cuda_ctx(|| "copying logits to the host".into())?;
        }
        let token = if fused {
            let mut key = [0u64; 1];
            self.dev.dtoh(self.argmax_key.ptr(), &mut key, "reading the next token")?;
            i64::from(argmax_key::decode(key[0]))
        } else {
            let mut tok = [0i32; 1];
            self.dev.dtoh(self.buf_ptr(prog, prog.next_token), &mut tok, "reading the next token")?;
            i64::from(tok[0])
        };
        if token < 0 || token as usize >= vocab {
            return Err(RuntimeError::Cuda(format!(
                "device argmax returned {token} (vocab {vocab}): non-finite logits?"
            )));
        }
        Ok(StepOutput { next_token: token as u32, logits })
    }
}

/// Enqueues one decode step of `ops`: the graph in `slot` (captured from `ops` on first use), or
/// the launches one by one when `use_graph` is false (`QWEN_AOT_NO_GRAPH=1`). The greedy and the
/// sampled decode programs each keep their own slot.
///
/// # Safety
/// As [`CudaDevice::run_ops`]: every pointer in `ops` addresses device memory of the sizes its
/// builder documents, valid until every launch of the graph in `slot` (and every direct launch)
/// has completed.
unsafe fn launch_decode(
    dev: &CudaDevice,
    use_graph: bool,
    slot: &mut Option<CudaGraph>,
    ops: &[Op],
    what: &str,
) -> Result<(), RuntimeError> {
    if !use_graph {
        // SAFETY: this function's contract.
        return unsafe { dev.run_ops(ops) };
    }
    let graph = match slot {
        Some(graph) => graph,
        // SAFETY: this function's contract.
        None => slot.insert(phases::time("CUDA: decode graph capture", || unsafe { dev.capture_graph(ops, what) })?),
    };
    graph.launch().cuda_ctx(|| format!("launching the {what} graph"))
}

/// `inv_freq[i] = theta^(-2i/d)` with the CPU twin's exact f32 expression (cpu::kernels::rope_head).
pub(crate) fn inv_freq_table(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| theta.powf(-2.0 * i as f32 / head_dim as f32)).collect()
}

impl Executor for CudaExecutor {
    fn backend(&self) -> Backend {
        Backend::Cuda
    }

    /// Creates cuBLAS and runs each distinct prefill matmul (conversion, dequantisation, GEMM,
    /// epilogue) at every row count a GEMM runs at (`launch::gemm_row_buckets`) once, on zeros into a temporary output, so a later
    /// prompt finds the handle and every kernel it needs loaded; then captures those buckets'
    /// prefill graphs (`capture_prefill_graphs`). The KV cache, the sampler state and the
    /// conversation are untouched (every prefill and decode sets the device state again).
    fn warm_up(&mut self) -> Result<(), RuntimeError> {
        self.capture_decode_graphs()?;
        if self.prefill_path == PrefillPath::Gemv || !self.dev.has_cublas() {
            return Ok(());
        }
        let _span = phases::span("CUDA: prefill warm-up (cuBLAS kernels)");
        let rows_max = self.prefill.max_tokens;
        let shapes = self.warm_up_matmuls();
        let max_n = shapes.iter().map(|&(_, n, _)| n).max().unwrap_or(0);
        let max_k = shapes.iter().map(|&(_, _, k)| k).max().unwrap_or(0);
        let x = self.dev.alloc(rows_max * max_k * 4, "prefill warm-up input")?;
        let out = self.dev.alloc(rows_max * max_n * 4, "prefill warm-up output")?;
        // Chat turns and requests are mostly short: buckets past WARM_UP_MAX_ROWS (a prefill
        // chunk of more than 512 rows) load their kernels on first use, which a long prompt
        // amortises.
        for rows in launch::gemm_row_buckets(rows_max).into_iter().filter(|&r| r <= WARM_UP_MAX_ROWS) {
            // The conversion and the epilogue read the row count from the device state.
            self.set_state(0, rows)?;
            let ops = self.prefill_gemm_shapes(x.ptr(), out.ptr(), rows);
            // SAFETY: as in `prefill` (GEMM scratch sized for max_tokens x max k; a weight
            // dequantised whole only when its n * k * 2 bytes fit the dequantisation scratch, else
            // in slices of at most its size), with x and out allocated above for max_tokens rows
            // (>= the padded GEMM rows) of the widest k and n of these matmuls. Synchronised
            // before x and out drop; after an error, cudarc frees them in stream order (free
            // on the same stream, or a stream synchronisation first).
            unsafe { self.dev.run_ops(&ops)? };
        }
        self.dev.sync("prefill warm-up")?;
        self.capture_prefill_graphs()
    }

    fn hparams(&self) -> &HyperParams {
        &self.hparams
    }

    fn max_seq(&self) -> usize {
        self.max_seq
    }

    fn max_prefill_tokens(&self) -> usize {
        self.prefill.max_tokens
    }

    fn prefill(&mut self, tokens: &[u32], pos: usize, logits: LogitsWanted) -> Result<StepOutput, RuntimeError> {
        let sampled = self.launch_prefill(tokens, pos, logits)?;
        let out = self.read_outputs(false, tokens.len(), logits, false)?;
        self.sampler.after_run(pos, tokens, sampled);
        Ok(out)
    }

    fn prefill_scores(
        &mut self,
        tokens: &[u32],
        pos: usize,
        targets: &[u32],
        top_n: usize,
    ) -> Result<Vec<RowScore>, RuntimeError> {
        crate::scores::check_targets(tokens.len(), targets, self.hparams.vocab, top_n)?;
        let sampled = self.launch_prefill(tokens, pos, LogitsWanted::All)?;
        let scores = self.score_on_device(false, targets, pos, top_n);
        self.sampler.after_run(pos, tokens, sampled);
        scores
    }

    fn decode(&mut self, token: u32, pos: usize, logits: bool) -> Result<StepOutput, RuntimeError> {
        self.decode_beside(token, pos, logits, &mut || {})
    }

    fn decode_beside(
        &mut self,
        token: u32,
        pos: usize,
        logits: bool,
        beside: &mut dyn FnMut(),
    ) -> Result<StepOutput, RuntimeError> {
        self.prepare_decode(token, pos)?;
        let sampled = self.sampler.active();
        self.sampler.before_run(&self.dev, pos, sampled)?;
        if sampled {
            let form = self.sampler.decode.for_len(self.decode_len);
            // SAFETY: as in launch_greedy_decode; the sampler's buffers live in self.sampler.
            unsafe { launch_decode(&self.dev, self.use_graph, &mut form.graph, &form.ops, "sampled decode")? };
        } else {
            self.launch_greedy_decode()?;
        }
        // The launches are queued: the host's work beside the step runs while the GPU computes.
        beside();
        let want = if logits { LogitsWanted::Last } else { LogitsWanted::None };
        let out = self.read_outputs(true, 1, want, !sampled && self.decode_argmax_fused)?;
        self.sampler.after_run(pos, &[token], sampled);
        Ok(out)
    }

    fn last_decode_logits(&mut self) -> Result<Vec<f32>, RuntimeError> {
        // Both decode programs (greedy and sampled) store their logits in the decode program's
        // buffer, as `read_outputs` reads them; the token's read-back synchronised the stream.
        let mut row = vec![0f32; self.hparams.vocab];
        self.dev.dtoh(self.buf_ptr(&self.decode, self.decode.logits), &mut row, "copying the last decode's logits")?;
        Ok(row)
    }

    fn last_decode_score(&mut self, target: u32, pos: usize, top_n: usize) -> Result<RowScore, RuntimeError> {
        crate::scores::check_targets(1, &[target], self.hparams.vocab, top_n)?;
        let mut score = self.score_on_device(true, &[target], pos, top_n)?;
        Ok(score.swap_remove(0))
    }

    fn scores_on_device(&self) -> bool {
        true
    }

    fn device_memory_used(&self) -> Option<u64> {
        self.dev.memory_used().ok()
    }

    /// Validates and uploads `params` (one small copy; no graph is recaptured).
    fn set_sampling(&mut self, params: &SamplingParams) -> Result<(), RuntimeError> {
        self.sampler.set(&self.dev, params)
    }
}
