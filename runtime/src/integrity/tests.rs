//! The load's window sample on hand-made inputs (windows and the seal: the plan crate's tests).
use super::*;

#[test]
fn a_small_file_is_checked_whole() {
    assert_eq!(sample(SAMPLED_WINDOWS, 5), (0..SAMPLED_WINDOWS).collect::<Vec<_>>());
    assert_eq!(sample(3, 5), [0, 1, 2]);
}

#[test]
fn the_sample_has_the_ends_and_one_window_per_stratum() {
    let n = 7421; // the default model's weights.bin
    let strata = SAMPLED_WINDOWS - 2;
    for seed in [0, 1, 0xdead_beef] {
        let s = sample(n, seed);
        assert_eq!(s.len(), SAMPLED_WINDOWS);
        assert_eq!((s[0], s[SAMPLED_WINDOWS - 1]), (0, n - 1));
        for (j, &i) in s[1..=strata].iter().enumerate() {
            let (lo, hi) = (1 + j * (n - 2) / strata, 1 + (j + 1) * (n - 2) / strata);
            assert!((lo..hi).contains(&i), "seed {seed}: window {i} outside stratum {j} = {lo}..{hi}");
        }
    }
    // Another start looks elsewhere (14 strata of ~530 windows: equal samples would be a bug).
    assert_ne!(sample(n, 1), sample(n, 2));
    assert_eq!(sample(n, 9), sample(n, 9), "a seed fixes the sample");
}
