//! SSH to the guests: the only user of the `ssh2` crate.
//!
//! One session per VM, kept open and reused by every command (a new TCP + SSH
//! handshake costs 150-200 ms under TCG); it reconnects when dropped. The
//! guest's host key is checked against the one lago generated and handed over
//! in the seed: no trust on first use. Files travel as tar streams over an
//! exec channel, so any guest with `tar` works.

mod copy;
mod exec;
pub mod jump;
mod nonblock;
mod quote;
mod session;
mod terminal;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use copy::{CopyLimits, CopyReport, Skipped};
pub(crate) use exec::Streams;
pub use exec::{INTERRUPT_EVERY, RawStatus};
pub use quote::{quote, quote_command};
pub use session::{CONNECT_TIMEOUT, Connection, Link, connect};

/// The outcome of a command run over SSH, as the Lago SDK prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandStatus {
    /// Exit code (`-1` if the command was killed by a signal).
    pub code: i32,
    /// Standard output (lossy UTF-8).
    pub out: String,
    /// Standard error (lossy UTF-8).
    pub err: String,
}

impl CommandStatus {
    /// Whether the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Why reaching a guest, or running a command or a copy on it over SSH, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The guest could not be reached through the hypervisor host.
    #[error("{vm}: cannot reach it through the hypervisor host")]
    Jump {
        /// The VM that could not be reached.
        vm: String,
        /// The jump host's failure (connecting, its host key, logging in, forwarding).
        #[source]
        source: crate::guest::ssh::jump::JumpError,
    },
    /// The TCP connection to port 22 failed.
    #[error("{vm}: cannot connect to {addr}")]
    Connect {
        /// The VM whose port 22 did not answer.
        vm: String,
        /// The guest address and port lago connected to directly (not through a jump host).
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SSH handshake failed.
    #[error("{vm}: SSH handshake failed")]
    Handshake {
        /// The VM the handshake was with.
        vm: String,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// The guest presented another host key than the one lago gave it.
    #[error("{vm}: host key mismatch: expected {expected}, the server presented {found}; refusing to connect")]
    HostKeyMismatch {
        /// The VM that presented the wrong key.
        vm: String,
        /// SHA-256 fingerprint of the key pinned for the VM.
        expected: String,
        /// SHA-256 fingerprint of the key the guest presented.
        found: String,
    },
    /// Public-key authentication failed.
    #[error("{vm}: SSH authentication as {user} with {} failed", key.display())]
    Auth {
        /// The VM that refused the key.
        vm: String,
        /// The guest user lago tried to log in as (`ssh-user`).
        user: String,
        /// The private key file on the host (lago's own, or the VM's `ssh-key`).
        key: PathBuf,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// Key authentication failed, and then the password too.
    #[error("{vm}: SSH authentication failed with {} ({key_error}) and with the password", key.display())]
    AuthPassword {
        /// The VM that refused both key and password.
        vm: String,
        /// The private key file on the host that was tried first.
        key: PathBuf,
        /// Why the key failed.
        key_error: Box<str>,
        /// libssh2's error for the password.
        #[source]
        source: ssh2::Error,
    },
    /// A channel operation failed.
    #[error("{vm}: `{command}` failed over SSH")]
    Channel {
        /// The VM the channel was open to.
        vm: String,
        /// The command line the channel ran, as sent.
        command: String,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// Reading or writing the channel failed.
    #[error("{vm}: I/O on the SSH channel of `{command}` failed")]
    Io {
        /// The VM the channel was open to.
        vm: String,
        /// The command line the channel ran, as sent.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The wait for a command was ended early (the console watchdog saw
    /// trouble); the command itself was left to finish.
    #[error("{vm}: stopped waiting for `{command}`: {reason}")]
    Interrupted {
        /// The VM the command runs on.
        vm: String,
        /// The command line, still running on the guest.
        command: String,
        /// Why the wait ended (the console watchdog's finding).
        reason: String,
    },
    /// The process is exiting: SSH calls stop before OpenSSL is torn down.
    #[error("{vm}: `{command}` was stopped: the process is exiting")]
    Exiting {
        /// The VM the command was for.
        vm: String,
        /// The command line that was stopped.
        command: String,
    },
    /// The command did not finish in time.
    #[error("{vm}: `{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The VM the command ran on.
        vm: String,
        /// The command line that overran.
        command: String,
        /// The time it was given.
        timeout: Duration,
    },
    /// A copy was refused or failed on the guest (no such path, a
    /// destination that would have to be replaced by another kind, …).
    #[error("{vm}: cannot copy {path}: {reason}")]
    Copy {
        /// The VM copied to or from.
        vm: String,
        /// The copy's source (a host path for a copy to the guest, a guest path for one from it).
        path: String,
        /// Why it was refused or failed (may be the guest's `tar` output).
        reason: String,
    },
    /// A local file operation of a copy failed.
    #[error("{vm}: cannot {action} {} (copying {path})", local.display())]
    CopyIo {
        /// The VM copied to or from.
        vm: String,
        /// The copy's source (a host path for a copy to the guest, a guest path for one from it).
        path: String,
        /// What was being done.
        action: &'static str,
        /// The host file or folder the action was on (the source, a spool or staging file).
        local: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting from the environment is malformed.
    #[error("{name}={value:?}: {expected}")]
    Setting {
        /// The environment variable's name (`LAGO_COMMAND_TIMEOUT`, `LAGO_COPY_TIMEOUT`, …).
        name: &'static str,
        /// Its value as set (lossily decoded if not UTF-8).
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A copy grew past its byte limit; nothing was placed.
    #[error(
        "{vm}: copying {path} stopped at the limit of {limit} bytes (raise it with CopyLimits or {env_var}); nothing was written to the destination"
    )]
    CopyTooLarge {
        /// The VM copied to or from.
        vm: String,
        /// The copy's source (a host path for a copy to the guest, a guest path for one from it).
        path: String,
        /// The byte limit reached (`CopyLimits::max_bytes`).
        limit: u64,
        /// The variable that sets the limit (`LAGO_COPY_MAX_BYTES` or `LAGO_ARTIFACT_MAX_BYTES`).
        env_var: &'static str,
    },
}

/// A password: never shown in debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where and how to reach a guest.
#[derive(Debug, Clone)]
pub struct Target {
    /// The VM's name, shown in messages and errors.
    pub vm: String,
    /// The guest's management address (reached directly, or from the jump host in `via`).
    pub ip: IpAddr,
    /// The guest's SSH port (22 for the VMs of an environment).
    pub port: u16,
    /// The guest user to log in as (`ssh-user` of the init file).
    pub user: String,
    /// The private key file on the host (OpenSSH format).
    pub key: PathBuf,
    /// The host key the guest must present (SSH wire encoding); `None` trusts any.
    pub host_key: Option<Vec<u8>>,
    /// A password to try when key authentication fails (Lago's `ssh-password`).
    pub password: Option<Secret>,
    /// Where the host key of a machine lago did not create is kept: learned
    /// on first contact (with a warning), pinned from then on.
    pub learned_host_key: Option<PathBuf>,
    /// Reach the guest through this host (the remote hypervisor) instead of
    /// directly: an SSH session to it and a `direct-tcpip` channel.
    pub via: Option<std::sync::Arc<crate::guest::ssh::jump::JumpHost>>,
}

/// `(parent, name)` of an absolute guest path.
pub(crate) fn split_remote(remote: &str) -> Option<(String, String)> {
    let trimmed = remote.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    let parent = if parent.is_empty() {
        "/".to_owned()
    } else {
        parent.to_owned()
    };
    Some((parent, name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_split_into_parent_and_name() {
        assert_eq!(split_remote("/tmp/a.txt"), Some(("/tmp".into(), "a.txt".into())));
        assert_eq!(split_remote("/a"), Some(("/".into(), "a".into())));
        assert_eq!(split_remote("/tmp/dir/"), Some(("/tmp".into(), "dir".into())));
        assert_eq!(split_remote("relative"), None);
        assert_eq!(split_remote("/"), None);
    }

    #[test]
    fn status_success_is_exit_zero() {
        let ok = CommandStatus {
            code: 0,
            out: String::new(),
            err: String::new(),
        };
        assert!(ok.success());
        assert!(!CommandStatus { code: 1, ..ok }.success());
    }
}
