//! The architectures qwen-aot compiles, chosen by a GGUF's `general.architecture`: each names its
//! description file (the unfused op sequence, `graphs/*.toml`) and the prefix of its metadata
//! keys (llama.cpp writes `<prefix>.block_count`, `<prefix>.attention.head_count`, ...).
//!
//! Adding an architecture starts here; ARCHITECTURE.md ("Adding an architecture") lists every
//! other place that changes.

/// One architecture the compiler knows.
#[derive(Debug, PartialEq, Eq)]
pub struct Architecture {
    /// The value of `general.architecture` in the GGUF.
    pub name: &'static str,
    /// Prefix of the hyperparameter keys (`<prefix>.block_count`, ...).
    pub key_prefix: &'static str,
    /// The architecture description (TOML), see `description.rs`.
    pub description: &'static str,
}

impl Architecture {
    /// The full metadata key for `suffix`, e.g. `qwen2.attention.key_length`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.key_prefix)
    }
}

/// Qwen2 (and Qwen2.5): llama.cpp's `qwen2`.
pub const QWEN2: Architecture =
    Architecture { name: "qwen2", key_prefix: "qwen2", description: crate::description::QWEN2 };

/// Every supported architecture.
pub const ARCHITECTURES: &[&Architecture] = &[&QWEN2];

/// The architecture whose `general.architecture` is `name`, if qwen-aot compiles it.
pub fn lookup(name: &str) -> Option<&'static Architecture> {
    ARCHITECTURES.iter().copied().find(|a| a.name == name)
}

/// The supported names, for messages: "qwen2" (or "qwen2, llama" with more).
pub fn supported_names() -> String {
    ARCHITECTURES.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen2_is_found_with_its_prefix_and_description() {
        let a = lookup("qwen2").expect("qwen2");
        assert_eq!(a.key("attention.key_length"), "qwen2.attention.key_length");
        assert!(a.description.contains("name = \"qwen2\""));
        assert_eq!(lookup("llama"), None);
        assert_eq!(supported_names(), "qwen2");
    }

    /// Every table entry's description parses and names its architecture.
    #[test]
    fn every_description_parses() {
        for a in ARCHITECTURES {
            let d = crate::description::Description::parse(a.description).unwrap();
            assert_eq!(d.name, a.name);
        }
    }
}
