//! Log sinks for the SDK: the environment's `logs/lago.log`, an optional
//! user log file, and an optional stream logger on stderr.
//!
//! The library itself only emits `tracing` events. A subscriber that writes
//! to these sinks is installed only when asked for ([`crate::sdk::init`],
//! [`crate::sdk::add_stream_logger`], the CLI), and never over one the
//! program installed itself.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

#[derive(Default)]
struct Sinks {
    files: Vec<(PathBuf, File)>,
    stream: bool,
}

fn sinks() -> &'static Mutex<Sinks> {
    static SINKS: OnceLock<Mutex<Sinks>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

/// Adds `path` (appended to) as a log sink.
pub(crate) fn add_file(path: &Path) {
    let Ok(file) = OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    if let Ok(mut s) = sinks().lock()
        && !s.files.iter().any(|(p, _)| p == path)
    {
        s.files.push((path.to_path_buf(), file));
    }
}

/// Logs of an environment go to its `logs/lago.log`.
pub(crate) fn attach_env_log(path: &Path) {
    add_file(path);
}

/// Stops writing to `path` (the environment is being destroyed).
pub(crate) fn detach_env_log(path: &Path) {
    if let Ok(mut s) = sinks().lock() {
        s.files.retain(|(p, _)| p != path);
    }
}

/// Also writes logs to stderr.
pub(crate) fn enable_stream() {
    if let Ok(mut s) = sinks().lock() {
        s.stream = true;
    }
}

#[derive(Clone, Copy)]
struct FanOut;

impl Write for FanOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut s) = sinks().lock() {
            for (_, f) in s.files.iter_mut() {
                let _ = f.write_all(buf);
            }
            if s.stream {
                let _ = std::io::stderr().write_all(buf);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FanOut {
    type Writer = FanOut;
    fn make_writer(&'a self) -> FanOut {
        FanOut
    }
}

/// Installs the fan-out subscriber at `level` (`RUST_LOG` overrides) unless
/// the program already has a subscriber. Returns whether it was installed.
pub(crate) fn install(level: tracing::Level) -> bool {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lago={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(FanOut)
        .with_ansi(false)
        .try_init()
        .is_ok()
}
