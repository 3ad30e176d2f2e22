//! Host-wide subnet leases: one /24 of `192.168.200.0`-`192.168.255.0` per
//! managed net of a running environment, so that environments never collide.
//!
//! One JSON file per leased subnet (`<third octet>.lease`) in the lease
//! directory, all changes made under an exclusive lock on `subnet-lease.lock`
//! (waited for with a timeout, never forever). A lease whose owner workdir is
//! gone, or no longer holds the env id the lease names, is stale and is
//! reclaimed by the next acquire.
//!
//! Leases are host-wide for one libvirt daemon, whichever user runs lago: the
//! lease directory is, in order, [`LeaseStore::new`]'s argument,
//! `LAGO_LEASE_DIR`, then `/var/lib/lago/subnets`, shared by root and by
//! every user who can write it (`scripts/setup-host` makes it group
//! `libvirt`, mode 2775: the users who may reach `qemu:///system`). Only a
//! user who cannot write it falls back to `$XDG_STATE_HOME/lago/subnets`
//! (`~/.local/state/lago/subnets`), with a warning; such private leases
//! still never take a subnet that the daemon's networks or the host's routes
//! use (see [`host_route_subnets`]).
//!
//! A damaged lease directory does not stop later acquires: a lease file that
//! is not valid (not UTF-8, not JSON, or naming another subnet than its file
//! name) is reclaimed; anything else named like a lease (a folder, …) is
//! reported and its subnet left alone. Reclaiming deletes exactly the file
//! that was read.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::{EnvId, Subnet, SubnetRequest};
use crate::util::lock::{LockFailure, lock_exclusive, running_as_root};

pub use crate::host::workdir::OWNER_ID_FILE;

const LOCK_FILE: &str = "subnet-lease.lock";

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease directory could not be created.
    #[error("cannot create lease directory {}", path.display())]
    CreateDir {
        /// The lease directory (the argument, `LAGO_LEASE_DIR` or a default).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lease directory's `subnet-lease.lock`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for longer than the timeout.
    #[error("timed out after {waited:?} waiting for the subnet lease lock {} (held by another lago process)", path.display())]
    LockTimeout {
        /// The lease directory's `subnet-lease.lock`.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A lease file or the directory could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A lease file could not be written.
    #[error("cannot write lease {}", path.display())]
    Write {
        /// The lease file (`<third octet>.lease`).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A lease file could not be removed.
    #[error("cannot remove lease {}", path.display())]
    Remove {
        /// The lease file (`<third octet>.lease`).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not enough free subnets in the pool.
    #[error("no free subnet: the environment needs {needed} and {free} of the pool's 56 are free (see `{}`)", dir.display())]
    Exhausted {
        /// How many managed nets the environment has (pinned ones included).
        needed: usize,
        /// How many of the pool's subnets no lease or host network holds.
        free: usize,
        /// The lease directory.
        dir: PathBuf,
    },
    /// A subnet the init file pins is held by a network on this host that no lease accounts for.
    #[error("subnet {subnet} (pinned by net `{net}`) is used by an existing network on this host")]
    InUse {
        /// The pinned /24.
        subnet: Subnet,
        /// The net that needs it.
        net: String,
    },
    /// A subnet the init file pins is leased by another live environment.
    #[error("subnet {subnet} (pinned by net `{net}`) is leased by the environment in {}", owner.display())]
    Taken {
        /// The pinned /24.
        subnet: Subnet,
        /// The net that needs it.
        net: String,
        /// The workdir of the environment holding it.
        owner: PathBuf,
    },
}

/// Who holds a lease: an environment, by workdir and env id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner {
    /// The environment's workdir (must hold [`OWNER_ID_FILE`] with `env_id`).
    pub workdir: PathBuf,
    /// The environment's id.
    pub env_id: EnvId,
}

/// The shared lease directory.
pub const SHARED_DIR: &str = "/var/lib/lago/subnets";

/// One lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased subnet.
    pub subnet: Subnet,
    /// The owner's workdir.
    pub workdir: PathBuf,
    /// The owner's env id.
    pub env_id: EnvId,
    /// The process that took it.
    pub pid: u32,
    /// When, in seconds since the Unix epoch.
    pub acquired_unix: u64,
    /// The libvirt daemon the subnet is for (older leases: unknown).
    #[serde(default)]
    pub libvirt_uri: Option<String>,
    /// The process that owns the environment's lifetime, when one does
    /// (the test harness's): `lago gc` can prove it gone from the lease alone.
    #[serde(default)]
    pub owner: Option<crate::host::owner::Owner>,
}

impl Lease {
    /// A lease is live while its workdir names its env, or while the
    /// process that owns the env runs (its workdir may be one this process
    /// cannot see: another mount namespace's `/tmp`).
    fn is_live(&self) -> bool {
        if self
            .owner
            .as_ref()
            .is_some_and(|o| o.liveness() == crate::host::owner::Liveness::Alive)
        {
            return true;
        }
        match fs::read_to_string(self.workdir.join(OWNER_ID_FILE)) {
            Ok(id) => id.trim() == self.env_id.as_str(),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        }
    }

    fn owned_by(&self, owner: &LeaseOwner) -> bool {
        self.env_id == owner.env_id && self.workdir == owner.workdir
    }
}

/// What a scan of the lease directory found: each valid lease with the file
/// it was read from, and subnets blocked by entries that are not lease files.
type Scan = (Vec<(PathBuf, Lease)>, HashSet<Subnet>);

/// The host-wide lease store.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
    lock_timeout: Duration,
    uri: Option<String>,
    owner: Option<crate::host::owner::Owner>,
}

impl LeaseStore {
    /// A store in `dir` (created on first use), with a 10 s lock timeout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LeaseStore {
            dir: dir.into(),
            lock_timeout: Duration::from_secs(10),
            uri: None,
            owner: None,
        }
    }

    /// The store in the default directory (see the module docs).
    pub fn from_env() -> Self {
        match std::env::var_os("LAGO_LEASE_DIR") {
            Some(d) if !d.is_empty() => LeaseStore::new(d),
            _ => LeaseStore::new(Self::default_dir()),
        }
    }

    /// The store of environments in session mode (`qemu:///session`):
    /// `LAGO_LEASE_DIR` when set, else the user's own folder. Their nets put
    /// no address on the host, so nothing clashes with another user's; and
    /// no other user's sweep sees them.
    pub fn for_session() -> Self {
        match std::env::var_os("LAGO_LEASE_DIR") {
            Some(d) if !d.is_empty() => LeaseStore::new(d),
            _ => LeaseStore::new(Self::private_dir()),
        }
    }

    /// [`SHARED_DIR`] for root and for every user who can write it, else
    /// the user's own folder ([`LeaseStore::private_dir`]).
    pub fn default_dir() -> PathBuf {
        let shared = Path::new(SHARED_DIR);
        let writable =
            || rustix::fs::access(shared, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).is_ok();
        if running_as_root() || writable() {
            return shared.to_path_buf();
        }
        Self::private_dir()
    }

    /// The user's own lease folder: `$XDG_STATE_HOME/lago/subnets` (or
    /// `~/.local/state/lago/subnets`).
    pub fn private_dir() -> PathBuf {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("lago/subnets")
    }

    /// Warns (once per process) when these leases are private to this user
    /// while its environments use the host's shared libvirt (system mode):
    /// other users' leases are then not seen. Session mode has no host
    /// addresses to clash, so private leases are what it wants.
    pub fn warn_if_private(&self) {
        if self.dir == Path::new(SHARED_DIR) {
            return;
        }
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                shared = SHARED_DIR,
                dir = %self.dir.display(),
                "cannot write the shared subnet lease directory: leases are private to this user \
                 (other users' environments are still avoided through libvirt's networks and the host's routes; \
                 scripts/setup-host makes the shared directory writable for the libvirt group)"
            );
        });
    }

    /// Records `uri` (the libvirt daemon) in the leases this store writes.
    #[must_use]
    pub fn for_uri(mut self, uri: &str) -> Self {
        self.uri = Some(uri.to_owned());
        self
    }

    /// Records `owner` (the process that owns the environment's lifetime)
    /// in the leases this store writes.
    #[must_use]
    pub fn with_owner(mut self, owner: Option<crate::host::owner::Owner>) -> Self {
        self.owner = owner;
        self
    }

    /// Sets how long to wait for the lock.
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The lease directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lease_path(&self, s: Subnet) -> PathBuf {
        self.dir.join(format!("{}.lease", s.third_octet()))
    }

    fn lock(&self) -> Result<File, LeaseError> {
        fs::create_dir_all(&self.dir).map_err(|source| LeaseError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.dir.join(LOCK_FILE);
        let file = lock_exclusive(&path, self.lock_timeout).map_err(|e| match e {
            LockFailure::Io(source) => LeaseError::Lock { path, source },
            LockFailure::Timeout(waited) => LeaseError::LockTimeout { path, waited },
        })?;
        // In a shared directory every member of its group must be able to lock
        // it: its owner makes it group-writable (the open refused a symlink).
        if let Ok(m) = file.metadata()
            && m.is_file()
            && std::os::unix::fs::MetadataExt::uid(&m) == rustix::process::geteuid().as_raw()
        {
            let _ = file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o664));
        }
        Ok(file)
    }

    /// Every lease file, parsed, with the path it was read from. Invalid
    /// lease files are reclaimed (deleted); other entries named like a lease
    /// are reported and their subnets returned as blocked.
    fn read_all(&self) -> Result<Scan, LeaseError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(source) => {
                return Err(LeaseError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        let mut blocked = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(|source| LeaseError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            // Only `<third octet>.lease` of the pool is a lease: nothing else here is touched.
            let Some(named) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".lease"))
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
                .and_then(|n| n.parse::<u8>().ok())
                .and_then(Subnet::new)
            else {
                continue;
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::warn!(path = %path.display(), "not a lease file (a folder or other entry named like one); its subnet is not handed out until it is removed");
                blocked.insert(named);
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // Another user's lease we may not read: held, not an error for everyone.
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a subnet lease; its subnet is not handed out");
                    blocked.insert(named);
                    continue;
                }
            };
            let why = match serde_json::from_slice::<Lease>(&bytes) {
                Ok(l) if l.subnet == named => {
                    out.push((path, l));
                    continue;
                }
                Ok(l) => format!("it names subnet {} but its file is {}", l.subnet, path.display()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(path = %path.display(), error = %why, "invalid subnet lease; reclaiming it");
            remove_lease_file(&path)?;
        }
        out.sort_by_key(|(_, l)| l.subnet);
        Ok((out, blocked))
    }

    /// The current leases, live or stale.
    pub fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let _lock = self.lock()?;
        Ok(self.read_all()?.0.into_iter().map(|(_, l)| l).collect())
    }

    /// Leases one subnet per request for `owner`, all or none. Pinned
    /// requests get their subnet or [`LeaseError::Taken`]; the others get the
    /// lowest free ones. Stale leases are reclaimed first. Subnets `owner`
    /// already holds are reused.
    pub fn acquire(
        &self,
        owner: &LeaseOwner,
        requests: &[SubnetRequest],
    ) -> Result<BTreeMap<String, Subnet>, LeaseError> {
        self.acquire_avoiding(owner, requests, &HashSet::new())
    }

    /// Like [`LeaseStore::acquire`], never handing out a subnet of `in_use`
    /// (e.g. one a network left behind by a killed run still holds, whose
    /// lease is stale).
    pub fn acquire_avoiding(
        &self,
        owner: &LeaseOwner,
        requests: &[SubnetRequest],
        in_use: &HashSet<Subnet>,
    ) -> Result<BTreeMap<String, Subnet>, LeaseError> {
        self.acquire_preferring(owner, requests, in_use, &[])
    }

    /// Like [`LeaseStore::acquire_avoiding`], giving the unpinned nets the
    /// subnets of the first of `preferred` (net name → subnet) that is free
    /// for all of them (warm start asks for those of its boot images).
    pub fn acquire_preferring(
        &self,
        owner: &LeaseOwner,
        requests: &[SubnetRequest],
        in_use: &HashSet<Subnet>,
        preferred: &[BTreeMap<String, Subnet>],
    ) -> Result<BTreeMap<String, Subnet>, LeaseError> {
        let _lock = self.lock()?;
        let mut held: BTreeMap<Subnet, Lease> = BTreeMap::new();
        let (leases, blocked) = self.read_all()?;
        let in_use: HashSet<Subnet> = in_use.union(&blocked).copied().collect();
        let in_use = &in_use;
        for (path, lease) in leases {
            if lease.owned_by(owner) || lease.is_live() {
                held.insert(lease.subnet, lease);
            } else {
                tracing::info!(subnet = %lease.subnet, owner = %lease.workdir.display(), "reclaiming stale subnet lease");
                // The file that was read, nothing else.
                remove_lease_file(&path)?;
            }
        }
        let mine: Vec<Subnet> = held.values().filter(|l| l.owned_by(owner)).map(|l| l.subnet).collect();
        let mut chosen: BTreeMap<String, Subnet> = BTreeMap::new();
        let mut used: HashSet<Subnet> = HashSet::new();
        for r in requests.iter().filter(|r| r.pinned.is_some()) {
            let Some(s) = r.pinned else { continue };
            if in_use.contains(&s) && !held.get(&s).is_some_and(|l| l.owned_by(owner)) {
                return Err(LeaseError::InUse {
                    subnet: s,
                    net: r.net.clone(),
                });
            }
            if let Some(l) = held.get(&s)
                && !l.owned_by(owner)
            {
                return Err(LeaseError::Taken {
                    subnet: s,
                    net: r.net.clone(),
                    owner: l.workdir.clone(),
                });
            }
            used.insert(s);
            chosen.insert(r.net.clone(), s);
        }
        let unpinned: Vec<&SubnetRequest> = requests.iter().filter(|r| r.pinned.is_none()).collect();
        let free_for_me =
            |s: &Subnet| !used.contains(s) && !in_use.contains(s) && held.get(s).is_none_or(|l| l.owned_by(owner));
        if let Some(pick) = preferred.iter().find(|p| {
            let picks: HashSet<Subnet> = unpinned.iter().filter_map(|r| p.get(&r.net).copied()).collect();
            picks.len() == unpinned.len() && picks.iter().all(free_for_me)
        }) {
            for r in &unpinned {
                chosen.insert(r.net.clone(), pick[&r.net]);
            }
        }
        let taken: HashSet<Subnet> = chosen.values().copied().collect();
        let mut reusable = mine.into_iter().filter(|s| !used.contains(s) && !taken.contains(s));
        let mut free = Subnet::pool()
            .filter(|s| !held.contains_key(s) && !used.contains(s) && !in_use.contains(s) && !taken.contains(s));
        let open: Vec<&SubnetRequest> = unpinned.into_iter().filter(|r| !chosen.contains_key(&r.net)).collect();
        for r in &open {
            let Some(s) = reusable.next().or_else(|| free.next()) else {
                let free_count = Subnet::pool()
                    .filter(|s| !held.contains_key(s) && !in_use.contains(s))
                    .count();
                return Err(LeaseError::Exhausted {
                    needed: requests.len(),
                    free: free_count,
                    dir: self.dir.clone(),
                });
            };
            chosen.insert(r.net.clone(), s);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut written = Vec::new();
        for &s in chosen.values() {
            let lease = Lease {
                subnet: s,
                workdir: owner.workdir.clone(),
                env_id: owner.env_id.clone(),
                pid: std::process::id(),
                acquired_unix: now,
                libvirt_uri: self.uri.clone(),
                owner: self.owner.clone(),
            };
            if let Err(e) = self.write_lease(&lease) {
                for s in written {
                    let _ = fs::remove_file(self.lease_path(s));
                }
                return Err(e);
            }
            written.push(s);
        }
        tracing::debug!(?chosen, "subnets leased");
        Ok(chosen)
    }

    fn write_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        let path = self.lease_path(lease.subnet);
        let write_err = |source| LeaseError::Write {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(lease).map_err(|e| write_err(std::io::Error::other(e)))?;
        // A new file of a random name (O_EXCL: never one planted in a shared
        // directory), readable by every user of the directory, renamed into place.
        let mut tmp = tempfile::Builder::new()
            .prefix(".lease-")
            .tempfile_in(&self.dir)
            .map_err(write_err)?;
        // Explicitly, whatever the umask.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .and_then(|()| tmp.write_all(text.as_bytes()))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Releases every lease of env `env_id`, whatever workdir it names (for
    /// sweeping an environment whose workdir is gone); returns the subnets freed.
    pub fn release_env(&self, env_id: &EnvId) -> Result<Vec<Subnet>, LeaseError> {
        let _lock = self.lock()?;
        let mut freed = Vec::new();
        for (path, lease) in self.read_all()?.0.into_iter().filter(|(_, l)| &l.env_id == env_id) {
            remove_lease_file(&path)?;
            freed.push(lease.subnet);
        }
        Ok(freed)
    }

    /// Releases every lease `owner` holds; returns the subnets freed.
    pub fn release(&self, owner: &LeaseOwner) -> Result<Vec<Subnet>, LeaseError> {
        let _lock = self.lock()?;
        let mut freed = Vec::new();
        for (path, lease) in self.read_all()?.0.into_iter().filter(|(_, l)| l.owned_by(owner)) {
            match fs::remove_file(&path) {
                Ok(()) => freed.push(lease.subnet),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(LeaseError::Remove { path, source }),
            }
        }
        Ok(freed)
    }
}

fn remove_lease_file(path: &Path) -> Result<(), LeaseError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LeaseError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Pool subnets that routes of this host (its current network namespace)
/// already reach: handing them to a libvirt network would clash. The
/// default route is not counted.
pub fn host_route_subnets() -> HashSet<Subnet> {
    match fs::read_to_string("/proc/net/route") {
        Ok(text) => route_subnets(&text),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read /proc/net/route; not checking host routes");
            HashSet::new()
        }
    }
}

/// The pool subnets the routes of a `/proc/net/route` table overlap.
fn route_subnets(table: &str) -> HashSet<Subnet> {
    pool_routes(table).into_iter().flat_map(|r| r.subnets).collect()
}

/// A route of a `/proc/net/route` table that overlaps the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolRoute {
    /// Its interface (`virbr1`, `lg-…` for lago's own bridges).
    pub iface: String,
    /// Its network address.
    pub net: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u32,
    /// The pool subnets it overlaps.
    pub subnets: Vec<Subnet>,
}

/// The routes of a `/proc/net/route` table that overlap pool subnets (the
/// default route is not counted).
pub(crate) fn pool_routes(table: &str) -> Vec<PoolRoute> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(dest), Some(mask)) = (f.first(), f.get(1), f.get(7)) else {
            continue;
        };
        // Addresses are hex in the kernel's (little-endian) byte order.
        let (Ok(dest), Ok(mask)) = (u32::from_str_radix(dest, 16), u32::from_str_radix(mask, 16)) else {
            continue;
        };
        let (dest, mask) = (
            u32::from_be_bytes(dest.to_le_bytes()),
            u32::from_be_bytes(mask.to_le_bytes()),
        );
        if mask == 0 {
            continue;
        }
        // Two prefixes overlap when they agree on the shorter mask.
        let common = mask & 0xffff_ff00;
        let subnets: Vec<Subnet> = Subnet::pool()
            .filter(|s| u32::from_be_bytes([192, 168, s.third_octet(), 0]) & common == dest & common)
            .collect();
        if !subnets.is_empty() {
            out.push(PoolRoute {
                iface: (*iface).to_owned(),
                net: std::net::Ipv4Addr::from(dest & mask),
                prefix: mask.count_ones(),
                subnets,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_that_reach_pool_subnets_are_found() {
        // 192.168.210.0/24 on a bridge, 192.168.0.0/16 through a VPN, the
        // default route, and 10.0.0.0/8: only the first two touch the pool.
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
virbr1\t00D2A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let got = route_subnets(table);
        assert_eq!(got, [Subnet::new(210).unwrap()].into_iter().collect());
        let vpn = "h\ntun0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        assert_eq!(route_subnets(vpn).len(), 56, "a /16 covers the whole pool");
        // A /25 inside one pool subnet blocks that subnet.
        let half = "h\nx\t80DCA8C0\t00000000\t0001\t0\t0\t0\t80FFFFFF\t0\t0\t0\n";
        assert_eq!(route_subnets(half), [Subnet::new(220).unwrap()].into_iter().collect());
    }
}
