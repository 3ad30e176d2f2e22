//! Failure artifacts: for a failed test, a folder with the console lines each
//! VM wrote during the test, the transcript of its SSH commands, the files
//! the init file's `artifacts` lists (fetched over SSH), and the env's log.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::backend::VmState;
use crate::env::Env;
use crate::error::error_chain;
use crate::ssh::{CopyLimits, SshError};
use crate::transcript::{self, Entry};

/// Where artifacts go: `LAGO_ARTIFACTS_DIR`, else `<cargo target dir>/lago-artifacts`
/// (found from the test binary's path), else `./target/lago-artifacts`.
pub fn artifacts_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LAGO_ARTIFACTS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // <target>/<profile>/deps/<test binary> or <target>/<profile>/examples/<bin>
        let parent = exe.parent();
        if let Some(dir) = parent.filter(|p| p.ends_with("deps") || p.ends_with("examples"))
            && let Some(target) = dir.parent().and_then(Path::parent)
        {
            return target.join("lago-artifacts");
        }
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("lago-artifacts"),
        None => PathBuf::from("target/lago-artifacts"),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect()
}

/// Artifacts may hold secrets (command lines, guest files): owner-only folders.
fn private_dir(path: &Path) {
    if let Err(e) = fs::DirBuilder::new().recursive(true).mode(0o700).create(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot create the failure-artifacts folder");
    }
}

/// Writes the artifacts of failed test `test` and returns their folder.
pub(crate) fn collect(env: &Env, test: &str, message: &str, offsets: &[(String, u64)], entries: &[Entry]) -> PathBuf {
    let root = artifacts_root();
    private_dir(&root);
    let dir = root.join(sanitize(test));
    let _ = fs::remove_dir_all(&dir);
    private_dir(&dir);
    // Each file bounded in size and time, so a wedged guest cannot hang collection.
    let limits = CopyLimits::artifacts_from_env();
    // Fetching artifacts must not land in the transcript.
    transcript::set(None);
    let mut summary = format!(
        "test: {test}\nenv: {} ({})\n\nfailure:\n{message}\n\n",
        env.id(),
        env.workdir().display()
    );
    let _ = fs::write(dir.join("transcript.txt"), transcript::render(entries));
    summary += &format!("transcript.txt: {} SSH commands\n", entries.len());
    for (name, vm) in env.get_vms() {
        let offset = offsets.iter().find(|(n, _)| n == name).map(|(_, o)| *o).unwrap_or(0);
        let console = fs::read(vm.console_log()).unwrap_or_default();
        let part = console.get(offset as usize..).unwrap_or(&[]);
        let file = format!("{name}.console.log");
        let _ = fs::write(dir.join(&file), part);
        summary += &format!("{file}: {} bytes of console output during the test\n", part.len());
        if vm.spec().artifacts.is_empty() {
            continue;
        }
        let running = vm.state().map(|s| s == VmState::Running).unwrap_or(false);
        let vm_dir = dir.join(name);
        private_dir(&vm_dir);
        let mut gave_up: Option<String> = None;
        for path in &vm.spec().artifacts {
            let local = vm_dir.join(path.trim_start_matches('/').replace('/', "_"));
            let why_not = match (&limits, running, &gave_up) {
                (Err(e), _, _) => Some(error_chain(e)),
                (_, false, _) => Some("the VM is not running".to_owned()),
                (_, _, Some(why)) => Some(why.clone()),
                _ => None,
            };
            if let Some(why) = why_not {
                summary += &format!("{name}:{path}: not fetched, {why}\n");
                continue;
            }
            let Ok(limits) = &limits else { continue };
            match vm.copy_from_with(path, &local, limits) {
                Ok(report) => {
                    summary += &format!(
                        "{name}:{path}: {} ({} bytes)\n",
                        local.strip_prefix(&dir).unwrap_or(&local).display(),
                        report.bytes
                    );
                    for s in &report.skipped {
                        summary += &format!("{name}:{path}: skipped {:?} ({})\n", s.path, s.kind);
                    }
                    if report.skipped_more > 0 {
                        summary += &format!("{name}:{path}: skipped {} more entries\n", report.skipped_more);
                    }
                }
                Err(e) => {
                    summary += &format!("{name}:{path}: missing ({})\n", error_chain(&e));
                    // A guest that timed out once is wedged: do not wait again for each file.
                    if matches!(e, crate::Error::Ssh(SshError::Timeout { .. })) {
                        gave_up = Some(format!("an earlier copy from {name} timed out"));
                    }
                }
            }
        }
    }
    let log = env.workdir().join("logs/lago.log");
    if fs::copy(&log, dir.join("lago.log")).is_ok() {
        summary += "lago.log: the environment's log\n";
    }
    let _ = fs::write(dir.join("summary.txt"), summary);
    dir
}
