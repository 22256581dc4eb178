//! Integrity of a compiled directory, as the plan records it: what the compiler hashes and how a
//! checker compares (the checks themselves, sampled at every load or complete on demand, are the
//! runtime's `integrity` module).
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
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::Plan;

/// Bytes per hashed window (the last window of a part is shorter).
pub const WINDOW_BYTES: u64 = 64 << 10;

/// Bytes of each window's SHA-256 kept in the plan (collisions of 8 random bytes are 2^-64 per
/// window: far below the odds of the damage itself).
pub const SHORT_BYTES: usize = 8;
/// Hex digits of one window's entry in `weights_windows`.
pub const SHORT_HEX: usize = 2 * SHORT_BYTES;

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

/// Every window of `weights.bin`, in file order: the stored weights' parts, then each derived
/// weight's correction region (its windows name the derived weight). A derived weight itself is
/// not in the file: its rebuild is checked against its own SHA-256 ([`crate::derive`]).
pub fn windows(plan: &Plan) -> Vec<Window> {
    stored_ranges(plan)
        .flat_map(|(weight, offset, bytes)| part_windows(offset, bytes).map(move |range| Window { range, weight }))
        .collect()
}

/// How many windows [`windows`] gives (without listing them).
pub fn window_count(plan: &Plan) -> usize {
    stored_ranges(plan).map(|(_, _, bytes)| bytes.div_ceil(WINDOW_BYTES) as usize).sum()
}

/// (weight index, offset, bytes) of every range of `weights.bin` hashed as windows, in file order.
fn stored_ranges(plan: &Plan) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
    let parts = plan
        .weights
        .iter()
        .enumerate()
        .filter(|&(i, _)| plan.derivation(crate::WeightId(i as u32)).is_none())
        .flat_map(|(i, w)| w.parts.iter().map(move |p| (i, p.offset, p.bytes)));
    parts.chain(plan.derived.iter().map(|d| (d.target.0 as usize, d.correction_offset, d.correction_bytes)))
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

/// Whether the plan's window table fits its weights: one 16-hex-digit entry per window. Checked
/// once at load (the plan validator), so the runtime's checks can slice it.
pub fn table_fits(plan: &Plan, n_windows: usize) -> bool {
    plan.weights_windows.len() == n_windows * SHORT_HEX && plan.weights_windows.bytes().all(|b| b.is_ascii_hexdigit())
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
