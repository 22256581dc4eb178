//! Prefill as CUDA graphs: one per launch shape, captured on first use and replayed after.
//!
//! A prefill enqueued launch by launch costs the host ~5-10 µs per launch (cuBLAS calls more)
//! for ~15 launches per layer: for a short prompt that is the whole time to the first token (a
//! 37-token prompt, ~360 launches: ~2.4 ms on the H200 against well under 1 ms of GPU work). The
//! launches depend only on the row count they are built for, not on the prompt: every kernel
//! reads the position and the real row count from the device state and leaves rows past it alone
//! (kernels/common.cuh), and cuBLAS runs at bucketed row counts already (`launch::gemm_rows`). So
//! a prefill runs at its bucket's row count, and the graph for (bucket, path, logits, sampler) is
//! captured once and replayed; the host then sets the state, copies the tokens and launches one
//! graph.
use super::launch;
use crate::executor::LogitsWanted;
use cudarc::driver::CudaGraph;

/// What a captured prefill depends on besides fixed buffers: the row count its launches are
/// sized for, whether its matmuls run on cuBLAS, whether the LM head runs on every row, and
/// whether the sampling kernels replace the argmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PrefillKey {
    pub rows: usize,
    pub gemm: bool,
    pub all_logits: bool,
    pub sampled: bool,
}

impl PrefillKey {
    /// The key of a prefill of `tokens` rows (`gemm`: its matmuls run on cuBLAS), for a program
    /// whose chunks hold at most `cap` rows: cuBLAS prefills run at `launch::gemm_rows`' buckets
    /// (the rows past `tokens` are computed and ignored), GEMV prefills at their own row count
    /// (at most `ALWAYS_GEMV_ROWS`, or a few dozen before cuBLAS is up: few distinct counts).
    pub fn new(tokens: usize, gemm: bool, cap: usize, logits: LogitsWanted, sampled: bool) -> PrefillKey {
        let rows = if gemm && tokens > 1 { launch::gemm_rows(tokens, cap) } else { tokens };
        PrefillKey { rows, gemm, all_logits: logits == LogitsWanted::All, sampled }
    }
}

/// Most rows of a prefill on the GEMV kernels that gets a graph: these are keyed by their exact
/// row count (padded rows would still prefetch weights), so longer ones -- a prompt before cuBLAS
/// is up, or on a machine without it -- run directly rather than fill the cache with one graph
/// per length.
pub(crate) const GEMV_GRAPH_MAX_ROWS: usize = 8;

/// Captured prefill graphs by key (a handful: one per bucket a session's prompts fall in), the
/// keys run once without one, and the keys whose capture failed.
#[derive(Default)]
pub(crate) struct PrefillGraphs {
    graphs: Vec<(PrefillKey, CudaGraph)>,
    seen: Vec<PrefillKey>,
    refused: Vec<PrefillKey>,
}

impl PrefillGraphs {
    /// Whether a prefill of `key` (which has no graph yet) should capture one: from its second
    /// run on (a capture costs about what launching the prefill directly does, so a one-shot
    /// prompt such as `generate -p` runs it directly and a repeated shape -- chat turns, requests
    /// -- pays the capture once), never for a GEMV prefill longer than [`GEMV_GRAPH_MAX_ROWS`]
    /// or a key whose capture failed. Records the run.
    pub fn capture_now(&mut self, key: PrefillKey) -> bool {
        if (!key.gemm && key.rows > GEMV_GRAPH_MAX_ROWS) || self.refused.contains(&key) {
            return false;
        }
        if self.seen.contains(&key) {
            return true;
        }
        self.seen.push(key);
        false
    }

    /// Marks `key` as run directly from now on (its capture failed).
    pub fn refuse(&mut self, key: PrefillKey) {
        if !self.refused.contains(&key) {
            self.refused.push(key);
        }
    }

    pub fn get(&self, key: &PrefillKey) -> Option<&CudaGraph> {
        self.graphs.iter().find(|(k, _)| k == key).map(|(_, g)| g)
    }

    pub fn insert(&mut self, key: PrefillKey, graph: CudaGraph) -> &CudaGraph {
        self.graphs.retain(|(k, _)| *k != key);
        self.graphs.push((key, graph));
        &self.graphs.last().expect("just pushed").1
    }
}

/// Whether prefills run as graphs: with the decode graph (`QWEN_AOT_NO_GRAPH=1` turns both off),
/// unless `QWEN_AOT_NO_PREFILL_GRAPH=1` (to compare the two on one binary).
pub(crate) fn enabled(decode_graphs: bool) -> bool {
    decode_graphs && !std::env::var("QWEN_AOT_NO_PREFILL_GRAPH").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cuBLAS prompt length maps to a bucket at least as long and at most `cap`; a chunk of
    /// 512 rows has 11 buckets, so a session captures at most that many cuBLAS graphs per
    /// (logits, sampler) combination; GEMV prefills keep their row count.
    #[test]
    fn keys_bucket_cublas_prefills_and_keep_gemv_row_counts() {
        let cap = 512;
        let mut rows: Vec<usize> = (9..=cap)
            .map(|t| {
                let k = PrefillKey::new(t, true, cap, LogitsWanted::Last, false);
                assert!(k.rows >= t && k.rows <= cap, "{t} -> {}", k.rows);
                k.rows
            })
            .collect();
        rows.dedup();
        assert_eq!(rows, vec![16, 32, 48, 64, 128, 192, 256, 320, 384, 448, 512]);
        assert_eq!(PrefillKey::new(37, true, cap, LogitsWanted::None, false).rows, 48);
        assert_eq!(PrefillKey::new(5, false, cap, LogitsWanted::None, false).rows, 5);
        assert_eq!(PrefillKey::new(1, true, cap, LogitsWanted::None, false).rows, 1);
        assert_eq!(PrefillKey::new(100, true, 100, LogitsWanted::None, false).rows, 100, "capped by the chunk");
    }

    /// A shape runs directly once, then is captured; long GEMV prefills and refused keys never.
    #[test]
    fn a_shape_is_captured_from_its_second_run() {
        let mut g = PrefillGraphs::default();
        let a = PrefillKey::new(40, true, 512, LogitsWanted::None, false);
        let b = PrefillKey::new(100, true, 512, LogitsWanted::None, false);
        assert!(!g.capture_now(a));
        assert!(!g.capture_now(b));
        assert!(g.capture_now(a));
        assert!(g.capture_now(PrefillKey::new(33, true, 512, LogitsWanted::Last, false)), "same bucket as 40");
        g.refuse(b);
        assert!(!g.capture_now(b) && !g.capture_now(b), "a failed capture is not retried");
        let short = PrefillKey::new(GEMV_GRAPH_MAX_ROWS, false, 512, LogitsWanted::None, false);
        let long = PrefillKey::new(GEMV_GRAPH_MAX_ROWS + 1, false, 512, LogitsWanted::None, false);
        assert!(!g.capture_now(short) && g.capture_now(short));
        assert!(!g.capture_now(long) && !g.capture_now(long), "GEMV prefills past the bound run directly");
    }

    /// None and Last build the same launches (the LM head on the last row); All differs, and so
    /// do the path and the sampler.
    #[test]
    fn keys_tell_apart_what_changes_the_launches() {
        let k = |t, gemm, l, s| PrefillKey::new(t, gemm, 512, l, s);
        assert_eq!(k(40, true, LogitsWanted::None, false), k(40, true, LogitsWanted::Last, false));
        assert_eq!(k(40, true, LogitsWanted::None, false), k(33, true, LogitsWanted::None, false), "one bucket");
        assert_ne!(k(40, true, LogitsWanted::None, false), k(40, true, LogitsWanted::All, false));
        assert_ne!(k(40, true, LogitsWanted::None, false), k(40, true, LogitsWanted::None, true));
        assert_ne!(k(40, true, LogitsWanted::None, false), k(40, false, LogitsWanted::None, false));
    }
}
