//! `QWEN_AOT_QMMA_SHAPE`: a tuning knob, not a feature. It overrides the launch geometry that
//! [`super::qmma`] derives for the tensor-core GEMVs of one weight shape, so that one device call
//! can sweep geometries without a rebuild. The value is a comma-separated list of
//! `NxK=WPT/BLOCKS` entries (`n` rows, `k` columns of the weight; WPT warps per tile, a power of
//! two up to GEMV_WARPS; BLOCKS the grid's x size): either half may be left out (`896x896=4`,
//! `9728x896=/284`). Any geometry is correct (the kernels grid-stride over their tiles), only
//! its speed changes. Entries that do not parse are reported once and ignored. A store that takes
//! the wide entry point (`qmma::wide_store`: one tile per QMMA_WIDE_WARPS-warp block) keeps that geometry; set
//! `QWEN_AOT_QMMA_WIDE=0` too to sweep it on 8-warp blocks.

use std::sync::OnceLock;

use crate::kernel_constants::GEMV_WARPS;

/// One entry: the weight shape it applies to and what it sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    n: usize,
    k: usize,
    wpt: Option<usize>,
    blocks: Option<usize>,
}

fn parse_entry(text: &str) -> Option<Entry> {
    let (shape, geometry) = text.split_once('=')?;
    let (n, k) = shape.trim().split_once('x')?;
    let (wpt, blocks) = match geometry.split_once('/') {
        Some((w, b)) => (w.trim(), b.trim()),
        None => (geometry.trim(), ""),
    };
    let number = |s: &str| if s.is_empty() { Ok(None) } else { s.parse::<usize>().map(Some) };
    let wpt = number(wpt).ok()?;
    let blocks = number(blocks).ok()?;
    if wpt.is_some_and(|w| !w.is_power_of_two() || w > GEMV_WARPS) || blocks == Some(0) {
        return None;
    }
    Some(Entry { n: n.trim().parse().ok()?, k: k.trim().parse().ok()?, wpt, blocks })
}

/// The entries of `value`, and the texts that did not parse.
fn parse(value: &str) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match parse_entry(text) {
            Some(e) => entries.push(e),
            None => bad.push(text.to_owned()),
        }
    }
    (entries, bad)
}

fn entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let Ok(value) = std::env::var("QWEN_AOT_QMMA_SHAPE") else { return Vec::new() };
        let (entries, bad) = parse(&value);
        if !bad.is_empty() {
            eprintln!("warning: QWEN_AOT_QMMA_SHAPE: ignored {bad:?} (expected NxK=WPT/BLOCKS)");
        }
        if !entries.is_empty() {
            eprintln!("warning: QWEN_AOT_QMMA_SHAPE overrides the GEMV geometry of {entries:?} (a tuning knob)");
        }
        entries
    })
}

/// What the knob sets for a GEMV on an `n` x `k` weight (nothing where it names neither).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Override {
    pub wpt: Option<usize>,
    pub blocks: Option<usize>,
}

impl Override {
    pub(crate) fn of(n: usize, k: usize) -> Override {
        entries()
            .iter()
            .find(|e| e.n == n && e.k == k)
            .map_or_else(Override::default, |e| Override { wpt: e.wpt, blocks: e.blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_set_either_half() {
        let (e, bad) = parse(" 896x896=4/56, 9728x896=/284,151936x896=1 ,");
        assert!(bad.is_empty());
        assert_eq!(e[0], Entry { n: 896, k: 896, wpt: Some(4), blocks: Some(56) });
        assert_eq!(e[1], Entry { n: 9728, k: 896, wpt: None, blocks: Some(284) });
        assert_eq!(e[2], Entry { n: 151_936, k: 896, wpt: Some(1), blocks: None });
    }

    #[test]
    fn malformed_entries_are_reported() {
        let (e, bad) = parse("896x896=3/56,896=2,896x896=16,896x896=2/0,axb=1,896x896=2/x");
        assert!(e.is_empty());
        assert_eq!(bad.len(), 6);
    }
}
