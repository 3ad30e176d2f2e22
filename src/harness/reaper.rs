//! The reaper: a process that outlives a test binary and tears its
//! environment down with the library's own destroy code.
//!
//! The test binary starts it (itself, re-executed: a constructor sees the
//! reaper's variables before `main` and runs it instead of the tests) as
//! soon as it has chosen a workdir, before `init`. The reaper waits until
//! its owner lets go: its stdin reaches end-of-file (the test binary closed
//! it at exit, or died, SIGKILL included), or, for an environment shared by
//! a nextest run, the watched process (the nextest runner) is gone. Then,
//! unless the environment is kept (`LAGO_KEEP`), it destroys what the
//! workdir names (domains, networks, leases, files) and exits 0; on failure
//! it exits non-zero.
//!
//! A reaper acts only for the harness that started it: that harness writes
//! a random token into a file of the folder around the workdir (its own,
//! mode 0700) and hands the same token over the reaper's inherited stdin.
//! A test binary started with the reaper's variables by anything else (a
//! variable left in a shell, a planted one) has no such token and destroys
//! nothing.
//!
//! At a normal exit the test binary closes every reaper's stdin and waits
//! for them (bounded), so nothing of its environments is left when it
//! returns.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::env::error::Error;

const ENV_WORKDIR: &str = "LAGO_REAPER_WORKDIR";
const ENV_WATCH_PID: &str = "LAGO_REAPER_WATCH_PID";
const ENV_WATCH_START: &str = "LAGO_REAPER_WATCH_START";
const ENV_SHARED_DIR: &str = "LAGO_REAPER_SHARED_DIR";

use crate::host::workdir::REAPER_TOKEN as TOKEN_FILE;

/// How long the exit hook waits for the reapers.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// Reaper mode: runs before `main` when the reaper's variables are set, and
/// never returns to the test harness.
#[ctor::ctor(unsafe)]
fn reaper_entry() {
    let Some(workdir) = std::env::var_os(ENV_WORKDIR) else {
        return;
    };
    let watch = std::env::var(ENV_WATCH_PID)
        .ok()
        .and_then(|p| p.parse().ok())
        .zip(std::env::var(ENV_WATCH_START).ok().and_then(|t| t.parse().ok()));
    let shared_dir = std::env::var_os(ENV_SHARED_DIR).map(PathBuf::from);
    let code = std::panic::catch_unwind(|| {
        let code = run(Path::new(&workdir), watch);
        if let Some(dir) = &shared_dir {
            remove_meeting_dir(dir);
        }
        code
    })
    .unwrap_or(70);
    std::process::exit(code);
}

/// At exit: let every reaper of this process go and wait for them, so that
/// the environments are gone before the process is.
#[dtor::dtor(unsafe)]
fn at_exit() {
    release_all(EXIT_WAIT);
}

fn run(workdir: &Path, watch: Option<(u32, u64)>) -> i32 {
    // The token comes first, over the pipe the harness holds.
    let mut stdin = std::io::stdin();
    let mut token = Vec::new();
    let _ = std::io::BufRead::read_until(&mut std::io::BufReader::new((&mut stdin).take(128)), b'\n', &mut token);
    match watch {
        // A shared environment: it lives as long as the watched process.
        Some((pid, start)) => wait_for_exit(pid, start),
        // Its owner holds our stdin open until it lets go (or dies).
        None => {
            let mut sink = [0u8; 64];
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
    if !workdir.exists() {
        return 0;
    }
    if !token_matches(workdir, &token) {
        // Not started by the harness that made this workdir: nothing is ours to destroy.
        return 2;
    }
    if workdir.join(crate::host::workdir::KEEP_MARKER).exists() {
        return 0;
    }
    match reap(workdir) {
        Ok(()) => {
            crate::host::workdir::remove_test_dir(workdir);
            0
        }
        Err(_) => 1,
    }
}

/// Whether `token` (as read from stdin) is the one in the token file
/// beside `workdir` (read without following a link).
fn token_matches(workdir: &Path, token: &[u8]) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(parent) = workdir.parent() else { return false };
    let mut saved = Vec::new();
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(parent.join(TOKEN_FILE))
        .and_then(|f| f.take(128).read_to_end(&mut saved));
    let token = token.trim_ascii();
    read.is_ok() && token.len() >= 32 && saved.trim_ascii() == token
}

/// Makes the token for the reaper of `workdir`: written (new, mode 0600)
/// into the folder around it, returned to be handed over the reaper's stdin.
fn make_token(workdir: &Path) -> Result<String, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| Error::Reaper {
        workdir: workdir.to_path_buf(),
        source,
    };
    let parent = workdir
        .parent()
        .ok_or_else(|| io_err(std::io::Error::other("the workdir has no parent folder")))?;
    let token = crate::util::random::random_hex(16).map_err(io_err)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(parent.join(TOKEN_FILE))
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .map_err(io_err)?;
    Ok(token)
}

use crate::host::workdir::remove_meeting_dir;

/// Waits until process `pid` (started at `start` ticks) is gone.
fn wait_for_exit(pid: u32, start: u64) {
    // A pidfd wakes us the moment it exits; polling is the fallback.
    let fd = rustix::process::Pid::from_raw(pid as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    if crate::host::owner::start_ticks(pid) != Some(start) {
        return;
    }
    match fd {
        Some(fd) => {
            use rustix::event::{PollFd, PollFlags, poll};
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            while poll(&mut fds, None).is_err() {}
        }
        None => {
            while crate::host::owner::start_ticks(pid) == Some(start) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Destroys what the workdir `path` holds, through the library's destroy.
/// A workdir that is gone, or holds no environment yet, leaves nothing to do
/// but the folder itself.
pub(crate) fn reap(path: &Path) -> Result<(), Error> {
    match crate::env::destroy_workdir(path, None) {
        Ok(()) => Ok(()),
        // Killed between creating the folder and writing its env id: no lease,
        // no libvirt object exists yet; only lago's own entries may.
        Err(Error::NoEnv { .. }) => match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(Error::Workdir {
                action: "remove",
                path: path.to_path_buf(),
                source,
            }),
        },
        Err(e) => Err(e),
    }
}

struct Reaper {
    workdir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
}

fn reapers() -> &'static Mutex<Vec<Reaper>> {
    static R: Mutex<Vec<Reaper>> = Mutex::new(Vec::new());
    &R
}

fn command(workdir: &Path) -> Result<Command, Error> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|source| Error::Reaper {
        workdir: workdir.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(exe);
    cmd.env(ENV_WORKDIR, workdir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the terminal does not kill it.
        .process_group(0);
    Ok(cmd)
}

/// Starts the reaper of `workdir`, owned by this process: it reaps when this
/// process exits (the exit hook waits for it) or dies.
pub(crate) fn spawn(workdir: &Path) -> Result<(), Error> {
    let token = make_token(workdir)?;
    let mut child = command(workdir)?
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Reaper {
            workdir: workdir.to_path_buf(),
            source,
        })?;
    let mut stdin = child.stdin.take();
    if let Some(pipe) = &mut stdin {
        use std::io::Write;
        let _ = writeln!(pipe, "{token}");
    }
    reapers().lock().unwrap_or_else(|p| p.into_inner()).push(Reaper {
        workdir: workdir.to_path_buf(),
        child,
        stdin,
    });
    Ok(())
}

/// Starts the reaper of a workdir shared by the processes of a nextest run:
/// it reaps when process `watch` (pid, start ticks: the nextest runner) is
/// gone, then removes the run's meeting folder `shared_dir`. Returns its pid
/// (it owns the environment's lifetime).
pub(crate) fn spawn_shared(workdir: &Path, shared_dir: &Path, watch: (u32, u64)) -> Result<u32, Error> {
    let token = make_token(workdir)?;
    let mut child = command(workdir)?
        .env(ENV_WATCH_PID, watch.0.to_string())
        .env(ENV_WATCH_START, watch.1.to_string())
        .env(ENV_SHARED_DIR, shared_dir)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Reaper {
            workdir: workdir.to_path_buf(),
            source,
        })?;
    // The token, then end-of-file: this reaper watches a process, not its stdin.
    if let Some(mut pipe) = child.stdin.take() {
        use std::io::Write;
        let _ = writeln!(pipe, "{token}");
    }
    // Not ours to wait for: it serves the whole run, and outlives this process.
    Ok(child.id())
}

/// Lets every reaper of this process go and waits up to `bound` for them;
/// says what is left after that.
pub(crate) fn release_all(bound: Duration) {
    let mut list = std::mem::take(&mut *reapers().lock().unwrap_or_else(|p| p.into_inner()));
    for r in &mut list {
        r.stdin = None;
    }
    let start = Instant::now();
    while !list.is_empty() {
        list.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!(
                        "lago: tearing down {} failed; `lago gc` removes what is left",
                        r.workdir.display()
                    );
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        if list.is_empty() {
            break;
        }
        if start.elapsed() >= bound {
            for r in &list {
                eprintln!(
                    "lago: teardown of {} still running after {bound:?}; leaving it to finish (`lago gc` removes what is left)",
                    r.workdir.display()
                );
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
