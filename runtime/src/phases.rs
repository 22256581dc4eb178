//! Where start-up time goes: named, nested spans of wall time since [`start`], printed by
//! `generate --verbose` ([`report`]).
//!
//! The spans sit where the work is (the loader, the executors, the generation loop), several
//! calls away from the binary that prints them, so they go into one process-wide list instead
//! of a timer threaded through every signature. Nothing is recorded until a binary calls
//! [`start`], and at most [`MAX_SPANS`] spans are kept, so a server or a long chat that never
//! prints a report pays one relaxed atomic load per span and holds nothing.
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Spans kept at most (a one-shot run records about fifteen).
pub const MAX_SPANS: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    /// Spans open around this one when it began (0: top level).
    pub depth: usize,
    /// Since [`start`].
    pub began: Duration,
    pub took: Duration,
}

static ORIGIN: OnceLock<Instant> = OnceLock::new();
static ON: AtomicBool = AtomicBool::new(false);
static PHASES: Mutex<Vec<Phase>> = Mutex::new(Vec::new());

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Starts recording; the origin of every time is the first call (call it first thing in `main`).
pub fn start() {
    ORIGIN.get_or_init(Instant::now);
    ON.store(true, Ordering::Relaxed);
}

/// Time since [`start`] (zero before it).
pub fn since_start() -> Duration {
    ORIGIN.get().map_or(Duration::ZERO, Instant::elapsed)
}

/// Records the time until it is dropped as phase `name`.
#[must_use = "the span ends when this is dropped"]
pub struct Span {
    name: &'static str,
    began: Option<Instant>,
    depth: usize,
}

/// A span named `name`, nested in the spans open on this thread.
pub fn span(name: &'static str) -> Span {
    if !ON.load(Ordering::Relaxed) {
        return Span { name, began: None, depth: 0 };
    }
    let depth = DEPTH.with(|d| d.replace(d.get() + 1));
    Span { name, began: Some(Instant::now()), depth }
}

/// `f()` timed as phase `name`.
pub fn time<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let _s = span(name);
    f()
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(began), Some(origin)) = (self.began, ORIGIN.get()) else { return };
        DEPTH.with(|d| d.set(self.depth));
        let phase =
            Phase { name: self.name, depth: self.depth, began: began.duration_since(*origin), took: began.elapsed() };
        // A poisoned list only means a panic elsewhere; the timings are still plain data.
        let mut list = PHASES.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_SPANS {
            list.push(phase);
        }
    }
}

/// The recorded phases in the order they began.
pub fn recorded() -> Vec<Phase> {
    let mut list = PHASES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    list.sort_by_key(|p| (p.began, p.depth));
    list
}

/// The phases as a table: when each began and how long it took, nested ones indented.
pub fn report(phases: &[Phase]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::from("start-up phases (ms; `at` counts from the start of main)\n      at     took\n");
    for p in phases {
        out.push_str(&format!("{:>8.1} {:>8.1}  {}{}\n", ms(p.began), ms(p.took), "  ".repeat(p.depth), p.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_nest_and_report_in_order() {
        // Process-wide state: this is the crate's only test that starts recording.
        start();
        {
            let _outer = span("outer");
            time("inner", || std::thread::sleep(Duration::from_millis(2)));
        }
        time("after", || ());
        let got = recorded();
        let names: Vec<(&str, usize)> = got.iter().map(|p| (p.name, p.depth)).collect();
        assert_eq!(names, [("outer", 0), ("inner", 1), ("after", 0)]);
        assert!(got[1].took >= Duration::from_millis(2) && got[0].took >= got[1].took, "{got:?}");
        assert!(got[2].began >= got[0].began + got[0].took, "{got:?}");
        let text = report(&got);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[2].ends_with("  outer") && lines[3].ends_with("    inner"), "{text}");
    }
}
