//! The libvirt backend: the only user of the `virt` crate.
//!
//! Domains and networks are transient (created from XML, gone when
//! destroyed): the plan in the workdir is the source of truth and `start`
//! re-creates them from it. Every object's name starts with `lago-<env id>-`
//! and every domain carries the env id and workdir in its `<metadata>`.
//!
//! The connection URI is, in order: the option, `LIBVIRT_DEFAULT_URI`,
//! `qemu:///system`.

mod saved;
mod session;
pub mod storage;
pub mod uri;
pub mod xml;

use std::path::Path;

use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;

pub use xml::{Accel, Boot, DomainParams};

/// A libvirt call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The daemon could not be reached.
    #[error("cannot connect to libvirt at {uri} (is libvirtd running? inside the test namespace: scripts/netns-run)")]
    Connect {
        /// The libvirt URI tried (the option, `LIBVIRT_DEFAULT_URI` or `qemu:///system`).
        uri: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// Neither the system daemon nor, for a user other than root with no
    /// URI given, the user's own could be reached.
    #[error(
        "cannot connect to libvirt: not at qemu:///system ({system}), nor at this user's own qemu:///session ({session})"
    )]
    NoDaemon {
        /// Why `qemu:///system` could not be reached (the error and its causes).
        system: String,
        /// Why `qemu:///session` could not be reached.
        session: String,
    },
    /// A network could not be created.
    #[error("cannot start network {name}")]
    StartNetwork {
        /// The network's libvirt name (`lago-<env id>-<net>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A network could not be destroyed.
    #[error("cannot stop network {name}")]
    StopNetwork {
        /// The network's libvirt name (`lago-<env id>-<net>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A domain could not be created.
    #[error("cannot start VM {name}")]
    StartDomain {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A domain could not be destroyed.
    #[error("cannot stop VM {name}")]
    StopDomain {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// The ACPI shutdown request failed.
    #[error("cannot ask VM {name} to shut down")]
    Shutdown {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A domain's state could not be read.
    #[error("cannot read the state of VM {name}")]
    State {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// Listing objects failed.
    #[error("cannot list libvirt {what}")]
    List {
        /// Domains or networks.
        what: &'static str,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A snapshot could not be taken, reverted to, listed or deleted.
    #[error("cannot {action} snapshot `{snapshot}` of VM {name}")]
    Snapshot {
        /// `take`, `revert to`, `list` or `delete`.
        action: &'static str,
        /// libvirt name of the domain.
        name: String,
        /// The snapshot's name, as given to lago.
        snapshot: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A running domain could not be saved to a file.
    #[error("cannot save VM {name} to {path}")]
    Save {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// The save image being written.
        path: std::path::PathBuf,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A domain could not be restored from a save image.
    #[error("cannot restore VM {name} from {path}")]
    Restore {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// The save image read.
        path: std::path::PathBuf,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A save image could not be read or fed to libvirt.
    #[error("cannot feed save image {path} to libvirt for VM {name}")]
    SaveImage {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// The save image.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Pausing or resuming a domain failed.
    #[error("cannot {action} VM {name}")]
    Pause {
        /// `pause` or `resume`.
        action: &'static str,
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A hard reset of a domain failed.
    #[error("cannot reset VM {name}")]
    Reset {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// Setting a NIC's link state failed.
    #[error("cannot set the link of VM {name}'s NIC {mac} {state}")]
    Link {
        /// The domain's libvirt name (`lago-<env id>-<vm>`).
        name: String,
        /// The NIC's MAC.
        mac: String,
        /// `up` or `down`.
        state: &'static str,
        /// libvirt's error (none: the running domain has no NIC with that MAC).
        #[source]
        source: Option<Box<virt::error::Error>>,
    },
    /// A storage pool or volume operation failed (remote hypervisors).
    #[error("cannot {action} {name} (libvirt storage)")]
    Storage {
        /// What was being done.
        action: &'static str,
        /// The pool or volume.
        name: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A local file to upload could not be read.
    #[error("cannot upload {} as volume {name}", path.display())]
    StorageIo {
        /// The libvirt volume being written.
        name: String,
        /// The host file being uploaded.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An uploaded template volume does not hold what was meant (the local
    /// file changed while it went up, or the volume has another size).
    #[error("template volume {name}: {reason}")]
    UploadMismatch {
        /// The template's volume name in the `lago` pool.
        name: String,
        /// What is wrong with it (its size, the upload lock taken over, …).
        reason: String,
    },
    /// Another client's upload of a template did not finish in time.
    #[error(
        "template volume {name}: another client's upload (lock {lock}) did not finish in time; if no client uploads it, delete that volume"
    )]
    UploadWait {
        /// The template's volume name in the `lago` pool.
        name: String,
        /// The lock volume.
        lock: String,
    },
    /// libvirt described a pool in a way lago cannot read.
    #[error("cannot read the description of storage pool {name}: {message}")]
    StorageXml {
        /// The storage pool's name (`lago`).
        name: String,
        /// What could not be read in its XML.
        message: String,
    },
    /// KVM was asked for but cannot be used.
    #[error("accelerator kvm asked for, but {reason}")]
    KvmUnusable {
        /// Why not (`/dev/kvm` missing or not openable, or a PVM-flavoured KVM).
        reason: String,
    },
    /// An unknown accelerator name.
    #[error("unknown accelerator {value:?} in {source_name}: expected auto, kvm or tcg")]
    BadAccel {
        /// The accelerator name as given.
        value: String,
        /// Where the value came from (`LAGO_ACCEL`).
        source_name: &'static str,
    },
}

/// A domain lago made, as `lago gc` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagoDomain {
    /// Its libvirt name.
    pub name: String,
    /// The env id in its name.
    pub env_id: crate::plan::EnvId,
    /// The workdir its metadata names (`None` if the metadata has none or cannot be read).
    pub workdir: Option<std::path::PathBuf>,
    /// The owning process its metadata names (`None` for an environment without an owner).
    pub owner: Option<crate::host::owner::Owner>,
}

/// The workdir and owner in a domain's lago metadata.
fn parse_metadata(xml: &str) -> (Option<std::path::PathBuf>, Option<crate::host::owner::Owner>) {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return (None, None);
    };
    let ours = |n: &roxmltree::Node<'_, '_>, tag: &str| {
        n.tag_name().name() == tag && n.tag_name().namespace() == Some(xml::METADATA_NS)
    };
    let workdir = doc
        .descendants()
        .find(|n| ours(n, "workdir"))
        .and_then(|n| n.text())
        .map(std::path::PathBuf::from);
    let owner = doc.descendants().find(|n| ours(n, "owner")).and_then(|n| {
        Some(crate::host::owner::Owner {
            pid: n.attribute("pid")?.parse().ok()?,
            start_ticks: n.attribute("start")?.parse().ok()?,
            boot_id: n.attribute("boot")?.to_owned(),
            host_id: n.attribute("host").unwrap_or_default().to_owned(),
            machine_id: n.attribute("machine").unwrap_or_default().to_owned(),
        })
    });
    (workdir, owner)
}

/// A VM's state, as libvirt reports it (`down`: no such domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// The domain is running (libvirt's `running` or `blocked`).
    Running,
    /// The domain is paused or suspended (libvirt's `paused` or `pmsuspended`).
    Paused,
    /// libvirt's `shutdown`: the guest is acting on a shutdown request.
    ShuttingDown,
    /// Shut off / crashed / not defined: not running.
    Down,
    /// A state libvirt reports that lago does not map (shown as `unknown`).
    Other,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting down",
            VmState::Down => "down",
            VmState::Other => "unknown",
        })
    }
}

/// The accelerator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where usable, else TCG.
    #[default]
    Auto,
    /// KVM or an error.
    Kvm,
    /// TCG (software emulation), whether or not KVM is usable.
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            other => Err(format!("expected auto, kvm or tcg, found {other:?}")),
        }
    }
}

/// Why KVM cannot be used here, or `None` if it can.
pub fn kvm_unusable_reason(dev_kvm: &Path, pvm_module: &Path) -> Option<String> {
    use std::fs::OpenOptions;
    if !dev_kvm.exists() {
        return Some(format!("{} does not exist", dev_kvm.display()));
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open(dev_kvm) {
        return Some(format!("{} cannot be opened ({e})", dev_kvm.display()));
    }
    if pvm_module.exists() {
        return Some(format!(
            "this KVM is PVM-flavoured nested virtualization ({} is present), which cannot run stock guests",
            pvm_module.display()
        ));
    }
    None
}

/// Picks the accelerator: `choice`, overridden by `LAGO_ACCEL` when `choice` is auto.
/// Logs which one and why.
pub fn choose_accel(choice: AccelChoice) -> Result<Accel, BackendError> {
    let choice = match (choice, std::env::var("LAGO_ACCEL")) {
        (AccelChoice::Auto, Ok(v)) if !v.is_empty() => v.parse().map_err(|_| BackendError::BadAccel {
            value: v,
            source_name: "LAGO_ACCEL",
        })?,
        (c, _) => c,
    };
    let reason = kvm_unusable_reason(Path::new("/dev/kvm"), Path::new("/sys/module/kvm_pvm"));
    match (choice, reason) {
        (AccelChoice::Tcg, _) => {
            tracing::info!("accelerator: tcg (asked for)");
            Ok(Accel::Tcg)
        }
        (AccelChoice::Kvm, None) => {
            tracing::info!("accelerator: kvm (asked for)");
            Ok(Accel::Kvm)
        }
        (AccelChoice::Kvm, Some(reason)) => Err(BackendError::KvmUnusable { reason }),
        (AccelChoice::Auto, None) => {
            tracing::info!("accelerator: kvm (auto: /dev/kvm is usable)");
            Ok(Accel::Kvm)
        }
        (AccelChoice::Auto, Some(reason)) => {
            tracing::info!(%reason, "accelerator: tcg (auto: KVM not usable)");
            Ok(Accel::Tcg)
        }
    }
}

/// A connection to libvirt.
pub struct Backend {
    conn: Connect,
    uri: String,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

fn not_found(e: &virt::error::Error) -> bool {
    matches!(
        Result::<ErrorNumber, _>::from(e.code()),
        Ok(ErrorNumber::NoDomain) | Ok(ErrorNumber::NoNetwork)
    )
}

/// The URI of the user's own libvirt daemon (session mode).
pub const SESSION_URI: &str = "qemu:///session";

impl Backend {
    /// The URI that will be used: `uri`, else `LIBVIRT_DEFAULT_URI`, else `qemu:///system`.
    pub fn resolve_uri(uri: Option<&str>) -> String {
        uri.map(str::to_owned)
            .or_else(|| std::env::var("LIBVIRT_DEFAULT_URI").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "qemu:///system".to_owned())
    }

    /// Whether no URI is given, by the caller or `LIBVIRT_DEFAULT_URI`.
    pub fn uri_defaulted(uri: Option<&str>) -> bool {
        uri.is_none() && std::env::var("LIBVIRT_DEFAULT_URI").map_or(true, |v| v.is_empty())
    }

    /// Connects to [`Backend::resolve_uri`]`(uri)`; with no URI given, a
    /// user other than root who cannot reach `qemu:///system` gets
    /// `qemu:///session` instead (session mode: the user's own daemon,
    /// which libvirt's client starts; no root needed). [`Backend::uri`] says which.
    pub fn connect(uri: Option<&str>) -> Result<Self, BackendError> {
        match Self::open(&Self::resolve_uri(uri)) {
            Err(e) if Self::uri_defaulted(uri) && !crate::util::lock::running_as_root() => {
                tracing::info!(
                    error = %e,
                    "qemu:///system cannot be reached: session mode ({SESSION_URI})"
                );
                Self::open(SESSION_URI).map_err(|s| BackendError::NoDaemon {
                    system: crate::util::text::error_chain(&e),
                    session: crate::util::text::error_chain(&s),
                })
            }
            r => r,
        }
    }

    fn open(uri: &str) -> Result<Self, BackendError> {
        let uri = uri.to_owned();
        if uri::is_session(&uri) {
            session::ensure_daemon();
        }
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(&uri)).map_err(|source| BackendError::Connect {
            uri: uri.clone(),
            source,
        })?;
        Ok(Backend { conn, uri })
    }

    /// The URI connected to.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the connection still works (libvirtd, or the SSH transport to
    /// it, may have gone away since it was opened).
    pub fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    /// Creates and starts a transient network.
    pub fn start_network(&self, name: &str, xml: &str) -> Result<(), BackendError> {
        if let Ok(n) = self.conn.lookup_network_by_name(name)
            && n.is_active().unwrap_or(false)
        {
            return Ok(());
        }
        self.conn
            .create_network_xml(xml)
            .map(|_| ())
            .map_err(|source| BackendError::StartNetwork {
                name: name.to_owned(),
                source,
            })
    }

    /// Destroys a network; `false` if it did not exist.
    pub fn stop_network(&self, name: &str) -> Result<bool, BackendError> {
        let n = match self.conn.lookup_network_by_name(name) {
            Ok(n) => n,
            Err(e) if not_found(&e) => return Ok(false),
            Err(source) => {
                return Err(BackendError::StopNetwork {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        match n.destroy() {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(source) => Err(BackendError::StopNetwork {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// Whether a network exists and is active.
    pub fn network_active(&self, name: &str) -> bool {
        self.conn
            .lookup_network_by_name(name)
            .and_then(|n| n.is_active())
            .unwrap_or(false)
    }

    /// Creates and starts a transient domain. With `autodestroy`, libvirtd
    /// itself destroys it when this connection closes (the process ends,
    /// however it ends).
    pub fn start_domain(&self, name: &str, xml: &str, autodestroy: bool) -> Result<(), BackendError> {
        let flags = if autodestroy {
            virt::sys::VIR_DOMAIN_START_AUTODESTROY
        } else {
            0
        };
        self.conn
            .create_domain_xml(xml, flags)
            .map(|_| ())
            .map_err(|source| BackendError::StartDomain {
                name: name.to_owned(),
                source,
            })
    }

    fn lookup(&self, name: &str) -> Result<Option<Domain>, virt::error::Error> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Powers a domain off at once (it disappears, being transient); `false` if it was not there.
    pub fn stop_domain(&self, name: &str) -> Result<bool, BackendError> {
        let err = |source| BackendError::StopDomain {
            name: name.to_owned(),
            source,
        };
        let Some(d) = self.lookup(name).map_err(err)? else {
            return Ok(false);
        };
        match d.destroy() {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => {
                // It may have gone away on its own meanwhile.
                if self.lookup(name).ok().flatten().is_none() {
                    Ok(false)
                } else {
                    Err(err(e))
                }
            }
        }
    }

    /// Presses the ACPI power button.
    pub fn shutdown_domain(&self, name: &str) -> Result<(), BackendError> {
        let err = |source| BackendError::Shutdown {
            name: name.to_owned(),
            source,
        };
        match self.lookup(name).map_err(err)? {
            Some(d) => d
                .shutdown_flags(virt::sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                .map_err(err),
            None => Ok(()),
        }
    }

    /// A domain's state (`Down` if it does not exist).
    pub fn domain_state(&self, name: &str) -> Result<VmState, BackendError> {
        let err = |source| BackendError::State {
            name: name.to_owned(),
            source,
        };
        let Some(d) = self.lookup(name).map_err(err)? else {
            return Ok(VmState::Down);
        };
        match d.state() {
            Ok((state, _)) => Ok(match Result::<DomainState, _>::from(state) {
                Ok(DomainState::Running) | Ok(DomainState::Blocked) => VmState::Running,
                Ok(DomainState::Paused) | Ok(DomainState::PMSuspended) => VmState::Paused,
                Ok(DomainState::Shutdown) => VmState::ShuttingDown,
                Ok(DomainState::Shutoff) | Ok(DomainState::Crashed) => VmState::Down,
                _ => VmState::Other,
            }),
            Err(e) if not_found(&e) => Ok(VmState::Down),
            Err(e) => Err(err(e)),
        }
    }

    /// Every domain lago made on this connection (named `lago-<id>-…`), with
    /// what its metadata says.
    pub fn lago_domains(&self) -> Result<Vec<LagoDomain>, BackendError> {
        let all = self.conn.list_all_domains(0).map_err(|source| BackendError::List {
            what: "domains",
            source,
        })?;
        Ok(all
            .iter()
            .filter_map(|d| {
                let name = d.name().ok()?;
                let env_id = crate::plan::EnvId::from_object_name(&name)?;
                let meta = d.xml_desc(0).ok().map(|x| parse_metadata(&x)).unwrap_or_default();
                Some(LagoDomain {
                    name,
                    env_id,
                    workdir: meta.0,
                    owner: meta.1,
                })
            })
            .collect())
    }

    /// Every network lago made on this connection, with its env id.
    pub fn lago_networks(&self) -> Result<Vec<(String, crate::plan::EnvId)>, BackendError> {
        let all = self.conn.list_all_networks(0).map_err(|source| BackendError::List {
            what: "networks",
            source,
        })?;
        Ok(all
            .iter()
            .filter_map(|n| {
                let name = n.name().ok()?;
                let id = crate::plan::EnvId::from_object_name(&name)?;
                Some((name, id))
            })
            .collect())
    }

    /// Takes an internal snapshot `snap` of running domain `name`: memory and
    /// the disks (by target) in `disks`; `skip` disks are left out (read-only
    /// ones: the seed, CD-ROMs).
    pub fn snapshot_domain(
        &self,
        name: &str,
        snap: &str,
        disks: &[String],
        skip: &[String],
    ) -> Result<(), BackendError> {
        let err = |source| BackendError::Snapshot {
            action: "take",
            name: name.to_owned(),
            snapshot: snap.to_owned(),
            source,
        };
        let d = self.conn.lookup_domain_by_name(name).map_err(err)?;
        let mut x = format!(
            "<domainsnapshot><name>{}</name><description>lago</description><memory snapshot='internal'/><disks>",
            xml::esc(snap)
        );
        for t in disks {
            x += &format!("<disk name='{}' snapshot='internal'/>", xml::esc(t));
        }
        for t in skip {
            x += &format!("<disk name='{}' snapshot='no'/>", xml::esc(t));
        }
        x += "</disks></domainsnapshot>";
        d.create_snapshot_xml(&x, virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
            .map(|_| ())
            .map_err(err)
    }

    /// Reverts running domain `name` to its snapshot `snap` (memory and
    /// disks), leaving it running.
    ///
    /// libvirt 9.0 reverts by restarting QEMU with `-loadvm` (~2.5 s under
    /// TCG); QEMU's own `loadvm` in the running process takes ~0.2 s, so that
    /// is tried first (through the monitor; libvirt marks the domain
    /// "tainted: custom-monitor"), and libvirt's revert is the fallback.
    pub fn revert_domain(&self, name: &str, snap: &str) -> Result<(), BackendError> {
        let err = |source| BackendError::Snapshot {
            action: "revert to",
            name: name.to_owned(),
            snapshot: snap.to_owned(),
            source,
        };
        let d = self.conn.lookup_domain_by_name(name).map_err(err)?;
        let s = Domain::lookup_snapshot_by_name(&d, snap, 0).map_err(err)?;
        let running = matches!(self.domain_state(name), Ok(VmState::Running));
        if running && !snap.is_empty() && snap.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            match d.qemu_monitor_command(
                &format!("loadvm {snap}"),
                virt::sys::VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
            ) {
                // HMP says nothing when it worked.
                Ok(out) if out.trim().is_empty() => return Ok(()),
                Ok(out) => {
                    tracing::debug!(domain = name, output = %out.trim(), "monitor loadvm refused; using libvirt's revert")
                }
                Err(e) => tracing::debug!(domain = name, error = %e, "monitor loadvm failed; using libvirt's revert"),
            }
        }
        s.revert(virt::sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING).map_err(err)
    }

    /// The snapshots of domain `name` (none when it is not running).
    pub fn domain_snapshots(&self, name: &str) -> Result<Vec<String>, BackendError> {
        let err = |source| BackendError::Snapshot {
            action: "list",
            name: name.to_owned(),
            snapshot: "*".to_owned(),
            source,
        };
        let Some(d) = self.lookup(name).map_err(err)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = d
            .list_all_snapshots(0)
            .map_err(err)?
            .iter()
            .filter_map(|s| s.name().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Pauses (`true`) or resumes (`false`) domain `name`.
    pub fn pause_domain(&self, name: &str, pause: bool) -> Result<(), BackendError> {
        let action = if pause { "pause" } else { "resume" };
        let err = |source| BackendError::Pause {
            action,
            name: name.to_owned(),
            source,
        };
        let d = self.conn.lookup_domain_by_name(name).map_err(err)?;
        if pause { d.suspend() } else { d.resume() }.map_err(err)
    }

    /// Resets domain `name` at once, like a machine's reset button (no guest shutdown).
    pub fn reset_domain(&self, name: &str) -> Result<(), BackendError> {
        let err = |source| BackendError::Reset {
            name: name.to_owned(),
            source,
        };
        self.conn.lookup_domain_by_name(name).map_err(err)?.reset().map_err(err)
    }

    /// Sets the link of the running domain's NIC `mac` up or down (as
    /// pulling its cable: the guest sees no carrier, nothing passes).
    pub fn set_link(&self, name: &str, mac: &str, up: bool) -> Result<(), BackendError> {
        let state = if up { "up" } else { "down" };
        let err = |source| BackendError::Link {
            name: name.to_owned(),
            mac: mac.to_owned(),
            state,
            source,
        };
        let d = self
            .conn
            .lookup_domain_by_name(name)
            .map_err(|e| err(Some(Box::new(e))))?;
        let live = d.xml_desc(0).map_err(|e| err(Some(Box::new(e))))?;
        let Some(iface) = xml::interface_with_link(&live, mac, up) else {
            // Session mode: QEMU's own NIC, by its id.
            if live.contains(xml::QEMU_NS) {
                let cmd = serde_json::json!({"execute": "set_link", "arguments": {"name": xml::session_nic_id(mac), "up": up}});
                let said = d
                    .qemu_monitor_command(&cmd.to_string(), 0)
                    .map_err(|e| err(Some(Box::new(e))))?;
                return if said.contains("\"return\"") {
                    Ok(())
                } else {
                    Err(err(None))
                };
            }
            return Err(err(None));
        };
        d.update_device_flags(&iface, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| err(Some(Box::new(e))))
    }

    /// Names of domains whose name starts with `prefix`.
    pub fn domains_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let all = self.conn.list_all_domains(0).map_err(|source| BackendError::List {
            what: "domains",
            source,
        })?;
        Ok(all
            .iter()
            .filter_map(|d| d.name().ok())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }

    /// The pool subnets that active networks on this connection use.
    pub fn subnets_in_use(&self) -> Result<std::collections::HashSet<crate::plan::Subnet>, BackendError> {
        let all = self.conn.list_all_networks(0).map_err(|source| BackendError::List {
            what: "networks",
            source,
        })?;
        let mut used = std::collections::HashSet::new();
        // Active networks, and the subnet claims clients of this daemon hold.
        let claim = |n: &virt::network::Network| n.name().is_ok_and(|x| x.starts_with(storage::CLAIM_PREFIX));
        for n in all.iter().filter(|n| n.is_active().unwrap_or(false) || claim(n)) {
            let Ok(xml) = n.xml_desc(0) else { continue };
            for part in xml.split("<ip address=").skip(1) {
                let addr: String = part.chars().skip(1).take_while(|c| *c != '\'' && *c != '"').collect();
                if let Some(s) = addr.parse().ok().and_then(crate::plan::Subnet::of) {
                    used.insert(s);
                }
            }
        }
        Ok(used)
    }

    /// Names of networks whose name starts with `prefix`.
    pub fn networks_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let all = self.conn.list_all_networks(0).map_err(|source| BackendError::List {
            what: "networks",
            source,
        })?;
        Ok(all
            .iter()
            .filter_map(|n| n.name().ok())
            .filter(|n| n.starts_with(prefix))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_is_refused_without_a_device_or_under_pvm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kvm");
        assert!(
            kvm_unusable_reason(&missing, &dir.path().join("pvm"))
                .unwrap()
                .contains("does not exist")
        );
        let dev = dir.path().join("dev-kvm");
        std::fs::write(&dev, "").unwrap();
        let pvm = dir.path().join("kvm_pvm");
        assert_eq!(kvm_unusable_reason(&dev, &pvm), None);
        std::fs::create_dir(&pvm).unwrap();
        assert!(kvm_unusable_reason(&dev, &pvm).unwrap().contains("PVM"));
    }

    #[test]
    fn metadata_gives_back_workdir_and_owner() {
        let x = "<domain><name>lago-ab12-vm01</name><metadata><lago:env xmlns:lago='https://github.com/lago-project/lago-rs'><lago:id>ab12</lago:id><lago:workdir>/tmp/w &amp; co</lago:workdir><lago:vm>vm01</lago:vm><lago:owner pid='42' start='7' boot='b' host='h' machine='m'/></lago:env></metadata></domain>";
        let (w, o) = parse_metadata(x);
        assert_eq!(w.as_deref(), Some(Path::new("/tmp/w & co")));
        let o = o.unwrap();
        assert_eq!(
            (
                o.pid,
                o.start_ticks,
                o.boot_id.as_str(),
                o.host_id.as_str(),
                o.machine_id.as_str()
            ),
            (42, 7, "b", "h", "m")
        );
        assert_eq!(parse_metadata("<domain/>"), (None, None));
        assert_eq!(parse_metadata("not xml"), (None, None));
    }

    #[test]
    fn accel_names_parse() {
        assert_eq!("auto".parse(), Ok(AccelChoice::Auto));
        assert_eq!("kvm".parse(), Ok(AccelChoice::Kvm));
        assert_eq!("tcg".parse(), Ok(AccelChoice::Tcg));
        assert!("hvf".parse::<AccelChoice>().is_err());
    }

    #[test]
    fn the_test_driver_lists_and_reports_missing_domains_as_down() {
        let b = Backend::connect(Some("test:///default")).unwrap();
        assert_eq!(b.uri(), "test:///default");
        assert_eq!(b.domain_state("lago-nope-vm").unwrap(), VmState::Down);
        assert!(!b.stop_domain("lago-nope-vm").unwrap());
        assert!(!b.stop_network("lago-nope-net").unwrap());
        assert_eq!(b.domains_with_prefix("test").unwrap(), ["test"]);
        assert!(b.domains_with_prefix("lago-").unwrap().is_empty());
    }
}
