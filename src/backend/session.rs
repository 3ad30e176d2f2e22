//! The user's own libvirt daemon (`qemu:///session`), started by lago
//! under a reaper when it is not running.
//!
//! libvirt's client starts the session daemon by itself when its socket
//! does not answer, but daemonized: the daemon, and every QEMU it starts,
//! end up children of the machine's first process, which may reap them
//! late. libvirt waits for a destroyed domain's QEMU to be reaped, so each
//! destroy then takes seconds (1.8-2 s a VM here, against 0.2 s). Started
//! here under `tini -s` (a child subreaper), the QEMUs are reaped the moment
//! they exit, as `scripts/netns-run` does for the system daemon. Without
//! `tini`, libvirt's own start is left to do it.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon has to answer once started.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The session daemon's socket: in `$XDG_RUNTIME_DIR/libvirt`, else in
/// `~/.cache/libvirt`, as libvirt puts it.
fn socket() -> Option<PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(dir.join("libvirt/libvirt-sock"))
}

/// Makes sure this user's session daemon runs, started under `tini -s` if
/// it does not (see the module docs). Failing that, nothing is done: the
/// connection starts it the way libvirt does.
pub(crate) fn ensure_daemon() {
    let Some(sock) = socket() else { return };
    if UnixStream::connect(&sock).is_ok() {
        return;
    }
    use crate::util::cmd::find_program as find;
    let (Some(tini), Some(libvirtd), Some(setsid)) = (find("tini"), find("libvirtd"), find("setsid")) else {
        return;
    };
    // `setsid -f`: the daemon is nobody's child here (lago does not wait for it).
    let started = Command::new(setsid)
        .arg("-f")
        .arg(tini)
        .args(["-s", "--"])
        .arg(libvirtd)
        .arg("--timeout=120")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !started.is_ok_and(|s| s.success()) {
        tracing::debug!("cannot start the session daemon under tini; libvirt starts it");
        return;
    }
    let t = Instant::now();
    while t.elapsed() < ANSWER_WITHIN {
        if UnixStream::connect(&sock).is_ok() {
            tracing::debug!(ms = t.elapsed().as_millis() as u64, "session daemon started under tini");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
