//! Rebuilding a plan's derived weights at load (`qwen_aot_plan::derive`): each target is its
//! recipe applied to its stored base, XORed with the correction decompressed from `weights.bin`,
//! frame by frame in parallel, and checked against the SHA-256s the compiler recorded per frame
//! (a sample of frames at a normal load, every frame for `verify` and `check`). The plan
//! validator has bounded every size beforehand (frames per target, each frame's compressed size,
//! the regions inside the file), so nothing here allocates from an unchecked claim.
use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::plan::derive::{apply_recipe, frame_ranges, frame_sha256, DerivedWeight, CORRECTION_FRAME};
use crate::plan::{Plan, WeightId};

/// The derived weights' bytes, rebuilt, by target.
#[derive(Default)]
pub struct DerivedBytes {
    weights: Vec<(WeightId, Vec<u8>)>,
}

impl DerivedBytes {
    /// The rebuilt bytes of `id`, if it is derived.
    pub fn get(&self, id: WeightId) -> Option<&[u8]> {
        self.weights.iter().find(|(w, _)| *w == id).map(|(_, b)| b.as_slice())
    }

    /// Every rebuilt weight, in the plan's order (their offsets are back to back past the file).
    pub fn iter(&self) -> impl Iterator<Item = (WeightId, &[u8])> {
        self.weights.iter().map(|(w, b)| (*w, b.as_slice()))
    }
}

/// Which frames of a derived weight a rebuild hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameCheck {
    /// Every frame (`qwen-aot verify`, `check`).
    All,
    /// One frame in [`SAMPLE_EVERY`], the phase picked by this seed (a normal load: the
    /// correction itself lies in hashed windows of `weights.bin`, sampled the same way).
    Sampled(u64),
}

/// A sampled rebuild hashes one frame in this many.
pub const SAMPLE_EVERY: usize = 8;

/// Rebuilds every derived weight of `plan` from `file` (the whole `weights.bin`, size-checked).
pub fn rebuild(plan: &Plan, file: &[u8], check: FrameCheck) -> Result<DerivedBytes, RuntimeError> {
    let weights = plan
        .derived
        .iter()
        .map(|d| Ok((d.target, rebuild_one(plan, d, file, check)?)))
        .collect::<Result<_, RuntimeError>>()?;
    Ok(DerivedBytes { weights })
}

fn rebuild_one(plan: &Plan, d: &DerivedWeight, file: &[u8], check: FrameCheck) -> Result<Vec<u8>, RuntimeError> {
    let (target, base) = (&plan.weights[d.target.0 as usize], &plan.weights[d.base.0 as usize]);
    let damaged = |why: String| RuntimeError::CorruptWeights {
        path: "weights.bin".into(),
        what: format!("the derived weight {} cannot be rebuilt: {why}", target.name),
    };
    let base_bytes = &file[base.offset as usize..(base.offset + base.bytes) as usize];
    let threads = rayon::current_num_threads();
    let mut out =
        apply_recipe(d.recipe, base, base_bytes, target, threads).map_err(|e| RuntimeError::BadPlan(e.to_string()))?;
    // The frames' places in the file, then each frame decompressed into its range of `out`
    // (XOR) and hashed, in parallel.
    let mut at = d.correction_offset as usize;
    let frames: Vec<&[u8]> = d
        .frames
        .iter()
        .map(|&n| {
            let f = &file[at..at + n as usize];
            at += n as usize;
            f
        })
        .collect();
    let ranges: Vec<_> = frame_ranges(out.len()).collect();
    let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(ranges.len());
    let mut rest = out.as_mut_slice();
    for r in &ranges {
        let (piece, tail) = rest.split_at_mut(r.len());
        pieces.push(piece);
        rest = tail;
    }
    let hashed = |i: usize| match check {
        FrameCheck::All => true,
        FrameCheck::Sampled(seed) => (i as u64).wrapping_add(seed) % SAMPLE_EVERY as u64 == 0,
    };
    // Each rayon job decompresses its frames into one scratch buffer (not a fresh 4 MiB per frame:
    // on 2 cores the page faults of 94 MB of new buffers were a few percent of the rebuild).
    let scratch = || vec![0u8; CORRECTION_FRAME];
    pieces.into_par_iter().zip(frames).enumerate().try_for_each_init(scratch, |buf, (i, (piece, frame))| {
        // At most the frame's own length: a frame claiming more is damage, not an allocation.
        let n = zstd::bulk::decompress_to_buffer(frame, &mut buf[..piece.len()])
            .map_err(|e| damaged(format!("frame {i}: {e}")))?;
        if n != piece.len() {
            return Err(damaged(format!("frame {i} holds {n} bytes, expected {}", piece.len())));
        }
        piece.iter_mut().zip(&buf[..n]).for_each(|(b, x)| *b ^= x);
        if hashed(i) && frame_sha256(piece) != d.frame_sha256[i] {
            return Err(damaged(format!("frame {i} differs from the compiler's (SHA-256)")));
        }
        Ok(())
    })?;
    Ok(out)
}

/// The derived weights of an open model, rebuilt on a thread that [`CompiledModel::open`] starts
/// (at a normal load), so that the rebuild (135 ms on the H200 host, 0.2-0.5 s on two cores)
/// runs beside what the caller does next -- on the GPU, creating the CUDA context and loading the
/// kernels (~0.4 s) -- instead of before it. The first reader waits for it; a rebuild that failed
/// fails every reader with the same error.
///
/// [`CompiledModel::open`]: crate::compiled::CompiledModel::open
pub struct DerivedSlot {
    pending: std::sync::Mutex<Option<std::thread::JoinHandle<Result<DerivedBytes, RuntimeError>>>>,
    done: std::sync::OnceLock<Result<std::sync::Arc<DerivedBytes>, RuntimeError>>,
}

impl DerivedSlot {
    /// Already rebuilt (or nothing to rebuild).
    pub fn ready(bytes: DerivedBytes) -> DerivedSlot {
        DerivedSlot {
            pending: std::sync::Mutex::new(None),
            done: std::sync::OnceLock::from(Ok(std::sync::Arc::new(bytes))),
        }
    }

    /// Runs `rebuild` on a new thread; the OS's error when it cannot start one.
    pub fn spawn<F>(rebuild: F) -> Result<DerivedSlot, std::io::Error>
    where
        F: FnOnce() -> Result<DerivedBytes, RuntimeError> + Send + 'static,
    {
        let handle = std::thread::Builder::new().name("derived-rebuild".into()).spawn(rebuild)?;
        Ok(DerivedSlot { pending: std::sync::Mutex::new(Some(handle)), done: std::sync::OnceLock::new() })
    }

    /// The rebuilt weights, waiting for the rebuild if it is still running.
    pub fn get(&self) -> Result<&std::sync::Arc<DerivedBytes>, RuntimeError> {
        let done = self.done.get_or_init(|| {
            // Only this closure takes the handle, and it runs once (OnceLock); a poisoned lock
            // still holds the handle.
            let handle = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
            match handle.map(std::thread::JoinHandle::join) {
                Some(Ok(result)) => result.map(std::sync::Arc::new),
                Some(Err(payload)) => Err(RuntimeError::BadPlan(format!(
                    "rebuilding the derived weights panicked: {}",
                    panic_message(payload.as_ref())
                ))),
                None => Err(RuntimeError::BadPlan("the derived weights' rebuild was never started".into())),
            }
        });
        done.as_ref().map_err(same_error)
    }
}

/// The text a panic was raised with (`panic!` with a literal or a format), if any.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A second copy of a rebuild's error for every later reader (`RuntimeError` holds an
/// `io::Error` in one variant, so it is not `Clone`; a rebuild fails only with these two).
fn same_error(e: &RuntimeError) -> RuntimeError {
    match e {
        RuntimeError::CorruptWeights { path, what } => {
            RuntimeError::CorruptWeights { path: path.clone(), what: what.clone() }
        }
        RuntimeError::BadPlan(why) => RuntimeError::BadPlan(why.clone()),
        other => RuntimeError::BadPlan(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_weight(bytes: &[u8]) -> DerivedBytes {
        DerivedBytes { weights: vec![(WeightId(3), bytes.to_vec())] }
    }

    /// A rebuild on its thread: every reader gets its bytes; a failed one fails every reader with
    /// its message; a panicking one is an error, not a panic in the reader.
    #[test]
    fn a_spawned_rebuild_is_waited_for_and_its_error_kept() {
        let ok = DerivedSlot::spawn(|| Ok(one_weight(&[1, 2, 3]))).unwrap();
        assert_eq!(ok.get().unwrap().get(WeightId(3)), Some(&[1u8, 2, 3][..]));
        assert_eq!(ok.get().unwrap().get(WeightId(4)), None);

        let what = "frame 2 differs from the compiler's (SHA-256)";
        let bad =
            DerivedSlot::spawn(move || Err(RuntimeError::CorruptWeights { path: "w.bin".into(), what: what.into() }))
                .unwrap();
        for _ in 0..2 {
            match bad.get() {
                Err(RuntimeError::CorruptWeights { path, what: w }) => {
                    assert_eq!((path.as_str(), w.as_str()), ("w.bin", what))
                }
                other => panic!("not the rebuild's error: {:?}", other.map(|_| ())),
            }
        }

        let panicked = DerivedSlot::spawn(|| panic!("a bug in a recipe")).unwrap();
        let err = panicked.get().err().expect("a panicking rebuild is an error");
        assert!(err.to_string().contains("panicked: a bug in a recipe"), "{err}");

        let ready = DerivedSlot::ready(one_weight(&[9]));
        assert_eq!(ready.get().unwrap().get(WeightId(3)), Some(&[9u8][..]));
    }
}
