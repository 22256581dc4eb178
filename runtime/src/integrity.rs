//! Integrity of a compiled directory: cheap at every load, complete on demand.
//!
//! Hashing all of `weights.bin` at every start costs about a second per GB, on the path to the
//! first token. Instead the compiler hashes the file in *windows*: every weight part is cut into
//! [`WINDOW_BYTES`] windows from its own start (parts tile the file, so the windows cover every
//! byte; a window never spans two parts, so each part's windows are hashed by whichever thread
//! packed it, in parallel). The plan records
//! - `weights_windows`: each window's SHA-256 truncated to 8 bytes, hex, in file order;
//! - `weights_sha256`: the SHA-256 of all the windows' full 32-byte digests in order, a two-level
//!   hash of every byte, as strong as a plain SHA-256 of the file;
//! - `plan_sha256`: the SHA-256 of `plan.json` itself with this field's value zeroed
//!   ([`seal_plan`]), so an edited or damaged plan that still parses is refused too.
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
use std::ops::Range;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::rng::splitmix64;

/// Bytes per hashed window (the last window of a part is shorter).
pub const WINDOW_BYTES: u64 = 64 << 10;

/// Windows hashed at every load: the first, the last, and one per remaining stratum.
pub const SAMPLED_WINDOWS: usize = 16;

/// Bytes of each window's SHA-256 kept in the plan (collisions of 8 random bytes are 2^-64 per
/// window: far below the odds of the damage itself).
const SHORT_BYTES: usize = 8;
const SHORT_HEX: usize = 2 * SHORT_BYTES;

/// One window of `weights.bin`: its byte range and the weight it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub range: Range<u64>,
    /// Index into [`Plan::weights`].
    pub weight: usize,
}

/// The windows of a part of `bytes` bytes at `offset`, in order.
pub fn part_windows(offset: u64, bytes: u64) -> impl Iterator<Item = Range<u64>> {
    (0..bytes.div_ceil(WINDOW_BYTES)).map(move |i| {
        let start = offset + i * WINDOW_BYTES;
        start..(start + WINDOW_BYTES).min(offset + bytes)
    })
}

/// Every window of the plan's weights, in file order.
pub fn windows(plan: &Plan) -> Vec<Window> {
    let mut out = Vec::new();
    for (weight, w) in plan.weights.iter().enumerate() {
        for p in &w.parts {
            out.extend(part_windows(p.offset, p.bytes).map(|range| Window { range, weight }));
        }
    }
    out
}

/// How many windows [`windows`] gives (without listing them).
pub fn window_count(plan: &Plan) -> usize {
    plan.weights.iter().flat_map(|w| &w.parts).map(|p| p.bytes.div_ceil(WINDOW_BYTES) as usize).sum()
}

/// The full SHA-256 of one window's bytes.
pub fn window_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The digests of one part's bytes, window by window (what the compiler records per part).
pub fn part_digests(part: &[u8]) -> Vec<[u8; 32]> {
    part.chunks(WINDOW_BYTES as usize).map(window_digest).collect()
}

/// What the plan records for the windows' `digests` (in file order): `(weights_sha256,
/// weights_windows)`.
pub fn summarize(digests: &[[u8; 32]]) -> (String, String) {
    let mut tree = Sha256::new();
    let mut short = String::with_capacity(digests.len() * SHORT_HEX);
    for d in digests {
        tree.update(d);
        short.push_str(&hex(&d[..SHORT_BYTES]));
    }
    (hex(&tree.finalize()), short)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

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

/// Whether the plan's window table fits its weights: one 16-hex-digit entry per window. Checked
/// once at load, so the checks below can slice it.
pub fn table_fits(plan: &Plan, n_windows: usize) -> bool {
    plan.weights_windows.len() == n_windows * SHORT_HEX && plan.weights_windows.bytes().all(|b| b.is_ascii_hexdigit())
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

/// Key of the plan's own checksum in `plan.json`.
const SEAL_KEY: &str = "\"plan_sha256\"";
const ZERO_SEAL: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `plan` as the text of `plan.json`, sealed: `plan_sha256` holds the SHA-256 of the text with
/// that value zeroed. (Sets `plan.plan_sha256`.)
pub fn seal_plan(plan: &mut Plan) -> Result<String, serde_json::Error> {
    plan.plan_sha256 = ZERO_SEAL.to_string();
    let text = serde_json::to_string_pretty(plan)?;
    let seal = hex(&Sha256::digest(text.as_bytes()));
    let at =
        seal_value(&text).ok_or_else(|| serde::ser::Error::custom("the plan's seal field was not serialised"))?.start;
    plan.plan_sha256 = seal.clone();
    Ok(format!("{}{seal}{}", &text[..at], &text[at + ZERO_SEAL.len()..]))
}

/// The byte range of the seal's 64 hex digits in `text`. JSON escapes every `"` inside a string,
/// so the key with its quotes can only be the top-level key.
fn seal_value(text: &str) -> Option<Range<usize>> {
    let after_key = text.rfind(SEAL_KEY)? + SEAL_KEY.len();
    let rest = text[after_key..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let start = text.len() - rest.len();
    let value = rest.get(..ZERO_SEAL.len())?;
    (value.bytes().all(|b| b.is_ascii_hexdigit()) && rest[ZERO_SEAL.len()..].starts_with('"'))
        .then_some(start..start + ZERO_SEAL.len())
}

/// Whether `text` (a whole `plan.json`) carries a seal that matches it.
pub fn seal_matches(text: &str) -> bool {
    let Some(r) = seal_value(text) else { return false };
    let mut h = Sha256::new();
    h.update(&text.as_bytes()[..r.start]);
    h.update(ZERO_SEAL.as_bytes());
    h.update(&text.as_bytes()[r.end..]);
    hex(&h.finalize()) == text[r]
}

#[cfg(test)]
mod tests;
