//! An environment: init (workdir, leases, keys, images, seeds), start, stop,
//! shutdown, status, destroy, and attaching to a running one.
//!
//! Workdir layout (mode 0700):
//!
//! ```text
//! env-id                  the env id (subnet leases check it to tell live from stale)
//! env.json                everything needed to attach: spec, plan, libvirt XML, host keys
//! id_ed25519{,.pub}       the environment's SSH client key (0600)
//! images/<vm>_<disk>.*    overlays, empty disks, copies
//! seeds/<vm>-cidata.img   cloud-init NoCloud seeds
//! logs/lago.log           the environment's log
//! logs/<vm>.console.log   serial consoles
//! booted.json             how each VM came up at the last start (restored or booted)
//! ```
//!
//! Warm start (`warm`): the first start saves a boot image in the template
//! store, later environments of the same init file restore from it.

pub mod bundle;
pub mod collect;
pub(crate) mod commands;
pub mod deploy;
pub(crate) mod error;
pub mod export;
pub(crate) mod init;
pub mod inventory;
pub mod snapshot;
pub mod vm;
mod warm;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::{self, AccelChoice, Backend, VmState};
use crate::env::error::{Error, Result};
use crate::env::vm::Vm;
use crate::guest::ssh::{Connection, Target};
use crate::host::keys;
use crate::host::lease::{LeaseStore, OWNER_ID_FILE};
use crate::host::store::TemplateStore;
use crate::plan::{EnvId, EnvPlan};
use lago_config::{self as config, EnvSpec};

use crate::host::state::{MAX_STATE_BYTES, SavedEnv};
pub use crate::host::workdir::STATE_FILE;
use crate::host::workdir::{self, CLIENT_KEY};

/// Options for [`Env::init`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// The workdir (default `./.lago`). It must not exist yet, or be an empty
    /// folder: lago never takes over a folder that holds anything.
    pub workdir: Option<PathBuf>,
    /// libvirt URI (default: `LIBVIRT_DEFAULT_URI`, else `qemu:///system`).
    pub libvirt_uri: Option<String>,
    /// Accelerator (default auto; `LAGO_ACCEL` overrides auto).
    pub accel: AccelChoice,
    /// Template store (default [`TemplateStore::from_env`]).
    pub store: Option<TemplateStore>,
    /// Subnet lease store (default [`LeaseStore::from_env`]).
    pub leases: Option<LeaseStore>,
    /// Show a progress bar while building templates (on a terminal).
    pub progress: bool,
    /// The process that owns the environment's lifetime (the test harness
    /// sets it), recorded in the workdir and in each domain's metadata so
    /// that `lago gc` can sweep the environment once that process is gone.
    /// `None`: it lives until destroyed.
    pub owner: Option<crate::host::owner::Owner>,
    /// Lago keys the init file uses that lago does not act on are errors,
    /// not warnings (which are logged).
    pub strict: bool,
    /// Template repositories (URLs or paths of `repo.metadata`), asked in
    /// order before the built-in templates, after those of the store
    /// (`LAGO_TEMPLATE_REPO`). Python Lago's `template_repo_path`.
    pub template_repos: Vec<String>,
    /// Use only the template store: nothing is downloaded or built from a
    /// mirror (also `LAGO_OFFLINE=1`).
    pub offline: bool,
    /// Treat the hypervisor as remote (`Some(true)`) or local (`Some(false)`);
    /// `None`: as the libvirt URI says (a network transport or a host is
    /// remote). Guests of a remote hypervisor reached over SSH
    /// (`qemu+ssh://…`) are reached through that host.
    pub remote: Option<bool>,
    /// Warm start: `Some(false)` always boots; `None` or `Some(true)`: the
    /// first start saves a boot image, later environments of the same init
    /// file restore from it, where that is safe (`LAGO_WARM=0` turns it off;
    /// see the `warm-start` docs).
    pub warm: Option<bool>,
}

/// A network's status.
#[derive(Debug, Clone, Serialize)]
pub struct NetStatus {
    /// The net's name in the init file.
    pub name: String,
    /// The libvirt network name (`lago-<env id>-<net>`).
    pub libvirt_name: String,
    /// Whether it is up.
    pub up: bool,
    /// Its /24 (`192.168.200.0/24`); `None` on a bridge net.
    pub subnet: Option<String>,
    /// The host's address on it; `None` on a bridge net.
    pub gateway: Option<String>,
    /// Whether it is a management net (VMs' SSH address is on it).
    pub management: bool,
    /// Session mode: the multicast group and port its NICs meet on
    /// (`239.…:<port>` on 127.0.0.1; there is no libvirt network, and it is
    /// up while a VM on it runs).
    pub socket: Option<String>,
}

/// A VM's status.
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    /// The VM's name in the init file.
    pub name: String,
    /// The libvirt domain name (`lago-<env id>-<vm>`).
    pub libvirt_name: String,
    /// Its domain's state when the status was read.
    pub state: VmState,
    /// Management address.
    pub ip: String,
    /// Its fully qualified name on the management net (`vm01.lago.local`).
    pub fqdn: String,
    /// NICs, in order.
    pub nics: Vec<NicStatus>,
    /// Metadata from the init file.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// How it came up at the environment's last start: `restored` (from a
    /// boot image, see warm start) or `booted`; `None` before the first start.
    pub came_up: Option<String>,
}

/// One NIC of a VM, as `lago status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NicStatus {
    /// The guest's name for it (`eth0`, …).
    pub name: String,
    /// The init file's network it is on.
    pub net: String,
    /// Its address, when the network hands out addresses.
    pub ip: Option<String>,
    /// Its MAC address.
    pub mac: String,
}

/// The status of a whole environment.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The environment's workdir (absolute).
    pub workdir: PathBuf,
    /// The environment's id (the `<id>` of its libvirt names, `lago-<id>-…`).
    pub env_id: String,
    /// The init file it was made from (absolute).
    pub init_file: PathBuf,
    /// Its networks, in init-file order.
    pub nets: Vec<NetStatus>,
    /// Its VMs, in init-file order.
    pub vms: Vec<VmStatus>,
}

/// A lago environment: its VMs and networks.
#[derive(Debug)]
pub struct Env {
    workdir: PathBuf,
    saved: SavedEnv,
    backend: Arc<Backend>,
    vms: BTreeMap<String, Vm>,
    autodestroy: Arc<std::sync::atomic::AtomicBool>,
}

pub(crate) fn wd_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |source| Error::Workdir { action, path, source }
}

impl Env {
    /// Attaches to the environment in `workdir` (created by [`Env::init`], maybe by another process).
    pub fn load(workdir: impl AsRef<Path>) -> Result<Env> {
        let workdir = std::path::absolute(workdir.as_ref()).map_err(wd_err("resolve", workdir.as_ref()))?;
        let state = workdir.join(STATE_FILE);
        // Only a folder of this user, never through a link: a state planted
        // by someone else must not name the environment lago acts on.
        let dir = match workdir::Dir::open(&workdir) {
            Ok(d) => d,
            Err(workdir::WorkdirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoEnv { path: workdir });
            }
            Err(e) => return Err(e.into()),
        };
        let text = match dir.read(Path::new(STATE_FILE), MAX_STATE_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NoEnv { path: workdir }),
            Err(e) => return Err(wd_err("read", &state)(e)),
        };
        let saved: SavedEnv = serde_json::from_slice(&text).map_err(|source| Error::State { path: state, source })?;
        Env::attach(workdir, saved)
    }

    fn attach(workdir: PathBuf, saved: SavedEnv) -> Result<Env> {
        let backend = Arc::new(Backend::connect(Some(&saved.libvirt_uri))?);
        Env::attach_with(workdir, saved, backend)
    }

    pub(super) fn attach_with(workdir: PathBuf, saved: SavedEnv, backend: Arc<Backend>) -> Result<Env> {
        let mut vms = BTreeMap::new();
        let autodestroy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A remote hypervisor's guests are reached through it, when the URI reaches it over SSH.
        let uri = crate::backend::uri::LibvirtUri::parse(&saved.libvirt_uri).ok();
        let remote = saved
            .remote
            .unwrap_or_else(|| uri.as_ref().is_some_and(|u| u.is_remote()));
        let via = uri.filter(|_| remote).and_then(|u| u.jump_host()).map(Arc::new);
        for (vs, vp) in saved.spec.vms.iter().zip(&saved.plan.vms) {
            // A saved host key that cannot be read is an error, never "trust any".
            let host_key = match saved.host_keys.get(&vs.name) {
                Some(k) => Some(keys::public_blob(k).ok_or_else(|| Error::HostKey {
                    vm: vs.name.clone(),
                    state: workdir.join(STATE_FILE),
                })?),
                None => None,
            };
            let existing = vs.provider == config::Provider::Ssh;
            // Session mode: the guest's SSH port is forwarded from one on 127.0.0.1.
            let forwarded = saved.session.as_ref().and_then(|s| s.ssh_ports.get(&vs.name));
            let target = Target {
                vm: vs.name.clone(),
                ip: match forwarded {
                    Some(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    None => std::net::IpAddr::V4(vp.ip),
                },
                port: forwarded.copied().unwrap_or(22),
                user: vs.ssh_user.clone(),
                key: vs.ssh_key.clone().unwrap_or_else(|| workdir.join(CLIENT_KEY)),
                host_key,
                password: vs.ssh_password.clone().map(crate::guest::ssh::Secret),
                // A machine lago did not create: its host key is learned, then pinned.
                learned_host_key: existing.then(|| workdir.join(workdir::KNOWN_HOSTS_DIR).join(&vs.name)),
                via: via.clone(),
            };
            vms.insert(
                vs.name.clone(),
                Vm {
                    spec: vs.clone(),
                    plan: vp.clone(),
                    domain_xml: saved.domain_xml.get(&vs.name).cloned().unwrap_or_default(),
                    backend: backend.clone(),
                    conn: Connection::new(target),
                    autodestroy: autodestroy.clone(),
                    console_cursor: std::sync::Mutex::new(0),
                    session: saved.session.is_some(),
                    console_volume: (saved.remote == Some(true) && !existing).then(|| {
                        backend::storage::volume_name(&format!(
                            "{}{}-console.log",
                            saved.env_id.object_prefix(),
                            vs.name
                        ))
                    }),
                },
            );
        }
        Ok(Env {
            workdir,
            saved,
            backend,
            vms,
            autodestroy,
        })
    }

    /// The workdir the environment lives in (absolute).
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The environment's id (the `<id>` of its libvirt names, `lago-<id>-…`).
    pub fn id(&self) -> &EnvId {
        &self.saved.env_id
    }

    /// The plan it was made with: names, addresses, MACs and disk paths.
    pub fn plan(&self) -> &EnvPlan {
        &self.saved.plan
    }

    /// The validated init file it was made from.
    pub fn spec(&self) -> &EnvSpec {
        &self.saved.spec
    }

    /// The VMs, by name.
    pub fn get_vms(&self) -> &BTreeMap<String, Vm> {
        &self.vms
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Result<&Vm> {
        self.vms.get(name).ok_or_else(|| Error::NoSuchVm {
            name: name.to_owned(),
            known: self.vms.keys().cloned().collect(),
        })
    }

    /// The networks, by name.
    pub fn get_nets(&self) -> BTreeMap<String, &crate::plan::NetPlan> {
        self.saved.plan.nets.iter().map(|n| (n.name.clone(), n)).collect()
    }

    pub(crate) fn select(&self, names: &[&str]) -> Result<Vec<&Vm>> {
        if names.is_empty() {
            return Ok(self
                .saved
                .plan
                .start_order
                .vms
                .iter()
                .filter_map(|n| self.vms.get(n))
                .collect());
        }
        names.iter().map(|n| self.vm(n)).collect()
    }

    /// Starts the nets the chosen VMs use, then the VMs in parallel, and waits
    /// (in parallel) until every one answers SSH. `&[]` means all. A failure
    /// rolls back what this call started.
    ///
    /// The first start of all VMs restores them from the environment's boot
    /// image when init found one (warm start), or boots them and saves one.
    pub fn start(&self, names: &[&str]) -> Result<()> {
        self.start_vms(names, false).map_err(|e| self.libvirt_gone("start", e))
    }

    /// Like [`Env::start`], always booting: a boot image is neither
    /// restored from nor saved (`lago start --cold`).
    pub fn start_cold(&self, names: &[&str]) -> Result<()> {
        self.start_vms(names, true).map_err(|e| self.libvirt_gone("start", e))
    }

    /// `e` as the user should see it: when the connection to libvirtd broke
    /// meanwhile, that is what happened (not the call it broke).
    pub(crate) fn libvirt_gone(&self, during: &'static str, e: Error) -> Error {
        if self.backend.is_alive() {
            return e;
        }
        Error::LibvirtGone {
            uri: self.saved.libvirt_uri.clone(),
            during,
            source: Box::new(e),
        }
    }

    fn start_vms(&self, names: &[&str], cold: bool) -> Result<()> {
        let vms = self.select(names)?;
        // Session mode has no libvirt networks: the VMs' sockets are the nets.
        let wanted: BTreeSet<&str> = vms
            .iter()
            .filter(|v| !v.is_existing_machine() && self.saved.session.is_none())
            .flat_map(|v| v.plan.nics.iter().map(|n| n.net.as_str()))
            .collect();
        let mut started_nets = Vec::new();
        let t_nets = Instant::now();
        for net in self
            .saved
            .plan
            .nets
            .iter()
            .filter(|n| wanted.contains(n.name.as_str()) && !n.external)
        {
            if self.backend.network_active(&net.libvirt_name) {
                continue;
            }
            let xml = self.saved.network_xml.get(&net.name).cloned().unwrap_or_default();
            if let Err(e) = self.backend.start_network(&net.libvirt_name, &xml) {
                self.rollback(&[], &started_nets);
                return Err(e.into());
            }
            tracing::info!(net = %net.name, ms = t_nets.elapsed().as_millis() as u64, "network up");
            started_nets.push(net.libvirt_name.clone());
        }
        let to_start: Vec<&Vm> = vms
            .into_iter()
            .filter(|v| !v.is_existing_machine())
            .filter(|v| v.state().map(|s| s != VmState::Running).unwrap_or(true))
            .collect();
        let boot =
            || crate::env::error::for_each_parallel("start", &to_start, |vm| vm.name().to_owned(), |vm| vm.start());
        let first = names.is_empty() && !self.has_started() && to_start.len() == self.lago_vms();
        // Marked before it begins: a start after a failed or interrupted
        // first one never restores memory over disks the guests wrote since.
        let started = if first {
            self.note_came_up(&BTreeMap::new())
                .and_then(|()| warm::first_start(self, &to_start, cold, boot))
        } else {
            boot().map(|()| to_start.iter().map(|v| (v.name().to_owned(), warm::BOOTED)).collect())
        }
        .and_then(|how| self.note_came_up(&how));
        if started.is_err() {
            let started_vms: Vec<&str> = to_start.iter().map(|v| v.name()).collect();
            self.rollback(&started_vms, &started_nets);
        }
        started
    }

    /// How many VMs lago runs (not existing machines).
    fn lago_vms(&self) -> usize {
        self.vms.values().filter(|v| !v.is_existing_machine()).count()
    }

    /// Whether the environment was ever started (it says how its VMs came up).
    fn has_started(&self) -> bool {
        self.workdir.join(workdir::BOOTED_FILE).exists()
    }

    /// How each VM came up at its last start (`restored` from a boot image,
    /// or `booted`); empty before the first start.
    pub fn came_up(&self) -> BTreeMap<String, String> {
        let Ok(dir) = workdir::Dir::open(&self.workdir) else {
            return BTreeMap::new();
        };
        dir.read(Path::new(workdir::BOOTED_FILE), 1 << 20)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records how the VMs `how` names came up (the others keep theirs).
    fn note_came_up(&self, how: &BTreeMap<String, &'static str>) -> Result<()> {
        let mut all = self.came_up();
        all.extend(how.iter().map(|(k, v)| (k.clone(), (*v).to_owned())));
        let path = self.workdir.join(workdir::BOOTED_FILE);
        let text = serde_json::to_vec_pretty(&all).map_err(|source| Error::State { path, source })?;
        workdir::Dir::open(&self.workdir)?.replace(Path::new(workdir::BOOTED_FILE), &text, 0o600)?;
        Ok(())
    }

    fn rollback(&self, vms: &[&str], nets: &[String]) {
        for name in vms {
            if let Some(vm) = self.vms.get(*name)
                && let Err(e) = vm.stop()
            {
                tracing::warn!(vm = name, error = %e, "rollback: stopping VM failed");
            }
        }
        for net in nets {
            if let Err(e) = self.backend.stop_network(net) {
                tracing::warn!(net, error = %e, "rollback: stopping network failed");
            }
        }
    }

    /// Nets no running VM uses any more.
    fn stop_unused_nets(&self) -> Result<()> {
        let mut used = BTreeSet::new();
        for vm in self.vms.values().filter(|v| !v.is_existing_machine()) {
            if vm.state()? != VmState::Down {
                used.extend(vm.plan.nics.iter().map(|n| n.net.clone()));
            }
        }
        for net in self.saved.plan.nets.iter().filter(|n| !used.contains(&n.name)) {
            self.backend.stop_network(&net.libvirt_name)?;
        }
        Ok(())
    }

    /// Powers the chosen VMs off at once (`&[]`: all), then stops nets no running VM uses.
    pub fn stop(&self, names: &[&str]) -> Result<()> {
        let vms = self.select(names)?;
        if !names.is_empty() {
            crate::env::error::for_each_parallel("stop", &vms, |vm| vm.name().to_owned(), |vm| vm.stop())?;
            return self.stop_unused_nets();
        }
        // Every VM stops: the networks go at the same time as the domains.
        let nets: Vec<String> = self.saved.plan.nets.iter().map(|n| n.libvirt_name.clone()).collect();
        alongside_networks(&self.backend, &nets, || {
            crate::env::error::for_each_parallel("stop", &vms, |vm| vm.name().to_owned(), |vm| vm.stop())
        })
    }

    /// ACPI shutdown of the chosen VMs (`&[]`: all), waiting up to `timeout` for each, then stops unused nets.
    pub fn shutdown(&self, names: &[&str], timeout: Duration) -> Result<()> {
        let vms = self.select(names)?;
        crate::env::error::for_each_parallel("shut down", &vms, |vm| vm.name().to_owned(), |vm| vm.shutdown(timeout))?;
        self.stop_unused_nets()
    }

    /// The state of every VM and net.
    pub fn status(&self) -> Result<Status> {
        let mut vms = Vec::new();
        let came_up = self.came_up();
        for name in &self.saved.plan.start_order.vms {
            let Some(vm) = self.vms.get(name) else { continue };
            vms.push(VmStatus {
                name: vm.name().to_owned(),
                libvirt_name: vm.plan.libvirt_name.clone(),
                state: vm.state()?,
                ip: vm.plan.ip.to_string(),
                fqdn: vm.plan.fqdn.clone(),
                nics: vm
                    .plan
                    .nics
                    .iter()
                    .map(|n| NicStatus {
                        name: n.name.clone(),
                        net: n.net.clone(),
                        ip: n.ip.map(|i| i.to_string()),
                        mac: n.mac.to_string(),
                    })
                    .collect(),
                metadata: vm.spec.metadata.clone(),
                came_up: came_up.get(name).cloned(),
            });
        }
        let session = self.saved.session.as_ref();
        let nets = (self.saved.plan.nets.iter().enumerate())
            .map(|(i, n)| NetStatus {
                name: n.name.clone(),
                libvirt_name: n.libvirt_name.clone(),
                up: match session {
                    // Its VMs' sockets are the net.
                    Some(_) => vms
                        .iter()
                        .any(|v| v.state == VmState::Running && v.nics.iter().any(|c| c.net == n.name)),
                    None => self.backend.network_active(&n.libvirt_name),
                },
                subnet: n.subnet.map(|s| s.to_string()),
                // Nothing on the host has an address on a session net.
                gateway: n.gateway.filter(|_| session.is_none()).map(|g| g.to_string()),
                management: n.management,
                socket: session.map(|s| crate::backend::xml::session_group(s.group, s.port, i)),
            })
            .collect();
        Ok(Status {
            workdir: self.workdir.clone(),
            env_id: self.saved.env_id.to_string(),
            init_file: self.saved.spec.source.clone(),
            nets,
            vms,
        })
    }

    /// Tears everything down: domains, networks (also any other libvirt object
    /// named with this env's id), subnet leases, and what lago created in the
    /// workdir (the folder itself only when lago created it). Idempotent.
    pub fn destroy(self) -> Result<()> {
        self.teardown()
    }

    /// Like [`Env::destroy`], through a shared reference (for harnesses that
    /// hand the environment to many tests).
    pub fn teardown(&self) -> Result<()> {
        let run = |backend: &Backend| {
            destroy_parts(
                &self.workdir,
                &self.saved.env_id,
                backend,
                &LeaseStore::new(&self.saved.lease_dir),
                &self
                    .saved
                    .store
                    .as_ref()
                    .map_or_else(TemplateStore::from_env, TemplateStore::new),
            )
        };
        match run(&self.backend) {
            // The connection broke (libvirtd restarted, the hypervisor's sshd
            // went away and came back): the teardown goes on over a new one.
            Err(e) if !self.backend.is_alive() => {
                tracing::info!(uri = %self.saved.libvirt_uri, error = %crate::util::text::error_chain(&e), "the libvirt connection broke; reconnecting to tear down");
                run(&Backend::connect(Some(&self.saved.libvirt_uri))?)
            }
            r => r,
        }
    }

    /// From now on, VMs this handle starts are destroyed by libvirtd when
    /// this process ends, however it ends (for environments one process owns
    /// alone; never for kept or shared ones).
    pub(crate) fn set_autodestroy(&self, on: bool) {
        self.autodestroy.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The template store the environment's templates and boot image are in.
    pub(crate) fn template_store(&self) -> TemplateStore {
        self.saved
            .store
            .as_ref()
            .map_or_else(TemplateStore::from_env, TemplateStore::new)
    }

    /// The subnet lease directory this environment uses.
    pub fn lease_dir(&self) -> &Path {
        &self.saved.lease_dir
    }

    /// The template (`name:version`) disk `disk` of VM `vm` was made from.
    pub(crate) fn saved_template(&self, vm: &str, disk: &str) -> Option<String> {
        self.saved.templates.get(&format!("{vm}/{disk}")).cloned()
    }

    /// What the console watchdog `watch` sees on every VM's console: its
    /// first match since the test started.
    pub(crate) fn watch_consoles(
        &self,
        watch: &crate::guest::console::Watch,
    ) -> Option<crate::env::error::ConsoleMatch> {
        for vm in self.vms.values() {
            if let Some(m) = watch.check_log(vm.name(), vm.console_log()) {
                return Some(m);
            }
        }
        watch.first_match()
    }

    /// The libvirt URI this environment uses.
    pub fn libvirt_uri(&self) -> &str {
        &self.saved.libvirt_uri
    }
}

/// Runs `domains` (stopping or destroying an env's domains) while the
/// networks `nets` are destroyed on a thread of their own: nothing else uses
/// them, and libvirt lets a network go while a domain on it is being
/// destroyed (each costs a process kill and libvirt's poll). The domains'
/// failure comes first, then the networks'.
fn alongside_networks(backend: &Backend, nets: &[String], domains: impl FnOnce() -> Result<()>) -> Result<()> {
    let (doms, nets) = std::thread::scope(|s| {
        let nets = s.spawn(|| -> Result<()> {
            for n in nets {
                backend.stop_network(n)?;
                tracing::info!(network = n, "destroyed");
            }
            Ok(())
        });
        let doms = domains();
        let nets = nets.join().unwrap_or_else(|p| {
            Err(Error::Panicked {
                vm: "networks".into(),
                action: "destroy networks",
                message: crate::env::error::panic_text(p.as_ref()),
            })
        });
        (doms, nets)
    });
    doms.and(nets)
}

/// Destroys every libvirt object named with `env_id` on `backend`: its
/// domains (in parallel: libvirt waits for each QEMU process), then its networks.
pub(crate) fn destroy_objects(backend: &Backend, env_id: &EnvId) -> Result<()> {
    let prefix = env_id.object_prefix();
    let domains = backend.domains_with_prefix(&prefix)?;
    let networks = backend.networks_with_prefix(&prefix)?;
    alongside_networks(backend, &networks, || {
        crate::env::error::for_each_parallel("destroy", &domains, String::clone, |d| {
            backend.stop_domain(d)?;
            tracing::info!(domain = d, "destroyed");
            Ok(())
        })
    })?;
    backend.release_claims(env_id.as_str())?;
    // A remote hypervisor's volumes of the env (disks, seeds, consoles); templates stay shared.
    for v in backend.delete_volumes_with_prefix(&prefix)? {
        tracing::info!(volume = v, "deleted");
    }
    Ok(())
}

/// The one teardown: libvirt objects, then leases, then the workdir. It
/// fails closed: while libvirt objects of the env may remain, its leases and
/// workdir are kept (so that a later destroy or `lago gc` can find them).
fn destroy_parts(
    workdir: &Path,
    env_id: &EnvId,
    backend: &Backend,
    leases: &LeaseStore,
    store: &TemplateStore,
) -> Result<()> {
    destroy_objects(backend, env_id).map_err(|e| Error::TeardownIncomplete {
        env_id: env_id.to_string(),
        workdir: workdir.to_path_buf(),
        source: Box::new(e),
    })?;
    // By env id: a workdir the user moved still releases the leases that name the old path.
    leases.release_env(env_id)?;
    store.forget_env(env_id, workdir);
    crate::util::logging::detach_env_log(&workdir.join(crate::host::workdir::LOG_FILE));
    Ok(workdir::remove(workdir, Some(env_id))?)
}

/// Destroys whatever environment `workdir` holds, even a half-created one
/// (only `env-id` written) or one whose state file is unreadable. A missing
/// workdir is not an error.
pub fn destroy_workdir(workdir: impl AsRef<Path>, libvirt_uri: Option<&str>) -> Result<()> {
    let workdir = std::path::absolute(workdir.as_ref()).map_err(wd_err("resolve", workdir.as_ref()))?;
    if !workdir.exists() {
        return Ok(());
    }
    if let Ok(env) = Env::load(&workdir) {
        return env.destroy();
    }
    let id_path = workdir.join(OWNER_ID_FILE);
    let Some(env_id) = fs::read_to_string(&id_path)
        .ok()
        .and_then(|s| EnvId::new(s.trim()).ok())
    else {
        return Err(Error::NoEnv { path: workdir });
    };
    // What can still be read of a damaged state: the env's own libvirt URI and lease directory.
    let partial: Option<serde_json::Value> = fs::read_to_string(workdir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let field = |k: &str| partial.as_ref().and_then(|v| v[k].as_str().map(str::to_owned));
    let leases = field("lease_dir").map_or_else(LeaseStore::from_env, LeaseStore::new);
    // Else the daemon its leases name (taken once init had reached it).
    let leased = || {
        let list = leases.list().ok()?;
        list.into_iter()
            .find(|l| l.env_id == env_id)
            .and_then(|l| l.libvirt_uri)
    };
    let uri = libvirt_uri
        .map(str::to_owned)
        .or_else(|| field("libvirt_uri"))
        .or_else(leased);
    let store = field("store").map_or_else(TemplateStore::from_env, TemplateStore::new);
    let backend = Backend::connect(uri.as_deref())?;
    destroy_parts(&workdir, &env_id, &backend, &leases, &store)
}
