//! Host-wide subnet leases: one /24 of `192.168.200.0`-`192.168.255.0` per
//! managed net of a running environment, so that environments never collide.
//!
//! One JSON file per leased subnet (`<third octet>.lease`) in the lease
//! directory, all changes made under an exclusive lock on `subnet-lease.lock`
//! (waited for with a timeout, never forever). A lease whose owner workdir is
//! gone, or no longer holds the env id the lease names, is stale and is
//! reclaimed by the next acquire.
//!
//! The lease directory is, in order: [`LeaseStore::new`]'s argument,
//! `LAGO_LEASE_DIR`, `/var/lib/lago/subnets` when running as root, else
//! `$XDG_STATE_HOME/lago/subnets` (default `~/.local/state/lago/subnets`).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lock::{LockFailure, lock_exclusive, running_as_root};
use crate::plan::{EnvId, Subnet, SubnetRequest};

/// File, in an owner's workdir, that holds its env id. A lease is live while
/// this file exists and names the lease's env id.
pub const OWNER_ID_FILE: &str = "env-id";

const LOCK_FILE: &str = "subnet-lease.lock";

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease directory could not be created.
    #[error("cannot create lease directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the lock for longer than the timeout.
    #[error("timed out after {waited:?} waiting for the subnet lease lock {} (held by another lago process)", path.display())]
    LockTimeout {
        /// The lock file.
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
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A lease file could not be removed.
    #[error("cannot remove lease {}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not enough free subnets in the pool.
    #[error("no free subnet: the environment needs {needed} and {free} of the pool's 56 are free (see `{}`)", dir.display())]
    Exhausted {
        /// Subnets needed.
        needed: usize,
        /// Subnets free.
        free: usize,
        /// The lease directory.
        dir: PathBuf,
    },
    /// A subnet the init file pins is held by a network on this host that no lease accounts for.
    #[error("subnet {subnet} (pinned by net `{net}`) is used by an existing network on this host")]
    InUse {
        /// The subnet.
        subnet: Subnet,
        /// The net that needs it.
        net: String,
    },
    /// A subnet the init file pins is leased by another live environment.
    #[error("subnet {subnet} (pinned by net `{net}`) is leased by the environment in {}", owner.display())]
    Taken {
        /// The subnet.
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
}

impl Lease {
    fn is_live(&self) -> bool {
        match fs::read_to_string(self.workdir.join(OWNER_ID_FILE)) {
            Ok(id) => id.trim() == self.env_id.as_str(),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        }
    }

    fn owned_by(&self, owner: &LeaseOwner) -> bool {
        self.env_id == owner.env_id && self.workdir == owner.workdir
    }
}

/// The host-wide lease store.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
    lock_timeout: Duration,
}

impl LeaseStore {
    /// A store in `dir` (created on first use), with a 10 s lock timeout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LeaseStore {
            dir: dir.into(),
            lock_timeout: Duration::from_secs(10),
        }
    }

    /// The store in the default directory (see the module docs).
    pub fn from_env() -> Self {
        match std::env::var_os("LAGO_LEASE_DIR") {
            Some(d) if !d.is_empty() => LeaseStore::new(d),
            _ => LeaseStore::new(Self::default_dir()),
        }
    }

    /// `/var/lib/lago/subnets` for root, else the user's state directory.
    pub fn default_dir() -> PathBuf {
        if running_as_root() {
            return PathBuf::from("/var/lib/lago/subnets");
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("lago/subnets")
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
        lock_exclusive(&path, self.lock_timeout).map_err(|e| match e {
            LockFailure::Io(source) => LeaseError::Lock { path, source },
            LockFailure::Timeout(waited) => LeaseError::LockTimeout { path, waited },
        })
    }

    /// Every lease file, parsed (malformed ones are reported in the log and skipped).
    fn read_all(&self) -> Result<Vec<Lease>, LeaseError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| LeaseError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("lease") {
                continue;
            }
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LeaseError::Read { path, source }),
            };
            match serde_json::from_str::<Lease>(&text) {
                Ok(l) => out.push(l),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "malformed subnet lease; reclaiming it");
                    fs::remove_file(&path).map_err(|source| LeaseError::Remove { path, source })?;
                }
            }
        }
        out.sort_by_key(|l| l.subnet);
        Ok(out)
    }

    /// The current leases, live or stale.
    pub fn list(&self) -> Result<Vec<Lease>, LeaseError> {
        let _lock = self.lock()?;
        self.read_all()
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
        let _lock = self.lock()?;
        let mut held: BTreeMap<Subnet, Lease> = BTreeMap::new();
        for lease in self.read_all()? {
            if lease.owned_by(owner) || lease.is_live() {
                held.insert(lease.subnet, lease);
            } else {
                tracing::info!(subnet = %lease.subnet, owner = %lease.workdir.display(), "reclaiming stale subnet lease");
                let path = self.lease_path(lease.subnet);
                fs::remove_file(&path).map_err(|source| LeaseError::Remove { path, source })?;
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
        let mut reusable = mine.into_iter().filter(|s| !used.contains(s));
        let mut free = Subnet::pool().filter(|s| !held.contains_key(s) && !used.contains(s) && !in_use.contains(s));
        let unpinned: Vec<&SubnetRequest> = requests.iter().filter(|r| r.pinned.is_none()).collect();
        for r in &unpinned {
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
        let tmp = path.with_extension(format!("lease.tmp{}", std::process::id()));
        let text = serde_json::to_string_pretty(lease).map_err(|e| LeaseError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let res = File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, &path));
        res.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            LeaseError::Write { path, source }
        })
    }

    /// Releases every lease `owner` holds; returns the subnets freed.
    pub fn release(&self, owner: &LeaseOwner) -> Result<Vec<Subnet>, LeaseError> {
        let _lock = self.lock()?;
        let mut freed = Vec::new();
        for lease in self.read_all()?.into_iter().filter(|l| l.owned_by(owner)) {
            let path = self.lease_path(lease.subnet);
            match fs::remove_file(&path) {
                Ok(()) => freed.push(lease.subnet),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(LeaseError::Remove { path, source }),
            }
        }
        Ok(freed)
    }
}
