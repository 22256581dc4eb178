//! The speculative-decoding flags `generate` and `serve` share (`--draft-max`, llama.cpp's name
//! for the longest draft, and the n-gram sizes of the prompt lookup that makes the drafts).
use qwen_aot_runtime::speculative::{NgramDrafter, DEFAULT_MAX_NGRAM, DEFAULT_MIN_NGRAM};

/// `--draft-max` when not given: on the CPU no measured prompt ran measurably slower with it (the
/// drafts of new text are learned not to pay within a few checks) and edits that copy their
/// context ran up to 1.5x as fast (benches/NOTES.md).
pub const DEFAULT_DRAFT_MAX: usize = 8;

#[derive(clap::Args, Debug, Clone)]
pub struct SpeculationArgs {
    /// Speculative decoding by prompt lookup: guess up to N next tokens by copying what followed
    /// the latest earlier occurrence of the text's last few tokens, and check them in one pass
    /// (the output is unchanged, token for token); 0 turns it off. CPU backend only for now
    /// [default: 8]
    #[arg(long, visible_aliases = ["draft", "draft-n"], value_name = "N")]
    pub draft_max: Option<usize>,
    /// Shortest run of last tokens the lookup matches.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MIN_NGRAM)]
    pub draft_ngram_min: usize,
    /// Longest run of last tokens the lookup matches (longer matches are tried first).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_NGRAM)]
    pub draft_ngram_max: usize,
}

impl SpeculationArgs {
    /// The drafter the flags ask for (None: off), or the flags' error in one line.
    pub fn drafter(&self) -> anyhow::Result<Option<NgramDrafter>> {
        let d = NgramDrafter {
            max_draft: self.draft_max.unwrap_or(DEFAULT_DRAFT_MAX),
            min_ngram: self.draft_ngram_min,
            max_ngram: self.draft_ngram_max,
        };
        d.validate().map_err(anyhow::Error::msg)?;
        Ok((d.max_draft > 0).then_some(d))
    }

    /// Whether `--draft-max` asked for speculation (then a backend that cannot verify drafts
    /// says so; the default is silent there).
    pub fn asked(&self) -> bool {
        self.draft_max.is_some_and(|n| n > 0)
    }
}

/// The note a run prints when speculation was asked for on a backend that cannot verify drafts.
pub fn unsupported_note(backend: &str) -> String {
    format!(
        "note: --draft-max needs a backend with a multi-row verify (the CPU executor); the {backend} backend decodes one token per step"
    )
}
