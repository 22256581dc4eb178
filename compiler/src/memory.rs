//! Memory planning: every activation value gets an offset in one arena such that values whose
//! lifetimes overlap never share bytes. Lifetimes are inclusive step ranges `[def, last_use]`, so
//! a step's inputs and outputs never alias (the kernels rely on that).
//!
//! Greedy by size (largest first), each value at the lowest aligned offset that does not collide
//! with an already placed value whose lifetime intersects: simple and near-optimal for the
//! chain-shaped graphs of transformer layers.
use qwen_aot_plan::ALIGNMENT;

#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub bytes: u64,
    pub def: usize,
    pub last_use: usize,
}

pub fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Returns each interval's offset and the arena size.
pub fn plan(intervals: &[Interval]) -> (Vec<u64>, u64) {
    let mut order: Vec<usize> = (0..intervals.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(intervals[i].bytes), intervals[i].def, i));
    let mut offsets = vec![0u64; intervals.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut arena = 0;
    for i in order {
        let me = &intervals[i];
        let mut clashes: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| intervals[j].def <= me.last_use && me.def <= intervals[j].last_use)
            .map(|&j| (offsets[j], offsets[j] + align(intervals[j].bytes)))
            .collect();
        clashes.sort();
        let mut at = 0;
        for (start, end) in clashes {
            if at + align(me.bytes) <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        arena = arena.max(at + align(me.bytes));
        placed.push(i);
    }
    (offsets, arena)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(bytes: u64, def: usize, last_use: usize) -> Interval {
        Interval { bytes, def, last_use }
    }

    fn assert_no_overlap(ivs: &[Interval], offs: &[u64]) {
        for i in 0..ivs.len() {
            for j in i + 1..ivs.len() {
                let time = ivs[i].def <= ivs[j].last_use && ivs[j].def <= ivs[i].last_use;
                let space = offs[i] < offs[j] + ivs[j].bytes && offs[j] < offs[i] + ivs[i].bytes;
                assert!(!(time && space), "{i} and {j} collide");
            }
        }
    }

    #[test]
    fn a_chain_reuses_two_slots() {
        // a -> b -> c -> d: each value dies when the next is made, so two slots suffice.
        let ivs: Vec<_> = (0..4).map(|s| iv(1000, s, s + 1)).collect();
        let (offs, arena) = plan(&ivs);
        assert_no_overlap(&ivs, &offs);
        assert_eq!(arena, 2 * align(1000));
        assert_eq!(offs[0], offs[2]);
    }

    #[test]
    fn overlapping_lifetimes_get_disjoint_aligned_memory() {
        let ivs = vec![iv(10, 0, 5), iv(300, 1, 2), iv(7, 2, 4), iv(5000, 3, 3), iv(1, 0, 9)];
        let (offs, arena) = plan(&ivs);
        assert_no_overlap(&ivs, &offs);
        assert!(offs.iter().all(|o| o % ALIGNMENT == 0));
        let naive: u64 = ivs.iter().map(|i| align(i.bytes)).sum();
        assert!(arena <= naive);
    }
}
