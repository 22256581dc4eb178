//! A decode step's launches in two forms, each replayed as its own CUDA graph: **plain** (every
//! attention merges its own splits) and **folded** (o_proj merges them as it loads its x:
//! kernels/attn_fold.cuh). The host picks one per step from the context length, by the same rule
//! the kernels use (`launch::attn_active_splits`): folded exactly when the row's attention runs in
//! 2..=fold_max splits -- the contexts where the fold pays (experiments/LOG.md, 37th session:
//! o_proj's fold kernel costs ≈ 0.3 µs per layer even where it has nothing to merge, so a context
//! of one split, or of more than fold_max, runs the plain form).
use cudarc::driver::CudaGraph;

use super::launch::{self, Op};

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

    /// The form a decode step whose attention sees `len` keys (the cached ones and its own) runs.
    pub fn for_len(&mut self, len: usize) -> &mut DecodeForm {
        let active = launch::attn_active_splits(len, self.splits);
        match &mut self.folded {
            Some(folded) if active > 1 && active <= self.fold_max => folded,
            _ => &mut self.plain,
        }
    }
}
