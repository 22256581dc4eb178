//! Loading a compiled directory: `plan.json` (parsed, its seal checked, validated once),
//! `weights.bin` (memory-mapped; its size checked, and a sample of its windows or all of it
//! hashed: [`crate::integrity`]), the derived weights rebuilt from it ([`crate::derived`]) and
//! `tokenizer.json` (if present).
//! After [`CompiledModel::open`] succeeds, the plan has passed the plan crate's one structural
//! validator ([`validate`]): every buffer and weight reference is in bounds and no step's
//! outputs overlap its inputs, so executors can index without further checks (a backend checks
//! only what its kernels support on top: `cuda::validate`).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::derived::{self, DerivedBytes, DerivedRows, DerivedSlot};
use crate::error::RuntimeError;
use crate::integrity::{self, Damage};
use crate::phases;
use crate::plan::{Plan, WeightId, PLAN_FILE, PLAN_FORMAT_VERSION, TOKENIZER_FILE, WEIGHTS_FILE};
/// The plan's one structural validator (`qwen_aot_plan::validate`), which [`parse_plan`] runs.
pub use qwen_aot_plan::validate::{step_buffers, validate, MAX_WEIGHT_PARTS};

pub struct CompiledModel {
    pub dir: PathBuf,
    pub plan: Plan,
    /// Shared so that an executor reading weights in place (the CPU's) keeps the map alive
    /// without copying `weights.bin`.
    weights: Arc<Mmap>,
    /// The derived weights (plan format 7) whole, rebuilt at open (`Integrity::Full`) or when a
    /// backend first wants them ([`DerivedSlot`]); empty for most models.
    derived: Arc<DerivedSlot>,
    /// The same weights rebuilt frame by frame as their rows are read ([`DerivedRows`]: the CPU
    /// executor's embedding lookups).
    rows: Arc<DerivedRows>,
}

/// How much of `weights.bin` [`CompiledModel::open`] hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// [`integrity::SAMPLED_WINDOWS`] windows of 64 KiB, picked at random per process (every
    /// window of a small model): the default at every load.
    Sampled,
    /// Every byte (about half a second per GB on two cores): `qwen-aot verify`, `check`.
    Full,
}

/// The most `plan.json` may hold: the default model's is 0.37 MB, and it grows with the layer count
/// only; a bigger file is not a plan (and would otherwise be read whole before that was known).
const PLAN_JSON_MAX_BYTES: u64 = 64 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io { path: path.display().to_string(), source }
}

impl CompiledModel {
    /// Opens and validates `dir`, hashing `weights.bin` as `check` says.
    pub fn open(dir: &Path, check: Integrity) -> Result<CompiledModel, RuntimeError> {
        let (plan, weights) = Self::open_unchecked(dir)?;
        let _span = phases::span(match check {
            Integrity::Sampled => "weights.bin: hash 16 sampled windows",
            Integrity::Full => "weights.bin: hash every byte",
        });
        let wpath = dir.join(WEIGHTS_FILE);
        let windows = integrity::windows(&plan);
        let damaged = match check {
            Integrity::Sampled => {
                integrity::check_sampled(&plan, &weights, &windows, integrity::random_seed()).err().map(|d| vec![d])
            }
            Integrity::Full => {
                let report = integrity::check_full(&plan, &weights, &windows);
                (!report.damaged.is_empty() || !report.sha256_ok).then_some(report.damaged)
            }
        };
        if let Some(damaged) = damaged {
            return Err(corrupt(&wpath, &plan, &damaged));
        }
        drop(_span);
        let weights = Arc::new(weights);
        let frames = match check {
            Integrity::Sampled => derived::FrameCheck::Sampled(integrity::random_seed()),
            Integrity::Full => derived::FrameCheck::All,
        };
        let wname = wpath.display().to_string();
        let rows = DerivedRows::new(&plan, Arc::clone(&weights), frames, wname.clone())?;
        let derived = if plan.derived.is_empty() {
            DerivedSlot::ready(DerivedBytes::default())
        } else {
            // The whole rebuild as a closure that owns what it reads (a thread's, or run here).
            let (plan, file) = (plan.clone(), Arc::clone(&weights));
            let rebuild = move || {
                let _span = phases::span("weights: rebuild the derived weights");
                derived::rebuild(&plan, &file, frames).map_err(|e| match e {
                    RuntimeError::CorruptWeights { what, .. } => RuntimeError::CorruptWeights { path: wname, what },
                    other => other,
                })
            };
            match check {
                // `verify` and `check` report damage at open, as the windows' hashes are.
                Integrity::Full => DerivedSlot::ready(rebuild()?),
                // A normal load: when a backend wants the whole weights (`start_derived_rebuild`,
                // or the first reader); the CPU executor reads rows instead.
                Integrity::Sampled => DerivedSlot::deferred(Box::new(rebuild)),
            }
        };
        Ok(CompiledModel { dir: dir.to_path_buf(), plan, weights, derived: Arc::new(derived), rows: Arc::new(rows) })
    }

    /// The plan (parsed, seal checked, validated) and the mapped `weights.bin` (size checked),
    /// without hashing any weight: [`Self::open`], and `qwen-aot verify`, which reports every
    /// damaged window itself.
    pub fn open_unchecked(dir: &Path) -> Result<(Plan, Mmap), RuntimeError> {
        let plan_path = dir.join(PLAN_FILE);
        let span = phases::span("plan.json: read, parse, check seal, validate");
        let text = crate::bounded_read::read_utf8_bounded(&plan_path, PLAN_JSON_MAX_BYTES, "plan.json")
            .map_err(io(&plan_path))?;
        let plan = parse_plan(&text).map_err(|e| match e {
            RuntimeError::BadPlan(why) => RuntimeError::BadPlan(format!("{}: {why}", plan_path.display())),
            other => other,
        })?;
        drop(span);
        let _span = phases::span("weights.bin: map, check size");
        let wpath = dir.join(WEIGHTS_FILE);
        let file = std::fs::File::open(&wpath).map_err(io(&wpath))?;
        // SAFETY: the file is opened read-only and the project never writes a compiled directory
        // in place (the compiler writes a temporary directory and renames it), so the mapping is
        // not mutated underneath us by our own tools.
        let weights = unsafe { Mmap::map(&file) }.map_err(io(&wpath))?;
        if weights.len() as u64 != plan.weights_bytes {
            return Err(RuntimeError::BadPlan(format!(
                "{} is {} bytes but the plan expects {} (truncated or from another compile)",
                wpath.display(),
                weights.len(),
                plan.weights_bytes
            )));
        }
        Ok((plan, weights))
    }

    /// The packed bytes of `weights.bin` (the stored weights and the derived weights'
    /// corrections; [`Self::weights_len`] covers the derived weights too).
    pub fn weight_bytes(&self) -> &[u8] {
        &self.weights
    }

    /// Bytes of the weight space an executor holds: `weights.bin` and the derived weights past
    /// its end (every weight's offset + bytes lies within).
    pub fn weights_len(&self) -> u64 {
        self.plan.weights_len()
    }

    /// `weights.bin` handed to `f` in order, `chunk` bytes at a time (offset, bytes), then each
    /// derived weight at its offset past the file; once `f` returns, a chunk of the file leaves
    /// this process's resident set (MADV_DONTNEED on the read-only file mapping: its pages stay
    /// in the page cache and fault back in, unchanged, if read again). An upload this way keeps
    /// about one chunk of the file resident on the host instead of all of it. `f` must be done
    /// reading the chunk when it returns.
    pub fn stream_weights(
        &self,
        chunk: usize,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), RuntimeError>,
    ) -> Result<(), RuntimeError> {
        let chunk = chunk.max(1);
        for (i, bytes) in self.weights.chunks(chunk).enumerate() {
            let offset = i * chunk;
            f(offset as u64, bytes)?;
            #[cfg(unix)]
            // SAFETY: the map is a read-only mapping of a file this process never writes, so
            // dropping its pages loses nothing: a later read faults the same bytes back in from
            // the file (DONTNEED only discards data in private pages that were written). The
            // range is inside the map (memmap2 aligns its start down to a page).
            unsafe {
                // Best effort: a refused advice only keeps the pages resident.
                let _ = self.weights.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len());
            }
        }
        // The file first: the derived weights' rebuild may still be running beside it.
        for (id, bytes) in self.derived.get()?.iter() {
            let base = self.plan.weights[id.0 as usize].offset;
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                f(base + (i * chunk) as u64, piece)?;
            }
        }
        Ok(())
    }

    /// Starts rebuilding the derived weights whole on a thread, if they are not yet (a backend
    /// that uploads them calls this first, so that the rebuild runs beside its own start-up).
    pub fn start_derived_rebuild(&self) {
        self.derived.start();
    }

    /// The memory map of `weights.bin` and the derived weights' rows, shared (for executors that
    /// read weights in place); rebuilds nothing.
    pub fn weight_store(&self) -> WeightStore {
        WeightStore { map: Arc::clone(&self.weights), rows: Arc::clone(&self.rows) }
    }

    /// Bytes of one weight (in bounds: checked at open); waits for the derived weights' rebuild
    /// (runs it if nothing started it), and fails as it did.
    pub fn weight(&self, id: WeightId) -> Result<&[u8], RuntimeError> {
        if let Some(bytes) = self.derived.get()?.get(id) {
            return Ok(bytes);
        }
        Ok(stored(&self.plan, &self.weights, id))
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}

/// Where an executor reads weights in place: the map of `weights.bin`, and the derived weights'
/// rows rebuilt as they are read.
#[derive(Clone)]
pub struct WeightStore {
    map: Arc<Mmap>,
    rows: Arc<DerivedRows>,
}

impl WeightStore {
    /// Bytes of stored weight `id` of `plan` (the plan this store was opened with). A derived
    /// weight has none here (empty): the validator lets only embedding lookups read one, and
    /// they go through [`Self::derived`].
    pub fn weight<'a>(&'a self, plan: &Plan, id: WeightId) -> &'a [u8] {
        if self.rows.is_derived(id) {
            return &[];
        }
        stored(plan, &self.map, id)
    }

    /// The derived weights, by rows.
    pub fn derived(&self) -> &DerivedRows {
        &self.rows
    }

    /// Maps every page of `weights.bin` into this process, on a thread of its own, in file order
    /// (the layers' order), and returns at once. Without it the first read of each page faults on
    /// the first token's path: on 2 cores about a third of a short prompt's prefill, and the
    /// LM head's 145 MB fault in during the first prefill. The pages come from the page cache (or
    /// the disk, read ahead), and a CPU load spends the time waiting for the tokenizer anyway.
    /// Best effort: a failure only leaves the faults to the reads.
    pub fn prefault_in_background(&self) {
        let map = Arc::clone(&self.map);
        let _ = std::thread::Builder::new().name("weights-prefault".into()).spawn(move || prefault(&map));
    }
}

/// Faults in every page of `map`, 8 MiB at a time (`MADV_POPULATE_READ`, Linux 5.14+; elsewhere a
/// read of one byte per page).
pub fn prefault(map: &Mmap) {
    const CHUNK: usize = 8 << 20;
    for start in (0..map.len()).step_by(CHUNK) {
        let len = CHUNK.min(map.len() - start);
        #[cfg(target_os = "linux")]
        if map.advise_range(memmap2::Advice::PopulateRead, start, len).is_ok() {
            continue;
        }
        let touched = map[start..start + len].iter().step_by(4096).fold(0u8, |acc, &b| acc ^ b);
        std::hint::black_box(touched);
    }
}

fn stored<'a>(plan: &Plan, map: &'a Mmap, id: WeightId) -> &'a [u8] {
    let w = &plan.weights[id.0 as usize];
    &map[w.offset as usize..(w.offset + w.bytes) as usize]
}

/// `plan.json`'s text to a validated plan. One typed parse in the normal case; the version is
/// looked at first only when that fails, so that an old plan gets the "recompile" message.
pub fn parse_plan(text: &str) -> Result<Plan, RuntimeError> {
    let plan: Plan = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let version = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("format_version").and_then(|x| x.as_u64()));
            return Err(match version {
                Some(v) if v != u64::from(PLAN_FORMAT_VERSION) => {
                    RuntimeError::PlanVersion { found: v.try_into().unwrap_or(u32::MAX), expected: PLAN_FORMAT_VERSION }
                }
                _ => bad(e.to_string()),
            });
        }
    };
    if plan.format_version != PLAN_FORMAT_VERSION {
        return Err(RuntimeError::PlanVersion { found: plan.format_version, expected: PLAN_FORMAT_VERSION });
    }
    if !integrity::seal_matches(text) {
        return Err(bad("the plan does not match its own checksum (plan_sha256): it was edited or damaged".into()));
    }
    validate(&plan)?;
    Ok(plan)
}

/// The error for damaged windows of `weights.bin` (none listed: only the two-level hash differs,
/// i.e. the plan's own table was altered).
fn corrupt(path: &Path, plan: &Plan, damaged: &[Damage]) -> RuntimeError {
    const SHOWN: usize = 3;
    let mut what: Vec<String> = damaged.iter().take(SHOWN).map(|d| d.describe(plan)).collect();
    if damaged.len() > SHOWN {
        what.push(format!("and {} more windows", damaged.len() - SHOWN));
    }
    if what.is_empty() {
        what.push("its SHA-256 differs from the plan's while every window matches".into());
    }
    RuntimeError::CorruptWeights {
        path: path.display().to_string(),
        what: format!("{} differ from what the compiler wrote", what.join(", ")),
    }
}

fn bad(msg: String) -> RuntimeError {
    RuntimeError::BadPlan(msg)
}
