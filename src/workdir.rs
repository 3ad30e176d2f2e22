//! The workdir: taken only when it is new or empty, and cleaned of only what
//! lago put there.
//!
//! `init` refuses a folder that holds anything (a project, `~/.ssh`, …) with
//! an error naming it and what it holds. Claiming creates the env-id file
//! exclusively, so two `init`s on one folder cannot both proceed. Removal
//! deletes lago's own entries ([`ENTRIES`]) and then the folder itself only
//! when lago created it (a marker says so) and nothing else is left in it.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::lease::OWNER_ID_FILE;
use crate::plan::EnvId;

/// The state file in a workdir.
pub const STATE_FILE: &str = "env.json";
/// The environment's SSH client key.
pub(crate) const CLIENT_KEY: &str = "id_ed25519";
/// Present when lago created the workdir folder itself (so destroy may remove it).
const CREATED_MARKER: &str = ".lago-created-this-folder";

/// Host keys learned from machines lago did not create (`vm-provider: ssh`).
pub(crate) const KNOWN_HOSTS_DIR: &str = "known_hosts";

/// The test harness's "keep this environment" marker (`LAGO_KEEP`).
pub(crate) const KEEP_MARKER: &str = ".lago-keep";

/// Everything lago may create in a workdir; nothing else is ever removed.
pub const ENTRIES: &[&str] = &[
    KEEP_MARKER,
    crate::owner::OWNER_FILE,
    OWNER_ID_FILE,
    STATE_FILE,
    CLIENT_KEY,
    "id_ed25519.pub",
    "images",
    "seeds",
    "logs",
    KNOWN_HOSTS_DIR,
    crate::inventory::KNOWN_HOSTS_FILE,
    crate::snapshot::SNAPSHOTS_DIR,
    CREATED_MARKER,
];

/// A name for a file or volume lago makes from names it was given: letters,
/// digits and `-_.` kept, anything else `_`.
pub fn plain_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Workdir { action, path, source }
}

/// What a folder holds, for the "not empty" error: a few names and the count.
pub(crate) fn contents(path: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(path)
        .map_err(io_err("read", path))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Checks, without writing, that `path` can become a new workdir: it does
/// not exist, or it is an empty folder.
pub(crate) fn check_free(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("inspect", path)(e)),
        Ok(m) if !m.is_dir() => Err(Error::WorkdirNotEmpty {
            path: path.to_path_buf(),
            holds: vec!["(it is a file, not a folder)".into()],
        }),
        Ok(_) => {
            let names = contents(path)?;
            if names.iter().any(|n| n == OWNER_ID_FILE || n == STATE_FILE) {
                return Err(Error::WorkdirExists {
                    path: path.to_path_buf(),
                });
            }
            if names.is_empty() {
                Ok(())
            } else {
                Err(Error::WorkdirNotEmpty {
                    path: path.to_path_buf(),
                    holds: names,
                })
            }
        }
    }
}

/// A workdir this process claimed for a new environment.
#[derive(Debug)]
pub(crate) struct Claim {
    pub path: PathBuf,
    created: bool,
}

/// Creates (or takes, when empty) `path` as the workdir of `env_id`, mode
/// 0700, with its `images`, `seeds` and `logs` folders. The env-id file is
/// created exclusively: of two claims on one folder, one fails with
/// [`Error::WorkdirExists`]. On failure nothing is left that this call made.
pub(crate) fn claim(path: &Path, env_id: &EnvId) -> Result<Claim> {
    check_free(path)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let created = match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => true,
        // Made by someone else since the check: take it only if it is still empty.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            check_free(path)?;
            false
        }
        Err(e) => return Err(io_err("create", path)(e)),
    };
    let id_path = path.join(OWNER_ID_FILE);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&id_path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, env_id.as_str().as_bytes()));
    if let Err(e) = written {
        if created {
            let _ = fs::remove_dir(path);
        }
        return Err(match e.kind() {
            ErrorKind::AlreadyExists => Error::WorkdirExists {
                path: path.to_path_buf(),
            },
            _ => io_err("write", &id_path)(e),
        });
    }
    // From here on the folder is ours: a failure removes what we made.
    let claim = Claim {
        path: path.to_path_buf(),
        created,
    };
    let setup = || -> Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", path))?;
        if created {
            fs::write(path.join(CREATED_MARKER), "").map_err(io_err("write", &path.join(CREATED_MARKER)))?;
        }
        for d in ["images", "seeds", "logs"] {
            let dir = path.join(d);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(io_err("create", &dir))?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        claim.undo();
        return Err(e);
    }
    Ok(claim)
}

impl Claim {
    /// Removes what the claim made (rollback of a failed init).
    pub(crate) fn undo(&self) {
        if let Err(e) = remove(&self.path) {
            tracing::warn!(error = %crate::error_chain(&e), workdir = %self.path.display(), "rollback: cleaning the workdir failed");
        }
        // Without the marker (when it could not be written) the folder is still ours.
        if self.created {
            let _ = fs::remove_dir(&self.path);
        }
    }
}

/// Removes lago's entries from the workdir `path`, then the folder itself
/// when lago created it and nothing else is in it. Anything else in it is
/// kept (and named in the log). A missing folder is not an error.
pub(crate) fn remove(path: &Path) -> Result<()> {
    let created = path.join(CREATED_MARKER).exists();
    for name in ENTRIES {
        let p = path.join(name);
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("inspect", &p)(e)),
        };
        let removed = if meta.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p)(e)),
        }
    }
    if !created {
        return Ok(());
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
            let left = contents(path).unwrap_or_default();
            tracing::warn!(workdir = %path.display(), ?left, "kept the workdir: it holds files lago did not create");
            Ok(())
        }
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EnvId {
        EnvId::new("abcd1234").unwrap()
    }

    #[test]
    fn a_folder_with_anything_in_it_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        match claim(tmp.path(), &id()) {
            Err(Error::WorkdirNotEmpty { path, holds }) => {
                assert_eq!(path, tmp.path());
                assert_eq!(holds, ["keep.txt"]);
            }
            other => panic!("expected WorkdirNotEmpty, got {other:?}"),
        }
        assert_eq!(contents(tmp.path()).unwrap(), ["keep.txt"]);
        assert_eq!(fs::read_to_string(tmp.path().join("keep.txt")).unwrap(), "mine");
    }

    #[test]
    fn a_file_is_not_a_workdir() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "x").unwrap();
        assert!(matches!(claim(&f, &id()), Err(Error::WorkdirNotEmpty { .. })));
        assert_eq!(fs::read_to_string(&f).unwrap(), "x");
    }

    #[test]
    fn an_existing_empty_folder_is_cleaned_but_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let c = claim(tmp.path(), &id()).unwrap();
        assert!(!c.created);
        fs::write(tmp.path().join("images/disk.qcow2"), "x").unwrap();
        remove(tmp.path()).unwrap();
        assert!(tmp.path().is_dir(), "a folder lago did not create stays");
        assert!(contents(tmp.path()).unwrap().is_empty());
    }

    #[test]
    fn a_folder_lago_created_goes_unless_the_user_put_files_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().join("a/b/env");
        let c = claim(&w, &id()).unwrap();
        assert!(c.created);
        assert_eq!(fs::metadata(&w).unwrap().permissions().mode() & 0o777, 0o700);
        remove(&w).unwrap();
        assert!(!w.exists());

        claim(&w, &id()).unwrap();
        fs::write(w.join("notes.txt"), "mine").unwrap();
        remove(&w).unwrap();
        assert_eq!(contents(&w).unwrap(), ["notes.txt"]);
    }

    #[test]
    fn two_claims_on_one_folder_cannot_both_win() {
        let tmp = tempfile::tempdir().unwrap();
        claim(tmp.path(), &id()).unwrap();
        assert!(matches!(claim(tmp.path(), &id()), Err(Error::WorkdirExists { .. })));
        // Racing claims: exactly one wins.
        let w = tmp.path().join("race");
        let wins: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| claim(&w, &id()).is_ok())).collect();
            hs.into_iter().map(|h| usize::from(h.join().unwrap_or(false))).sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn undo_leaves_a_folder_it_did_not_create() {
        let tmp = tempfile::tempdir().unwrap();
        claim(tmp.path(), &id()).unwrap().undo();
        assert!(tmp.path().is_dir());
        assert!(contents(tmp.path()).unwrap().is_empty());
        let w = tmp.path().join("new");
        claim(&w, &id()).unwrap().undo();
        assert!(!w.exists());
    }

    #[test]
    fn a_symlinked_entry_is_unlinked_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "x").unwrap();
        let w = tmp.path().join("env");
        claim(&w, &id()).unwrap();
        fs::remove_dir(w.join("logs")).unwrap();
        std::os::unix::fs::symlink(&outside, w.join("logs")).unwrap();
        remove(&w).unwrap();
        assert_eq!(fs::read_to_string(outside.join("precious")).unwrap(), "x");
    }
}
