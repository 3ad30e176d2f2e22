//! The state saved in a workdir (`env.json`): everything needed to attach
//! to an environment later, from another process too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::plan::{EnvId, EnvPlan};
use lago_config::EnvSpec;

/// The largest state file read back (a planted giant is an error, not an allocation).
pub(crate) const MAX_STATE_BYTES: u64 = 64 << 20;

/// What is saved in the workdir to attach to the environment later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedEnv {
    pub env_id: EnvId,
    pub spec: EnvSpec,
    pub plan: EnvPlan,
    pub libvirt_uri: String,
    pub lease_dir: PathBuf,
    pub accel: String,
    pub network_xml: BTreeMap<String, String>,
    pub domain_xml: BTreeMap<String, String>,
    pub host_keys: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
    #[serde(default)]
    pub remote: Option<bool>,
    /// The template store whose templates record this environment's use.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// Warm start: the boot image this environment restores from or makes
    /// (`None`: it always boots).
    #[serde(default)]
    pub warm: Option<WarmState>,
    /// Session mode (`qemu:///session`, no root): how the VMs reach their
    /// nets and are reached (`None`: libvirt networks).
    #[serde(default)]
    pub session: Option<SessionState>,
    /// The VMs' SSH host keys with their private halves, as their seeds
    /// gave them (the seeds in the workdir hold them too): a boot image and
    /// a failure bundle keep them, since their guests hold them.
    #[serde(default)]
    pub host_secret_keys: BTreeMap<String, crate::host::store::warm::SavedHostKey>,
}

/// An environment in session mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionState {
    /// Its nets' multicast groups: `239.<group>.<net number>`.
    pub group: [u8; 2],
    /// Their UDP port.
    pub port: u16,
    /// Each VM's SSH port on 127.0.0.1.
    pub ssh_ports: BTreeMap<String, u16>,
    /// Whether the user-mode NICs reach out (the init file has a `nat` net).
    pub egress: bool,
}

/// An environment's boot image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WarmState {
    /// The boot image's key (a digest of everything that decides the booted state).
    pub key: String,
    /// The digest of the init file alone.
    pub family: String,
    /// The boot image was there at init: the disks are layered on it and the
    /// first start restores from it. Otherwise the first start boots and saves it.
    pub restore: bool,
    /// The boot image's folder when it is not in the store: a failure
    /// bundle being replayed. The first start restores from it or fails; it
    /// is never removed, replaced or saved over.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}
