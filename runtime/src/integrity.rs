//! Checking a compiled directory's `weights.bin` against what its plan records (the windows,
//! their hashes and the plan seal are defined by the plan: `qwen_aot_plan::integrity`, re-exported
//! here): cheap at every load, complete on demand.
//!
//! At load ([`check_sampled`]) the runtime checks the file size against the plan, the plan's seal,
//! and [`SAMPLED_WINDOWS`] windows: the first and the last (where a torn copy or a file of the
//! wrong size shows) and one chosen at random, per process, in each of the remaining equal
//! strata of the file, so that repeated starts cover all of it. That is 1 MiB of hashing (under
//! a millisecond with SHA extensions) instead of the whole file. The trade-off: a damage
//! confined to a few bytes outside the sampled windows loads, and is found only by a later start
//! that samples its window or by the full check ([`check_full`]: `qwen-aot verify`, and the
//! compiler, which hashes what it writes). Damage that spans the file (a file from another
//! compile, zeroed or shifted data) is caught at every load. A model of at most
//! [`SAMPLED_WINDOWS`] windows is checked in full at every load.
use std::hash::{BuildHasher, Hasher};

pub use qwen_aot_plan::integrity::*;
use rayon::prelude::*;

use crate::plan::Plan;
use crate::rng::splitmix64;

/// Windows hashed at every load: the first, the last, and one per remaining stratum.
pub const SAMPLED_WINDOWS: usize = 16;

/// A window whose bytes do not match the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub index: usize,
    pub window: Window,
}

impl Damage {
    /// "bytes A..B (window I, in weight NAME)".
    pub fn describe(&self, plan: &Plan) -> String {
        let name = plan.weights.get(self.window.weight).map_or("?", |w| w.name.as_str());
        format!(
            "bytes {}..{} (window {}, in weight {name})",
            self.window.range.start, self.window.range.end, self.index
        )
    }
}

fn matches(plan: &Plan, weights: &[u8], index: usize, w: &Window) -> bool {
    let bytes = weights.get(w.range.start as usize..w.range.end as usize);
    let want = plan.weights_windows.get(index * SHORT_HEX..(index + 1) * SHORT_HEX);
    match (bytes, want) {
        (Some(b), Some(want)) => hex(&window_digest(b)[..SHORT_BYTES]) == want,
        _ => false,
    }
}

/// The windows a load checks, for `seed`: all of them when there are at most
/// [`SAMPLED_WINDOWS`]; else the first, the last, and one per stratum between them.
pub fn sample(n: usize, seed: u64) -> Vec<usize> {
    if n <= SAMPLED_WINDOWS {
        return (0..n).collect();
    }
    let strata = SAMPLED_WINDOWS - 2;
    let inner = n - 2;
    let mut rng = seed;
    let mut out = vec![0];
    for s in 0..strata {
        let (lo, hi) = (1 + s * inner / strata, 1 + (s + 1) * inner / strata);
        out.push(lo + (splitmix64(&mut rng) % (hi - lo) as u64) as usize);
    }
    out.push(n - 1);
    out
}

/// A fresh random seed per process (std's hasher keys are random), so that starts sample
/// different windows.
pub fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Checks the windows [`sample`] picks for `seed`; the first damaged one is the error.
/// `windows` is [`windows`]`(plan)` and has passed [`table_fits`].
pub fn check_sampled(plan: &Plan, weights: &[u8], windows: &[Window], seed: u64) -> Result<(), Damage> {
    for index in sample(windows.len(), seed) {
        let w = &windows[index];
        if !matches(plan, weights, index, w) {
            return Err(Damage { index, window: w.clone() });
        }
    }
    Ok(())
}

/// The full check: every window hashed (in parallel), compared with the plan's table and its
/// two-level SHA-256.
pub struct FullReport {
    /// Windows whose short hash differs, in file order.
    pub damaged: Vec<Damage>,
    /// Whether the two-level SHA-256 of every byte equals the plan's `weights_sha256`.
    pub sha256_ok: bool,
    pub sha256: String,
}

pub fn check_full(plan: &Plan, weights: &[u8], windows: &[Window]) -> FullReport {
    let digests: Vec<[u8; 32]> = windows
        .par_iter()
        .map(|w| weights.get(w.range.start as usize..w.range.end as usize).map_or([0; 32], window_digest))
        .collect();
    let (sha256, short) = summarize(&digests);
    let damaged = windows
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            short.get(i * SHORT_HEX..(i + 1) * SHORT_HEX)
                != plan.weights_windows.get(i * SHORT_HEX..(i + 1) * SHORT_HEX)
        })
        .map(|(index, w)| Damage { index, window: w.clone() })
        .collect();
    FullReport { damaged, sha256_ok: sha256 == plan.weights_sha256, sha256 }
}

#[cfg(test)]
mod tests;
