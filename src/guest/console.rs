//! The serial console: reading what a guest printed (a bounded chunk at a
//! time, a tail for error messages), and the console watchdog.
//!
//! The watchdog: while a test runs, the serial consoles of its
//! environment are scanned for kernel panics, oopses, `BUG:` lines and hung
//! tasks (kola's checks), and for the test's own patterns
//! (`#[lago_env("x.yaml", fail_on_console = "segfault|OOM")]`).
//!
//! A match fails the test that was running, naming the VM and the line. The
//! consoles are scanned from where they were when the test started: by every
//! `wait_*`, `succeed` and `fail` helper of `Vm` on each attempt (so a test
//! waiting on a guest that panicked fails at once, not at its timeout), every
//! 200 ms while a test with a `timeout` runs, and when the test ends.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regex::Regex;

pub(crate) fn console_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The most [`bytes_from`] reads at once.
pub(crate) const READ_CHUNK: u64 = 1 << 20;

/// Up to [`READ_CHUNK`] bytes of the file at `path` from `offset` on (nothing when it cannot be read).
pub(crate) fn bytes_from(path: &Path, offset: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.take(READ_CHUNK).read_to_end(&mut buf);
    }
    buf
}

pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    String::from_utf8_lossy(&bytes_from(path, offset)).into_owned()
}

/// The last `n` non-empty lines of the console from `offset` on. A kernel
/// panic's own line comes first when its call trace pushed it out of them
/// (it says what went wrong; the trace rarely does).
pub(crate) fn console_tail(path: &Path, offset: u64, n: usize) -> Vec<String> {
    let text = read_from(path, offset);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control() || *c == '\t').collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let mut tail = Vec::with_capacity(n + 1);
    if let Some(panic) = lines[..from].iter().rev().find(|l| l.contains("Kernel panic")) {
        tail.push(panic.clone());
    }
    tail.extend_from_slice(&lines[from..]);
    tail
}

/// What the watchdog always looks for: (what it is, pattern).
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    ("a kernel panic", r"Kernel panic - not syncing"),
    ("a kernel oops", r"\bOops: "),
    ("a kernel BUG", r"\bBUG: |kernel BUG at "),
    ("a hung task", r"INFO: task \S+ blocked for more than \d+ seconds"),
];

/// The watch over one test's consoles.
#[derive(Debug)]
pub(crate) struct Watch {
    patterns: Vec<(String, Regex)>,
    /// Console log → how far it has been scanned (always just after a newline).
    cursors: Mutex<BTreeMap<PathBuf, u64>>,
    tripped: Mutex<Option<ConsoleMatch>>,
}

/// A regular expression that does not parse (a console pattern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {pattern:?} is not a valid regular expression: {message}")]
pub struct PatternError {
    /// Where the pattern came from (`fail_on_console`, `wait_for_console_text`, …).
    pub what: &'static str,
    /// The pattern text as given.
    pub pattern: String,
    /// The regex crate's explanation.
    pub message: String,
}

/// What the console watchdog matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleMatch {
    /// The VM whose console showed it.
    pub vm: String,
    /// What matched (`a kernel panic`, `` pattern `segfault` ``).
    pub what: String,
    /// The console line.
    pub line: String,
    /// The VM's console log.
    pub console_log: PathBuf,
}

type Result<T> = std::result::Result<T, PatternError>;

/// `pattern` compiled, or a [`PatternError`] saying it came from `what`.
pub(crate) fn compile(what: &'static str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| PatternError {
        what,
        pattern: pattern.to_owned(),
        message: e.to_string(),
    })
}

/// The watchdog's patterns and the user's `extra` one, compiled.
pub(crate) fn patterns(extra: Option<&str>) -> Result<Vec<(String, Regex)>> {
    let mut out = DEFAULT_PATTERNS
        .iter()
        .map(|(what, p)| Ok(((*what).to_owned(), compile("a built-in console pattern", p)?)))
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = extra.filter(|p| !p.is_empty()) {
        out.push((format!("pattern `{p}`"), compile("fail_on_console", p)?));
    }
    Ok(out)
}

impl Watch {
    /// Watches the console logs `from` the offsets given (where the test started).
    pub(crate) fn new(extra: Option<&str>, from: impl IntoIterator<Item = (PathBuf, u64)>) -> Result<Self> {
        let cursors = from.into_iter().collect();
        Ok(Watch {
            patterns: patterns(extra)?,
            cursors: Mutex::new(cursors),
            tripped: Mutex::new(None),
        })
    }

    /// The first match so far, scanning what the console log `log` of VM
    /// `vm` gained. A console this watch does not follow (a VM of another
    /// environment) is not scanned.
    pub(crate) fn check_log(&self, vm: &str, log: &Path) -> Option<ConsoleMatch> {
        if let Some(t) = self.first() {
            return Some(t);
        }
        if !self.follows(log) {
            return None;
        }
        self.scan(vm, log)
    }

    /// The first match so far, without scanning.
    pub(crate) fn first_match(&self) -> Option<ConsoleMatch> {
        self.first()
    }

    fn first(&self) -> Option<ConsoleMatch> {
        self.tripped.lock().ok().and_then(|t| t.clone())
    }

    fn follows(&self, log: &Path) -> bool {
        self.cursors.lock().is_ok_and(|c| c.contains_key(log))
    }

    fn scan(&self, vm: &str, log: &Path) -> Option<ConsoleMatch> {
        let mut cursors = self.cursors.lock().ok()?;
        let cursor = cursors.get_mut(log)?;
        let mut what = String::new();
        let line = next_line(log, cursor, |line| {
            match self.patterns.iter().find(|(_, r)| r.is_match(line)) {
                Some((w, _)) => {
                    what = w.clone();
                    true
                }
                None => false,
            }
        })?;
        drop(cursors);
        let trip = ConsoleMatch {
            vm: vm.to_owned(),
            what,
            line: line.chars().take(500).collect(),
            console_log: log.to_path_buf(),
        };
        let mut first = self.tripped.lock().ok()?;
        Some(first.get_or_insert(trip).clone())
    }
}

/// At most this many chunks of a console are read per look (64 MiB: a guest
/// flooding its console cannot make a check slow).
const MAX_CHUNKS: usize = 64;

/// The first complete line of the console log `log` from `*cursor` on that
/// `matches` (lossy UTF-8, without its line end), with `*cursor` moved just
/// past it, or past every complete line read when none does. A log shorter
/// than `*cursor` was rotated (virtlogd does at 2 MiB) or truncated: it is
/// read from its start. A line longer than a read chunk is skipped.
pub(crate) fn next_line(log: &Path, cursor: &mut u64, mut matches: impl FnMut(&str) -> bool) -> Option<String> {
    if console_len(log) < *cursor {
        *cursor = 0;
    }
    for _ in 0..MAX_CHUNKS {
        let bytes = bytes_from(log, *cursor);
        let full = bytes.len() as u64 >= READ_CHUNK;
        let mut consumed = 0;
        let mut rest = &bytes[..];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&rest[..nl]);
            consumed += nl + 1;
            rest = &rest[nl + 1..];
            let line = text.trim_end_matches('\r');
            if matches(line) {
                *cursor += consumed as u64;
                return Some(line.to_owned());
            }
        }
        if consumed == 0 && full {
            consumed = bytes.len();
        }
        *cursor += consumed as u64;
        if !full {
            break;
        }
    }
    None
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Watch>>> = const { RefCell::new(None) };
}

/// Sets the watch of the test running on this thread (`None` when it ends).
pub(crate) fn set(watch: Option<Arc<Watch>>) {
    CURRENT.with(|c| *c.borrow_mut() = watch);
}

/// The watch of the test running on this thread (to hand to helper threads).
pub(crate) fn current() -> Option<Arc<Watch>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The running test's watchdog verdict on the console `log` of VM `vm`:
/// the first match since the test started. `None` outside tests.
pub(crate) fn check(vm: &str, log: &Path) -> Option<ConsoleMatch> {
    current().and_then(|w| w.check_log(vm, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(line: &str, extra: Option<&str>) -> Option<String> {
        patterns(extra)
            .unwrap()
            .into_iter()
            .find(|(_, r)| r.is_match(line))
            .map(|(w, _)| w)
    }

    #[test]
    fn kernel_trouble_is_recognised_and_ordinary_lines_are_not() {
        for (line, what) in [
            (
                "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs",
                "a kernel panic",
            ),
            ("[   12.0] Oops: 0002 [#1] PREEMPT SMP NOPTI", "a kernel oops"),
            (
                "[    5.3] BUG: unable to handle page fault for address: 0000",
                "a kernel BUG",
            ),
            (
                "[   30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!",
                "a kernel BUG",
            ),
            ("[    1.0] kernel BUG at mm/slub.c:123!", "a kernel BUG"),
            (
                "[  245.6] INFO: task kworker/0:1:42 blocked for more than 120 seconds.",
                "a hung task",
            ),
        ] {
            assert_eq!(matched(line, None).as_deref(), Some(what), "{line}");
        }
        for line in [
            "lago: up",
            "Starting dropbear sshd: OK",
            "[    0.5] ACPI: bus type PCI registered",
            "DEBUG: all fine",
            "no BUGS here",
        ] {
            assert_eq!(matched(line, None), None, "{line}");
        }
        assert_eq!(
            matched("app[42]: segfault at 0 ip 0 sp 0", Some("segfault|OOM")).as_deref(),
            Some("pattern `segfault|OOM`")
        );
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_it() {
        let e = patterns(Some("seg(fault")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("fail_on_console \"seg(fault\" is not a valid regular expression"),
            "{msg}"
        );
    }

    #[test]
    fn only_what_a_console_gains_after_the_start_is_scanned_and_the_first_match_sticks() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("vm01.console.log");
        std::fs::write(&log, "Kernel panic - not syncing: an old boot\n").unwrap();
        let w = Watch::new(Some("segfault"), [(log.clone(), console_len(&log))]).unwrap();
        assert_eq!(w.scan("vm01", &log), None, "what was there before the test");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        // A line being written is not scanned until it is complete.
        f.write_all(b"fine\napp: segf").unwrap();
        assert_eq!(w.scan("vm01", &log), None);
        f.write_all(b"ault at 0\r\n[ 9.0] Oops: 0002\n").unwrap();
        let t = w.scan("vm01", &log).unwrap();
        assert_eq!(
            (t.what.as_str(), t.line.as_str()),
            ("pattern `segfault`", "app: segfault at 0")
        );
        // Later matches do not replace the first.
        f.write_all(b"Kernel panic - not syncing\n").unwrap();
        assert_eq!(w.scan("vm01", &log).unwrap().line, "app: segfault at 0");
        assert_eq!((t.vm.as_str(), t.console_log.as_path()), ("vm01", log.as_path()));
        // A console it does not follow.
        assert!(!w.follows(&tmp.path().join("other.log")));
    }

    #[test]
    fn lines_are_read_across_chunks_rotations_and_bad_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("c.log");
        let chunk = READ_CHUNK as usize;
        // A line longer than a chunk, then more than a chunk of short lines, then the match.
        let mut text = vec![b'x'; chunk + 10];
        text.push(b'\n');
        for _ in 0..(chunk / 8) {
            text.extend_from_slice(b"filler\n");
        }
        text.extend_from_slice(b"bad \xff byte: target\r\nafter\n");
        std::fs::write(&log, &text).unwrap();
        let mut cursor = 0;
        let line = next_line(&log, &mut cursor, |l| l.ends_with("target")).unwrap();
        assert_eq!(line, "bad \u{FFFD} byte: target");
        assert_eq!(
            cursor as usize,
            text.len() - b"after\n".len(),
            "just past the matching line"
        );
        // Consumed: the same line is not found again; the cursor ends after the last complete line.
        assert_eq!(next_line(&log, &mut cursor, |l| l.ends_with("target")), None);
        assert_eq!(cursor as usize, text.len());
        // Rotated (shorter than the cursor): read from the start of the new file.
        std::fs::write(&log, "Kernel panic - not syncing\n").unwrap();
        assert_eq!(
            next_line(&log, &mut cursor, |l| l.starts_with("Kernel panic")).as_deref(),
            Some("Kernel panic - not syncing")
        );
        // A missing log: nothing, and no panic.
        let mut c = 5;
        assert_eq!(next_line(&tmp.path().join("none"), &mut c, |_| true), None);
    }

    #[test]
    fn a_kernel_panic_line_stays_in_the_console_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut text = String::from("booting\n---[ Kernel panic - not syncing: VFS: Unable to mount root fs ]---\n");
        for i in 0..20 {
            text.push_str(&format!("trace line {i}\n\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let tail = console_tail(&path, 0, 5);
        assert_eq!(tail.len(), 6, "{tail:?}");
        assert!(tail[0].contains("VFS: Unable to mount root fs"), "{tail:?}");
        assert_eq!(tail[5], "trace line 19");
        // Without a panic, just the tail.
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(console_tail(&path, 0, 2), ["b", "c"]);
    }
}
