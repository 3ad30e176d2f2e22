//! The stages of a boot, and how the serial console says a guest is up.

use std::fmt;
use std::path::Path;

use super::console::bytes_from;

/// The stages of a boot, as `Vm::wait_for_ssh` watches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootStage {
    /// libvirt reports the domain running.
    DomainRunning,
    /// The serial console shows the guest is up.
    GuestUp,
    /// TCP port 22 accepts connections.
    PortOpen,
    /// The SSH handshake, host-key check and key authentication passed.
    Authenticated,
    /// The guest is ready for commands: for cloud-init guests, cloud-init
    /// finished (it may still restart sshd or write users before that).
    Ready,
}

impl BootStage {
    /// The stages, in order.
    pub const ALL: [BootStage; 5] = [
        BootStage::DomainRunning,
        BootStage::GuestUp,
        BootStage::PortOpen,
        BootStage::Authenticated,
        BootStage::Ready,
    ];
}

impl fmt::Display for BootStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootStage::DomainRunning => "domain running",
            BootStage::GuestUp => "console shows the guest is up",
            BootStage::PortOpen => "SSH port open",
            BootStage::Authenticated => "authenticated",
            BootStage::Ready => "ready for commands (cloud-init done)",
        })
    }
}

/// Console lines that say a guest has booted far enough to be talked to.
const UP_MARKERS: &[&str] = &[
    "lago-tiny: up",
    "login:",
    "Cloud-init v.",
    "Reached target",
    "SSH host key",
];

/// Whether the console, from `*from` on, shows that the guest is up. `*from`
/// moves past what was read (less a marker's length, in case one is cut in
/// two), so that polling reads only new output.
pub(crate) fn console_shows_up(path: &Path, from: &mut u64) -> bool {
    let buf = bytes_from(path, *from);
    if UP_MARKERS
        .iter()
        .any(|m| buf.windows(m.len()).any(|w| w == m.as_bytes()))
    {
        return true;
    }
    let keep = UP_MARKERS.iter().map(|m| m.len()).max().unwrap_or(0);
    *from += buf.len().saturating_sub(keep) as u64;
    false
}

#[cfg(test)]
mod tests {
    use super::console_shows_up;
    use std::io::Write;

    #[test]
    fn the_console_is_scanned_once_and_a_marker_cut_in_two_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut f = std::fs::File::create(&path).unwrap();
        let mut from = 0;
        assert!(!console_shows_up(&path, &mut from), "empty console");
        f.write_all(&[b'x'; 4000]).unwrap();
        f.write_all(b"\n\xff\xfe lago-ti").unwrap();
        assert!(!console_shows_up(&path, &mut from));
        // Most of what was read is not read again.
        assert!(from > 3900 && from < 4010, "{from}");
        f.write_all(b"ny: up (vm01) at 0.8s\n").unwrap();
        assert!(console_shows_up(&path, &mut from));
        // A console that is not there (yet) is not up, and moves nothing.
        let mut none = 7;
        assert!(!console_shows_up(&dir.path().join("missing"), &mut none));
        assert_eq!(none, 7);
    }
}
