//! The crate's error: one variant per stage, each wrapping that stage's error.

use std::path::PathBuf;
use std::time::Duration;

/// Anything lago can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The init file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// Subnet leasing failed.
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    /// A template could not be found or built.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A disk image operation failed.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// libvirt failed.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// SSH failed.
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    /// The workdir already holds an environment.
    #[error("workdir {} already holds an environment (destroy it first: lago -w {} destroy --yes)", path.display(), path.display())]
    WorkdirExists {
        /// The workdir.
        path: PathBuf,
    },
    /// The folder given as a new workdir holds files (lago takes only a new or empty folder).
    #[error("workdir {} is not empty (it holds {}); lago takes only a new or empty folder as a workdir, so that destroy never removes anything lago did not create: give another one with -w", path.display(), list_some(holds))]
    WorkdirNotEmpty {
        /// The folder.
        path: PathBuf,
        /// What it holds (names).
        holds: Vec<String>,
    },
    /// No environment in the workdir.
    #[error("no lago environment in {} (expected {}; create one with `lago init`)", path.display(), path.join(crate::env::STATE_FILE).display())]
    NoEnv {
        /// The workdir.
        path: PathBuf,
    },
    /// A workdir file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Workdir {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The saved state is not readable.
    #[error("environment state {} is corrupt", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// No VM of that name.
    #[error("no VM named `{name}` in this environment (VMs: {})", known.join(", "))]
    NoSuchVm {
        /// The name asked for.
        name: String,
        /// The VMs there are.
        known: Vec<String>,
    },
    /// A VM did not answer SSH in time.
    #[error("{vm}: no SSH after {waited:?}: stalled at stage `{stage}`{}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default(), console_tail(console))]
    WaitForSsh {
        /// The VM.
        vm: String,
        /// The stage that did not complete.
        stage: crate::vm::BootStage,
        /// How long we waited.
        waited: Duration,
        /// The last connection error.
        last_error: Option<String>,
        /// The last lines of the serial console.
        console: Vec<String>,
    },
    /// A VM did not power off after the ACPI request in time.
    #[error("{vm}: still running {waited:?} after the ACPI shutdown request")]
    ShutdownTimeout {
        /// The VM.
        vm: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A VM is not running.
    #[error("{vm} is not running (state: {state}); start it first")]
    NotRunning {
        /// The VM.
        vm: String,
        /// Its state.
        state: crate::backend::VmState,
    },
    /// Several VMs failed to start.
    #[error("{} VMs failed to start:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<Error>),
}

fn list_some(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

fn console_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; the serial console is empty".into();
    }
    format!("; last console lines:\n    {}", lines.join("\n    "))
}

/// `Result` with lago's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, joined with `: ` (parts the message already
/// contains are not repeated).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
