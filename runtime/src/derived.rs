//! Rebuilding a plan's derived weights (`qwen_aot_plan::derive`): each frame of a target -- a run
//! of whole rows -- is its recipe applied to the same rows of its stored base, XORed with the
//! frame's correction decompressed from `weights.bin`, and checked against the SHA-256 the
//! compiler recorded for it (a sample of frames at a normal load, every frame for `verify` and
//! `check`). Two ways: [`rebuild`] builds every frame, in parallel, into the targets' whole bytes
//! (what the GPU uploads); [`DerivedRows`] builds a frame the first time a row of it is read (the
//! CPU executor's embedding lookups: the first token waits for the prompt's few frames, not for
//! the whole table). The plan validator has bounded every size beforehand (frames per target,
//! each frame's bytes and compressed size, the regions inside the file), so nothing here
//! allocates from an unchecked claim.
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::error::RuntimeError;
use crate::plan::derive::{recipe_base, recipe_rows, DeriveRecipe, FrameGeometry, FrameHasher};
use crate::plan::{Plan, WeightId, WeightInfo};
use crate::quant::PartView;

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

impl FrameCheck {
    fn hashes(self, frame: usize) -> bool {
        match self {
            FrameCheck::All => true,
            FrameCheck::Sampled(seed) => (frame as u64).wrapping_add(seed) % SAMPLE_EVERY as u64 == 0,
        }
    }
}

/// A sampled rebuild hashes one frame in this many.
pub const SAMPLE_EVERY: usize = 8;

/// What decompressing frames reuses: a buffer, and a zstd context where one could be made.
struct Scratch {
    buf: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { buf: Vec::new(), zstd: zstd::bulk::Decompressor::new().ok() }
    }
}

/// One derived weight as its frames are rebuilt: where its base and its compressed frames lie in
/// `weights.bin`, and the frames' geometry and hashes (from a validated plan).
struct TargetFrames {
    target: WeightId,
    recipe: DeriveRecipe,
    base: WeightInfo,
    info: WeightInfo,
    geometry: FrameGeometry,
    compressed: Vec<Range<usize>>,
    sha256: Vec<String>,
}

impl TargetFrames {
    fn all(plan: &Plan) -> Result<Vec<TargetFrames>, RuntimeError> {
        plan.derived
            .iter()
            .map(|d| {
                let (base, info) = (&plan.weights[d.base.0 as usize], &plan.weights[d.target.0 as usize]);
                let (rows, k) = (info.shape[0], info.shape[1]);
                let geometry = FrameGeometry::new(d.recipe.formats().1, rows, k, d.frame_rows as usize)
                    .ok_or_else(|| RuntimeError::BadPlan(format!("{}: no frame geometry", info.name)))?;
                let mut at = d.correction_offset as usize;
                let compressed = d
                    .frames
                    .iter()
                    .map(|&n| {
                        at += n as usize;
                        at - n as usize..at
                    })
                    .collect();
                Ok(TargetFrames {
                    target: d.target,
                    recipe: d.recipe,
                    base: base.clone(),
                    info: info.clone(),
                    geometry,
                    compressed,
                    sha256: d.frame_sha256.clone(),
                })
            })
            .collect()
    }

    fn damaged(&self, why: String) -> RuntimeError {
        RuntimeError::CorruptWeights {
            path: "weights.bin".into(),
            what: format!("the derived weight {} cannot be rebuilt: {why}", self.info.name),
        }
    }

    /// The base, viewed in `file` (the whole `weights.bin`, size-checked at open).
    fn base_view<'a>(&self, file: &'a [u8]) -> Result<PartView<'a>, RuntimeError> {
        let bytes = &file[self.base.offset as usize..(self.base.offset + self.base.bytes) as usize];
        recipe_base(self.recipe, &self.base, bytes, &self.info).map_err(|e| RuntimeError::BadPlan(e.to_string()))
    }

    /// Rebuilds frame `i` into its plane slices (`planes`, as [`FrameGeometry`] cuts them), with
    /// `scratch` for the decompression; hashes it when `hash`.
    fn fill(
        &self,
        file: &[u8],
        base: &PartView,
        i: usize,
        mut planes: [&mut [u8]; 4],
        scratch: &mut Scratch,
        hash: bool,
    ) -> Result<(), RuntimeError> {
        let len = self.geometry.frame_bytes(i);
        scratch.buf.resize(len, 0);
        let frame = &file[self.compressed[i].clone()];
        // At most the frame's own length: a frame claiming more is damage, not an allocation.
        let n = match scratch.zstd.as_mut() {
            Some(z) => z.decompress_to_buffer(frame, &mut scratch.buf[..]),
            None => zstd::bulk::decompress_to_buffer(frame, &mut scratch.buf[..]),
        }
        .map_err(|e| self.damaged(format!("frame {i}: {e}")))?;
        if n != len {
            return Err(self.damaged(format!("frame {i} holds {n} bytes, expected {len}")));
        }
        recipe_rows(self.recipe, base, self.geometry.frame_rows_of(i), &mut planes);
        let mut correction = &scratch.buf[..];
        let mut hasher = hash.then(FrameHasher::default);
        for plane in planes {
            let (xor, rest) = correction.split_at(plane.len());
            plane.iter_mut().zip(xor).for_each(|(b, x)| *b ^= x);
            if let Some(h) = hasher.as_mut() {
                h.update(plane);
            }
            correction = rest;
        }
        match hasher.map(FrameHasher::hex) {
            Some(got) if got != self.sha256[i] => {
                Err(self.damaged(format!("frame {i} differs from the compiler's (SHA-256)")))
            }
            _ => Ok(()),
        }
    }
}

/// Rebuilds every derived weight of `plan` from `file` (the whole `weights.bin`, size-checked),
/// every frame in parallel.
pub fn rebuild(plan: &Plan, file: &[u8], check: FrameCheck) -> Result<DerivedBytes, RuntimeError> {
    let weights = TargetFrames::all(plan)?
        .iter()
        .map(|t| {
            let base = t.base_view(file)?;
            let mut out = vec![0u8; t.info.bytes as usize];
            // Each rayon job keeps one buffer and one zstd context for the frames it decompresses
            // (717 frames for the default model: a context per frame cost ≈ 3 % of the rebuild).
            t.geometry
                .split_target(&mut out)
                .into_par_iter()
                .enumerate()
                .try_for_each_init(Scratch::new, |buf, (i, planes)| {
                    t.fill(file, &base, i, planes, buf, check.hashes(i))
                })?;
            Ok((t.target, out))
        })
        .collect::<Result<_, RuntimeError>>()?;
    Ok(DerivedBytes { weights })
}

/// One frame of [`DerivedRows`]: empty until a read rebuilds it, then its bytes or its error.
type FrameSlot = OnceLock<Result<Box<[u8]>, RuntimeError>>;

/// The derived weights of an open model rebuilt frame by frame, the first time one of a frame's
/// rows is read ([`Self::dequant_rows`]); a frame that failed fails every later read of it with
/// the same error.
pub struct DerivedRows {
    file: Arc<Mmap>,
    check: FrameCheck,
    path: String,
    targets: Vec<(TargetFrames, Vec<FrameSlot>)>,
}

impl DerivedRows {
    /// Nothing is rebuilt yet; `path` names `weights.bin` in errors.
    pub fn new(plan: &Plan, file: Arc<Mmap>, check: FrameCheck, path: String) -> Result<DerivedRows, RuntimeError> {
        let targets = TargetFrames::all(plan)?
            .into_iter()
            .map(|t| {
                let frames = (0..t.geometry.frames()).map(|_| OnceLock::new()).collect();
                (t, frames)
            })
            .collect();
        Ok(DerivedRows { file, check, path, targets })
    }

    /// Whether weight `id` is derived (and so read through [`Self::dequant_rows`]).
    pub fn is_derived(&self, id: WeightId) -> bool {
        self.targets.iter().any(|(t, _)| t.target == id)
    }

    /// Rows `rows` of derived weight `id` dequantised into `out` (`rows.len()` rows of its `k`),
    /// rebuilding the frames they lie in that no earlier read built (in parallel).
    pub fn dequant_rows(&self, id: WeightId, rows: &[usize], out: &mut [f32]) -> Result<(), RuntimeError> {
        let Some((t, frames)) = self.targets.iter().find(|(t, _)| t.target == id) else {
            return Err(RuntimeError::BadPlan(format!("weight {} is not derived", id.0)));
        };
        let (rows_total, k) = (t.geometry.rows, t.info.shape[1]);
        if let Some(&bad) = rows.iter().find(|&&r| r >= rows_total) {
            return Err(RuntimeError::InvalidCall(format!("row {bad} of a {rows_total}-row weight")));
        }
        // Frames no read has built, in parallel when there are several (a prompt's); a decode
        // step's one row, its frame built, allocates nothing here.
        let unbuilt = |&r: &usize| frames[t.geometry.frame_of(r)].get().is_none();
        if rows.iter().filter(|r| unbuilt(r)).nth(1).is_some() {
            let mut missing: Vec<usize> = rows.iter().filter(|r| unbuilt(r)).map(|&r| t.geometry.frame_of(r)).collect();
            missing.sort_unstable();
            missing.dedup();
            missing.par_iter().for_each(|&f| {
                self.frame(t, frames, f).ok();
            });
        }
        let format = t.recipe.formats().1;
        for (&r, row_out) in rows.iter().zip(out.chunks_exact_mut(k)) {
            let f = t.geometry.frame_of(r);
            let view = t.geometry.frame_view(f, format, k, self.frame(t, frames, f)?);
            crate::cpu::qdot::dequant_row(&view, r - t.geometry.frame_rows_of(f).start, row_out);
        }
        Ok(())
    }

    /// Rebuilds every frame no read has built yet (in parallel); the first failure, if any.
    pub fn build_all(&self) -> Result<(), RuntimeError> {
        let all: Vec<(&TargetFrames, &[FrameSlot], usize)> =
            self.targets.iter().flat_map(|(t, frames)| (0..frames.len()).map(move |f| (t, &frames[..], f))).collect();
        let built: Vec<Result<(), RuntimeError>> =
            all.par_iter().map(|&(t, frames, f)| self.frame(t, frames, f).map(drop)).collect();
        built.into_iter().collect()
    }

    /// How many frames of derived weight `id` have been rebuilt (or failed) so far.
    pub fn frames_built(&self, id: WeightId) -> usize {
        self.targets.iter().filter(|(t, _)| t.target == id).flat_map(|(_, f)| f).filter(|f| f.get().is_some()).count()
    }

    /// Frame `f`'s bytes, rebuilt on first use.
    fn frame<'a>(&self, t: &TargetFrames, frames: &'a [FrameSlot], f: usize) -> Result<&'a [u8], RuntimeError> {
        let built = frames[f].get_or_init(|| {
            let mut bytes = vec![0u8; t.geometry.frame_bytes(f)];
            let base = t.base_view(&self.file)?;
            let planes = t.geometry.split_frame(f, &mut bytes);
            t.fill(&self.file, &base, f, planes, &mut Scratch::new(), self.check.hashes(f)).map_err(|e| match e {
                RuntimeError::CorruptWeights { what, .. } => {
                    RuntimeError::CorruptWeights { path: self.path.clone(), what }
                }
                other => other,
            })?;
            Ok(bytes.into_boxed_slice())
        });
        built.as_ref().map(|b| &b[..]).map_err(same_error)
    }
}

/// A rebuild of every derived weight ([`rebuild`]), waiting to run.
pub type Rebuild = Box<dyn FnOnce() -> Result<DerivedBytes, RuntimeError> + Send + 'static>;

enum SlotState {
    /// Not started: the first [`DerivedSlot::get`] runs it in place unless
    /// [`DerivedSlot::start`] put it on a thread first.
    Deferred(Rebuild),
    Running(std::thread::JoinHandle<Result<DerivedBytes, RuntimeError>>),
    Taken,
}

/// The derived weights of an open model, whole (what the GPU uploads). The rebuild (135 ms on the
/// H200 host, 0.2-0.3 s on two cores) is deferred until a backend wants it: the CUDA executor
/// starts it on a thread ([`Self::start`]) before it creates its context and loads its kernels
/// (~0.4 s), so that the two overlap; the CPU executor never needs it (it reads rows:
/// [`DerivedRows`]). The first reader waits for it; a rebuild that failed fails every reader with
/// the same error.
pub struct DerivedSlot {
    state: Mutex<SlotState>,
    done: OnceLock<Result<Arc<DerivedBytes>, RuntimeError>>,
}

impl DerivedSlot {
    /// Already rebuilt (or nothing to rebuild).
    pub fn ready(bytes: DerivedBytes) -> DerivedSlot {
        DerivedSlot { state: Mutex::new(SlotState::Taken), done: OnceLock::from(Ok(Arc::new(bytes))) }
    }

    /// `rebuild`, to run when first wanted.
    pub fn deferred(rebuild: Rebuild) -> DerivedSlot {
        DerivedSlot { state: Mutex::new(SlotState::Deferred(rebuild)), done: OnceLock::new() }
    }

    /// Puts a deferred rebuild on a new thread (nothing if it already started or ran). When the OS
    /// refuses a thread, the rebuild stays deferred and the first reader runs it.
    pub fn start(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*state, SlotState::Deferred(_)) {
            return;
        }
        let SlotState::Deferred(rebuild) = std::mem::replace(&mut *state, SlotState::Taken) else { unreachable!() };
        // Shared with the thread, so that a thread that never started leaves it here.
        let shared = Arc::new(Mutex::new(Some(rebuild)));
        let theirs = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("derived-rebuild".into()).spawn(move || {
            let rebuild = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            rebuild.map_or_else(|| Ok(DerivedBytes::default()), |f| f())
        });
        *state = match spawned {
            Ok(handle) => SlotState::Running(handle),
            Err(_) => match shared.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(rebuild) => SlotState::Deferred(rebuild),
                None => SlotState::Taken,
            },
        };
    }

    /// The rebuilt weights: waits for a running rebuild, runs a deferred one here.
    pub fn get(&self) -> Result<&Arc<DerivedBytes>, RuntimeError> {
        let done = self.done.get_or_init(|| {
            // Only this closure takes the state, and it runs once (OnceLock); a poisoned lock
            // still holds it.
            let state = std::mem::replace(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()), SlotState::Taken);
            match state {
                // Run here, as the thread would have: a panic is an error, not the caller's panic.
                SlotState::Deferred(rebuild) => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(rebuild)).map_err(panicked)?.map(Arc::new)
                }
                SlotState::Running(handle) => handle.join().map_err(panicked)?.map(Arc::new),
                SlotState::Taken => Err(RuntimeError::BadPlan("the derived weights' rebuild was lost".into())),
            }
        });
        done.as_ref().map_err(same_error)
    }
}

/// A rebuild that panicked (on its thread or in place), as an error.
fn panicked(payload: Box<dyn std::any::Any + Send>) -> RuntimeError {
    RuntimeError::BadPlan(format!("rebuilding the derived weights panicked: {}", panic_message(payload.as_ref())))
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
        let spawn = |f: Rebuild| {
            let slot = DerivedSlot::deferred(f);
            slot.start();
            slot
        };
        let ok = spawn(Box::new(|| Ok(one_weight(&[1, 2, 3]))));
        assert_eq!(ok.get().unwrap().get(WeightId(3)), Some(&[1u8, 2, 3][..]));
        assert_eq!(ok.get().unwrap().get(WeightId(4)), None);

        let what = "frame 2 differs from the compiler's (SHA-256)";
        let bad =
            spawn(Box::new(move || Err(RuntimeError::CorruptWeights { path: "w.bin".into(), what: what.into() })));
        for _ in 0..2 {
            match bad.get() {
                Err(RuntimeError::CorruptWeights { path, what: w }) => {
                    assert_eq!((path.as_str(), w.as_str()), ("w.bin", what))
                }
                other => panic!("not the rebuild's error: {:?}", other.map(|_| ())),
            }
        }

        let panicked = spawn(Box::new(|| panic!("a bug in a recipe")));
        let err = panicked.get().err().expect("a panicking rebuild is an error");
        assert!(err.to_string().contains("panicked: a bug in a recipe"), "{err}");

        let ready = DerivedSlot::ready(one_weight(&[9]));
        assert_eq!(ready.get().unwrap().get(WeightId(3)), Some(&[9u8][..]));

        // Never started: the first reader runs it, once.
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let deferred = DerivedSlot::deferred(Box::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(one_weight(&[4]))
        }));
        for _ in 0..2 {
            assert_eq!(deferred.get().unwrap().get(WeightId(3)), Some(&[4u8][..]));
        }
        deferred.start();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        let panics_here = DerivedSlot::deferred(Box::new(|| panic!("a bug in a recipe")));
        let err = panics_here.get().err().expect("a panicking rebuild run in place is an error");
        assert!(err.to_string().contains("panicked: a bug in a recipe"), "{err}");
    }
}
