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

/// An SSH failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The guest could not be reached through the hypervisor host.
    #[error("{vm}: cannot reach it through the hypervisor host")]
    Jump {
        /// VM name.
        vm: String,
        /// What failed.
        #[source]
        source: crate::guest::ssh::jump::JumpError,
    },
    /// The TCP connection to port 22 failed.
    #[error("{vm}: cannot connect to {addr}")]
    Connect {
        /// VM name.
        vm: String,
        /// Address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SSH handshake failed.
    #[error("{vm}: SSH handshake failed")]
    Handshake {
        /// VM name.
        vm: String,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// The guest presented another host key than the one lago gave it.
    #[error("{vm}: host key mismatch: expected {expected}, the server presented {found}; refusing to connect")]
    HostKeyMismatch {
        /// VM name.
        vm: String,
        /// Fingerprint expected.
        expected: String,
        /// Fingerprint presented.
        found: String,
    },
    /// Public-key authentication failed.
    #[error("{vm}: SSH authentication as {user} with {} failed", key.display())]
    Auth {
        /// VM name.
        vm: String,
        /// User.
        user: String,
        /// Key file.
        key: PathBuf,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// Key authentication failed, and then the password too.
    #[error("{vm}: SSH authentication failed with {} ({key_error}) and with the password", key.display())]
    AuthPassword {
        /// VM name.
        vm: String,
        /// Key file.
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
        /// VM name.
        vm: String,
        /// The command.
        command: String,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// Reading or writing the channel failed.
    #[error("{vm}: I/O on the SSH channel of `{command}` failed")]
    Io {
        /// VM name.
        vm: String,
        /// The command.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The wait for a command was ended early (the console watchdog saw
    /// trouble); the command itself was left to finish.
    #[error("{vm}: stopped waiting for `{command}`: {reason}")]
    Interrupted {
        /// VM name.
        vm: String,
        /// The command.
        command: String,
        /// Why.
        reason: String,
    },
    /// The process is exiting: SSH calls stop before OpenSSL is torn down.
    #[error("{vm}: `{command}` was stopped: the process is exiting")]
    Exiting {
        /// VM name.
        vm: String,
        /// The command.
        command: String,
    },
    /// The command did not finish in time.
    #[error("{vm}: `{command}` did not finish within {timeout:?}")]
    Timeout {
        /// VM name.
        vm: String,
        /// The command.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// A copy was refused or failed on the guest (no such path, a
    /// destination that would have to be replaced by another kind, …).
    #[error("{vm}: cannot copy {path}: {reason}")]
    Copy {
        /// VM name.
        vm: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A local file operation of a copy failed.
    #[error("{vm}: cannot {action} {} (copying {path})", local.display())]
    CopyIo {
        /// VM name.
        vm: String,
        /// The path being copied.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The local file or folder.
        local: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A setting from the environment is malformed.
    #[error("{name}={value:?}: {expected}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A copy grew past its byte limit; nothing was placed.
    #[error(
        "{vm}: copying {path} stopped at the limit of {limit} bytes (raise it with CopyLimits or {env_var}); nothing was written to the destination"
    )]
    CopyTooLarge {
        /// VM name.
        vm: String,
        /// The path being copied.
        path: String,
        /// The limit.
        limit: u64,
        /// The environment variable that sets it.
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
    /// VM name (for messages).
    pub vm: String,
    /// Address.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Private key file.
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
