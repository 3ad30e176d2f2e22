//! Sweeping what crashed runs left: `lago gc`, and the test harness before
//! it boots.
//!
//! Environments are found from three sides: subnet leases (env id, workdir,
//! libvirt URI), libvirt domains (`lago-<id>-…`, whose metadata names the
//! workdir and the owner) and libvirt networks (`lago-<id>-…`; libvirt 9.0
//! has no network metadata, so a network is tied to its environment by the
//! prefix). An environment is removed only when it is provably gone on this
//! machine:
//!
//! - its workdir is missing (or holds another environment), or
//! - the process that owned its lifetime (recorded by the test harness) is
//!   gone: ended, or the machine rebooted since;
//!
//! never when its owner runs, when it is kept (`LAGO_KEEP`), when it was
//! created by `lago init` or the SDK (no owner: it lives until destroyed),
//! or when its owner is on another machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::error::{Error, Result, error_chain};
use crate::lease::{LeaseStore, OWNER_ID_FILE};
use crate::owner::{Liveness, Owner};
use crate::plan::{EnvId, Subnet};

/// What a sweep looks at and may do.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only say what would be removed.
    pub dry_run: bool,
    /// The libvirt URIs to look at.
    pub uris: Vec<String>,
    /// Also every URI that leases on this machine record.
    pub all_uris: bool,
    /// The subnet lease store.
    pub leases: LeaseStore,
    /// Stop removing (and say so) after this instant.
    pub deadline: Option<Instant>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            uris: vec![Backend::resolve_uri(None)],
            all_uris: false,
            leases: LeaseStore::from_env(),
            deadline: None,
        }
    }
}

/// What a sweep decided about one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "why", rename_all = "kebab-case")]
pub enum Verdict {
    /// It is in use (why).
    Live(String),
    /// `LAGO_KEEP` kept it.
    Kept,
    /// Its owner is on another machine.
    Elsewhere,
    /// It is provably gone (why): removed, unless a dry run.
    Gone(String),
}

/// One environment a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// Env id.
    pub env_id: String,
    /// The libvirt URI its objects are on.
    pub uri: String,
    /// Its workdir, when anything names it.
    pub workdir: Option<PathBuf>,
    /// Its domains.
    pub domains: Vec<String>,
    /// Its networks.
    pub networks: Vec<String>,
    /// Its leased subnets.
    pub subnets: Vec<Subnet>,
    /// The decision.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Whether it was removed.
    pub removed: bool,
    /// Why removing it failed, if it did.
    pub error: Option<String>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Every environment found, in env-id order.
    pub envs: Vec<Found>,
    /// URIs that could not be reached (and why).
    pub unreachable: Vec<(String, String)>,
    /// Whether the deadline stopped it before it was done.
    pub out_of_time: bool,
}

impl GcReport {
    /// The environments removed.
    pub fn removed(&self) -> impl Iterator<Item = &Found> {
        self.envs.iter().filter(|f| f.removed)
    }
}

#[derive(Default)]
struct Draft {
    uri: Option<String>,
    workdir: Option<PathBuf>,
    owner: Option<Owner>,
    domains: Vec<String>,
    networks: Vec<String>,
    subnets: Vec<Subnet>,
}

/// What the workdir, the owner and the keep marker say about env `id`.
fn judge(id: &EnvId, d: &Draft) -> Verdict {
    // A daemon other machines share (a remote URI): an environment no lease
    // of this machine names is another client's unless its owner is provably
    // a process of this machine that is gone.
    let shared = d.uri.as_deref().is_some_and(crate::remote::is_remote);
    if shared && d.subnets.is_empty() {
        match d.owner.as_ref().map(Owner::liveness) {
            Some(Liveness::Gone(_)) => {}
            Some(Liveness::Alive) => return Verdict::Live("its owner runs".into()),
            _ => return Verdict::Elsewhere,
        }
    }
    let Some(w) = &d.workdir else {
        return Verdict::Gone("no lease or domain names a workdir for it".into());
    };
    match std::fs::read_to_string(w.join(OWNER_ID_FILE)) {
        Ok(s) if s.trim() == id.as_str() => {}
        Ok(_) => return Verdict::Gone(format!("its workdir {} holds another environment", w.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Verdict::Gone(format!("its workdir {} is gone", w.display()));
        }
        // Unreadable (another user's 0700 workdir): nothing is proven.
        Err(e) => return Verdict::Live(format!("its workdir {} cannot be read ({e})", w.display())),
    }
    if w.join(crate::workdir::KEEP_MARKER).exists() {
        return Verdict::Kept;
    }
    match Owner::read(w).or_else(|| d.owner.clone()) {
        None => {
            Verdict::Live("it has no owning process (made by `lago init` or the SDK; `lago destroy` removes it)".into())
        }
        Some(o) => match o.liveness() {
            Liveness::Alive => Verdict::Live(format!("its owner, process {}, runs", o.pid)),
            Liveness::Elsewhere => Verdict::Elsewhere,
            Liveness::Gone(why) => Verdict::Gone(format!("its owner is gone: {why}")),
        },
    }
}

/// Finds lago's environments and removes those that are provably gone.
pub fn sweep(opts: &GcOptions) -> Result<GcReport> {
    let mut drafts: BTreeMap<EnvId, Draft> = BTreeMap::new();
    let mut uris = opts.uris.clone();
    for lease in opts.leases.list()? {
        let d = drafts.entry(lease.env_id.clone()).or_default();
        d.workdir.get_or_insert(lease.workdir.clone());
        d.subnets.push(lease.subnet);
        if let Some(u) = &lease.libvirt_uri {
            d.uri.get_or_insert(u.clone());
            if opts.all_uris && !uris.contains(u) {
                uris.push(u.clone());
            }
        }
    }
    let mut report = GcReport::default();
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    for uri in &uris {
        let b = match Backend::connect(Some(uri)) {
            Ok(b) => b,
            Err(e) if uris.len() > 1 => {
                report.unreachable.push((uri.clone(), error_chain(&e)));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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
        backends.insert(uri.clone(), b);
    }
    let default_uri = uris.first().cloned().unwrap_or_else(|| Backend::resolve_uri(None));
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
        if matches!(found.verdict, Verdict::Gone(_)) && !opts.dry_run {
            if opts.deadline.is_some_and(|t| Instant::now() >= t) {
                report.out_of_time = true;
            } else {
                match reap(&id, &found, backends.get(&found.uri), &opts.leases) {
                    Ok(()) => found.removed = true,
                    Err(e) => found.error = Some(error_chain(&e)),
                }
            }
        }
        if let Some(why) = match &found.verdict {
            Verdict::Gone(why) => Some(why),
            _ => None,
        } {
            tracing::info!(env = %found.env_id, removed = found.removed, %why, "gc");
        }
        report.envs.push(found);
    }
    Ok(report)
}

/// Removes env `id`: its libvirt objects, then its leases, then lago's
/// files in its workdir (only when the workdir still names this env).
fn reap(id: &EnvId, f: &Found, backend: Option<&Backend>, leases: &LeaseStore) -> Result<()> {
    // Whatever the daemon holds of it goes: domains, networks, and (on a
    // remote hypervisor) its volumes and subnet claims, which an env that
    // never started has without any domain or network.
    match backend {
        Some(b) => crate::env::destroy_objects(b, id)?,
        // A remote daemon not asked (no --all-uris) may hold its volumes: fail closed.
        None if !f.domains.is_empty() || !f.networks.is_empty() || crate::remote::is_remote(&f.uri) => {
            return Err(Error::NoBackendForGc { uri: f.uri.clone() });
        }
        None => {}
    }
    leases.release_env(id)?;
    if let Some(w) = &f.workdir
        && owned_by(w, id)
    {
        crate::workdir::remove(w)?;
        // The environment of a nextest run: its meeting folder goes too.
        if let Some(dir) = crate::harness::meeting_dir_of(w) {
            crate::harness::remove_meeting_dir(dir);
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

    #[test]
    fn verdicts_follow_the_workdir_the_keep_marker_and_the_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let id = EnvId::new("aaaa").unwrap();
        let none = Draft::default();
        assert!(matches!(judge(&id, &none), Verdict::Gone(_)));

        let missing = Draft {
            workdir: Some(tmp.path().join("nope")),
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &missing), Verdict::Gone(why) if why.contains("is gone")));

        let w = workdir_of(tmp.path(), "aaaa");
        let plain = Draft {
            workdir: Some(w.clone()),
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &plain), Verdict::Live(why) if why.contains("lago init")));
        let other = EnvId::new("bbbb").unwrap();
        assert!(matches!(judge(&other, &plain), Verdict::Gone(why) if why.contains("another environment")));

        let me = Owner::this_process().unwrap();
        std::fs::write(w.join(crate::owner::OWNER_FILE), serde_json::to_string(&me).unwrap()).unwrap();
        assert!(matches!(judge(&id, &plain), Verdict::Live(why) if why.contains("runs")));
        let dead = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        std::fs::write(w.join(crate::owner::OWNER_FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        assert!(matches!(judge(&id, &plain), Verdict::Gone(why) if why.contains("owner is gone")));

        std::fs::write(w.join(crate::workdir::KEEP_MARKER), "kept").unwrap();
        assert_eq!(judge(&id, &plain), Verdict::Kept);
    }

    #[test]
    fn on_a_shared_remote_daemon_only_this_machines_environments_are_judged() {
        let tmp = tempfile::tempdir().unwrap();
        let id = EnvId::new("cccc").unwrap();
        let remote = Some("qemu+ssh://root@hv.example.org/system".to_owned());
        // Another runner's: its workdir is not here, it has no owner or one elsewhere.
        let theirs = Draft {
            uri: remote.clone(),
            workdir: Some(tmp.path().join("their-workdir")),
            ..Draft::default()
        };
        assert_eq!(judge(&id, &theirs), Verdict::Elsewhere);
        let me = Owner::this_process().unwrap();
        let elsewhere = Owner {
            machine_id: "another-machine".into(),
            ..me.clone()
        };
        let theirs = Draft {
            owner: Some(elsewhere),
            ..theirs
        };
        assert_eq!(judge(&id, &theirs), Verdict::Elsewhere);
        // One of this machine's test runs that is gone: swept as locally.
        let dead = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        let ours = Draft {
            uri: remote.clone(),
            workdir: Some(tmp.path().join("gone")),
            owner: Some(dead),
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &ours), Verdict::Gone(_)));
        // Known by a lease of this machine: judged as locally.
        let leased = Draft {
            uri: remote,
            workdir: Some(tmp.path().join("gone")),
            subnets: vec![crate::plan::Subnet::new(200).unwrap()],
            ..Draft::default()
        };
        assert!(matches!(judge(&id, &leased), Verdict::Gone(_)));
    }
}
