//! Progress on stderr (indicatif): bars for what counts bytes (fetch, compile, hashing a new model
//! file), spinners for stages without a measure (reading the model, planning, loading a compiled
//! model); stacked while stages overlap. Hidden with `--quiet` or when stderr is not a terminal.
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bytes_bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner's line, not yet ticking (ticking starts once it is in place: [`Step::start`]).
fn spinner_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} {spinner} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what.to_string());
    bar
}

/// A running stage's spinner; cleared when dropped.
pub struct Step(ProgressBar);

impl Step {
    fn start(bar: ProgressBar) -> Step {
        bar.enable_steady_tick(Duration::from_millis(100));
        Step(bar)
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A single stage without a measure (`what` is under way): a spinner until the returned line is
/// dropped.
pub fn spinner(what: &str, quiet: bool) -> Step {
    let bar = spinner_bar(what);
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    Step::start(bar)
}

/// The stages of a compile on stderr, one line each while it runs (a spinner, or a bar for what
/// counts bytes), stacked while stages overlap (the model's sha256 runs beside the others).
pub struct Stages {
    multi: MultiProgress,
}

impl Stages {
    pub fn new(quiet: bool) -> Stages {
        let multi = MultiProgress::new();
        if quiet {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Stages { multi }
    }

    /// A stage measured in bytes (`total`): the caller sets the position and clears it.
    pub fn bytes(&self, total: u64, what: &str) -> ProgressBar {
        self.multi.add(bytes_bar(total, what, false))
    }

    /// A stage without a measure: a spinner until the returned line is dropped.
    pub fn step(&self, what: &str) -> Step {
        Step::start(self.multi.add(spinner_bar(what)))
    }
}
