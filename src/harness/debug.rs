//! `LAGO_DEBUG=shell`: a shell on the failing machine at the failing
//! instant. When a test fails and stdin is a terminal, lago says what failed
//! and opens an interactive SSH session on the VM the failure names (or the
//! only VM, or the one the user picks), the environment held until the shell
//! exits; in a run without a terminal (or in CI) the environment is kept
//! instead, as `LAGO_KEEP=on-failure` keeps it, with how to reach it. Shells
//! open one at a time, across the processes of a run too.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use crate::env::Env;

/// Whether `LAGO_DEBUG=shell` is asked for.
pub(crate) fn wanted() -> bool {
    std::env::var("LAGO_DEBUG").is_ok_and(|v| v.trim() == "shell")
}

/// Whether failures open a shell here: asked for, stdin and stderr are a
/// terminal, and this is not a CI job (`CI` set: a job given a terminal
/// has nobody at it).
pub(crate) fn interactive() -> bool {
    wanted()
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
        && std::env::var_os("CI").is_none_or(|v| v.is_empty())
}

/// The VM a failure names: the first VM whose name appears in `message` as
/// a word, else the only VM.
fn named_vm(env: &Env, message: &str) -> Option<String> {
    let words: Vec<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .collect();
    let vms = env.get_vms();
    let named = vms.keys().find(|n| words.contains(&n.as_str())).cloned();
    named.or_else(|| (vms.len() == 1).then(|| vms.keys().next().cloned()).flatten())
}

/// Writes `text` to stderr directly: libtest captures `eprintln!` of a
/// test's thread until the test ends, which is after the shell.
fn say(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Asks on the terminal which VM to open a shell on.
fn choose(env: &Env) -> Option<String> {
    let names: Vec<String> = env.get_vms().keys().cloned().collect();
    let stdin = std::io::stdin();
    for _ in 0..3 {
        say(&format!(
            "lago: a shell on which VM? [{}] (empty: none) ",
            names.join(", ")
        ));
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).ok()? == 0 {
            return None;
        }
        match line.trim() {
            "" => return None,
            n if names.iter().any(|v| v == n) => return Some(n.to_owned()),
            n => say(&format!("lago: no VM {n:?}\n")),
        }
    }
    None
}

/// After test `test` failed with `message`: the shell, when asked for and
/// stdin is a terminal (one at a time: tests fail in parallel).
pub(crate) fn shell_on_failure(env: &Env, test: &str, message: &str) {
    if !interactive() {
        return;
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // And one at a time across the processes of a run (nextest's) sharing the terminal.
    let root = super::artifacts::artifacts_root();
    let _ = std::fs::create_dir_all(&root);
    let _across = crate::util::lock::lock_exclusive(
        &root.join(".debug-shell.lock"),
        std::time::Duration::from_secs(24 * 3600),
    );
    say(&format!("\nlago: {test} failed:\n{message}\n"));
    let Some(vm) = named_vm(env, message).or_else(|| choose(env)) else {
        return;
    };
    say(&format!(
        "lago: a shell on {vm} at the failing instant (env {}, {}); the environment is held until it exits\n",
        env.id(),
        env.workdir().display()
    ));
    let opened = env.vm(&vm).and_then(|v| v.interactive_ssh(None));
    match opened {
        Ok(code) => say(&format!(
            "lago: the shell on {vm} exited ({code}); the test goes on failing\n"
        )),
        Err(e) => say(&format!(
            "lago: cannot open a shell on {vm}: {}\n",
            crate::util::text::error_chain(&e)
        )),
    }
}
