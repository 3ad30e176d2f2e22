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
//! - [`store`] (templates: the built-in `tiny` and `debian-12`, Lago template repositories), [`image`] (qcow2
//!   overlays), [`seed`] (cloud-init NoCloud), [`keys`] (ed25519).
//! - [`backend`] is the only user of `virt`, [`ssh`] the only user of `ssh2`;
//!   [`remote`] reads libvirt URIs and reaches a remote hypervisor's guests
//!   through its host (whose files are volumes: [`backend::storage`]).
//! - [`Env`] and [`Vm`] are the API; [`sdk`] mirrors the Python Lago SDK.
//!   Lago's other verbs are `Env` methods too: [`collect`] (artifacts and
//!   logs into a folder), [`deploy`] (per-VM deploy scripts), [`export`]
//!   (disks plus an init file that boots them), [`inventory`] (an Ansible
//!   inventory and an OpenSSH config with the pinned host keys).
//! - [`cli`] is what the `lago` command shows and how it finds the workdir.
//!
//! The init-file reference, the CLI, the test-writing guide and the speed
//! figures are in the repository's `docs/` folder (`docs/init-file.md`,
//! `docs/commands.md`, `docs/testing.md`, `docs/speed.md`).

pub mod backend;
pub mod cli;
pub use lago_config as config;
pub mod env;
pub use env::{collect, deploy, export, inventory, snapshot, vm};
pub mod harness;
mod ops;
pub use harness::fixtures;
pub use ops::{doctor, gc};
pub mod plan;
pub mod sdk;

mod guest;
mod host;
pub use guest::{ssh, transcript};

/// Remote hypervisors: what a libvirt URI says, and reaching guests
/// through the hypervisor host.
pub mod remote {
    pub use crate::backend::uri::{LibvirtUri, UriError, is_remote};
    pub use crate::guest::ssh::jump::{JumpError, JumpHost, Tunnel, stop_all_pumps};
}
mod util;
pub use host::{image, keys, lease, owner, seed, store};
pub use util::cmd::{CommandError, CommandFailure};

pub use config::{ConfigError, EnvSpec};
pub use env::commands::{DEFAULT_COMMAND_TIMEOUT, command_timeout};
pub use env::error::{ConsoleMatch, Error, Result, error_chain};
pub use env::vm::Vm;
pub use env::{Env, InitOptions};
pub use lease::{LeaseError, LeaseStore};
pub use plan::{EnvId, EnvPlan, PlanError, Subnet};
pub use ssh::CommandStatus;

/// Runs a test against the suite environment of an init file.
///
/// ```no_run
/// use lago::{lago_env, Env, Vm};
///
/// #[lago_env("tests/envs/pair.yaml")]
/// #[test]
/// fn vm01_knows_its_name(vm01: &Vm) {
///     let st = vm01.ssh(["hostname", "-f"]).unwrap();
///     assert_eq!(st.code, 0);
///     assert_eq!(st.out.trim(), "vm01.lago.local");
/// }
///
/// #[lago_env("tests/envs/pair.yaml")]
/// #[test]
/// fn sees_both(env: &Env, vm02: &Vm) {
///     assert_eq!(env.get_vms().len(), 2);
///     assert!(vm02.ssh(["ping", "-c1", "vm01"]).unwrap().success());
/// }
/// ```
///
/// - The path is relative to the crate (`CARGO_MANIFEST_DIR`). The init file
///   is read and validated when the test compiles: a missing or invalid file,
///   or a `&Vm` parameter not named after one of its VMs, is a compile error
///   on the offending token (listing the VMs). Editing the file rebuilds the test.
/// - A `&Vm` parameter gets the VM of its name; a `&Env` parameter (any
///   name) gets the whole environment. Other parameters stay (for rstest).
/// - `#[test]` is added unless a test attribute is already there. With
///   rstest, put `#[lago_env]` **above** `#[rstest]`, so that it takes out
///   the VM parameters before rstest looks for fixtures of those names;
///   cases, values and fixtures keep working:
///   ```ignore
///   #[lago_env("tests/envs/pair.yaml")]
///   #[rstest]
///   #[case("a b")]
///   fn echoes(vm01: &Vm, #[case] text: &str) { /* … */ }
///   ```
/// - The environment is shared by every test of the binary naming the same
///   file, booted on first use, torn down when the binary ends or is
///   interrupted (see [`harness`]). A failing test gets a folder of failure
///   artifacts under `target/lago-artifacts/<test>/`, named in its failure message.
pub use lago_macros::lago_env;

/// Used by the code `#[lago_env]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::harness::registry::register;
    pub use crate::harness::{run_env_test, run_env_test_timeout, run_env_test_with};
    pub use ctor;

    /// A test's outcome as a runner trial's result.
    pub fn trial_result<T: crate::harness::Outcome>(outcome: T) -> crate::harness::runner::TrialResult {
        match outcome.failure() {
            None => Ok(()),
            Some(why) => Err(why.into()),
        }
    }

    /// The VM `name` of `env` (the macro checked it exists at compile time).
    pub fn vm<'a>(env: &'a crate::Env, name: &str) -> &'a crate::Vm {
        match env.vm(name) {
            Ok(vm) => vm,
            Err(e) => panic!("{e}"),
        }
    }
}
