//! Who owns an environment's lifetime: a process on a host, recorded so
//! that a sweep (`lago gc`) can tell a live environment from the remains of
//! a crashed run without guessing.
//!
//! An owner is a process id *and* its start time (pids are reused), on a
//! host named by a random id lago keeps for the host's boot ([`host_id`]).
//! Only an owner recorded with this host's id can be proven gone from here:
//! a runner cloned from the same image (same machine id), a container with
//! its own `/run` or process ids, another boot, or a record made by an
//! older lago (no host id) is *elsewhere*: nothing can be said of it.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The file in a workdir that names its owner (environments made by `lago
/// init` or the SDK have none: they live until destroyed).
pub const OWNER_FILE: &str = "owner.json";

/// The process that owns an environment's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its process id; with `start_ticks` it tells a reused pid apart.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was recorded.
    pub boot_id: String,
    /// The host's id ([`host_id`]) when it was recorded (empty: recorded by
    /// an older lago, which did not keep one).
    #[serde(default)]
    pub host_id: String,
    /// `/etc/machine-id`, for people reading the record (clones share it:
    /// it decides nothing).
    #[serde(default)]
    pub machine_id: String,
}

/// What is known of an owner now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs: same host, same boot, and its pid has the recorded start time.
    Alive,
    /// It is provably gone from this host (why).
    Gone(String),
    /// It belongs to another host, container or boot, or its record cannot
    /// say where it runs (why): nothing can be proven from here.
    Elsewhere(String),
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The start time of process `pid` in clock ticks after boot, if it runs.
pub fn start_ticks(pid: u32) -> Option<u64> {
    parse_start_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // Fields from 3 on; the start time is field 22.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This machine's boot id (changes at every boot; empty if unreadable).
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// This machine's `/etc/machine-id` (empty if unreadable; clones share it).
pub fn machine_id() -> String {
    read_trimmed("/etc/machine-id")
}

/// Where the host id is kept: `/run/lago/host-id` (a tmpfs a reboot
/// empties, shared by every user and mount namespace of the host), else,
/// for a user who cannot create that, their runtime folder.
fn host_id_files() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/run/lago/host-id")];
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lago-{}", rustix::process::geteuid().as_raw())));
    out.push(runtime.join("lago/host-id"));
    out
}

/// The id of this host as far as process ids go: a random id made once per
/// boot (kept in `/run/lago/host-id`, else the user's runtime folder) and the process-id
/// namespace. Two processes with the same host id see the same processes;
/// clones of one image, containers and other boots get other ids. Empty
/// when no id can be read or made (nothing is then proven gone).
pub fn host_id() -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let Some(random) = host_id_files().iter().find_map(|f| read_or_make_id(f)) else {
            tracing::warn!("cannot read or make a host id: no environment is proven gone");
            return String::new();
        };
        let pid_ns = fs::read_link("/proc/self/ns/pid")
            .map(|l| {
                l.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        format!("{random}{pid_ns}")
    })
    .clone()
}

/// The id in `file`, made (atomically: of two makers, both read the one
/// that won) when there is none.
fn read_or_make_id(file: &Path) -> Option<String> {
    if let Some(id) = read_id(file) {
        return Some(id);
    }
    let dir = file.parent()?;
    match fs::DirBuilder::new().recursive(true).mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let id = crate::util::random::random_hex(16).ok()?;
    let tmp = dir.join(format!(".host-id-{id}"));
    let made = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(id.as_bytes()))
        .and_then(|()| fs::hard_link(&tmp, file));
    let _ = fs::remove_file(&tmp);
    match made {
        Ok(()) => Some(id),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_id(file),
        Err(_) => None,
    }
}

/// A host id file's content: 32 hex digits in a regular file (never through a link).
fn read_id(file: &Path) -> Option<String> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(file)
        .ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&mut f, 64), &mut text).ok()?;
    let id = text.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

impl Owner {
    /// Process `pid` of this host as an owner, if it runs.
    pub fn of_pid(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id(),
            host_id: host_id(),
            machine_id: machine_id(),
        })
    }

    /// This process as an owner (`None` if its `/proc` entry cannot be read).
    pub fn this_process() -> Option<Owner> {
        Owner::of_pid(std::process::id())
    }

    /// Whether the owner still runs, as far as this host can tell.
    pub fn liveness(&self) -> Liveness {
        self.liveness_on(&host_id(), &boot_id())
    }

    fn liveness_on(&self, host: &str, boot: &str) -> Liveness {
        if self.host_id.is_empty() || host.is_empty() {
            return Liveness::Elsewhere("its record names no host id (an older lago made it)".into());
        }
        if self.host_id != host {
            return Liveness::Elsewhere("its owner ran on another host, container or boot (another host id)".into());
        }
        if self.boot_id != boot {
            return Liveness::Elsewhere("its owner ran before this host's last boot".into());
        }
        match start_ticks(self.pid) {
            Some(t) if t == self.start_ticks => Liveness::Alive,
            Some(_) => Liveness::Gone(format!("process {} ended (its pid is reused)", self.pid)),
            None => Liveness::Gone(format!("process {} ended", self.pid)),
        }
    }

    /// The owner recorded in `workdir`, if any (an unreadable record counts as none).
    pub fn read(workdir: &Path) -> Option<Owner> {
        let text = fs::read_to_string(workdir.join(OWNER_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_gone() {
        let me = Owner::this_process().expect("/proc is readable");
        assert!(me.host_id.len() > 32, "{}", me.host_id);
        assert_eq!(me.liveness(), Liveness::Alive);
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(matches!(reused.liveness(), Liveness::Gone(why) if why.contains("reused")));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner { pid, ..me.clone() };
        assert!(matches!(dead.liveness(), Liveness::Gone(_)));
    }

    #[test]
    fn clones_containers_other_boots_and_old_records_are_elsewhere() {
        let me = Owner::this_process().unwrap();
        let gone_pid = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        // A runner cloned from one image: same machine id, another boot, another host id.
        let clone = Owner {
            host_id: "0123456789abcdef0123456789abcdef4026531836".into(),
            boot_id: "another-boot".into(),
            ..gone_pid.clone()
        };
        assert!(matches!(clone.liveness(), Liveness::Elsewhere(why) if why.contains("another host")));
        // The same host id file after a reboot (a /run that is not a tmpfs).
        let rebooted = Owner {
            boot_id: "another-boot".into(),
            ..gone_pid.clone()
        };
        assert!(matches!(rebooted.liveness(), Liveness::Elsewhere(why) if why.contains("boot")));
        // Recorded by an older lago: no host id.
        let old = Owner {
            host_id: String::new(),
            ..gone_pid.clone()
        };
        assert!(matches!(old.liveness(), Liveness::Elsewhere(why) if why.contains("older")));
        // A host that has no id itself proves nothing either.
        assert!(matches!(gone_pid.liveness_on("", &me.boot_id), Liveness::Elsewhere(_)));
        // Old records (no host_id field) still read.
        let json = r#"{"pid":1,"start_ticks":2,"boot_id":"b","machine_id":"m"}"#;
        let o: Owner = serde_json::from_str(json).unwrap();
        assert!(o.host_id.is_empty());
    }

    #[test]
    fn the_host_id_is_made_once_and_read_by_every_caller() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("run/lago/host-id");
        let ids: Vec<Option<String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| read_or_make_id(&file))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = ids[0].clone().unwrap();
        assert!(ids.iter().all(|i| i.as_deref() == Some(first.as_str())), "{ids:?}");
        assert_eq!(fs::read_to_string(&file).unwrap(), first);
        // A planted link is not read; nor is garbage.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_id(&link), None);
        fs::write(tmp.path().join("junk"), "not an id").unwrap();
        assert_eq!(read_id(&tmp.path().join("junk")), None);
    }

    #[test]
    fn start_times_survive_odd_command_names() {
        let stat = "77 (a b) (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        assert_eq!(parse_start_ticks(stat), Some(4242));
        assert_eq!(parse_start_ticks("77 (x) S 1 2"), None);
        assert_eq!(parse_start_ticks("garbage"), None);
    }
}
