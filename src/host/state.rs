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
}
