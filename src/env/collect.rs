//! `lago collect` ([`Env::collect`]): each VM's init-file `artifacts` (over
//! SSH), its console log and the environment's log, gathered into a folder,
//! as Lago's `collect` did. What cannot be fetched is listed, not fatal.
//!
//! ```text
//! DIR/lago.log                 the environment's log
//! DIR/<vm>/console.log         the VM's serial console
//! DIR/<vm>/<guest path, / as _> each artifact (a file or a folder)
//! ```

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::VmState;
use crate::env::Env;
use crate::env::error::{Error, Result, error_chain};
use crate::env::vm::Vm;
use crate::guest::ssh::{CopyLimits, SshError};

/// What [`Env::collect`] gathered.
#[derive(Debug, Clone, Serialize)]
pub struct CollectReport {
    /// The output folder given (absolute), holding a `<vm>/` folder per VM.
    pub dir: PathBuf,
    /// The environment's log, copied (`None` when there was none).
    pub env_log: Option<PathBuf>,
    /// What was gathered from each VM chosen.
    pub vms: Vec<VmCollected>,
}

/// What was gathered from one VM.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmCollected {
    /// The VM's name (also its folder's name under `dir`).
    pub vm: String,
    /// Files and folders written.
    pub files: Vec<Collected>,
    /// What could not be fetched, and why.
    pub missing: Vec<Missing>,
}

/// One thing fetched.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    /// A guest path, or `console` for the serial console log.
    pub source: String,
    /// Where it is now.
    pub path: PathBuf,
    /// Bytes of content.
    pub bytes: u64,
    /// Entries not copied (symlinks, devices: only regular files and folders are).
    pub skipped: u64,
}

/// One thing not fetched.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    /// A guest path, or `console`.
    pub source: String,
    /// Why it was not copied (the copy's error, or why none was tried: VM not running, …).
    pub why: String,
}

/// The local name of guest path `guest`: `/var/log/messages` → `var_log_messages`.
pub(crate) fn local_name(guest: &str) -> String {
    let name: String = guest
        .trim_start_matches('/')
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "root".to_owned()
    } else {
        name
    }
}

/// Creates `path` (mode 0700) when it does not exist; an existing folder
/// must be empty and belong to the user running lago. Never writes into a
/// folder that holds anything, nor through a link.
pub(crate) fn claim_output_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| Error::Output {
                action: "create",
                path: path.to_path_buf(),
                source,
            }),
        Err(source) => Err(Error::Output {
            action: "inspect",
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if m.file_type().is_symlink() => Err(Error::OutputNotOurs {
            path: path.to_path_buf(),
            why: "it is a symbolic link".into(),
        }),
        Ok(m) if !m.is_dir() => Err(Error::OutputNotEmpty {
            path: path.to_path_buf(),
            holds: vec!["(it is a file, not a folder)".into()],
        }),
        // Another user could swap what lago writes there for links.
        Ok(m) if std::os::unix::fs::MetadataExt::uid(&m) != rustix::process::geteuid().as_raw() => {
            Err(Error::OutputNotOurs {
                path: path.to_path_buf(),
                why: format!(
                    "it belongs to uid {}, not to uid {} running lago",
                    std::os::unix::fs::MetadataExt::uid(&m),
                    rustix::process::geteuid().as_raw()
                ),
            })
        }
        Ok(_) => {
            let holds = crate::host::workdir::contents(path)?;
            if holds.is_empty() {
                Ok(())
            } else {
                Err(Error::OutputNotEmpty {
                    path: path.to_path_buf(),
                    holds,
                })
            }
        }
    }
}

/// Most of a log file `collect` copies (the end is cut beyond it).
const MAX_LOG_BYTES: u64 = 256 << 20;

/// Copies log `from` into a new file `to` (mode 0600; never over an existing
/// file or through a symlink), at most [`MAX_LOG_BYTES`].
fn copy_new(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let src = fs::File::open(from)?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    std::io::copy(&mut src.take(MAX_LOG_BYTES), &mut dst)
}

/// Fetches `vm`'s init-file artifacts into `dir` (which exists), each bounded
/// by `limits`. A VM that is not running, or that timed out once, is not
/// waited on again.
pub(crate) fn fetch_artifacts(vm: &Vm, dir: &Path, limits: &std::result::Result<CopyLimits, SshError>) -> VmCollected {
    let mut out = VmCollected {
        vm: vm.name().to_owned(),
        ..Default::default()
    };
    if vm.spec().artifacts.is_empty() {
        return out;
    }
    let running = vm.state().map(|s| s == VmState::Running).unwrap_or(false);
    let mut gave_up: Option<String> = None;
    for path in &vm.spec().artifacts {
        let why_not = match (limits, running, &gave_up) {
            (Err(e), _, _) => Some(e.to_string()),
            (_, false, _) => Some("the VM is not running".to_owned()),
            (_, _, Some(why)) => Some(why.clone()),
            _ => None,
        };
        let (Ok(limits), None) = (limits, why_not.as_ref()) else {
            out.missing.push(Missing {
                source: path.clone(),
                why: why_not.unwrap_or_default(),
            });
            continue;
        };
        // Two guest paths may map to one name (`/a_b`, `/a/b`): never overwrite.
        let mut local = dir.join(local_name(path));
        let mut n = 2;
        while fs::symlink_metadata(&local).is_ok() {
            local = dir.join(format!("{}.{n}", local_name(path)));
            n += 1;
        }
        match vm.copy_from_with(path, &local, limits) {
            Ok(report) => out.files.push(Collected {
                source: path.clone(),
                path: local,
                bytes: report.bytes,
                skipped: report.skipped.len() as u64 + report.skipped_more,
            }),
            Err(e) => {
                // A guest that timed out once is wedged: do not wait again for each file.
                if matches!(e, Error::Ssh(SshError::Timeout { .. })) {
                    gave_up = Some(format!("an earlier copy from {} timed out", vm.name()));
                }
                out.missing.push(Missing {
                    source: path.clone(),
                    why: error_chain(&e),
                });
            }
        }
    }
    out
}

impl Env {
    /// Gathers the chosen VMs' (`&[]`: all) init-file `artifacts`, their
    /// console logs and the environment's log into `dir`, which must not
    /// exist or be empty (nothing is ever overwritten). VMs are fetched from
    /// in parallel; each file is bounded by the copy limits
    /// (`LAGO_COPY_TIMEOUT`, `LAGO_COPY_MAX_BYTES`). What cannot be fetched
    /// (a missing path, a VM that is down) is listed in the report.
    pub fn collect(&self, dir: impl AsRef<Path>, names: &[&str]) -> Result<CollectReport> {
        let vms = self.select(names)?;
        let dir = std::path::absolute(dir.as_ref()).map_err(|source| Error::Output {
            action: "resolve",
            path: dir.as_ref().to_path_buf(),
            source,
        })?;
        claim_output_dir(&dir)?;
        let limits = CopyLimits::from_env();
        let collected = crate::env::error::map_parallel(
            "collect from",
            &vms,
            |vm| vm.name().to_owned(),
            |vm| {
                let vm_dir = dir.join(vm.name());
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&vm_dir)
                    .map_err(|source| Error::Output {
                        action: "create",
                        path: vm_dir.clone(),
                        source,
                    })?;
                // The console first: an artifact named `/console.log` then gets another name.
                let console = vm_dir.join("console.log");
                let copied = copy_new(vm.console_log(), &console);
                let mut got = fetch_artifacts(vm, &vm_dir, &limits);
                match copied {
                    Ok(bytes) => got.files.insert(
                        0,
                        Collected {
                            source: "console".into(),
                            path: console,
                            bytes,
                            skipped: 0,
                        },
                    ),
                    Err(e) => got.missing.insert(
                        0,
                        Missing {
                            source: "console".into(),
                            why: format!("{}: {e}", vm.console_log().display()),
                        },
                    ),
                }
                tracing::info!(
                    vm = vm.name(),
                    files = got.files.len(),
                    missing = got.missing.len(),
                    "collected"
                );
                Ok(got)
            },
        )?;
        let log = self.workdir().join(crate::host::workdir::LOG_FILE);
        let env_log = copy_new(&log, &dir.join("lago.log")).ok().map(|_| dir.join("lago.log"));
        Ok(CollectReport {
            dir,
            env_log,
            vms: collected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_become_flat_local_names() {
        assert_eq!(local_name("/var/log/messages"), "var_log_messages");
        assert_eq!(local_name("/etc/"), "etc_");
        assert_eq!(local_name("/"), "root");
        assert_eq!(local_name("/.."), "root");
        assert_eq!(local_name("/tmp/a\nb"), "tmp_a_b");
    }

    #[test]
    fn output_dirs_are_new_or_empty() {
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("a/b");
        claim_output_dir(&fresh).unwrap();
        assert!(fresh.is_dir());
        claim_output_dir(&fresh).unwrap();
        fs::write(fresh.join("keep.txt"), "mine").unwrap();
        let err = claim_output_dir(&fresh).unwrap_err();
        assert!(err.is_usage());
        assert!(err.to_string().contains("`keep.txt`"), "{err}");
        let file = fresh.join("keep.txt");
        assert!(
            claim_output_dir(&file)
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
    }

    #[test]
    fn a_link_or_another_users_folder_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        fs::create_dir(&target).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(claim_output_dir(&link), Err(Error::OutputNotOurs { .. })));
        if rustix::process::geteuid().as_raw() != 0 {
            return;
        }
        // As root: an empty folder another user owns (and could plant links in).
        let theirs = t.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        match claim_output_dir(&theirs) {
            Err(Error::OutputNotOurs { why, .. }) => assert!(why.contains("uid 65534"), "{why}"),
            other => panic!("expected OutputNotOurs, got {other:?}"),
        }
    }
}
