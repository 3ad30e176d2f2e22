//! Where the environment is (workdir discovery, as git finds `.git`) and
//! what an init file would make (`lago validate`'s preview).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::env::error::{Error, Result};
use crate::plan::{self, EnvId, EnvPlan};
use lago_config::{self as config, EnvSpec};

/// The workdir: `explicit`, else `.lago` in `cwd` or the nearest parent
/// holding an environment (like git finds `.git`).
pub fn discover_workdir(explicit: Option<PathBuf>, cwd: &Path) -> Result<PathBuf> {
    if let Some(w) = explicit {
        return Ok(w);
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join(".lago");
        if candidate.join(crate::env::STATE_FILE).is_file()
            || candidate.join(crate::host::lease::OWNER_ID_FILE).is_file()
        {
            return Ok(candidate);
        }
    }
    Err(Error::NoWorkdir { cwd: cwd.to_path_buf() })
}

/// What `lago validate` prints as JSON (and YAML, flat): the plan, as a preview.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The init file validated (absolute).
    pub init_file: PathBuf,
    /// Always true: subnets are a preview, `lago init` leases real ones.
    pub preview: bool,
    /// The preview env id.
    pub env_id: EnvId,
    /// Where `lago init` would put the environment by default.
    pub workdir: PathBuf,
    /// The planned networks, in file order.
    pub nets: Vec<plan::NetPlan>,
    /// The planned VMs, in file order.
    pub vms: Vec<plan::VmPlan>,
    /// The order `lago start` brings them up in.
    pub start_order: plan::StartOrder,
    /// Lago keys lago does not act on.
    pub warnings: Vec<config::Problem>,
}

/// Loads and validates `init_file` and plans it with preview subnets
/// (nothing is created, no lease is taken).
pub fn preview(init_file: &Path, strict: bool) -> Result<(EnvSpec, EnvPlan)> {
    let spec = config::load_with(init_file, config::LoadOptions { strict })?;
    let subnets = plan::preview_subnets(&spec)?;
    let workdir = spec.source.parent().unwrap_or(Path::new("/")).join(".lago");
    let plan = plan::plan(&spec, &EnvId::preview(), &subnets, &workdir)?;
    Ok((spec, plan))
}

impl Preview {
    /// The preview of a planned init file.
    pub fn new(spec: &EnvSpec, plan: &EnvPlan) -> Preview {
        Preview {
            init_file: spec.source.clone(),
            preview: true,
            env_id: plan.env_id.clone(),
            workdir: plan.workdir.clone(),
            nets: plan.nets.clone(),
            vms: plan.vms.clone(),
            start_order: plan.start_order.clone(),
            warnings: spec.warnings.clone(),
        }
    }
}
