//! Property test of the loader: random and mutated init files give `Ok` or an
//! error, never a panic, within a time and a memory bound.
//!
//! Inputs: token soup from YAML's special characters and the schema's keys,
//! and the project's own init files (`tests/data/{valid,invalid}`, examples)
//! with random edits. A crasher found here is kept under
//! `tests/data/invalid/` as a regression file (and gets an exact test in
//! `tests/config.rs`). Bounded (a few hundred cases) so CI stays fast.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::prelude::*;

/// One input at a time, so that the peak memory belongs to it.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_kb(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Resets the process's peak resident size (`VmHWM`) to its current size.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS through /proc/self/clear_refs");
}

/// Generous bounds: they catch hangs, blow-ups and quadratic paths, they are not speed targets.
const TIME_BOUND: Duration = Duration::from_secs(5);
const MEMORY_BOUND: usize = 256 << 20;

fn load_within_bounds(text: &str) -> Result<(), TestCaseError> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    reset_peak();
    let base = status_kb("VmRSS:");
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = lago_config::from_str(text, "/fuzz/LagoInitFile");
        // Rendering the error is part of what a user sees: it must not panic either.
        if let Err(e) = &result {
            let _ = e.to_string();
        }
        result.is_ok()
    }));
    let took = start.elapsed();
    let peak = status_kb("VmHWM:").saturating_sub(base);
    prop_assert!(outcome.is_ok(), "the loader panicked on {text:?}");
    prop_assert!(took < TIME_BOUND, "took {took:?} on {} bytes", text.len());
    prop_assert!(peak < MEMORY_BOUND, "peak {peak} bytes on {} bytes", text.len());
    Ok(())
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<PathBuf> = vec![root.join("examples/LagoInitFile")];
    for dir in ["tests/data/valid", "tests/data/invalid", "tests/envs"] {
        if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        // The huge regression files are tested exactly elsewhere; mutating them is slow.
        .filter(|t| t.len() < 16 << 10)
        .collect();
    assert!(texts.len() >= 20, "expected the project's init files as seeds");
    texts
}

/// Pieces YAML and the schema are made of.
const TOKENS: &[&str] = &[
    "domains",
    "nets",
    "vm01",
    "lago",
    "nics",
    "disks",
    "net",
    "ip",
    "dev",
    "type",
    "name",
    "size",
    "template",
    "empty",
    "file",
    "path",
    "memory",
    "vcpu",
    "dhcp",
    "start",
    "end",
    "gw",
    "mtu",
    "management",
    "bridge",
    "metadata",
    "groups",
    "artifacts",
    "ssh-user",
    "x-",
    "sda",
    "vdé",
    "hd",
    "192.168.200.",
    "1G",
    "$HOME",
    "${X}",
    "~/",
    ":",
    ": ",
    "-",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "<<: ",
    "? ",
    "!!str ",
    "!x ",
    "'",
    "\"",
    "#",
    "|",
    ">",
    "---\n",
    "...\n",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "\t",
    "0x",
    "1e9",
    "-1",
    ".inf",
    "~",
    "null",
    "true",
    "é",
    "\u{feff}",
    "\\",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..200).prop_map(|parts| parts.concat())
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceChar(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(a, t)| Edit::Insert(a, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Edit::ReplaceChar(a, c)),
    ]
}

/// The char boundary at or before `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, e: &Edit) -> String {
    match *e {
        Edit::Delete(a, n) => {
            let from = boundary(&s, a);
            let to = boundary(&s, (from + n).min(s.len()));
            s.replace_range(from..to.max(from), "");
            s
        }
        Edit::Insert(a, t) => {
            let at = boundary(&s, a);
            s.insert_str(at, t);
            s
        }
        Edit::ReplaceChar(a, c) => {
            let at = boundary(&s, a);
            match s[at..].chars().next() {
                Some(old) => s.replace_range(at..at + old.len_utf8(), c.encode_utf8(&mut [0; 4])),
                None => s.push(c),
            }
            s
        }
        Edit::DuplicateLine(a) | Edit::SwapLines(a, _) if s.lines().count() == 0 => {
            let _ = a;
            s
        }
        Edit::DuplicateLine(a) => {
            let mut lines: Vec<&str> = s.lines().collect();
            let i = a % lines.len();
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = s.lines().collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_soup_loads_or_fails_cleanly(text in soup()) {
        load_within_bounds(&text)?;
    }

    #[test]
    fn mutated_init_files_load_or_fail_cleanly(
        pick in any::<usize>(),
        edits in prop::collection::vec(edit(), 1..12),
    ) {
        let seeds = seeds();
        let mut text = seeds[pick % seeds.len()].clone();
        for e in &edits {
            text = apply(text, e);
        }
        load_within_bounds(&text)?;
    }

    #[test]
    fn arbitrary_unicode_loads_or_fails_cleanly(text in "\\PC{0,400}") {
        load_within_bounds(&text)?;
    }
}

#[test]
fn the_memory_bound_can_fail() {
    // The measurement sees a real allocation: the check is not vacuous.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    reset_peak();
    let base = status_kb("VmRSS:");
    let big = vec![1u8; 64 << 20];
    let peak = status_kb("VmHWM:").saturating_sub(base);
    drop(big);
    assert!(peak >= 60 << 20, "peak {peak}");
}

#[test]
fn the_seed_files_themselves_stay_within_bounds() {
    for text in seeds() {
        load_within_bounds(&text).unwrap();
    }
}
