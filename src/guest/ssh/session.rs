//! Sessions: opening one (TCP, or a tunnel through the hypervisor host;
//! handshake, host-key check, authentication), and the persistent,
//! reconnecting [`Connection`] every command of a VM goes through.

use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use ssh2::Session;

use super::exec::{Failure, RawStatus, Streams, run};
use super::terminal::interactive;
use super::{CommandStatus, Secret, SshError, Target};

/// Seconds between SSH keepalives.
const KEEPALIVE_SECS: u32 = 15;

fn fingerprint(blob: &[u8]) -> String {
    match ssh_key::PublicKey::from_bytes(blob) {
        Ok(k) => k.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        Err(_) => format!("{} bytes of unparsable key", blob.len()),
    }
}

/// An open SSH session to a guest. Dropping it closes the session, then its
/// socket, then (through a jump host) stops and joins the tunnel's thread:
/// nothing of it outlives the value.
pub struct Link {
    /// The libssh2 session, authenticated.
    pub session: Session,
    /// A handle on its socket (for polling).
    pub socket: TcpStream,
    /// The tunnel it runs over, when the guest is reached through the
    /// hypervisor host (declared last: dropped after the socket is closed).
    tunnel: Option<crate::guest::ssh::jump::Tunnel>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("socket", &self.socket)
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Drops a session that failed (a command timed out, the guest went
    /// away): its socket is shut first, so that freeing the session does
    /// not wait on a guest that may never answer (a command still running
    /// holds its channel open).
    pub fn abandon(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// Opens a session: TCP connect, handshake, host-key check, key auth.
pub fn connect(t: &Target, timeout: Duration) -> Result<Link, SshError> {
    let _call = crate::util::exit::InFlight::enter();
    let addr = SocketAddr::new(t.ip, t.port);
    let (tcp, tunnel) = match &t.via {
        Some(jump) => {
            let (tcp, tunnel) = jump.tunnel(addr, timeout).map_err(|source| SshError::Jump {
                vm: t.vm.clone(),
                source,
            })?;
            (tcp, Some(tunnel))
        }
        None => (
            TcpStream::connect_timeout(&addr, timeout).map_err(|source| SshError::Connect {
                vm: t.vm.clone(),
                addr,
                source,
            })?,
            None,
        ),
    };
    let _ = tcp.set_nodelay(true);
    let poll_handle = tcp.try_clone().map_err(|source| SshError::Connect {
        vm: t.vm.clone(),
        addr,
        source,
    })?;
    let mut sess = Session::new().map_err(|source| SshError::Handshake {
        vm: t.vm.clone(),
        source,
    })?;
    sess.set_tcp_stream(tcp);
    sess.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    sess.handshake().map_err(|source| SshError::Handshake {
        vm: t.vm.clone(),
        source,
    })?;
    let found = sess.host_key().map(|(k, _)| k.to_vec()).unwrap_or_default();
    check_host_key(t, &found)?;
    authenticate(t, &sess)?;
    sess.set_timeout(0);
    // Keepalives (sent while commands run) keep NAT and firewalls from
    // dropping an idle session; a wedged guest is bounded by each call's timeout.
    sess.set_keepalive(true, KEEPALIVE_SECS);
    Ok(Link {
        session: sess,
        socket: poll_handle,
        tunnel,
    })
}

/// The guest's host key against the pinned one, the learned one, or (first
/// contact with a machine lago did not create) learns it.
fn check_host_key(t: &Target, found: &[u8]) -> Result<(), SshError> {
    let learned = t.learned_host_key.as_ref().and_then(|p| std::fs::read(p).ok());
    match t.host_key.clone().or(learned) {
        Some(expected) if found != expected.as_slice() => Err(SshError::HostKeyMismatch {
            vm: t.vm.clone(),
            expected: fingerprint(&expected),
            found: fingerprint(found),
        }),
        Some(_) => Ok(()),
        None => {
            match &t.learned_host_key {
                Some(path) => {
                    let saved = path
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(path, found));
                    match saved {
                        Ok(()) => tracing::warn!(
                            vm = %t.vm,
                            key = %fingerprint(found),
                            saved = %path.display(),
                            "learned the SSH host key of a machine lago did not create, on first contact; it is pinned from now on"
                        ),
                        Err(e) => {
                            tracing::warn!(vm = %t.vm, error = %e, "cannot save the learned SSH host key; it is not pinned")
                        }
                    }
                }
                // Never silently: a VM without a seed (`bootstrap: false`) has no key lago gave it.
                None => tracing::warn!(
                    vm = %t.vm,
                    presented = %fingerprint(found),
                    "no pinned SSH host key for this VM (bootstrap: false): trusting the key it presents"
                ),
            }
            Ok(())
        }
    }
}

/// Key authentication, then the password when there is one.
fn authenticate(t: &Target, sess: &Session) -> Result<(), SshError> {
    let by_key = if t.key.exists() {
        sess.userauth_pubkey_file(&t.user, None, &t.key, None)
    } else {
        Err(ssh2::Error::new(
            ssh2::ErrorCode::Session(-18),
            "the key file does not exist",
        ))
    };
    let key_error = match by_key {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    match &t.password {
        Some(Secret(pw)) => sess
            .userauth_password(&t.user, pw)
            .map_err(|source| SshError::AuthPassword {
                vm: format!("{} (as {})", t.vm, t.user),
                key: t.key.clone(),
                key_error: key_error.to_string().into(),
                source,
            }),
        None => Err(SshError::Auth {
            vm: t.vm.clone(),
            user: t.user.clone(),
            key: t.key.clone(),
            source: key_error,
        }),
    }
}

/// A persistent, reconnecting SSH connection to one guest.
pub struct Connection {
    target: Target,
    live: Mutex<Option<Link>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Default time to (re)connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// A connection to `target`, opened on first use.
    pub fn new(target: Target) -> Self {
        Connection {
            target,
            live: Mutex::new(None),
        }
    }

    /// Where and how this connection reaches its guest.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Installs an already-open session (from the wait for SSH).
    pub fn adopt(&self, live: Link) {
        if let Ok(mut g) = self.live.lock() {
            *g = Some(live);
        }
    }

    /// Drops the session; the next command reconnects.
    pub fn reset(&self) {
        if let Ok(mut g) = self.live.lock() {
            *g = None;
        }
    }

    /// Runs `command` (a shell command line) with `stdin` data, within `timeout`.
    /// Reconnects once if the session was dropped.
    pub fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<CommandStatus, SshError> {
        self.exec_raw(command, stdin, timeout).map(RawStatus::lossy)
    }

    /// Like [`Connection::exec`], and asks `interrupt` every [`INTERRUPT_EVERY`](super::INTERRUPT_EVERY)
    /// while the command runs: when it gives a reason, the wait ends with
    /// [`SshError::Interrupted`] (the command is left to finish on its own).
    pub fn exec_interruptible(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
        interrupt: &dyn Fn() -> Option<String>,
    ) -> Result<CommandStatus, SshError> {
        self.exec_bytes(command, stdin, timeout, Some(interrupt))
            .map(RawStatus::lossy)
    }

    /// Like [`Connection::exec`], with stdout and stderr as bytes.
    pub fn exec_raw(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<RawStatus, SshError> {
        self.exec_bytes(command, stdin, timeout, None)
    }

    fn exec_bytes(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
        interrupt: Option<&dyn Fn() -> Option<String>>,
    ) -> Result<RawStatus, SshError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.unwrap_or(&[]);
        let code = self.exec_streams(
            command,
            &mut Streams {
                stdin: &mut input,
                out: &mut out,
                err: &mut err,
                interrupt,
            },
            timeout,
        )?;
        Ok(RawStatus { code, out, err })
    }

    /// Runs `command` with its input read from, and its output written to,
    /// `io` as they flow (nothing is held in memory). Reconnects once if the
    /// session was dropped before the command started. Returns the exit code.
    pub(crate) fn exec_streams(
        &self,
        command: &str,
        io: &mut Streams<'_>,
        timeout: Option<Duration>,
    ) -> Result<i32, SshError> {
        // The shared session runs one command at a time. When another thread
        // is using it (parallel tests on one VM, or a hung command), this
        // command gets a session of its own instead of waiting.
        let mut guard = match self.live.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let link = connect(&self.target, CONNECT_TIMEOUT)?;
                return match run(&self.target.vm, &link.session, &link.socket, command, io, timeout) {
                    Ok(code) => Ok(code),
                    Err(Failure::Stale(e)) | Err(Failure::Fatal(e)) => {
                        link.abandon();
                        Err(e)
                    }
                };
            }
        };
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(connect(&self.target, CONNECT_TIMEOUT)?);
            }
            let Some(link) = guard.as_ref() else { continue };
            match run(&self.target.vm, &link.session, &link.socket, command, io, timeout) {
                Ok(code) => return Ok(code),
                Err(Failure::Stale(e)) if attempt == 0 => {
                    // The error names the command, which may carry secrets: trace level.
                    tracing::trace!(vm = %self.target.vm, error = %e, "SSH session dropped; reconnecting");
                    if let Some(l) = guard.take() {
                        l.abandon();
                    }
                }
                Err(Failure::Stale(e)) | Err(Failure::Fatal(e)) => {
                    if let Some(l) = guard.take() {
                        l.abandon();
                    }
                    return Err(e);
                }
            }
        }
        Err(SshError::Timeout {
            vm: self.target.vm.clone(),
            command: command.to_owned(),
            timeout: timeout.unwrap_or_default(),
        })
    }

    /// Runs `command` (or a login shell) with a PTY bound to this terminal,
    /// in raw mode, following window size changes. Returns the exit code.
    pub fn interactive(&self, command: Option<&str>) -> Result<i32, SshError> {
        let link = connect(&self.target, CONNECT_TIMEOUT)?;
        interactive(&self.target.vm, &link.session, &link.socket, command)
    }
}
