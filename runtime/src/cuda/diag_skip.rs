//! `QWEN_AOT_DIAG_SKIP`: a measurement knob, not a feature. Kernels whose entry-point names start
//! with one of its comma-separated prefixes are not launched at all (their outputs keep whatever
//! the buffers held, so everything downstream is garbage); the decode step's time without them is
//! what `scripts/device-ablate.sh` measures: each kernel's marginal share of the step, the
//! per-layer budget of benches/NOTES.md. A warning goes to stderr once when it is set.

use std::sync::OnceLock;

/// The prefixes of `value` (`QWEN_AOT_DIAG_SKIP`'s text): comma-separated, blanks ignored.
fn parse(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}

fn listed(prefixes: &[String], name: &str) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Whether the kernel `name` is on the skip list (read once per process).
pub(crate) fn skipped(name: &str) -> bool {
    static PREFIXES: OnceLock<Vec<String>> = OnceLock::new();
    let prefixes = PREFIXES.get_or_init(|| {
        let prefixes = std::env::var("QWEN_AOT_DIAG_SKIP").map(|v| parse(&v)).unwrap_or_default();
        if !prefixes.is_empty() {
            eprintln!(
                "warning: QWEN_AOT_DIAG_SKIP is set: kernels starting with {prefixes:?} are not launched; \
                 every output after them is garbage (a timing diagnostic)"
            );
        }
        prefixes
    });
    listed(prefixes, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select_the_kernels_they_start() {
        let p = parse(" gemv_m_store_q5_0, attention_split,,");
        assert_eq!(p, ["gemv_m_store_q5_0", "attention_split"]);
        assert!(listed(&p, "gemv_m_store_q5_0"));
        assert!(listed(&p, "gemv_m_store_q5_0_q8_0"), "a prefix, not a whole name");
        assert!(listed(&p, "attention_split_d64"));
        assert!(!listed(&p, "gemv_m_store_q6_k"));
        assert!(!listed(&p, "attention_rows_d64"));
        assert!(parse("").is_empty() && !listed(&parse(" , "), "argmax"));
    }
}
