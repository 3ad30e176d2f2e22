//! Exclusive file locks waited for with a timeout (never forever).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockFailure {
    /// Opening or locking failed.
    Io(std::io::Error),
    /// Another holder kept it past the timeout.
    Timeout(Duration),
}

/// Opens (creating) `path` and takes an exclusive lock on it, polling until `timeout`.
/// The lock is released when the returned file is dropped.
/// A symlink at `path` is refused (`O_NOFOLLOW`): in a shared directory
/// another user could otherwise point it at a file of ours.
pub(crate) fn lock_exclusive(path: &Path, timeout: Duration) -> Result<File, LockFailure> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(LockFailure::Io)?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= timeout {
                    return Err(LockFailure::Timeout(start.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockFailure::Io(e)),
        }
    }
}

/// Whether this process runs as root (picks system-wide default directories).
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
