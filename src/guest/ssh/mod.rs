//! SSH to the guests: the only user of the `ssh2` crate.
//!
//! One session per VM, kept open and reused by every command (a new TCP + SSH
//! handshake costs 150-200 ms under TCG); it reconnects when dropped. The
//! guest's host key is checked against the one lago generated and handed over
//! in the seed: no trust on first use. Files travel as tar streams over an
//! exec channel, so any guest with `tar` works.

mod copy;
pub mod jump;
mod quote;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, Session};

pub use copy::{CopyLimits, CopyReport, Skipped};
pub use quote::{quote, quote_command};

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
    /// The session.
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

const EAGAIN: i32 = -37;
/// Seconds between SSH keepalives.
const KEEPALIVE_SECS: u32 = 15;

fn would_block(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(EAGAIN))
}

/// Waits until the session's socket is ready in the direction libssh2 needs.
fn wait_socket(sess: &Session, tcp: &TcpStream, max: Duration) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut flags = PollFlags::empty();
    match sess.block_directions() {
        BlockDirections::Inbound => flags |= PollFlags::IN,
        BlockDirections::Outbound => flags |= PollFlags::OUT,
        BlockDirections::Both => flags |= PollFlags::IN | PollFlags::OUT,
        BlockDirections::None => flags |= PollFlags::IN,
    }
    let fd = tcp.as_fd();
    let mut fds = [PollFd::new(&fd, flags)];
    let ts = rustix::event::Timespec {
        tv_sec: max.as_secs() as i64,
        tv_nsec: max.subsec_nanos() as i64,
    };
    let _ = poll(&mut fds, Some(&ts));
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

    /// The target.
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

    /// Like [`Connection::exec`], and asks `interrupt` every [`INTERRUPT_EVERY`]
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

/// A command's outcome with raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatus {
    /// Exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub out: Vec<u8>,
    /// Standard error.
    pub err: Vec<u8>,
}

impl RawStatus {
    fn lossy(self) -> CommandStatus {
        CommandStatus {
            code: self.code,
            out: String::from_utf8_lossy(&self.out).into_owned(),
            err: String::from_utf8_lossy(&self.err).into_owned(),
        }
    }
}

/// How often an interruptible command asks whether to stop waiting.
pub const INTERRUPT_EVERY: Duration = Duration::from_millis(200);

/// `(parent, name)` of an absolute guest path.
fn split_remote(remote: &str) -> Option<(String, String)> {
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

enum Failure {
    /// The session looks dead: reconnecting may help.
    Stale(SshError),
    /// Reconnecting would not help.
    Fatal(SshError),
}

/// Where a command's input comes from and its output goes, and what may
/// end the wait for it early.
pub(crate) struct Streams<'a> {
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Asked every [`INTERRUPT_EVERY`]: a reason ends the wait.
    pub interrupt: Option<&'a dyn Fn() -> Option<String>>,
}

fn run(
    vm: &str,
    sess: &Session,
    tcp: &TcpStream,
    command: &str,
    io: &mut Streams<'_>,
    timeout: Option<Duration>,
) -> Result<i32, Failure> {
    // (A timeout too far to represent is no deadline.)
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let chan_err = |source| SshError::Channel {
        vm: vm.to_owned(),
        command: command.to_owned(),
        source,
    };
    let io_err = |source| SshError::Io {
        vm: vm.to_owned(),
        command: command.to_owned(),
        source,
    };
    let timed_out = || SshError::Timeout {
        vm: vm.to_owned(),
        command: command.to_owned(),
        timeout: timeout.unwrap_or_default(),
    };
    let expired = || deadline.is_some_and(|d| Instant::now() >= d);
    let step = Duration::from_millis(50);
    let _call = crate::util::exit::InFlight::enter();
    let exiting = || SshError::Exiting {
        vm: vm.to_owned(),
        command: command.to_owned(),
    };

    sess.set_blocking(false);
    let result = (|| {
        // Open the channel: a failure here usually means a dead session.
        let mut ch = loop {
            match sess.channel_session() {
                Ok(c) => break c,
                Err(e) if would_block(&e) => {
                    if expired() {
                        return Err(Failure::Fatal(timed_out()));
                    }
                    if crate::util::exit::shutting_down() {
                        return Err(Failure::Fatal(exiting()));
                    }
                    wait_socket(sess, tcp, step);
                }
                Err(e) => return Err(Failure::Stale(chan_err(e))),
            }
        };
        loop {
            match ch.exec(command) {
                Ok(()) => break,
                Err(e) if would_block(&e) => wait_socket(sess, tcp, step),
                Err(e) => return Err(Failure::Stale(chan_err(e))),
            }
            if expired() {
                return Err(Failure::Fatal(timed_out()));
            }
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut sent = 0;
        let mut input_done = false;
        // A command may exit without reading all its input: its exit code tells.
        let mut input_failed: Option<std::io::Error> = None;
        let mut eof_sent = false;
        let mut last_asked = Instant::now();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let mut progressed = false;
            // A keepalive now and then (libssh2 sends one only when due).
            let _ = sess.keepalive_send();
            if sent == pending.len() && !input_done {
                pending.resize(32 * 1024, 0);
                match io.stdin.read(&mut pending) {
                    Ok(0) => {
                        pending.clear();
                        input_done = true;
                    }
                    Ok(n) => pending.truncate(n),
                    Err(e) if e.kind() == ErrorKind::Interrupted => pending.clear(),
                    Err(e) => {
                        let _ = ch.close();
                        return Err(Failure::Fatal(io_err(e)));
                    }
                }
                sent = 0;
            }
            if sent < pending.len() {
                match ch.write(&pending[sent..]) {
                    Ok(n) => {
                        sent += n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        input_failed = Some(e);
                        input_done = true;
                        eof_sent = true;
                        pending.clear();
                        sent = 0;
                    }
                }
            }
            if input_done && !eof_sent {
                match ch.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if would_block(&e) => {}
                    Err(_) => eof_sent = true,
                }
            }
            for stream in [0, 1] {
                // Bounded per pass, so a guest streaming without pause cannot outrun the deadline.
                let mut this_pass = 0;
                while this_pass < (1 << 20) {
                    let r = if stream == 0 {
                        ch.read(&mut buf)
                    } else {
                        ch.stderr().read(&mut buf)
                    };
                    match r {
                        Ok(0) => break,
                        Ok(n) => {
                            let sink: &mut dyn Write = if stream == 0 { &mut *io.out } else { &mut *io.err };
                            if let Err(e) = sink.write_all(&buf[..n]) {
                                let _ = ch.close();
                                return Err(Failure::Fatal(io_err(e)));
                            }
                            this_pass += n;
                            progressed = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(Failure::Fatal(io_err(e))),
                    }
                }
            }
            if ch.eof() {
                break;
            }
            if expired() {
                let _ = ch.close();
                return Err(Failure::Fatal(timed_out()));
            }
            if crate::util::exit::shutting_down() {
                return Err(Failure::Fatal(exiting()));
            }
            if let Some(ask) = io.interrupt
                && last_asked.elapsed() >= INTERRUPT_EVERY
            {
                last_asked = Instant::now();
                if let Some(reason) = ask() {
                    let _ = ch.close();
                    return Err(Failure::Fatal(SshError::Interrupted {
                        vm: vm.to_owned(),
                        command: command.to_owned(),
                        reason,
                    }));
                }
            }
            if !progressed {
                wait_socket(sess, tcp, step);
            }
        }
        loop {
            match ch.wait_close() {
                Ok(()) => break,
                Err(e) if would_block(&e) => wait_socket(sess, tcp, step),
                Err(e) => return Err(Failure::Fatal(chan_err(e))),
            }
            if expired() {
                return Err(Failure::Fatal(timed_out()));
            }
            if crate::util::exit::shutting_down() {
                return Err(Failure::Fatal(exiting()));
            }
        }
        let code = ch.exit_status().map_err(|e| Failure::Fatal(chan_err(e)))?;
        let code = match ch.exit_signal() {
            Ok(sig) if sig.exit_signal.is_some() => -1,
            _ => code,
        };
        match input_failed {
            Some(e) if code == 0 => Err(Failure::Fatal(io_err(e))),
            _ => Ok(code),
        }
    })();
    sess.set_blocking(true);
    result
}

fn interactive(vm: &str, sess: &Session, tcp: &TcpStream, command: Option<&str>) -> Result<i32, SshError> {
    use rustix::termios;
    let shown = command.unwrap_or("<login shell>").to_owned();
    let chan_err = |source| SshError::Channel {
        vm: vm.to_owned(),
        command: shown.clone(),
        source,
    };
    let stdin = std::io::stdin();
    let tty = termios::isatty(&stdin);
    let size = || {
        termios::tcgetwinsize(std::io::stdout())
            .ok()
            .map(|w| (u32::from(w.ws_col), u32::from(w.ws_row)))
    };
    let mut ch = sess.channel_session().map_err(chan_err)?;
    if tty {
        let (w, h) = size().unwrap_or((80, 24));
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        ch.request_pty(&term, None, Some((w, h, 0, 0))).map_err(chan_err)?;
    }
    match command {
        Some(c) => ch.exec(c).map_err(chan_err)?,
        None => ch.shell().map_err(chan_err)?,
    }
    let saved = if tty { termios::tcgetattr(&stdin).ok() } else { None };
    if let Some(orig) = &saved {
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw);
    }
    let result = pump(vm, &shown, sess, tcp, &mut ch, &size);
    if let Some(orig) = &saved {
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, orig);
    }
    result
}

fn pump(
    vm: &str,
    shown: &str,
    sess: &Session,
    tcp: &TcpStream,
    ch: &mut ssh2::Channel,
    size: &dyn Fn() -> Option<(u32, u32)>,
) -> Result<i32, SshError> {
    use rustix::event::{PollFd, PollFlags, poll};
    let io_err = |source| SshError::Io {
        vm: vm.to_owned(),
        command: shown.to_owned(),
        source,
    };
    sess.set_blocking(false);
    let mut last = size();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 16 * 1024];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = loop {
        for (is_err, sink) in [(false, &mut out as &mut dyn Write), (true, &mut err as &mut dyn Write)] {
            loop {
                let r = if is_err {
                    ch.stderr().read(&mut buf)
                } else {
                    ch.read(&mut buf)
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = sink.write_all(&buf[..n]);
                        let _ = sink.flush();
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        if ch.eof() {
            break Ok(());
        }
        let now = size();
        if now != last {
            if let Some((w, h)) = now {
                let _ = ch.request_pty_size(w, h, None, None);
            }
            last = now;
        }
        let tcp_fd = tcp.as_fd();
        let mut fds = vec![PollFd::new(&tcp_fd, PollFlags::IN)];
        let stdin_fd = stdin.as_fd();
        if stdin_open {
            fds.push(PollFd::new(&stdin_fd, PollFlags::IN));
        }
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let _ = poll(&mut fds, Some(&ts));
        let ready = stdin_open && fds.get(1).is_some_and(|f| !f.revents().is_empty());
        if ready {
            match rustix::io::read(stdin_fd, &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = ch.send_eof();
                }
                Ok(n) => {
                    let mut data = &buf[..n];
                    while !data.is_empty() {
                        match ch.write(data) {
                            Ok(k) => data = &data[k..],
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                wait_socket(sess, tcp, Duration::from_millis(20))
                            }
                            Err(e) => return Err(io_err(e)),
                        }
                    }
                }
            }
        }
    };
    sess.set_blocking(true);
    result?;
    let _ = ch.wait_close();
    Ok(ch.exit_status().unwrap_or(-1))
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
