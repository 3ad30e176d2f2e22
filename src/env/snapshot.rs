//! Snapshots of a running environment, and reverting to them (Lago's
//! `snapshot` / `revert`).
//!
//! A VM whose writable disks are all qcow2 gets a libvirt **internal**
//! snapshot of its disks *and memory* (the read-only seed and CD-ROMs are
//! left out): reverting restores the running guest as it was, services up,
//! in a couple of seconds. Afterwards the guest clock is set to the host's
//! time (over SSH) and the SSH session reconnects by itself.
//!
//! A VM with a writable raw disk cannot carry a memory snapshot (QEMU
//! snapshots live inside qcow2 images): its disks are copied while it is
//! paused instead (crash-consistent), and reverting copies them back and
//! boots it again. The log says which VMs take this slower path.
//!
//! Snapshots are refused for disks lago did not create (`type: file` disks
//! used in place, without `make_a_copy`): reverting would write into them.
//! They live as long as the VMs run: stopping a VM drops its snapshots (its
//! domain is transient).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::VmState;
use crate::env::Env;
use crate::env::error::{Error, Result, for_each_parallel};
use crate::env::vm::Vm;
use lago_config::{DiskFormat, DiskSource};

pub(crate) use crate::host::workdir::SNAPSHOTS_DIR;

/// How a VM's state was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    /// libvirt internal snapshot: disks and memory.
    Memory,
    /// Disk copies taken while paused; reverting boots the VM again.
    Disk,
}

/// A snapshot's record in the workdir.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name as given; the record is `snapshots/<name>.json` in the workdir.
    pub name: String,
    /// When it was taken (seconds since the Unix epoch).
    pub taken_unix: u64,
    /// How each VM was saved.
    pub vms: BTreeMap<String, SnapshotKind>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Workdir { action, path, source }
}

impl Vm {
    /// Disks a snapshot would have to write into although lago did not create them.
    fn foreign_disks(&self) -> Vec<PathBuf> {
        self.plan
            .disks
            .iter()
            .filter(|d| matches!(d.source, DiskSource::File { make_a_copy: false, .. }) && d.format != DiskFormat::Iso)
            .map(|d| d.path.clone())
            .collect()
    }

    fn snapshot_kind(&self) -> SnapshotKind {
        if self.plan.disks.iter().any(|d| d.format == DiskFormat::Raw) {
            SnapshotKind::Disk
        } else {
            SnapshotKind::Memory
        }
    }

    /// Read-only disks left out of a memory snapshot: the seed and CD-ROMs.
    fn read_only_targets(&self) -> Vec<String> {
        let mut skip: Vec<String> = self
            .plan
            .disks
            .iter()
            .filter(|d| d.format == DiskFormat::Iso)
            .map(|d| d.dev.clone())
            .collect();
        if self.plan.seed.is_some() {
            skip.push(crate::backend::xml::free_virtio_dev(&self.plan));
        }
        skip
    }

    fn copies_dir(&self, workdir: &Path, name: &str) -> PathBuf {
        workdir.join(SNAPSHOTS_DIR).join(name).join(self.name())
    }

    fn take_snapshot(&self, workdir: &Path, name: &str) -> Result<SnapshotKind> {
        let kind = self.snapshot_kind();
        match kind {
            SnapshotKind::Memory => {
                let disks: Vec<String> = self
                    .plan
                    .disks
                    .iter()
                    .filter(|d| d.format == DiskFormat::Qcow2)
                    .map(|d| d.dev.clone())
                    .collect();
                self.backend
                    .snapshot_domain(&self.plan.libvirt_name, name, &disks, &self.read_only_targets())?;
            }
            SnapshotKind::Disk => {
                tracing::warn!(vm = %self.name(), "a raw disk cannot carry a memory snapshot: copying the disks while paused (reverting boots the VM again)");
                let dir = self.copies_dir(workdir, name);
                fs::create_dir_all(&dir).map_err(io("create", &dir))?;
                self.backend.pause_domain(&self.plan.libvirt_name, true)?;
                let copied = self.copy_disks(|d| (d.path.clone(), dir.join(&d.name)));
                self.backend.pause_domain(&self.plan.libvirt_name, false)?;
                copied?;
            }
        }
        Ok(kind)
    }

    /// Copies each writable disk from/to the paths `ends` gives.
    fn copy_disks(&self, ends: impl Fn(&crate::plan::DiskPlan) -> (PathBuf, PathBuf)) -> Result<()> {
        for d in self.plan.disks.iter().filter(|d| d.format != DiskFormat::Iso) {
            let (from, to) = ends(d);
            crate::util::cmd::run(
                std::process::Command::new("cp")
                    .args(["--sparse=always", "--reflink=auto", "-f", "--"])
                    .arg(&from)
                    .arg(&to),
            )
            .map_err(|source| Error::SnapshotCopy {
                vm: self.name().to_owned(),
                source,
            })?;
        }
        Ok(())
    }

    fn revert_to(&self, workdir: &Path, name: &str, kind: SnapshotKind) -> Result<()> {
        let start = Instant::now();
        match kind {
            SnapshotKind::Memory => {
                self.backend.revert_domain(&self.plan.libvirt_name, name)?;
                // The guest's TCP state is the snapshot's: start a new session.
                self.conn.reset();
                self.set_clock();
            }
            SnapshotKind::Disk => {
                let dir = self.copies_dir(workdir, name);
                self.stop()?;
                self.copy_disks(|d| (dir.join(&d.name), d.path.clone()))?;
                self.start()?;
            }
        }
        tracing::info!(vm = %self.name(), ms = start.elapsed().as_millis() as u64, ?kind, "reverted");
        Ok(())
    }

    /// Sets the guest clock to the host's (after a memory revert it is the
    /// snapshot's). A failure is logged, not fatal.
    fn set_clock(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cmd = format!("date -u -s @{now} >/dev/null 2>&1 || sudo -n date -u -s @{now} >/dev/null");
        match self.ssh_with(&cmd, None, Some(Duration::from_secs(30))) {
            Ok(st) if st.success() => {}
            Ok(st) => {
                tracing::warn!(vm = %self.name(), code = st.code, err = %st.err.trim(), "cannot set the guest clock after the revert")
            }
            Err(e) => {
                tracing::warn!(vm = %self.name(), error = %crate::util::text::error_chain(&e), "cannot set the guest clock after the revert")
            }
        }
    }
}

impl Env {
    fn snapshot_record(&self, name: &str) -> PathBuf {
        self.workdir().join(SNAPSHOTS_DIR).join(format!("{name}.json"))
    }

    /// Takes snapshot `name` of every VM (all must run): disks and memory
    /// where the disks allow it (see the module docs). Names: 1-64 letters,
    /// digits, `-`, `_`, `.`; a name already taken is an error.
    pub fn snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        if !valid_name(name) {
            return Err(Error::SnapshotName { name: name.to_owned() });
        }
        if self.snapshot_record(name).exists() {
            return Err(Error::SnapshotExists { name: name.to_owned() });
        }
        // Machines lago did not create are not lago's to snapshot.
        let vms: Vec<&Vm> = self.get_vms().values().filter(|v| !v.is_existing_machine()).collect();
        for vm in &vms {
            let foreign = vm.foreign_disks();
            if !foreign.is_empty() {
                return Err(Error::SnapshotForeignDisk {
                    vm: vm.name().to_owned(),
                    path: foreign[0].clone(),
                });
            }
            // A raw disk is copied by file; a remote hypervisor's are volumes lago cannot copy.
            if vm.remote_storage() && vm.plan.disks.iter().any(|d| d.format == DiskFormat::Raw) {
                return Err(Error::Usage {
                    message: format!(
                        "{}: on a remote hypervisor only VMs whose writable disks are all qcow2 can be snapshotted (disks and memory); it has a raw disk",
                        vm.name()
                    ),
                });
            }
            let state = vm.state()?;
            if state != VmState::Running {
                return Err(Error::NotRunning {
                    vm: vm.name().to_owned(),
                    state,
                });
            }
        }
        let start = Instant::now();
        let kinds = std::sync::Mutex::new(BTreeMap::new());
        for_each_parallel(
            "snapshot",
            &vms,
            |vm| vm.name().to_owned(),
            |vm| {
                let kind = vm.take_snapshot(self.workdir(), name)?;
                kinds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(vm.name().to_owned(), kind);
                Ok(())
            },
        )?;
        let info = SnapshotInfo {
            name: name.to_owned(),
            taken_unix: now_unix(),
            vms: kinds.into_inner().unwrap_or_else(|p| p.into_inner()),
        };
        let path = self.snapshot_record(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let text = serde_json::to_string_pretty(&info).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        fs::write(&path, text).map_err(io("write", &path))?;
        tracing::info!(
            snapshot = name,
            ms = start.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        Ok(info)
    }

    /// Reverts every VM to snapshot `name`, in parallel; each is running
    /// and answers SSH when this returns.
    pub fn revert(&self, name: &str) -> Result<()> {
        let info = self.snapshot_info(name)?;
        let vms: Vec<(&Vm, SnapshotKind)> = info
            .vms
            .iter()
            .filter_map(|(n, k)| self.get_vms().get(n).map(|vm| (vm, *k)))
            .collect();
        for_each_parallel(
            "revert",
            &vms,
            |(vm, _)| vm.name().to_owned(),
            |(vm, kind)| vm.revert_to(self.workdir(), name, *kind),
        )
    }

    /// The snapshots taken, oldest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let dir = self.workdir().join(SNAPSHOTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &dir)(e)),
        };
        let mut out: Vec<SnapshotInfo> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_suffix(".json")?.to_owned();
                self.snapshot_info(&n).ok()
            })
            .collect();
        out.sort_by(|a, b| (a.taken_unix, &a.name).cmp(&(b.taken_unix, &b.name)));
        Ok(out)
    }

    fn snapshot_info(&self, name: &str) -> Result<SnapshotInfo> {
        let path = self.snapshot_record(name);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || !valid_name(name) => {
                let known = fs::read_dir(self.workdir().join(SNAPSHOTS_DIR))
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(Error::NoSuchSnapshot {
                    name: name.to_owned(),
                    known,
                });
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        serde_json::from_str(&text).map_err(|source| Error::State { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_plain() {
        for ok in ["booted", "after-install", "v1.2_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "with space", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
