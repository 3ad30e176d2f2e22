//! Failure artifacts: for a failed test, a folder with the console lines each
//! VM wrote during the test, the transcript of its SSH commands, the files
//! the init file's `artifacts` lists (fetched over SSH), and the env's log.

use std::fs;
use std::path::{Path, PathBuf};

use crate::backend::VmState;
use crate::env::Env;
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

/// Writes the artifacts of failed test `test` and returns their folder.
pub(crate) fn collect(env: &Env, test: &str, message: &str, offsets: &[(String, u64)], entries: &[Entry]) -> PathBuf {
    let dir = artifacts_root().join(sanitize(test));
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::create_dir_all(&dir);
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
        let _ = fs::create_dir_all(&vm_dir);
        for path in &vm.spec().artifacts {
            let local = vm_dir.join(path.trim_start_matches('/').replace('/', "_"));
            if !running {
                summary += &format!("{name}:{path}: not fetched, the VM is not running\n");
                continue;
            }
            match vm.copy_from(path, &local) {
                Ok(()) => {
                    summary += &format!(
                        "{name}:{path}: {}\n",
                        local.strip_prefix(&dir).unwrap_or(&local).display()
                    )
                }
                Err(e) => summary += &format!("{name}:{path}: missing ({e})\n"),
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
