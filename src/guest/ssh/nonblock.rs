//! libssh2 in non-blocking mode: what "would block" looks like, waiting on
//! the session's socket in the direction libssh2 needs, and retrying a call
//! until it stops blocking.

use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use ssh2::{BlockDirections, Session};

const EAGAIN: i32 = -37;

/// Whether a libssh2 call would have blocked (non-blocking mode).
pub(super) fn would_block(e: &ssh2::Error) -> bool {
    matches!(e.code(), ssh2::ErrorCode::Session(EAGAIN))
}

/// Waits (at most `max`) until the session's socket is ready in the
/// direction libssh2 needs.
pub(super) fn wait_socket(sess: &Session, tcp: &TcpStream, max: Duration) {
    use rustix::event::{PollFd, PollFlags, poll};
    let flags = match sess.block_directions() {
        BlockDirections::Inbound | BlockDirections::None => PollFlags::IN,
        BlockDirections::Outbound => PollFlags::OUT,
        BlockDirections::Both => PollFlags::IN | PollFlags::OUT,
    };
    let fd = tcp.as_fd();
    let mut fds = [PollFd::new(&fd, flags)];
    let ts = rustix::event::Timespec {
        tv_sec: max.as_secs() as i64,
        tv_nsec: max.subsec_nanos() as i64,
    };
    let _ = poll(&mut fds, Some(&ts));
}

/// Calls `op` until it does not block (waiting on the socket between
/// tries), or `stop` gives a reason to give up.
pub(super) fn retry<T, E>(
    sess: &Session,
    tcp: &TcpStream,
    mut op: impl FnMut() -> Result<T, ssh2::Error>,
    mut stop: impl FnMut() -> Option<E>,
    failed: impl FnOnce(ssh2::Error) -> E,
) -> Result<T, E> {
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if would_block(&e) => {
                if let Some(reason) = stop() {
                    return Err(reason);
                }
                wait_socket(sess, tcp, Duration::from_millis(50));
            }
            Err(e) => return Err(failed(e)),
        }
    }
}
