//! Sweeping what crashed runs left: `lago gc`, and the test harness before
//! it boots.
//!
//! Environments are found from three sides: subnet leases of this host
//! (env id, workdir, libvirt URI, owner), libvirt domains (`lago-<id>-…`,
//! whose metadata names the workdir and the owner) and libvirt networks
//! (`lago-<id>-…`; libvirt 9.0 has no network metadata, so a network is tied
//! to its environment by the prefix).
//!
//! An environment is removed only when it is **proven dead on this host**:
//! the process that owned its lifetime (recorded by the test harness, with
//! this host's id: see [`crate::host::owner`]) is gone, and this host's lease
//! store names the environment. Nothing else proves it: a workdir that is
//! not visible (moved, in another mount namespace's `/tmp`, on an unmounted
//! home), an environment without an owning process (made by `lago init` or
//! the SDK), or an owner on another host, container or boot is *orphaned*
//! or *elsewhere*: listed, and removed only when named explicitly
//! ([`GcOptions::orphans`], `lago gc --orphans ID…`), never by the sweep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::env::error::{Error, Result, error_chain};
use crate::host::lease::{LeaseStore, OWNER_ID_FILE};
use crate::host::owner::{Liveness, Owner};
use crate::plan::{EnvId, Subnet};

/// What a sweep looks at and may do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only say what would be removed.
    pub dry_run: bool,
    /// The libvirt URIs to look at (none: the one
    /// [`Backend::connect`]`(None)` picks, session mode's for a user without
    /// access to `qemu:///system`).
    pub uris: Vec<String>,
    /// Also every URI that leases on this machine record.
    pub all_uris: bool,
    /// The subnet lease store.
    pub leases: LeaseStore,
    /// Stop removing (and say so) after this instant.
    pub deadline: Option<Instant>,
    /// Environments to remove although nothing proves them dead (orphaned,
    /// elsewhere or kept ones, named by env id); one whose owner runs on
    /// this host is never removed.
    pub orphans: Vec<EnvId>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            uris: Vec::new(),
            all_uris: false,
            leases: LeaseStore::from_env(),
            deadline: None,
            orphans: Vec::new(),
        }
    }
}

impl GcOptions {
    /// The leases to sweep when the default daemon is `default_uri`: the
    /// ones asked for, unless they are the default ones and that daemon is
    /// this user's own (session mode), whose environments lease in the
    /// user's own folder (see [`LeaseStore::for_session`]).
    fn leases_for(&self, default_uri: Option<&str>) -> LeaseStore {
        let session = default_uri.is_some_and(crate::backend::uri::is_session);
        if session && self.uris.is_empty() && self.leases.dir() == LeaseStore::from_env().dir() {
            return LeaseStore::for_session();
        }
        self.leases.clone()
    }
}

/// What a sweep decided about one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "why", rename_all = "kebab-case")]
pub enum Verdict {
    /// It is in use: its owner runs (why).
    Live(String),
    /// `LAGO_KEEP` kept it.
    Kept,
    /// Nothing proves it dead or alive (why): no owning process, or a
    /// workdir this host cannot see. Removed only when named (`--orphans`).
    Orphaned(String),
    /// Its owner ran on another host, container or boot (why). Removed only
    /// when named (`--orphans`).
    Elsewhere(String),
    /// It is proven dead on this host (why): removed, unless a dry run.
    Gone(String),
}

impl Verdict {
    /// Whether removing it needs the user to name it.
    pub fn needs_naming(&self) -> bool {
        matches!(self, Verdict::Orphaned(_) | Verdict::Elsewhere(_) | Verdict::Kept)
    }
}

/// One environment a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The environment's id, from its leases or its libvirt object names.
    pub env_id: String,
    /// The libvirt URI its objects are on.
    pub uri: String,
    /// Its workdir, when anything names it.
    pub workdir: Option<PathBuf>,
    /// The libvirt names of its domains (`lago-<id>-…`).
    pub domains: Vec<String>,
    /// The libvirt names of its networks (`lago-<id>-…`).
    pub networks: Vec<String>,
    /// Its leased subnets.
    pub subnets: Vec<Subnet>,
    /// Whether the sweep may remove it, and why.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether it was removed.
    pub removed: bool,
    /// Why removing it failed, if it did.
    pub error: Option<String>,
}

/// A libvirt URI a sweep could not reach.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    /// The libvirt URI (one asked for, or one a lease records, with `--all-uris`).
    pub uri: String,
    /// Why (the error and its causes).
    pub error: String,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Every environment found, in env-id order.
    pub envs: Vec<Found>,
    /// URIs that could not be reached (and why).
    pub unreachable: Vec<Unreachable>,
    /// Whether the deadline stopped it before it was done.
    pub out_of_time: bool,
    /// Env ids named in [`GcOptions::orphans`] that were not found.
    pub not_found: Vec<String>,
}

impl GcReport {
    /// The environments removed.
    pub fn removed(&self) -> impl Iterator<Item = &Found> {
        self.envs.iter().filter(|f| f.removed)
    }
}

#[derive(Debug, Clone, Default)]
struct Draft {
    uri: Option<String>,
    workdir: Option<PathBuf>,
    owner: Option<Owner>,
    domains: Vec<String>,
    networks: Vec<String>,
    subnets: Vec<Subnet>,
}

/// What can be seen of a workdir from here.
enum Seen {
    /// It holds env `id`.
    Holds,
    /// It holds another environment, or none.
    Other,
    /// It is not there (moved, another mount namespace's, unmounted).
    Missing,
    /// It cannot be read.
    Unreadable(std::io::Error),
}

fn look_at(workdir: &Path, id: &EnvId) -> Seen {
    match std::fs::read_to_string(workdir.join(OWNER_ID_FILE)) {
        Ok(s) if s.trim() == id.as_str() => Seen::Holds,
        Ok(_) => Seen::Other,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::symlink_metadata(workdir) {
            Ok(_) => Seen::Other,
            Err(_) => Seen::Missing,
        },
        Err(e) => Seen::Unreadable(e),
    }
}

/// What the owner, this host's leases, the workdir and the keep marker say
/// about env `id` (see the module docs).
fn judge(id: &EnvId, d: &Draft) -> Verdict {
    let seen = d.workdir.as_deref().map(|w| (w, look_at(w, id)));
    let holds = matches!(seen, Some((_, Seen::Holds)));
    if let Some((w, Seen::Holds)) = &seen
        && w.join(crate::host::workdir::KEEP_MARKER).exists()
    {
        return Verdict::Kept;
    }
    let recorded = seen
        .as_ref()
        .filter(|_| holds)
        .and_then(|(w, _)| Owner::read(w))
        .or_else(|| d.owner.clone());
    if let Some(o) = recorded {
        return match o.liveness() {
            Liveness::Alive => Verdict::Live(format!("its owner, process {}, runs", o.pid)),
            Liveness::Elsewhere(why) => Verdict::Elsewhere(why),
            Liveness::Gone(why) if d.subnets.is_empty() => Verdict::Orphaned(format!(
                "its owner is gone ({why}), but no subnet lease of this host names it"
            )),
            Liveness::Gone(why) => Verdict::Gone(format!("its owner is gone: {why}")),
        };
    }
    Verdict::Orphaned(match seen {
        Some((_, Seen::Holds)) => {
            "it has no owning process (made by `lago init` or the SDK; `lago destroy` removes it)".into()
        }
        Some((w, Seen::Missing)) => format!(
            "its workdir {} is not visible here (moved, another mount namespace's, unmounted) and no owning process is recorded",
            w.display()
        ),
        Some((w, Seen::Other)) => format!(
            "its workdir {} holds another environment or none, and no owning process is recorded",
            w.display()
        ),
        Some((w, Seen::Unreadable(e))) => format!("its workdir {} cannot be read ({e})", w.display()),
        None => "nothing names its workdir, and no owning process is recorded".into(),
    })
}

/// Finds lago's environments and removes those that are provably gone.
pub fn sweep(opts: &GcOptions) -> Result<GcReport> {
    let mut drafts: BTreeMap<EnvId, Draft> = BTreeMap::new();
    let mut uris = opts.uris.clone();
    let mut report = GcReport::default();
    let mut backends = connect_default(opts, &mut uris, &mut report)?;
    let leases = opts.leases_for(uris.first().map(String::as_str));
    for lease in leases.list()? {
        let d = drafts.entry(lease.env_id.clone()).or_default();
        d.workdir.get_or_insert(lease.workdir.clone());
        d.subnets.push(lease.subnet);
        if let Some(o) = &lease.owner {
            d.owner.get_or_insert(o.clone());
        }
        if let Some(u) = &lease.libvirt_uri {
            d.uri.get_or_insert(u.clone());
            if opts.all_uris && !uris.contains(u) {
                uris.push(u.clone());
            }
        }
    }
    connect_rest(opts, &uris, &mut report, &mut backends)?;
    for uri in &uris {
        let Some(b) = backends.get(uri) else { continue };
        for dom in b.lago_domains()? {
            let d = drafts.entry(dom.env_id.clone()).or_default();
            d.uri.get_or_insert(uri.clone());
            if let Some(w) = dom.workdir {
                d.workdir.get_or_insert(w);
            }
            if let Some(o) = dom.owner {
                d.owner.get_or_insert(o);
            }
            d.domains.push(dom.name);
        }
        for (name, id) in b.lago_networks()? {
            let d = drafts.entry(id).or_default();
            d.uri.get_or_insert(uri.clone());
            d.networks.push(name);
        }
    }
    let default_uri = uris.first().cloned().unwrap_or_default();
    report.not_found = opts
        .orphans
        .iter()
        .filter(|o| !drafts.contains_key(*o))
        .map(EnvId::to_string)
        .collect();
    for (id, d) in drafts {
        let verdict = judge(&id, &d);
        let uri = d.uri.clone().unwrap_or_else(|| default_uri.clone());
        let mut found = Found {
            env_id: id.to_string(),
            uri,
            workdir: d.workdir.clone(),
            domains: d.domains,
            networks: d.networks,
            subnets: d.subnets,
            verdict,
            removed: false,
            error: None,
        };
        let named = opts.orphans.contains(&id);
        let remove = match &found.verdict {
            Verdict::Gone(_) => true,
            v => named && v.needs_naming(),
        };
        if named && !remove {
            found.error = Some("its owner runs on this host: not removed".into());
        }
        if remove && !opts.dry_run {
            if opts.deadline.is_some_and(|t| Instant::now() >= t) {
                report.out_of_time = true;
            } else {
                match reap(&id, &found, backends.get(&found.uri), &leases) {
                    Ok(()) => found.removed = true,
                    Err(e) => found.error = Some(error_chain(&e)),
                }
            }
        }
        if found.removed {
            tracing::info!(env = %found.env_id, verdict = ?found.verdict, "gc removed it");
        }
        report.envs.push(found);
    }
    Ok(report)
}

/// With no URI asked for, connects to the default one ([`Backend::connect`]`(None)`)
/// and puts it first in `uris`; with `--all-uris`, one that cannot be
/// reached is reported instead (the daemons the leases name are swept all the same).
fn connect_default(
    opts: &GcOptions,
    uris: &mut Vec<String>,
    report: &mut GcReport,
) -> Result<BTreeMap<String, Backend>> {
    let mut backends = BTreeMap::new();
    if !opts.uris.is_empty() {
        return Ok(backends);
    }
    match Backend::connect(None) {
        Ok(b) => {
            uris.insert(0, b.uri().to_owned());
            backends.insert(b.uri().to_owned(), b);
        }
        Err(e) if opts.all_uris => report.unreachable.push(Unreachable {
            uri: Backend::resolve_uri(None),
            error: error_chain(&e),
        }),
        Err(e) => return Err(e.into()),
    }
    Ok(backends)
}

/// Connects to each of `uris` not yet connected; with several (or
/// `--all-uris`), one that cannot be reached is reported instead.
fn connect_rest(
    opts: &GcOptions,
    uris: &[String],
    report: &mut GcReport,
    backends: &mut BTreeMap<String, Backend>,
) -> Result<()> {
    for uri in uris {
        if backends.contains_key(uri) {
            continue;
        }
        match Backend::connect(Some(uri)) {
            Ok(b) => {
                backends.insert(uri.clone(), b);
            }
            Err(e) if uris.len() > 1 || opts.all_uris => report.unreachable.push(Unreachable {
                uri: uri.clone(),
                error: error_chain(&e),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes env `id`: its libvirt objects, then its leases, then lago's
/// files in its workdir (only when the workdir still names this env).
fn reap(id: &EnvId, f: &Found, backend: Option<&Backend>, leases: &LeaseStore) -> Result<()> {
    // Whatever the daemon holds of it goes: domains, networks, and (on a
    // remote hypervisor) its volumes and subnet claims, which an env that
    // never started has without any domain or network.
    match backend {
        Some(b) => crate::env::destroy_objects(b, id)?,
        // A daemon not asked (no --all-uris) or not reached may still run its
        // domains (a session env seen from root's sweep) or hold its volumes: fail closed.
        None => return Err(Error::NoBackendForGc { uri: f.uri.clone() }),
    }
    leases.release_env(id)?;
    if let Some(w) = &f.workdir {
        crate::host::store::TemplateStore::from_env().forget_env(id, w);
    }
    if let Some(w) = &f.workdir
        && owned_by(w, id)
    {
        crate::host::workdir::remove(w, Some(id))?;
        crate::host::workdir::remove_test_dir(w);
        // The environment of a nextest run: its meeting folder goes too.
        if let Some(dir) = crate::host::workdir::meeting_dir_of(w) {
            crate::host::workdir::remove_meeting_dir(dir);
        }
    }
    Ok(())
}

fn owned_by(workdir: &Path, id: &EnvId) -> bool {
    std::fs::read_to_string(workdir.join(OWNER_ID_FILE)).is_ok_and(|s| s.trim() == id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workdir_of(tmp: &Path, id: &str) -> PathBuf {
        let w = tmp.join(id);
        std::fs::create_dir_all(&w).unwrap();
        std::fs::write(w.join(OWNER_ID_FILE), id).unwrap();
        w
    }

    fn dead(me: &Owner) -> Owner {
        Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        }
    }

    #[test]
    fn only_an_owner_proven_gone_on_this_host_with_a_lease_here_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let id = EnvId::new("aaaa").unwrap();
        let me = Owner::this_process().unwrap();
        let leased = vec![Subnet::new(200).unwrap()];
        // Nothing names anything: orphaned, never gone.
        assert!(matches!(judge(&id, &Draft::default()), Verdict::Orphaned(_)));
        // `mv /tmp/a /tmp/b` of a `lago init` env: not visible, no owner.
        let moved = Draft {
            workdir: Some(tmp.path().join("a")),
            subnets: leased.clone(),
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &moved), Verdict::Orphaned(why) if why.contains("not visible")));
        // The same, owned by a test binary that runs (its private /tmp): live.
        let running = Draft {
            owner: Some(me.clone()),
            ..moved
        };
        assert!(matches!(judge(&id, &running), Verdict::Live(why) if why.contains("runs")));
        // Its owner ended and this host leased it: gone.
        let ended = Draft {
            owner: Some(dead(&me)),
            ..running
        };
        assert!(matches!(judge(&id, &ended), Verdict::Gone(why) if why.contains("owner is gone")));
        // No lease of this host names it (another client's lease store): orphaned.
        let unleased = Draft {
            subnets: Vec::new(),
            ..ended
        };
        assert!(matches!(judge(&id, &unleased), Verdict::Orphaned(why) if why.contains("no subnet lease")));
        // A runner cloned from this image (same machine id, other boot and host id): elsewhere.
        let clone = Owner {
            host_id: "ffffffffffffffffffffffffffffffff1".into(),
            boot_id: "other-boot".into(),
            ..dead(&me)
        };
        let cloned = Draft {
            owner: Some(clone),
            subnets: leased.clone(),
            workdir: Some(tmp.path().join("gone")),
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &cloned), Verdict::Elsewhere(_)));
    }

    #[test]
    fn a_visible_workdir_says_kept_and_its_owner_file_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let id = EnvId::new("aaaa").unwrap();
        let me = Owner::this_process().unwrap();
        let w = workdir_of(tmp.path(), "aaaa");
        let plain = Draft {
            workdir: Some(w.clone()),
            subnets: vec![Subnet::new(201).unwrap()],
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &plain), Verdict::Orphaned(why) if why.contains("lago init")));
        // Another env's workdir now: nothing proven either.
        let other = EnvId::new("bbbb").unwrap();
        assert!(matches!(judge(&other, &plain), Verdict::Orphaned(why) if why.contains("another environment")));
        // The workdir's owner file speaks for it (over a stale domain record).
        std::fs::write(
            w.join(crate::host::owner::OWNER_FILE),
            serde_json::to_string(&me).unwrap(),
        )
        .unwrap();
        let with_stale_domain = Draft {
            owner: Some(dead(&me)),
            ..plain.clone()
        };
        assert!(matches!(judge(&id, &with_stale_domain), Verdict::Live(_)));
        std::fs::write(
            w.join(crate::host::owner::OWNER_FILE),
            serde_json::to_string(&dead(&me)).unwrap(),
        )
        .unwrap();
        assert!(matches!(judge(&id, &plain), Verdict::Gone(_)));
        std::fs::write(w.join(crate::host::workdir::KEEP_MARKER), "kept").unwrap();
        assert_eq!(judge(&id, &plain), Verdict::Kept);
        assert!(Verdict::Kept.needs_naming() && !Verdict::Gone(String::new()).needs_naming());
        assert!(!Verdict::Live(String::new()).needs_naming());
    }
}
