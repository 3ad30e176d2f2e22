//! Failure artifacts: for a failed test, a folder with the console lines each
//! VM wrote during the test, the transcript of its SSH commands, the files
//! the init file's `artifacts` lists (fetched over SSH), and the env's log.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::guest::ssh::CopyLimits;
use crate::guest::transcript::{self, Entry};

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
pub(crate) fn collect(
    env: &Env,
    test: &str,
    message: &str,
    consoles: &[(String, PathBuf, u64)],
    entries: &[Entry],
) -> PathBuf {
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
        // Where its console stood when the test started.
        let offset = consoles
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, o)| *o)
            .unwrap_or(0);
        let console = fs::read(vm.console_log()).unwrap_or_default();
        let part = console.get(offset as usize..).unwrap_or(&[]);
        let file = format!("{name}.console.log");
        let _ = fs::write(dir.join(&file), part);
        summary += &format!("{file}: {} bytes of console output during the test\n", part.len());
        if vm.spec().artifacts.is_empty() {
            continue;
        }
        let vm_dir = dir.join(name);
        private_dir(&vm_dir);
        let got = crate::env::collect::fetch_artifacts(vm, &vm_dir, &limits);
        for f in &got.files {
            summary += &format!(
                "{name}:{}: {} ({} bytes{})\n",
                f.source,
                f.path.strip_prefix(&dir).unwrap_or(&f.path).display(),
                f.bytes,
                if f.skipped > 0 {
                    format!(
                        "; {} entries skipped: only regular files and folders are copied",
                        f.skipped
                    )
                } else {
                    String::new()
                }
            );
        }
        for m in &got.missing {
            summary += &format!("{name}:{}: missing ({})\n", m.source, m.why);
        }
    }
    let log = env.workdir().join(crate::host::workdir::LOG_FILE);
    if fs::copy(&log, dir.join("lago.log")).is_ok() {
        summary += "lago.log: the environment's log\n";
    }
    let _ = fs::write(dir.join("summary.txt"), summary);
    dir
}

/// Saves the failing instant of `env` as a failure bundle in
/// `<dir>/bundle` (the test's artifacts folder), and says so in its
/// summary; a bundle that cannot be made (over `LAGO_BUNDLE_MAX`, an
/// environment that cannot be saved whole) is a warning, not a second failure.
pub(crate) fn bundle(env: &Env, test: &str, message: &str, dir: &Path) {
    let opts = crate::env::bundle::BundleOptions {
        test: Some(test.to_owned()),
        failure: Some(message.to_owned()),
        ..Default::default()
    };
    let line = match env.bundle(dir.join("bundle"), &opts) {
        Ok(r) => {
            let line = format!(
                "bundle/: the failing instant of every VM ({}, saved in {:.1}s): `lago replay {}`",
                lago_config::approx_size(r.bytes),
                r.secs,
                r.dir.display()
            );
            eprintln!("lago: {test}: {line}");
            line
        }
        Err(e) => {
            let why = crate::util::text::error_chain(&e);
            eprintln!("lago: warning: {test}: {why}");
            format!("bundle/: none: {why}")
        }
    };
    let summary = dir.join("summary.txt");
    let mut text = fs::read_to_string(&summary).unwrap_or_default();
    text.push_str(&line);
    text.push('\n');
    let _ = fs::write(&summary, text);
}
