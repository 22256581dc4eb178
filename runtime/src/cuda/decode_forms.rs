//! A decode step's launches in two forms, each replayed as its own CUDA graph: **plain** (every
//! attention merges its own splits) and **folded** (o_proj merges them as it loads its x:
//! kernels/attn_fold.cuh). The host picks one per step from the context length, by the same rule
//! the kernels use (`launch::attn_active_splits`): folded exactly when the row's attention runs in
//! 2..=fold_max splits -- the contexts where the fold pays (experiments/LOG.md, 37th session:
//! o_proj's fold kernel costs ≈ 0.3 µs per layer even where it has nothing to merge, so a context
//! of one split, or of more than fold_max, runs the plain form).
use cudarc::driver::CudaGraph;

use super::device::CudaDevice;
use super::launch::{self, Op};
use crate::error::RuntimeError;
use crate::phases;

/// One form's launches and its graph, captured on first use.
pub(crate) struct DecodeForm {
    pub ops: Vec<Op>,
    pub graph: Option<CudaGraph>,
}

impl DecodeForm {
    fn new(ops: Vec<Op>) -> DecodeForm {
        DecodeForm { ops, graph: None }
    }
}

/// The plain form, and the folded one where the program has a fold (`fold_max > 0` splits).
pub(crate) struct DecodeForms {
    pub plain: DecodeForm,
    folded: Option<DecodeForm>,
    splits: usize,
    fold_max: usize,
}

impl DecodeForms {
    /// Both forms of a program decoded at `splits` attention splits; `folded` None, or equal to
    /// `plain` (no attention in the program is followed by a GEMV that takes the fold), keeps
    /// only the plain one.
    pub fn new(plain: Vec<Op>, folded: Option<Vec<Op>>, splits: usize, fold_max: usize) -> DecodeForms {
        let folded = folded.filter(|f| f.iter().map(Op::name).ne(plain.iter().map(Op::name)));
        DecodeForms { plain: DecodeForm::new(plain), folded: folded.map(DecodeForm::new), splits, fold_max }
    }

    /// No launches yet (filled in once the executor's buffers exist).
    pub fn empty() -> DecodeForms {
        DecodeForms::new(Vec::new(), None, 1, 0)
    }

    /// Captures every form not captured yet, so that no step of a generation pays a capture (the
    /// folded form is otherwise first needed at 129 keys, in the middle of an answer). Recording
    /// launches nothing; a form that has no launches yet (`empty`) is left alone.
    ///
    /// # Safety
    /// As [`CudaDevice::capture_graph`]: every pointer in the forms' ops addresses device memory
    /// of the sizes its builder documents, valid for as long as the graphs are replayed.
    pub unsafe fn capture_all(&mut self, dev: &CudaDevice, what: &str) -> Result<(), RuntimeError> {
        for form in std::iter::once(&mut self.plain).chain(self.folded.as_mut()) {
            if form.graph.is_none() && !form.ops.is_empty() {
                // SAFETY: this function's contract.
                let graph =
                    phases::time("CUDA: decode graph capture", || unsafe { dev.capture_graph(&form.ops, what) })?;
                form.graph = Some(graph);
            }
        }
        Ok(())
    }

    /// Whether every form with launches has its graph (`capture_all` ran, or each was replayed).
    pub fn all_captured(&self) -> bool {
        std::iter::once(&self.plain).chain(self.folded.as_ref()).all(|f| f.graph.is_some() || f.ops.is_empty())
    }

    /// The form a decode step whose attention sees `len` keys (the cached ones and its own) runs.
    pub fn for_len(&mut self, len: usize) -> &mut DecodeForm {
        let active = launch::attn_active_splits(len, self.splits);
        match &mut self.folded {
            Some(folded) if active > 1 && active <= self.fold_max => folded,
            _ => &mut self.plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::device::Kernel;
    use crate::cuda::launch::Launch;

    fn ops(kernel: Kernel) -> Vec<Op> {
        vec![Op::Kernel(Launch { kernel, grid: (1, 1, 1), block: (32, 1, 1), smem: 0, args: Vec::new() })]
    }

    fn picked(forms: &mut DecodeForms, len: usize) -> &'static str {
        forms.for_len(len).ops[0].name()
    }

    /// With 64 splits and fold_max 8 (the default min_chunk of 128): the folded form exactly for
    /// contexts of 129-512 keys (3-8 active splits), the plain one below and above.
    #[test]
    fn the_folded_form_runs_for_two_to_fold_max_splits() {
        let mut forms =
            DecodeForms::new(ops(Kernel::GemvQ5DirectStore), Some(ops(Kernel::GemvQ5DirectStoreFold)), 64, 8);
        let (plain, folded) = ("gemv_q5_direct_store", "gemv_q5_direct_store_fold");
        for (len, want) in [(1, plain), (128, plain), (129, folded), (300, folded), (512, folded), (513, plain)] {
            assert_eq!(picked(&mut forms, len), want, "context of {len} keys");
        }
        assert_eq!(picked(&mut forms, 2048), plain);
    }

    /// A folded form with the plain one's launches (no attention the GEMV after it can fold), or
    /// none, leaves the plain form for every length.
    #[test]
    fn no_fold_means_the_plain_form_everywhere() {
        let same = ops(Kernel::GemvQ5DirectStore);
        for folded in [Some(same), None] {
            let mut forms = DecodeForms::new(ops(Kernel::GemvQ5DirectStore), folded, 64, 8);
            assert!((1..600).all(|len| picked(&mut forms, len) == "gemv_q5_direct_store"));
        }
    }
}
