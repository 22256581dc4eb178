//! The sentinel values `generate` accepts with llama.cpp's meanings, so a command line typed for
//! `llama-cli` means the same here: `-n -1` (no token limit) and `--seed -1` (a random seed).
use std::hash::{BuildHasher, Hasher};

/// `-n`/`--max-tokens`: a count, or -1 for "until end of text or the context is full" (returned
/// as `usize::MAX`: the context check ends the generation first). 0 passes through so the caller
/// refuses it in its own one-line error.
pub fn parse_max_tokens(s: &str) -> Result<usize, String> {
    if s.trim() == "-1" {
        return Ok(usize::MAX);
    }
    s.trim().parse::<usize>().map_err(|_| format!("expected a token count >= 1, or -1 (no limit), got {s:?}"))
}

/// `-s`/`--seed`: a fixed seed, or -1 for a fresh random one per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedArg {
    Fixed(u64),
    Random,
}

pub fn parse_seed(s: &str) -> Result<SeedArg, String> {
    if s.trim() == "-1" {
        return Ok(SeedArg::Random);
    }
    s.trim()
        .parse::<u64>()
        .map(SeedArg::Fixed)
        .map_err(|_| format!("expected a seed in 0..=2^64-1 or -1 (random), got {s:?}"))
}

impl SeedArg {
    /// The seed to use; a random one comes from the process's hash randomness mixed with the
    /// clock, so no extra dependency is needed and two runs in the same nanosecond still differ.
    pub fn resolve(self) -> u64 {
        match self {
            SeedArg::Fixed(s) => s,
            SeedArg::Random => {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                h.write_u128(now.as_nanos());
                h.write_u32(std::process::id());
                h.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_unlimited_and_other_negatives_are_refused() {
        assert_eq!(parse_max_tokens("-1"), Ok(usize::MAX));
        assert_eq!(parse_max_tokens("8"), Ok(8));
        assert!(parse_max_tokens("-2").unwrap_err().contains("-1"));
        assert!(parse_max_tokens("many").is_err());
    }

    #[test]
    fn seed_minus_one_is_random_and_fixed_seeds_stay_fixed() {
        assert_eq!(parse_seed("42"), Ok(SeedArg::Fixed(42)));
        assert_eq!(parse_seed("18446744073709551615"), Ok(SeedArg::Fixed(u64::MAX)));
        assert_eq!(parse_seed("-1"), Ok(SeedArg::Random));
        assert!(parse_seed("-2").is_err());
        assert_eq!(SeedArg::Fixed(7).resolve(), 7);
        // Two random draws colliding would mean the randomness is not random.
        assert_ne!(SeedArg::Random.resolve(), SeedArg::Random.resolve());
    }
}
