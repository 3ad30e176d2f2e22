//! # lago
//!
//! Turn a Lago init file (YAML) into real virtual machines and networks
//! (libvirt + QEMU, qcow2 layered images) and hand them to tests.
//!
//! The data flows one way:
//!
//! ```text
//! init.yaml ──config──► EnvSpec ──plan──► EnvPlan ──► workdir, images, seed, libvirt, ssh
//! ```
//!
//! - [`config`] reads and validates an init file into an [`EnvSpec`]; every
//!   problem is reported with file, line, column and key path.
//! - [`plan`] decides, without touching the host, every libvirt name, NIC
//!   address and MAC, DHCP reservation, DNS record and disk path.
//! - [`lease`] hands out host-wide /24 subnets so that environments never collide.
//!
//! See the README for the init-file schema and the CLI.

pub mod backend;
mod cmd;
pub mod config;
pub mod env;
mod error;
pub mod image;
pub mod keys;
pub mod lease;
mod lock;
mod logging;
pub mod plan;
pub mod sdk;
pub mod seed;
pub mod ssh;
pub mod store;
pub mod vm;

pub use cmd::{CommandError, CommandFailure};

pub use config::{ConfigError, EnvSpec};
pub use env::{Env, InitOptions};
pub use error::{Error, Result};
pub use lease::{LeaseError, LeaseStore};
pub use plan::{EnvId, EnvPlan, PlanError, Subnet};
pub use ssh::CommandStatus;
pub use vm::Vm;
