//! The workdir: taken only when it is new or empty and owned by the user
//! running lago, worked in only through an open handle on it, and cleaned
//! of only what lago put there.
//!
//! `init` refuses a folder that holds anything (a project, `~/.ssh`, …) with
//! an error naming it and what it holds, and a folder of another user (who
//! could plant links in it). Claiming creates the env-id file exclusively,
//! so two `init`s on one folder cannot both proceed.
//!
//! Every file lago makes or removes in a workdir is reached from an open
//! handle on the folder ([`Dir`]: `openat` with `O_NOFOLLOW`, component by
//! component), never through a link: a link planted where lago writes makes
//! the write fail, a link where lago removes is unlinked, not followed, and
//! a workdir swapped for a link (or a folder of another user) is refused.
//! Removal deletes lago's own entries ([`ENTRIES`]) and then the folder
//! itself only when lago created it (a marker says so) and nothing else is
//! left in it.

use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::plan::EnvId;

/// Why a workdir could not be made, used or cleaned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkdirError {
    /// A workdir file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder the action was on.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The workdir already holds an environment.
    #[error("workdir {} already holds an environment (destroy it first: lago -w {} destroy --yes)", path.display(), path.display())]
    Exists {
        /// The folder given, which already has an `env-id` or `env.json`.
        path: PathBuf,
    },
    /// The folder given as a new workdir holds files.
    #[error("workdir {} is not empty (it holds {}); lago takes only a new or empty folder as a workdir, so that destroy never removes anything lago did not create: give another one with -w", path.display(), some_names(holds))]
    NotEmpty {
        /// The folder given as the new workdir.
        path: PathBuf,
        /// The names of its entries, or a note that it is a file.
        holds: Vec<String>,
    },
    /// A link, or a folder of another user.
    #[error("workdir {}: {why}; lago works only in a folder it made, or an empty one you own, and never through a link", path.display())]
    NotOurs {
        /// The workdir path as given (lago does not follow it if it is a link).
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
}

type Result<T> = std::result::Result<T, WorkdirError>;

/// A few of `names`, and how many more there are.
pub(crate) fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

/// The file that holds the env id: a lease is live while it exists and
/// names the lease's env id.
pub const OWNER_ID_FILE: &str = "env-id";

/// An OpenSSH known_hosts file with every VM's pinned host key (`lago ssh-config`).
pub const KNOWN_HOSTS_FILE: &str = "ssh_known_hosts";

/// Snapshots' metadata (and raw disks' copies).
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";

/// lago's log of the environment, relative to the workdir.
pub(crate) const LOG_FILE: &str = "logs/lago.log";

/// The environment's saved state (JSON: its spec, plan, libvirt URI, XML and host keys).
pub const STATE_FILE: &str = "env.json";
/// The private key lago logs in to the VMs with (OpenSSH format, mode 0600).
pub(crate) const CLIENT_KEY: &str = "id_ed25519";

/// How each VM came up at the environment's last start (`restored` or `booted`).
pub(crate) const BOOTED_FILE: &str = "booted.json";
/// Present when lago created the workdir folder itself (so destroy may remove it).
const CREATED_MARKER: &str = ".lago-created-this-folder";

/// Host keys learned from machines lago did not create (`vm-provider: ssh`).
pub(crate) const KNOWN_HOSTS_DIR: &str = "known_hosts";

/// The test harness's "keep this environment" marker (`LAGO_KEEP`).
pub(crate) const KEEP_MARKER: &str = ".lago-keep";

/// The folders the test harness makes around its workdirs (`<tmp>/lago-test-XXXXXX/env`).
pub(crate) const TEST_DIR_PREFIX: &str = "lago-test-";

/// The file, beside a harness workdir, holding the token its reaper must be handed.
pub(crate) const REAPER_TOKEN: &str = "reaper-token";

/// Removes the (empty) folder the test harness made around `workdir`, if it is one.
pub(crate) fn remove_test_dir(workdir: &Path) {
    let Some(parent) = workdir.parent() else { return };
    let ours = workdir.file_name().is_some_and(|n| n == "env")
        && parent
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEST_DIR_PREFIX));
    if ours {
        let _ = fs::remove_file(parent.join(REAPER_TOKEN));
        let _ = fs::remove_dir(parent);
    }
}

/// Files of a nextest run's meeting folder (beside its shared workdir `env`).
pub(crate) const MEETING_FILES: [&str; 5] = ["outcome", "boot.lock", "boots", "use.lock", REAPER_TOKEN];

/// Removes a nextest run's meeting folder for one init file (its lock and
/// outcome files), and the run's folder when that was the last one. What
/// else is in them (a workdir that could not be removed) stays.
pub(crate) fn remove_meeting_dir(dir: &Path) {
    for f in MEETING_FILES {
        let _ = fs::remove_file(dir.join(f));
    }
    let _ = fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = fs::remove_dir(parent);
    }
}

/// The meeting folder a shared workdir is in, if it is one.
pub(crate) fn meeting_dir_of(workdir: &Path) -> Option<&Path> {
    let dir = workdir.parent()?;
    let run = dir.parent()?.file_name()?.to_str()?;
    (workdir.file_name()? == "env" && run.starts_with(MEETING_PREFIX)).then_some(dir)
}

/// The folder of a nextest run's meeting folders (`<tmp>/lago-nextest-<run>`).
pub(crate) const MEETING_PREFIX: &str = "lago-nextest-";

/// Everything lago may create in a workdir; nothing else is ever removed.
pub const ENTRIES: &[&str] = &[
    KEEP_MARKER,
    crate::host::owner::OWNER_FILE,
    OWNER_ID_FILE,
    STATE_FILE,
    CLIENT_KEY,
    "id_ed25519.pub",
    "images",
    "seeds",
    "logs",
    KNOWN_HOSTS_DIR,
    KNOWN_HOSTS_FILE,
    SNAPSHOTS_DIR,
    BOOTED_FILE,
    CREATED_MARKER,
];

pub use crate::util::text::plain_name;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkdirError + use<> {
    let path = path.to_path_buf();
    move |source| WorkdirError::Io { action, path, source }
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
        Ok(m) if m.file_type().is_symlink() => Err(WorkdirError::NotOurs {
            path: path.to_path_buf(),
            why: "it is a symbolic link".into(),
        }),
        Ok(m) if !m.is_dir() => Err(WorkdirError::NotEmpty {
            path: path.to_path_buf(),
            holds: vec!["(it is a file, not a folder)".into()],
        }),
        Ok(_) => {
            let names = contents(path)?;
            if names.iter().any(|n| n == OWNER_ID_FILE || n == STATE_FILE) {
                return Err(WorkdirError::Exists {
                    path: path.to_path_buf(),
                });
            }
            if names.is_empty() {
                Ok(())
            } else {
                Err(WorkdirError::NotEmpty {
                    path: path.to_path_buf(),
                    holds: names,
                })
            }
        }
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// An open workdir: what lago makes, reads and removes in it is reached
/// from this handle, one component at a time, never through a link.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
    fd: OwnedFd,
}

/// `rel`'s components, when it is a plain relative path (no `..`, no root).
fn components(rel: &Path) -> std::io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                "not a plain path inside the workdir",
            )),
        })
        .collect()
}

fn open_dir_at<Fd: AsFd>(at: Fd, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        at,
        name.as_bytes(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

impl Dir {
    /// Opens the workdir `path`: a folder (not a link) owned by the user
    /// running lago.
    pub(crate) fn open(path: &Path) -> Result<Dir> {
        let fd = open_dir_at(rustix::fs::CWD, path.as_os_str()).map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error())
            {
                WorkdirError::NotOurs {
                    path: path.to_path_buf(),
                    why: "it is a symbolic link or not a folder".into(),
                }
            } else {
                io_err("open", path)(e)
            }
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err("inspect", path)(e.into()))?;
        if st.st_uid != euid() {
            return Err(WorkdirError::NotOurs {
                path: path.to_path_buf(),
                why: format!("it belongs to uid {}, not to uid {} running lago", st.st_uid, euid()),
            });
        }
        Ok(Dir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The path the workdir was opened by, as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding `rel`'s last component, opened component by
    /// component (each `O_NOFOLLOW`), and that component.
    fn parent_of<'a>(&self, rel: &'a Path) -> std::io::Result<(Option<OwnedFd>, &'a OsStr)> {
        let parts = components(rel)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(std::io::Error::new(ErrorKind::InvalidInput, "an empty path"));
        };
        let mut at: Option<OwnedFd> = None;
        for d in dirs {
            let next = match &at {
                Some(fd) => open_dir_at(fd, d)?,
                None => open_dir_at(&self.fd, d)?,
            };
            at = Some(next);
        }
        Ok((at, last))
    }

    /// Creates the new file `rel` (never an existing one, never through a
    /// link) with `mode` and `data`. `rel` may be absolute when it is
    /// inside the workdir (as the plan's paths are).
    pub(crate) fn write_new(&self, rel: &Path, data: &[u8], mode: u32) -> Result<()> {
        let shown = self.path.join(rel);
        let rel = rel.strip_prefix(&self.path).unwrap_or(rel);
        let made = (|| -> std::io::Result<()> {
            let (at, name) = self.parent_of(rel)?;
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mode = Mode::from_raw_mode(mode);
            let fd = match &at {
                Some(fd) => rustix::fs::openat(fd, name.as_bytes(), flags, mode)?,
                None => rustix::fs::openat(&self.fd, name.as_bytes(), flags, mode)?,
            };
            let mut f = fs::File::from(fd);
            // The umask may have taken bits away; the mode is what was asked for.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode.as_raw_mode()))?;
            f.write_all(data)?;
            f.sync_all()
        })();
        made.map_err(io_err("write", &shown))
    }

    /// Creates the folder `rel` (mode 0700), never through a link.
    pub(crate) fn mkdir(&self, rel: &Path) -> Result<()> {
        let shown = self.path.join(rel);
        let made = (|| -> std::io::Result<()> {
            let (at, name) = self.parent_of(rel)?;
            let mode = Mode::from_raw_mode(0o700);
            match &at {
                Some(fd) => rustix::fs::mkdirat(fd, name.as_bytes(), mode)?,
                None => rustix::fs::mkdirat(&self.fd, name.as_bytes(), mode)?,
            }
            Ok(())
        })();
        made.map_err(io_err("create", &shown))
    }

    /// Writes file `rel` whole, replacing it if it exists: a new file is
    /// written beside it, then renamed over it (never through a link).
    pub(crate) fn replace(&self, rel: &Path, data: &[u8], mode: u32) -> Result<()> {
        let shown = self.path.join(rel);
        let rel = rel.strip_prefix(&self.path).unwrap_or(rel);
        let tag = crate::util::random::random_hex(4).map_err(io_err("write", &shown))?;
        let tmp_name = format!(".{}.{tag}", rel.file_name().unwrap_or_default().to_string_lossy());
        let tmp = rel.with_file_name(&tmp_name);
        self.write_new(&tmp, data, mode)?;
        let moved = (|| -> std::io::Result<()> {
            let (at, name) = self.parent_of(rel)?;
            let at = at.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            rustix::fs::renameat(at, tmp_name.as_str(), at, name.as_bytes())?;
            Ok(())
        })();
        if moved.is_err() {
            let _ = self.remove_file(&tmp);
        }
        moved.map_err(io_err("replace", &shown))
    }

    /// Removes file `rel` (a link itself, never what it points to); a missing one is fine.
    pub(crate) fn remove_file(&self, rel: &Path) -> Result<()> {
        let shown = self.path.join(rel);
        let rel = rel.strip_prefix(&self.path).unwrap_or(rel);
        let gone = (|| -> std::io::Result<()> {
            let (at, name) = self.parent_of(rel)?;
            let at = at.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            match rustix::fs::unlinkat(at, name.as_bytes(), AtFlags::empty()) {
                Err(rustix::io::Errno::NOENT) => Ok(()),
                r => r.map_err(Into::into),
            }
        })();
        gone.map_err(io_err("remove", &shown))
    }

    /// The bytes of file `rel` (at most `max`), never through a link.
    pub(crate) fn read(&self, rel: &Path, max: u64) -> std::io::Result<Vec<u8>> {
        let (at, name) = self.parent_of(rel)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match &at {
            Some(fd) => rustix::fs::openat(fd, name.as_bytes(), flags, Mode::empty())?,
            None => rustix::fs::openat(&self.fd, name.as_bytes(), flags, Mode::empty())?,
        };
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(fs::File::from(fd), max), &mut out)?;
        Ok(out)
    }

    /// Whether entry `name` (of the workdir itself) exists, as anything.
    pub(crate) fn has(&self, name: &str) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// The env id the workdir holds, if it holds one.
    pub(crate) fn env_id(&self) -> Option<String> {
        self.read(Path::new(OWNER_ID_FILE), 64)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    }

    /// Removes entry `name` of the workdir: a file or link is unlinked (a
    /// link is never followed), a folder removed with everything in it.
    fn remove_entry(&self, name: &str) -> std::io::Result<()> {
        remove_at(&self.fd, OsStr::new(name))
    }
}

/// Removes `name` in the folder `at`: unlinked when it is not a folder,
/// else emptied (recursively, through handles) and removed.
fn remove_at(at: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let st = match rustix::fs::statat(at, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return ok_if_gone(rustix::fs::unlinkat(at, name.as_bytes(), AtFlags::empty()));
    }
    let dir = open_dir_at(at, name)?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        remove_at(&dir, &n)?;
    }
    ok_if_gone(rustix::fs::unlinkat(at, name.as_bytes(), AtFlags::REMOVEDIR))
}

fn ok_if_gone(r: rustix::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => Ok(r?),
    }
}

/// A workdir this process claimed for a new environment.
#[derive(Debug)]
pub(crate) struct Claim {
    /// The workdir, open, with its `env-id` file written.
    pub dir: Dir,
    created: bool,
}

/// Creates (or takes, when empty and owned by the user running lago)
/// `path` as the workdir of `env_id`, mode 0700, with its `images`, `seeds`
/// and `logs` folders. The env-id file is created exclusively: of two
/// claims on one folder, one fails with [`WorkdirError::Exists`]. On
/// failure nothing is left that this call made.
pub(crate) fn claim(path: &Path, env_id: &EnvId) -> Result<Claim> {
    check_free(path)?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    let created = match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => true,
        // Made by someone else since the check: take it only if it is still empty (and ours).
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            check_free(path)?;
            false
        }
        Err(e) => return Err(io_err("create", path)(e)),
    };
    let dir = match Dir::open(path) {
        Ok(d) => d,
        Err(e) => {
            if created {
                let _ = fs::remove_dir(path);
            }
            return Err(e);
        }
    };
    if let Err(e) = dir.write_new(Path::new(OWNER_ID_FILE), env_id.as_str().as_bytes(), 0o600) {
        if created {
            let _ = fs::remove_dir(path);
        }
        return Err(match e {
            WorkdirError::Io { source, .. } if source.kind() == ErrorKind::AlreadyExists => WorkdirError::Exists {
                path: path.to_path_buf(),
            },
            e => e,
        });
    }
    // From here on the folder is ours: a failure removes what we made.
    let claim = Claim { dir, created };
    let setup = || -> Result<()> {
        rustix::fs::fchmod(&claim.dir.fd, Mode::from_raw_mode(0o700)).map_err(|e| io_err("chmod", path)(e.into()))?;
        if created {
            claim.dir.write_new(Path::new(CREATED_MARKER), b"", 0o600)?;
        }
        for d in ["images", "seeds", "logs"] {
            claim.dir.mkdir(Path::new(d))?;
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
        if let Err(e) = remove_in(&self.dir) {
            tracing::warn!(error = %crate::util::text::error_chain(&e), workdir = %self.dir.path().display(), "rollback: cleaning the workdir failed");
        }
        // Without the marker (when it could not be written) the folder is still ours.
        if self.created {
            let _ = fs::remove_dir(self.dir.path());
        }
    }
}

/// Removes lago's entries from the workdir `path` (which must hold env
/// `env_id`, when given, or none), then the folder itself when lago created
/// it and nothing else is in it. Anything else in it is kept (and named in
/// the log). A missing folder is not an error; a link, a folder of another
/// user or one holding another environment is refused, untouched.
pub(crate) fn remove(path: &Path, env_id: Option<&EnvId>) -> Result<()> {
    let dir = match Dir::open(path) {
        Ok(d) => d,
        Err(WorkdirError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if let (Some(id), Some(held)) = (env_id, dir.env_id())
        && held != id.as_str()
    {
        return Err(WorkdirError::NotOurs {
            path: path.to_path_buf(),
            why: format!("it holds environment {held}, not {id} (it was moved or replaced)"),
        });
    }
    remove_in(&dir)
}

fn remove_in(dir: &Dir) -> Result<()> {
    let created = dir.has(CREATED_MARKER);
    for name in ENTRIES {
        dir.remove_entry(name)
            .map_err(io_err("remove", &dir.path().join(name)))?;
    }
    if !created {
        return Ok(());
    }
    let path = dir.path();
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
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn id() -> EnvId {
        EnvId::new("abcd1234").unwrap()
    }

    #[test]
    fn a_folder_with_anything_in_it_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        match claim(tmp.path(), &id()) {
            Err(WorkdirError::NotEmpty { path, holds }) => {
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
        assert!(matches!(claim(&f, &id()), Err(WorkdirError::NotEmpty { .. })));
        assert_eq!(fs::read_to_string(&f).unwrap(), "x");
    }

    #[test]
    fn an_existing_empty_folder_is_cleaned_but_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let c = claim(tmp.path(), &id()).unwrap();
        assert!(!c.created);
        fs::write(tmp.path().join("images/disk.qcow2"), "x").unwrap();
        remove(tmp.path(), Some(&id())).unwrap();
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
        remove(&w, Some(&id())).unwrap();
        assert!(!w.exists());

        claim(&w, &id()).unwrap();
        fs::write(w.join("notes.txt"), "mine").unwrap();
        remove(&w, Some(&id())).unwrap();
        assert_eq!(contents(&w).unwrap(), ["notes.txt"]);
    }

    #[test]
    fn two_claims_on_one_folder_cannot_both_win() {
        let tmp = tempfile::tempdir().unwrap();
        claim(tmp.path(), &id()).unwrap();
        assert!(matches!(claim(tmp.path(), &id()), Err(WorkdirError::Exists { .. })));
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

    /// A victim's files outside the workdir, to point links at.
    fn victim(tmp: &Path) -> PathBuf {
        let v = tmp.join("victim");
        fs::create_dir_all(v.join("sub")).unwrap();
        fs::write(v.join("precious"), "x").unwrap();
        fs::write(v.join("sub/precious"), "y").unwrap();
        v
    }

    fn victim_intact(v: &Path) {
        assert_eq!(fs::read_to_string(v.join("precious")).unwrap(), "x");
        assert_eq!(fs::read_to_string(v.join("sub/precious")).unwrap(), "y");
    }

    #[test]
    fn a_link_planted_at_any_entry_is_never_written_through_nor_followed_on_removal() {
        let tmp = tempfile::tempdir().unwrap();
        let v = victim(tmp.path());
        for name in ENTRIES {
            let w = tmp.path().join(format!("env-{name}"));
            let c = claim(&w, &id()).unwrap();
            let _ = c.dir.remove_entry(name);
            // A folder entry points at a folder, a file entry at a file.
            let target = if ["images", "seeds", "logs", KNOWN_HOSTS_DIR, SNAPSHOTS_DIR].contains(name) {
                v.join("sub")
            } else {
                v.join("precious")
            };
            symlink(&target, w.join(name)).unwrap();
            // Writing there fails (it exists), and writing beneath it fails (a link is not a folder).
            assert!(c.dir.write_new(Path::new(name), b"evil", 0o600).is_err(), "{name}");
            assert!(
                c.dir.write_new(&Path::new(name).join("f"), b"evil", 0o600).is_err(),
                "{name}"
            );
            assert!(c.dir.read(Path::new(name), 100).is_err(), "{name}: read through a link");
            remove(&w, Some(&id())).unwrap();
            assert!(
                fs::symlink_metadata(w.join(name)).is_err(),
                "{name}: the link itself goes"
            );
            victim_intact(&v);
        }
        assert!(fs::symlink_metadata(&v).unwrap().is_dir());
    }

    #[test]
    fn a_workdir_swapped_for_a_link_or_another_env_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let v = victim(tmp.path());
        fs::write(v.join(CLIENT_KEY), "the user's own key").unwrap();
        let w = tmp.path().join("env");
        claim(&w, &id()).unwrap();
        // Swapped for a link to the user's ~/.ssh-like folder before destroy.
        fs::rename(&w, tmp.path().join("moved")).unwrap();
        symlink(&v, &w).unwrap();
        assert!(matches!(remove(&w, Some(&id())), Err(WorkdirError::NotOurs { .. })));
        assert!(matches!(Dir::open(&w), Err(WorkdirError::NotOurs { .. })));
        victim_intact(&v);
        assert_eq!(fs::read_to_string(v.join(CLIENT_KEY)).unwrap(), "the user's own key");
        // Replaced by a folder holding another environment: refused too.
        fs::remove_file(&w).unwrap();
        claim(&w, &EnvId::new("other").unwrap()).unwrap();
        assert!(matches!(remove(&w, Some(&id())), Err(WorkdirError::NotOurs { .. })));
        assert!(w.join(OWNER_ID_FILE).exists());
        // The one it was moved to is still removed as usual.
        remove(&tmp.path().join("moved"), Some(&id())).unwrap();
        assert!(!tmp.path().join("moved").exists());
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        if euid() != 0 {
            eprintln!("skipped: needs root to give a folder to another uid");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        match claim(&theirs, &id()) {
            Err(WorkdirError::NotOurs { why, .. }) => assert!(why.contains("uid 65534"), "{why}"),
            other => panic!("expected WorkdirNotOurs, got {other:?}"),
        }
        assert!(contents(&theirs).unwrap().is_empty(), "nothing written into it");
    }
}
