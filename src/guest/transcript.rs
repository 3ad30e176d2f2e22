//! The SSH commands a test ran, recorded for its failure artifacts.
//!
//! A test harness sets a recorder on the test's thread; [`Vm`](crate::Vm)
//! appends every command it runs on that thread.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recorded command.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The VM it ran on.
    pub vm: String,
    /// The command line (or copy).
    pub command: String,
    /// Exit code, or the error if it did not run.
    pub outcome: Result<i32, String>,
    /// Standard output (lossy UTF-8; empty if it did not run).
    pub out: String,
    /// Standard error (lossy UTF-8; empty if it did not run).
    pub err: String,
    /// How long it took.
    pub duration: Duration,
}

/// A shared list of entries.
pub type Recorder = Arc<Mutex<Vec<Entry>>>;

thread_local! {
    static CURRENT: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Records this thread's commands into `rec` (or stops recording with `None`).
pub fn set(rec: Option<Recorder>) {
    CURRENT.with(|c| *c.borrow_mut() = rec);
}

/// This thread's recorder (to hand to threads a test starts).
pub(crate) fn current() -> Option<Recorder> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Appends an entry if this thread records.
pub(crate) fn record(entry: impl FnOnce() -> Entry) {
    CURRENT.with(|c| {
        if let Some(rec) = c.borrow().as_ref()
            && let Ok(mut v) = rec.lock()
        {
            v.push(entry());
        }
    });
}

/// Renders entries as a readable transcript.
pub fn render(entries: &[Entry]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for e in entries {
        let outcome = match &e.outcome {
            Ok(code) => format!("exit {code}"),
            Err(err) => format!("error: {err}"),
        };
        let _ = writeln!(s, "$ [{}] {}    # {outcome}, {:.3?}", e.vm, e.command, e.duration);
        for (label, text) in [("stdout", &e.out), ("stderr", &e.err)] {
            if !text.is_empty() {
                let _ = writeln!(s, "  --- {label}");
                for line in text.lines() {
                    let _ = writeln!(s, "  {line}");
                }
            }
        }
    }
    s
}
