//! # lago
//!
//! Turn a Lago init file (YAML) into real virtual machines and networks
//! (libvirt + QEMU, qcow2 layered images), hand them to tests, and leave
//! nothing behind.
//!
//! ```no_run
//! use lago::sdk;
//!
//! let env = sdk::init("examples/quickstart.yaml", sdk::Options::default())?;
//! env.start(&[])?;
//! let st = env.vm("vm01")?.ssh(["hostname", "-f"])?;
//! assert_eq!(st.out.trim(), "vm01.lago.local");
//! env.destroy()?;
//! # Ok::<(), lago::Error>(())
//! ```
//!
//! The data flows one way:
//!
//! ```text
//! init.yaml ──config──► EnvSpec ──plan──► EnvPlan ──► workdir, images, seeds ──► libvirt ──► ssh ──► Env / Vm
//! ```
//!
//! - [`config`] reads and validates an init file into an [`EnvSpec`]; every
//!   problem is reported with file, line, column and key path.
//! - [`plan`] decides, without touching the host, every libvirt name, NIC
//!   address and MAC, DHCP reservation, DNS record and disk path.
//! - [`lease`] hands out host-wide /24 subnets so that environments never collide.
//! - [`store`] (templates, with the built-in `tiny`), [`image`] (qcow2
//!   overlays), [`seed`] (cloud-init NoCloud), [`keys`] (ed25519).
//! - [`backend`] is the only user of `virt`, [`ssh`] the only user of `ssh2`.
//! - [`Env`] and [`Vm`] are the API; [`sdk`] mirrors the Python Lago SDK.
//!
//! See the README for the init-file schema, the CLI and the speed figures.

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
