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
pub(crate) fn lock_exclusive(path: &Path, timeout: Duration) -> Result<File, LockFailure> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
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
