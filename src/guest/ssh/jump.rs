//! Reaching guests through the hypervisor host ([`JumpHost`]): an SSH
//! session to the host, then a `direct-tcpip` channel to the guest's port
//! 22, bridged to a loopback socket the guest session runs over (OpenSSH's
//! `ProxyJump`).
//!
//! The host's key is checked the way OpenSSH checks it: against a
//! known_hosts file (the URI's `known_hosts` parameter, else
//! `~/.ssh/known_hosts`), strictly (an unknown host is refused; lago never
//! writes that file). Authentication: the URI's `keyfile`, else the SSH
//! agent, else `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use ssh2::{BlockDirections, CheckResult, KnownHostFileKind, Session};

use crate::backend::uri::{LibvirtUri, UriError};

/// A failure reaching a guest through the hypervisor host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JumpError {
    /// The libvirt URI is not one lago can read.
    #[error("libvirt URI {uri:?}: {reason}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// Which part of it lago cannot read, and why.
        reason: String,
    },
    /// The TCP connection to the host's SSH server failed.
    #[error("cannot connect to the hypervisor host {host}:{port} over SSH")]
    Connect {
        /// The hypervisor host's name or address, from the libvirt URI.
        host: String,
        /// Its SSH port (the URI's, else 22).
        port: u16,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The SSH handshake with the host failed.
    #[error("SSH handshake with the hypervisor host {host}:{port} failed")]
    Handshake {
        /// The hypervisor host's name or address, from the libvirt URI.
        host: String,
        /// Its SSH port (the URI's, else 22).
        port: u16,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// The host's key is not the one known_hosts holds, or it is not there.
    #[error("hypervisor host {host}:{port}: {reason} (known hosts: {})", known_hosts.display())]
    HostKey {
        /// The hypervisor host's name or address, from the libvirt URI.
        host: String,
        /// Its SSH port (the URI's, else 22).
        port: u16,
        /// The known_hosts file.
        known_hosts: PathBuf,
        /// What is wrong (another key, a host not listed, an unreadable file).
        reason: String,
    },
    /// No way of authenticating to the host worked.
    #[error("SSH authentication to the hypervisor host {host}:{port} as {user} failed (tried: {tried})")]
    Auth {
        /// The hypervisor host's name or address, from the libvirt URI.
        host: String,
        /// Its SSH port (the URI's, else 22).
        port: u16,
        /// The user on the host (the URI's, else `$USER`, else `root`).
        user: String,
        /// What was tried, and why each failed.
        tried: String,
    },
    /// The host would not forward to the guest.
    #[error("the hypervisor host {host} cannot reach {to} for us")]
    Channel {
        /// The hypervisor host's name or address, from the libvirt URI.
        host: String,
        /// The guest's address and SSH port.
        to: SocketAddr,
        /// libssh2's error.
        #[source]
        source: ssh2::Error,
    },
    /// The local end of the tunnel could not be set up.
    #[error("cannot set up the local end of the tunnel to {to}")]
    Local {
        /// The guest's address and SSH port.
        to: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<UriError> for JumpError {
    fn from(e: UriError) -> Self {
        JumpError::Uri {
            uri: e.uri,
            reason: e.reason,
        }
    }
}

impl LibvirtUri {
    /// The hypervisor host as an SSH jump host, for URIs that reach it over
    /// SSH (`ssh`, `libssh2`, `libssh` transports); `None` otherwise.
    pub fn jump_host(&self) -> Option<JumpHost> {
        let ssh = matches!(self.transport.as_deref(), Some("ssh" | "libssh2" | "libssh"));
        let host = self.host.clone()?;
        if !ssh {
            return None;
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Some(JumpHost {
            host,
            port: self.port.unwrap_or(22),
            user: self
                .user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".to_owned()),
            keyfile: self.param("keyfile").map(PathBuf::from),
            known_hosts: self
                .param("known_hosts")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".ssh/known_hosts")))
                .unwrap_or_else(|| PathBuf::from("/root/.ssh/known_hosts")),
            home,
        })
    }
}

/// The hypervisor host, used as an SSH jump host to reach guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Host name or address.
    pub host: String,
    /// Its SSH port (the URI's, else 22).
    pub port: u16,
    /// The user to log in as (the URI's, else `$USER`, else `root`).
    pub user: String,
    /// Private key (`keyfile`); `None`: the agent, then the default keys.
    pub keyfile: Option<PathBuf>,
    /// The known_hosts file the host's key is checked against (never written).
    pub known_hosts: PathBuf,
    home: Option<PathBuf>,
}

/// How long setting up a tunnel may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl JumpHost {
    fn session(&self, timeout: Duration) -> Result<(Session, TcpStream), JumpError> {
        let connect_err = |source| JumpError::Connect {
            host: self.host.clone(),
            port: self.port,
            source,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(std::io::Error::other("the host name has no address")))?;
        let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
        let _ = tcp.set_nodelay(true);
        let handle = tcp.try_clone().map_err(connect_err)?;
        let handshake = |source| JumpError::Handshake {
            host: self.host.clone(),
            port: self.port,
            source,
        };
        let mut sess = Session::new().map_err(handshake)?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
        sess.handshake().map_err(handshake)?;
        self.check_host_key(&sess)?;
        self.authenticate(&sess)?;
        sess.set_timeout(0);
        sess.set_keepalive(true, KEEPALIVE_SECS);
        Ok((sess, handle))
    }

    fn check_host_key(&self, sess: &Session) -> Result<(), JumpError> {
        let fail = |reason: String| JumpError::HostKey {
            host: self.host.clone(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            reason,
        };
        let (key, _) = sess.host_key().ok_or_else(|| fail("it presented no host key".into()))?;
        let mut known = sess.known_hosts().map_err(|e| fail(e.to_string()))?;
        known
            .read_file(&self.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| fail(format!("cannot read the known_hosts file: {e}")))?;
        match known.check_port(&self.host, self.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::Mismatch => Err(fail(
                "its host key is NOT the one known_hosts holds; refusing to connect".into(),
            )),
            CheckResult::NotFound => Err(fail(format!(
                "its host key is not in known_hosts; check it and add it (ssh-keyscan -p {} {}), as ssh would ask",
                self.port, self.host
            ))),
            CheckResult::Failure => Err(fail("the known_hosts check failed".into())),
        }
    }

    fn authenticate(&self, sess: &Session) -> Result<(), JumpError> {
        let mut tried = Vec::new();
        if let Some(k) = &self.keyfile {
            match sess.userauth_pubkey_file(&self.user, None, k, None) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("{}: {e}", k.display())),
            }
        } else {
            match sess.userauth_agent(&self.user) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("the SSH agent: {e}")),
            }
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let Some(home) = &self.home else { break };
                let k = home.join(".ssh").join(name);
                if !k.is_file() {
                    continue;
                }
                match sess.userauth_pubkey_file(&self.user, None, &k, None) {
                    Ok(()) => return Ok(()),
                    Err(e) => tried.push(format!("{}: {e}", k.display())),
                }
            }
        }
        Err(JumpError::Auth {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            tried: tried.join("; "),
        })
    }

    /// A loopback TCP stream that reaches `to` through the host: an SSH
    /// session to the host and a `direct-tcpip` channel, pumped by a thread
    /// that ends when either side closes. The [`Tunnel`] owns that thread:
    /// dropping it (after the stream) stops and joins it.
    pub fn tunnel(&self, to: SocketAddr, timeout: Duration) -> Result<(TcpStream, Tunnel), JumpError> {
        let timeout = timeout.clamp(Duration::from_secs(1), CONNECT_TIMEOUT);
        let (sess, handle) = self.session(timeout)?;
        sess.set_timeout(timeout.as_millis() as u32);
        let channel = sess
            .channel_direct_tcpip(&to.ip().to_string(), to.port(), None)
            .map_err(|source| JumpError::Channel {
                host: self.host.clone(),
                to,
                source,
            })?;
        sess.set_timeout(0);
        let local_err = |source| JumpError::Local { to, source };
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(local_err)?;
        let ours = TcpStream::connect(listener.local_addr().map_err(local_err)?).map_err(local_err)?;
        let (theirs, peer) = listener.accept().map_err(local_err)?;
        // Only our own connection is bridged, never another process's that raced for the port.
        if Some(peer) != ours.local_addr().ok() {
            return Err(local_err(std::io::Error::other(
                "another process connected to the tunnel's loopback port first",
            )));
        }
        let _ = ours.set_nodelay(true);
        let tunnel = Tunnel::spawn(to, move |stop| pump(sess, handle, channel, theirs, stop)).map_err(local_err)?;
        Ok((ours, tunnel))
    }
}

/// A tunnel's pump thread, the only thread of lago that uses libssh2 on
/// its own. It is owned: dropping the [`Tunnel`] asks it to stop (after
/// the last bytes, for at most 2 s) and joins it, and a process
/// exit stops every pump still running (see [`stop_all_pumps`]) before
/// OpenSSL is torn down (see `crate::util::exit`).
#[derive(Debug)]
pub struct Tunnel {
    pump: Arc<PumpState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a pump and its owners share.
#[derive(Debug, Default)]
struct PumpState {
    /// 0: run; [`STOP`]: finish what is in flight, then end; [`ABORT`]: end now.
    stop: AtomicU8,
    /// Set by the pump thread as its last act.
    done: Mutex<bool>,
    ended: Condvar,
}

const STOP: u8 = 1;
const ABORT: u8 = 2;

/// How long a stopped pump may still move bytes already in flight.
const STOP_DRAIN: Duration = Duration::from_secs(2);

/// The pumps that run now (for the exit hook).
fn pumps() -> &'static Mutex<Vec<Weak<PumpState>>> {
    static P: Mutex<Vec<Weak<PumpState>>> = Mutex::new(Vec::new());
    &P
}

/// Sets the pump's `done` when its thread ends, however it ends.
struct Finished(Arc<PumpState>);

impl Drop for Finished {
    fn drop(&mut self) {
        *self.0.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.ended.notify_all();
    }
}

impl Tunnel {
    fn spawn(to: SocketAddr, body: impl FnOnce(&AtomicU8) + Send + 'static) -> std::io::Result<Tunnel> {
        crate::util::exit::on_exit("tunnel pumps", stop_all_pumps);
        let state = Arc::new(PumpState::default());
        let finished = Finished(state.clone());
        let thread = std::thread::Builder::new()
            .name(format!("lago-tunnel-{to}"))
            .spawn(move || {
                let finished = finished;
                body(&finished.0.stop);
            })?;
        let mut list = pumps().lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&state));
        Ok(Tunnel {
            pump: state,
            thread: Some(thread),
        })
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self
            .pump
            .stop
            .compare_exchange(0, STOP, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stops every pump still running (tunnels of environments that were never
/// dropped: in a static, leaked, or in a test binary's suites) and waits for
/// them, up to `bound` in all. Returns how many were still running after it.
pub fn stop_all_pumps(bound: Duration) -> usize {
    let list: Vec<Arc<PumpState>> = pumps()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for p in &list {
        p.stop.store(ABORT, Ordering::SeqCst);
    }
    let deadline = std::time::Instant::now() + bound;
    let mut left = 0;
    for p in &list {
        let mut done = p.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            let Some(wait) = deadline.checked_duration_since(std::time::Instant::now()) else {
                break;
            };
            done = p.ended.wait_timeout(done, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        left += usize::from(!*done);
    }
    left
}

/// How long the last bytes may take to reach the guest once our side closed.
const DRAIN: Duration = Duration::from_secs(30);

/// Seconds between keepalives on the hypervisor host's session.
const KEEPALIVE_SECS: u32 = 15;

/// Copies bytes both ways between the local socket and the channel until
/// either side closes, or `stop` says so.
fn pump(sess: Session, remote: TcpStream, channel: ssh2::Channel, local: TcpStream, stop: &AtomicU8) {
    sess.set_blocking(false);
    let _ = local.set_nonblocking(true);
    let mut p = Pump {
        sess,
        remote,
        channel,
        local,
        buf: vec![0u8; 32 << 10],
        to_remote: Vec::new(),
        to_local: Vec::new(),
        local_eof: false,
        remote_eof: false,
        drain_deadline: None,
    };
    loop {
        match stop.load(Ordering::SeqCst) {
            ABORT => return,
            STOP => p.drain_within(STOP_DRAIN),
            _ => {}
        }
        // The hypervisor host's session stays alive while the guest's is idle.
        let _ = p.sess.keepalive_send();
        let up = p.up();
        if matches!(up, Flow::End) {
            return;
        }
        let down = p.down();
        match (up, down) {
            (_, Flow::End) => return,
            (Flow::Moved, _) | (_, Flow::Moved) => continue,
            _ => {}
        }
        if p.local_eof {
            p.drain_within(DRAIN);
        }
        if p.drain_deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return;
        }
        p.wait();
    }
}

/// What one direction of a pump did.
enum Flow {
    Moved,
    Idle,
    /// This side is done: the pump ends.
    End,
}

/// A tunnel's two ends and what is on its way between them.
struct Pump {
    sess: Session,
    /// The hypervisor host's socket (for polling).
    remote: TcpStream,
    channel: ssh2::Channel,
    local: TcpStream,
    buf: Vec<u8>,
    to_remote: Vec<u8>,
    to_local: Vec<u8>,
    local_eof: bool,
    remote_eof: bool,
    drain_deadline: Option<std::time::Instant>,
}

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
}

impl Pump {
    /// Ends the pump at most `within` from now (the bytes in flight may still go).
    fn drain_within(&mut self, within: Duration) {
        let soon = std::time::Instant::now() + within;
        self.drain_deadline = Some(self.drain_deadline.map_or(soon, |d| d.min(soon)));
    }

    /// Local socket → channel; once the local side closed and all went,
    /// EOF to the guest and the end.
    fn up(&mut self) -> Flow {
        let mut moved = false;
        if self.to_remote.is_empty() && !self.local_eof {
            match self.local.read(&mut self.buf) {
                Ok(0) => self.local_eof = true,
                Ok(n) => {
                    self.to_remote.extend_from_slice(&self.buf[..n]);
                    moved = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => self.local_eof = true,
            }
        }
        if self.to_remote.is_empty() {
            if self.local_eof {
                let _ = self.channel.send_eof();
                let _ = self.channel.close();
                return Flow::End;
            }
        } else {
            match self.channel.write(&self.to_remote) {
                Ok(n) => {
                    self.to_remote.drain(..n);
                    moved |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return Flow::End,
            }
        }
        if moved { Flow::Moved } else { Flow::Idle }
    }

    /// Channel → local socket; once the guest closed and all went, the
    /// local socket is shut and the pump ends.
    fn down(&mut self) -> Flow {
        let mut moved = false;
        if self.to_local.is_empty() && !self.remote_eof {
            match self.channel.read(&mut self.buf) {
                Ok(0) if self.channel.eof() => self.remote_eof = true,
                Ok(0) => {}
                Ok(n) => {
                    self.to_local.extend_from_slice(&self.buf[..n]);
                    moved = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => self.remote_eof = true,
            }
        }
        if self.to_local.is_empty() {
            if self.remote_eof {
                let _ = self.local.shutdown(std::net::Shutdown::Both);
                return Flow::End;
            }
        } else {
            match self.local.write(&self.to_local) {
                Ok(n) => {
                    self.to_local.drain(..n);
                    moved |= n > 0;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return Flow::End,
            }
        }
        if moved { Flow::Moved } else { Flow::Idle }
    }

    /// Waits (100 ms at most) for a direction that can make progress, so
    /// that a full buffer does not spin.
    fn wait(&self) {
        use rustix::event::{PollFd, PollFlags, poll};
        use std::os::fd::AsFd;
        let mut remote_flags = PollFlags::empty();
        if self.to_local.is_empty() && !self.remote_eof {
            remote_flags |= PollFlags::IN;
        }
        let libssh2_writes = matches!(
            self.sess.block_directions(),
            BlockDirections::Outbound | BlockDirections::Both
        );
        if !self.to_remote.is_empty() || libssh2_writes {
            remote_flags |= PollFlags::OUT | PollFlags::IN;
        }
        let mut local_flags = PollFlags::empty();
        if self.to_remote.is_empty() && !self.local_eof {
            local_flags |= PollFlags::IN;
        }
        if !self.to_local.is_empty() {
            local_flags |= PollFlags::OUT;
        }
        let (lfd, rfd) = (self.local.as_fd(), self.remote.as_fd());
        let mut fds = [PollFd::new(&lfd, local_flags), PollFd::new(&rfd, remote_flags)];
        let wait = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let _ = poll(&mut fds, Some(&wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn only_ssh_transports_give_a_jump_host() {
        let u = LibvirtUri::parse("qemu+ssh://root@10.0.0.5:2222/system?keyfile=/k%20k&known_hosts=/kh").unwrap();
        let j = u.jump_host().unwrap();
        assert_eq!((j.host.as_str(), j.port, j.user.as_str()), ("10.0.0.5", 2222, "root"));
        assert_eq!(j.known_hosts, PathBuf::from("/kh"));
        assert_eq!(j.keyfile, Some(PathBuf::from("/k k")));
        for local in ["qemu:///system", "qemu+unix:///system"] {
            assert!(LibvirtUri::parse(local).unwrap().jump_host().is_none(), "{local}");
        }
        let tls = LibvirtUri::parse("qemu://hv.example.org/system").unwrap();
        assert!(tls.jump_host().is_none(), "no SSH to the host: guests must be routable");
        assert!(
            LibvirtUri::parse("qemu+libssh2://[fd00::1]:22/system")
                .unwrap()
                .jump_host()
                .is_some()
        );
        let nouser = LibvirtUri::parse("qemu+ssh://hv/system").unwrap().jump_host().unwrap();
        assert_eq!(nouser.port, 22);
    }
}
