//! The Lago SDK, in Rust: the flow of the Python SDK's document.
//!
//! ```no_run
//! use lago::sdk;
//!
//! let env = sdk::init("examples/quickstart.yaml", sdk::Options {
//!     workdir: Some("/tmp/my_envs/env1".into()),
//!     logfile: Some("/tmp/env.log".into()),
//!     ..Default::default()
//! })?;
//! env.start(&[])?;
//! let vm = &env.get_vms()["vm01"];
//! let st = vm.ssh(["hostname", "-f"])?;
//! println!("{st:?}"); // CommandStatus { code: 0, out: "vm01.lago.local\n", err: "" }
//! env.destroy()?;
//! # Ok::<(), lago::Error>(())
//! ```

use std::path::{Path, PathBuf};

use crate::env::error::Result;
use crate::env::{Env, InitOptions};

/// Options of [`init`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where images and metadata go (default `./.lago`).
    pub workdir: Option<PathBuf>,
    /// An extra log file (the environment always logs to `<workdir>/logs/lago.log`).
    pub logfile: Option<PathBuf>,
    /// Log level of the log files.
    pub loglevel: tracing::Level,
    /// Everything else: libvirt URI, accelerator, template and lease stores.
    pub init: InitOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workdir: None,
            logfile: None,
            loglevel: tracing::Level::INFO,
            init: InitOptions::default(),
        }
    }
}

/// Creates an environment from the init file `config` (see [`Env::init`]),
/// logging to `<workdir>/logs/lago.log` and `logfile`.
pub fn init(config: impl AsRef<Path>, opts: Options) -> Result<Env> {
    crate::util::logging::install(opts.loglevel);
    if let Some(f) = &opts.logfile {
        crate::util::logging::add_file(f);
    }
    let mut init = opts.init;
    if opts.workdir.is_some() {
        init.workdir = opts.workdir;
    }
    Env::init(config, init)
}

/// Attaches to the running environment in `workdir` (e.g. from a second process).
pub fn load_env(workdir: impl AsRef<Path>) -> Result<Env> {
    let env = Env::load(workdir)?;
    crate::util::logging::attach_env_log(&env.workdir().join(crate::host::workdir::LOG_FILE));
    Ok(env)
}

/// Prints every lago log event to stderr (for all environments), at `level`.
pub fn add_stream_logger(level: tracing::Level) {
    crate::util::logging::install(level);
    crate::util::logging::enable_stream();
}
