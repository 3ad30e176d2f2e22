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
//! and so does the source tree: it is in layers, and a module imports only
//! from the layers below its own (a test, `tests/layers.rs`, reads every
//! `crate::` path of `src/` and keeps it so). From the bottom:
//!
//! | layer | what it is |
//! |---|---|
//! | [`config`] | the init file into an [`EnvSpec`], every problem with file, line, column and key path (crate `lago-config`) |
//! | `util` | commands with bounds ([`CommandError`]), locks, logging, the exit handler, thread-per-item runs, text helpers |
//! | [`plan`] | pure: every libvirt name, NIC address and MAC, DHCP reservation, DNS record and disk path ([`EnvPlan`]) |
//! | `host` | this machine: the workdir and its layout, saved state, [`lease`]s of /24 subnets, [`owner`]s, [`keys`], [`image`] (qemu-img), [`seed`] (cloud-init NoCloud), the template [`store`] |
//! | [`backend`] | libvirt, the only user of `virt`: domains, networks, their XML, remote [`backend::storage`], URIs |
//! | `guest` | a running guest: [`ssh`] (the only user of `ssh2`; sessions, commands, copies, the jump host of [`remote`] hypervisors), boot stages, consoles, [`transcript`] |
//! | [`env`](mod@env) | the API: [`Env`] (`init` is a recipe of named steps), [`Vm`] and its test API, [`snapshot`], [`deploy`], [`collect`], [`export`], [`inventory`], [`Error`] |
//! | `ops` | keeping a host clean: [`gc`] and [`doctor`] |
//! | [`harness`] | `cargo test` support: suite environments, the registry of `#[lago_env]` tests, the libtest-mimic runner, the reaper, JUnit, artifacts, rstest [`fixtures`] |
//! | [`cli`] | what the `lago` command shows (formats, tables) and how it finds the workdir; the binary, `src/bin/lago/`, parses arguments and calls one function per command |
//!
//! [`sdk`] mirrors the Python Lago SDK over [`Env`]. Folders without a
//! link are private; what users call from them is re-exported at the
//! paths listed above (`lago::ssh`, `lago::store`, `lago::lease`, …).
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
/// - The path is relative to the crate (`CARGO_MANIFEST_DIR`, read again
///   when the test runs, as cargo and nextest set it: a test binary run from
///   a copy of the crate, or a nextest archive, boots the copy's file). The init file
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

    /// The init file the attribute names (`written`), where it is as the
    /// test runs: in the crate's folder as cargo or nextest give it now
    /// (`CARGO_MANIFEST_DIR`: a copy of the crate, a nextest archive), else
    /// where it was when the test compiled (`manifest`: a test binary run
    /// directly, from any folder).
    pub fn init_file(written: &'static str, manifest: &'static str) -> &'static str {
        use std::path::Path;
        if Path::new(written).is_absolute() {
            return written;
        }
        let now = std::env::var_os("CARGO_MANIFEST_DIR")
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(&d).join(written))
            .filter(|p| p.is_file());
        let path = now.unwrap_or_else(|| Path::new(manifest).join(written));
        intern(path.to_string_lossy().into_owned())
    }

    /// `s`, kept for the rest of the process (once per distinct path).
    fn intern(s: String) -> &'static str {
        static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = seen.iter().find(|k| **k == s) {
            return found;
        }
        let leaked: &'static str = Box::leak(s.into_boxed_str());
        seen.push(leaked);
        leaked
    }

    /// The VM `name` of `env` (the macro checked it exists at compile time).
    pub fn vm<'a>(env: &'a crate::Env, name: &str) -> &'a crate::Vm {
        match env.vm(name) {
            Ok(vm) => vm,
            Err(e) => panic!("{e}"),
        }
    }
}
