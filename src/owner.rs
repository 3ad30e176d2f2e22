//! Who owns an environment's lifetime: a process on a machine, recorded so
//! that a sweep (`lago gc`) can tell a live environment from the remains of
//! a crashed run without guessing.
//!
//! An owner is a process id *and* its start time (pids are reused), the
//! machine's boot id (after a reboot every old process is gone) and its
//! machine id (a workdir on a shared filesystem may belong to another
//! machine, whose processes we cannot see).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file in a workdir that names its owner (environments made by `lago
/// init` or the SDK have none: they live until destroyed).
pub const OWNER_FILE: &str = "owner.json";

/// The process that owns an environment's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was recorded.
    pub boot_id: String,
    /// `/etc/machine-id` (empty when unknown).
    pub machine_id: String,
}

/// What is known of an owner now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It is provably gone (why).
    Gone(String),
    /// It belongs to another machine: nothing can be said from here.
    Elsewhere,
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

/// This machine's boot id.
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// This machine's id.
pub fn machine_id() -> String {
    read_trimmed("/etc/machine-id")
}

impl Owner {
    /// Process `pid` as an owner, if it runs.
    pub fn of_pid(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id(),
            machine_id: machine_id(),
        })
    }

    /// This process.
    pub fn this_process() -> Option<Owner> {
        Owner::of_pid(std::process::id())
    }

    /// Whether the owner still runs, as far as this machine can tell.
    pub fn liveness(&self) -> Liveness {
        let here = machine_id();
        if !self.machine_id.is_empty() && !here.is_empty() && self.machine_id != here {
            return Liveness::Elsewhere;
        }
        if self.boot_id != boot_id() {
            return Liveness::Gone("the machine rebooted since".into());
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
        let rebooted = Owner {
            boot_id: "another-boot".into(),
            ..me.clone()
        };
        assert!(matches!(rebooted.liveness(), Liveness::Gone(why) if why.contains("rebooted")));
        let foreign = Owner {
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            ..me
        };
        if !machine_id().is_empty() {
            assert_eq!(foreign.liveness(), Liveness::Elsewhere);
        }
    }

    #[test]
    fn start_times_survive_odd_command_names() {
        let stat = "77 (a b) (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        assert_eq!(parse_start_ticks(stat), Some(4242));
        assert_eq!(parse_start_ticks("77 (x) S 1 2"), None);
        assert_eq!(parse_start_ticks("garbage"), None);
    }
}
