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

pub mod config;
pub mod lease;
pub mod plan;

pub use config::{ConfigError, EnvSpec};
pub use lease::{LeaseError, LeaseStore};
pub use plan::{EnvId, EnvPlan, PlanError, Subnet};
