//! Which kernels run a prefill's matmuls (the GEMV kernels or cuBLAS, by the prompt's length and
//! whether cuBLAS is up) and the quantized weights' dequantisation into the f16 scratch that the
//! cuBLAS path reads.

use super::{
    batch_offsets, launch, CudaExecutor, DequantJob, Dequantised, GemmScratch, LogitsWanted, MatMulMode, Op, Program,
    Step, WeightId,
};

/// Prefills of at most this many rows run on the GEMV kernels until cuBLAS is up (see
/// `use_gemm`): a cold cuBLAS costs ~200 ms, the GEMV path ~0.2 ms per row.
const SHORT_PREFILL_GEMV_ROWS: usize = 64;

/// Prefills of at most this many rows always run on the GEMV kernels: below it they beat the
/// cuBLAS path's fixed cost (H200, default model's formats: 4 rows 1.8 ms on the GEMV kernels
/// against 2.6 ms on cuBLAS, 16 rows 4.3 against 2.7 ms; `qwen-aot bench`).
pub(super) const ALWAYS_GEMV_ROWS: usize = 8;

/// Which kernels run the prefill matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefillPath {
    /// cuBLAS once it is up or for long prompts; the GEMV kernels for short prompts (see
    /// `CudaExecutor::use_gemm`).
    #[default]
    Auto,
    /// Always the GEMV kernels (one launch row per token).
    Gemv,
    /// Always cuBLAS (when it is available).
    Gemm,
}

impl CudaExecutor {
    /// Whether a prefill of `rows` rows runs its matmuls on cuBLAS: past ALWAYS_GEMV_ROWS rows
    /// once cuBLAS is up; before that only past SHORT_PREFILL_GEMV_ROWS rows (then it is created
    /// here). A short prompt in a fresh process thus never pays cuBLAS' start-up (~140 ms handle,
    /// ~60 ms first GEMM, measured on the H200), at ~0.2 ms per row on the GEMV kernels;
    /// `warm_up` pays it when the caller is idle.
    pub(super) fn use_gemm(&self, rows: usize) -> bool {
        match self.prefill_path {
            PrefillPath::Auto => {
                rows > ALWAYS_GEMV_ROWS
                    && (self.dev.cublas_ready() || (rows > SHORT_PREFILL_GEMV_ROWS && self.dev.has_cublas()))
            }
            PrefillPath::Gemv => false,
            PrefillPath::Gemm => self.dev.has_cublas(),
        }
    }

    /// Forces the prefill matmuls onto one path (benchmarks compare them at one prompt length).
    #[cfg(feature = "harness")]
    pub fn set_prefill_path(&mut self, path: PrefillPath) {
        self.prefill_path = path;
    }

    /// The cuBLAS path's scratch (for up to the prefill's max_tokens rows).
    fn gemm_scratch(&self) -> GemmScratch {
        GemmScratch { x16: self.gemm_scratch.0.ptr(), scale: self.gemm_scratch.1.ptr(), rows: self.prefill.max_tokens }
    }

    /// How a matmul step runs at `rows` rows: the LM head on its last row only unless every
    /// row's logits are wanted; one row, or a short prompt before cuBLAS is up, on the GEMV
    /// kernels; else on cuBLAS.
    pub(super) fn matmul_mode(&self, logit_rows: bool, rows: usize, logits: LogitsWanted) -> MatMulMode {
        if logit_rows && logits != LogitsWanted::All {
            MatMulMode::LastRow
        } else if rows == 1 || !self.use_gemm(rows) {
            MatMulMode::Gemv
        } else {
            MatMulMode::Gemm
        }
    }

    /// The quantized weights to dequantise together at step `from` of `prog` (a cuBLAS matmul
    /// whose weight is not in the scratch yet): see `dequant_batch::batch_offsets`.
    pub(super) fn dequant_batch(
        &self,
        prog: &Program,
        from: usize,
        rows: usize,
        logits: LogitsWanted,
    ) -> Vec<(WeightId, DequantJob)> {
        let quantized_gemms = prog.steps[from..].iter().filter_map(|step| match *step {
            Step::MatMul { weight, n, k, logit_rows, .. }
                if self.matmul_mode(logit_rows, rows, logits) == MatMulMode::Gemm =>
            {
                self.parts(weight).map(|parts| ((weight, parts, n, k), n * k * 2))
            }
            _ => None,
        });
        let base = self.dequant_scratch.ptr();
        batch_offsets(quantized_gemms, self.dequant_scratch.bytes())
            .into_iter()
            .map(|((weight, parts, n, k), offset)| (weight, DequantJob { parts, n, k, out: base + offset as u64 }))
            .collect()
    }

    /// The prefill's matmuls on the cuBLAS path that `warm_up` runs: one per distinct (n, k,
    /// whether W goes in slices), without the LM head (a prompt's logits come from its last row,
    /// on the GEMV kernels; only a run that asks for every row's logits multiplies it on cuBLAS).
    pub(super) fn warm_up_matmuls(&self) -> Vec<(WeightId, usize, usize)> {
        let ws_bytes = self.dequant_scratch.bytes();
        let mut seen: Vec<(usize, usize, bool)> = Vec::new();
        let mut out = Vec::new();
        for step in &self.prefill.steps {
            let Step::MatMul { weight, n, k, logit_rows: false, .. } = *step else { continue };
            let key = (n, k, self.parts(weight).is_some() && n * k * 2 > ws_bytes);
            if !seen.contains(&key) {
                seen.push(key);
                out.push((weight, n, k));
            }
        }
        out
    }

    /// `warm_up_matmuls` at `rows` rows, reading `x` and writing `out` (f32 [rows, k] and [rows,
    /// n], sized by the caller for the padded rows) instead of the program's buffers, each
    /// quantized weight dequantised whole when it fits the scratch (else in slices).
    pub(super) fn prefill_gemm_shapes(&self, x: u64, out: u64, rows: usize) -> Vec<Op> {
        let (ws, ws_bytes) = (self.dequant_scratch.ptr(), self.dequant_scratch.bytes());
        let mut ops = Vec::new();
        for (weight, n, k) in self.warm_up_matmuls() {
            let w16 = self.parts(weight).filter(|_| n * k * 2 <= ws_bytes).map(|parts| {
                ops.extend(launch::dequant_q_f16_batch(&[DequantJob { parts, n, k, out: ws }]));
                ws
            });
            ops.extend(self.matmul_ops(weight, x, out, None, n, k, rows, MatMulMode::Gemm, w16));
        }
        ops
    }

    /// One matmul's launches (x, out, residual: device addresses) in `mode`: a quantized weight's
    /// kernels, on cuBLAS from its f16 copy at `w16` (None: dequantised here in slices through
    /// the scratch), or an f16 weight's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn matmul_ops(
        &self,
        weight: WeightId,
        x: u64,
        out: u64,
        residual: Option<u64>,
        n: usize,
        k: usize,
        rows: usize,
        mode: MatMulMode,
        w16: Option<u64>,
    ) -> Vec<Op> {
        let (st, gemm) = (self.state.ptr(), self.gemm_scratch());
        match self.parts(weight) {
            Some(parts) => {
                let slices =
                    Dequantised::Slices { scratch: self.dequant_scratch.ptr(), bytes: self.dequant_scratch.bytes() };
                let w16 = w16.map_or(slices, Dequantised::At);
                launch::matmul_q(&self.dev, st, x, parts, out, residual, n, k, rows, mode, gemm, w16)
            }
            None => launch::matmul(&self.dev, st, x, self.weight_ptr(weight), out, residual, n, k, rows, mode, gemm),
        }
    }
}
