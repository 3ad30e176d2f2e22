//! Suite-scoped environments: one per init file per test binary (or per
//! nextest run), booted on first use, torn down by a reaper process when the
//! binary ends (the exit hook waits for it) or dies, at once on
//! SIGINT/SIGTERM/SIGHUP (a signal thread), and never while tests still run.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use super::reaper;
use super::registry::{self, Isolation};
use crate::env::error::{Error, error_chain};
use crate::env::{Env, InitOptions};
use crate::host::owner::Owner;

/// What `LAGO_KEEP` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Always tear down (default).
    Never,
    /// Keep the environment when a test that used it failed.
    OnFailure,
    /// Keep the environment even when all its tests passed.
    Always,
}

impl Keep {
    /// From `LAGO_KEEP` (`never`, `on-failure`, `always`; anything else:
    /// never, with a warning). Unset, `LAGO_DEBUG=shell` in a run without a
    /// terminal (no shell can open) keeps as `on-failure` does.
    pub fn from_env() -> Keep {
        match std::env::var("LAGO_KEEP").as_deref() {
            Err(_) if super::debug::wanted() && !super::debug::interactive() => Keep::OnFailure,
            Ok("always") => Keep::Always,
            Ok("on-failure") => Keep::OnFailure,
            Ok("never") | Ok("") | Err(_) => Keep::Never,
            Ok(other) => {
                eprintln!("lago: ignoring LAGO_KEEP={other:?} (expected never, on-failure or always)");
                Keep::Never
            }
        }
    }
}

pub(crate) struct Suite {
    pub init_file: PathBuf,
    /// An environment of one test's own (`Isolation::Fresh`): never shared.
    fresh: bool,
    users: UseLock,
    /// Shared tests that ran on it (a post-boot snapshot taken later is not "post-boot").
    shared_runs: AtomicUsize,
    cell: OnceLock<Result<Arc<Env>, Arc<Error>>>,
    boots: AtomicUsize,
    failed: AtomicBool,
    /// Shared with other processes of a nextest run.
    shared: AtomicBool,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Suite>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Arc<Suite>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// An init-file path as tests write it: relative to the crate under test
/// (`CARGO_MANIFEST_DIR`, which cargo sets when it runs tests), else to the current folder.
pub fn resolve_init_file(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(&dir).join(p),
        None => p.to_path_buf(),
    }
}

pub(crate) fn suite(init_file: &Path) -> Arc<Suite> {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.entry(init_file.to_path_buf())
        .or_insert_with(|| Suite::new(init_file, false))
        .clone()
}

/// The name of the snapshot taken right after boot, for `Isolation::Reset`.
pub(crate) const POST_BOOT: &str = "lago-post-boot";

/// Who uses a suite's environment now: any number of shared tests, or one
/// resetting test (which waits for the shared ones, and they for it; a
/// waiting resetting test goes first).
#[derive(Default)]
struct UseLock {
    state: Mutex<UseState>,
    changed: Condvar,
}

#[derive(Default)]
struct UseState {
    readers: usize,
    writer: bool,
    writers_waiting: usize,
}

/// A test's hold on its suite's environment, released on drop.
pub(crate) struct UseGuard {
    suite: Arc<Suite>,
    exclusive: bool,
    /// Under nextest: the same, across the run's processes (a file lock).
    _file: Option<std::fs::File>,
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        let lock = &self.suite.users;
        let mut st = lock.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.exclusive {
            st.writer = false;
        } else {
            st.readers -= 1;
        }
        lock.changed.notify_all();
    }
}

/// How many times the environment of `init_file` was booted for this test
/// binary (0 or 1), or, under `cargo nextest run`, for the whole run (every
/// test process of the run shares it).
pub fn boots(init_file: &str) -> usize {
    let path = resolve_init_file(init_file);
    if let Ok(run) = std::env::var("NEXTEST_RUN_ID")
        && !run.is_empty()
        && let Ok(shared) = SharedDir::new(&run, &path)
    {
        return shared.boots();
    }
    suite(&path).boots.load(Ordering::SeqCst)
}

impl Suite {
    fn new(init_file: &Path, fresh: bool) -> Arc<Suite> {
        Arc::new(Suite {
            init_file: init_file.to_path_buf(),
            fresh,
            users: UseLock::default(),
            shared_runs: AtomicUsize::new(0),
            cell: OnceLock::new(),
            boots: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            shared: AtomicBool::new(false),
        })
    }

    /// A suite for one test's own environment (`Isolation::Fresh`); tear it
    /// down with [`Suite::teardown`] when the test is done.
    pub(crate) fn fresh(init_file: &Path) -> Arc<Suite> {
        Suite::new(init_file, true)
    }

    /// Waits until the test may use the environment as `isolation` says;
    /// for `Reset`, then reverts the VMs to their post-boot state.
    pub(crate) fn enter(self: &Arc<Self>, env: &Env, isolation: Isolation) -> Result<UseGuard, Error> {
        let exclusive = isolation == Isolation::Reset;
        {
            let lock = &self.users;
            let mut st = lock.state.lock().unwrap_or_else(|p| p.into_inner());
            if exclusive {
                st.writers_waiting += 1;
                while st.writer || st.readers > 0 {
                    st = lock.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.writers_waiting -= 1;
                st.writer = true;
            } else {
                while st.writer || st.writers_waiting > 0 {
                    st = lock.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.readers += 1;
            }
        }
        let mut guard = UseGuard {
            suite: self.clone(),
            exclusive,
            _file: None,
        };
        if self.shared.load(Ordering::SeqCst)
            && let Ok(run) = std::env::var("NEXTEST_RUN_ID")
            && let Ok(dir) = SharedDir::new(&run, &self.init_file)
        {
            guard._file = Some(dir.use_lock(exclusive)?);
        }
        if exclusive {
            self.reset(env)?;
        } else {
            self.shared_runs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(guard)
    }

    /// Waits until no test of this process uses the environment.
    fn wait_unused(&self) {
        let lock = &self.users;
        let mut st = lock.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.writer || st.readers > 0 {
            st = lock.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Reverts to the post-boot snapshot (taken now if it is missing).
    fn reset(&self, env: &Env) -> Result<(), Error> {
        if env.snapshots()?.iter().any(|s| s.name == POST_BOOT) {
            let t = Instant::now();
            env.revert(POST_BOOT)?;
            tracing::info!(ms = t.elapsed().as_millis() as u64, "reset to the post-boot snapshot");
            return Ok(());
        }
        let before = self.shared_runs.load(Ordering::SeqCst);
        if before > 0 {
            eprintln!(
                "lago: env {}: taking the post-boot snapshot only now, after {before} shared tests ran on it (declare resetting tests with #[lago_env(…, isolation = \"reset\")] so that it is taken right after boot)",
                env.id()
            );
        }
        env.snapshot(POST_BOOT).map(|_| ())
    }

    /// The environment, booted by the first caller; concurrent callers wait
    /// for that one boot. A failed boot is not retried: every caller gets its error.
    pub(crate) fn env(self: &Arc<Self>) -> Result<Arc<Env>, Arc<Error>> {
        self.cell.get_or_init(|| self.boot().map_err(Arc::new)).clone()
    }

    fn failed(&self, what: &'static str, e: Error) -> Error {
        Error::SuiteBoot {
            init_file: self.init_file.clone(),
            what,
            source: Box::new(e),
        }
    }

    fn boot(&self) -> Result<Arc<Env>, Error> {
        install_signal_handler();
        // The environment's log (logs/lago.log, copied into failure
        // artifacts), unless the tests installed their own subscriber.
        crate::util::logging::install(tracing::Level::DEBUG);
        sweep_once();
        let start = Instant::now();
        let (env, attached) = match std::env::var("NEXTEST_RUN_ID") {
            Ok(run) if !run.is_empty() && !self.fresh => self.shared_boot(&run)?,
            _ => (self.own_boot()?, false),
        };
        if attached {
            eprintln!(
                "lago: attached to {} (env {} in {}, booted by another test process of this nextest run)",
                self.init_file.display(),
                env.id(),
                env.workdir().display(),
            );
        } else {
            self.boots.fetch_add(1, Ordering::SeqCst);
            let came_up = env.came_up();
            let restored = !came_up.is_empty() && came_up.values().all(|h| h == "restored");
            eprintln!(
                "lago: {} {} as env {} in {} ({:.1?})",
                if restored { "restored" } else { "booted" },
                self.init_file.display(),
                env.id(),
                env.workdir().display(),
                start.elapsed()
            );
        }
        if Keep::from_env() == Keep::Always {
            self.keep(&env, "LAGO_KEEP=always");
        }
        Ok(Arc::new(env))
    }

    /// An environment this process owns alone: its reaper starts before
    /// `init` and tears it down when the process exits (or dies); with
    /// `LAGO_KEEP=never`, libvirtd also destroys its domains if the process
    /// and its reaper are both killed.
    fn own_boot(&self) -> Result<Env, Error> {
        let root = fresh_workdir().map_err(|e| self.failed("could not be created", e))?;
        reaper::spawn(&root).map_err(|e| self.failed("could not be created", e))?;
        let env = Env::init(
            &self.init_file,
            InitOptions {
                workdir: Some(root.clone()),
                owner: Owner::this_process(),
                warm: registry::wants_cold(&self.init_file).then_some(false),
                ..Default::default()
            },
        )
        .map_err(|e| self.failed("could not be created", e))?;
        env.set_autodestroy(Keep::from_env() == Keep::Never);
        self.start_or_tear_down(env)
    }

    fn start_or_tear_down(&self, env: Env) -> Result<Env, Error> {
        match env.start(&[]) {
            Ok(()) => {
                // Resetting tests revert to this; taken now, before any test ran.
                if !self.fresh && registry::wants_reset(&self.init_file) {
                    let t = Instant::now();
                    match env.snapshot(POST_BOOT) {
                        Ok(_) => tracing::info!(ms = t.elapsed().as_millis() as u64, "post-boot snapshot taken"),
                        Err(e) => eprintln!(
                            "lago: env {}: the post-boot snapshot failed: {}",
                            env.id(),
                            error_chain(&e)
                        ),
                    }
                }
                Ok(env)
            }
            Err(e) => {
                let torn = env.teardown();
                eprintln!(
                    "lago: env {} ({}) failed to boot and {}",
                    env.id(),
                    env.workdir().display(),
                    match &torn {
                        Ok(()) => "was torn down".to_owned(),
                        Err(t) => format!("tearing it down failed too: {}", error_chain(t)),
                    }
                );
                Err(self.failed("failed to boot", e))
            }
        }
    }

    /// Under `cargo nextest run` every test is its own process: the processes
    /// of one run that name this init file share one environment. The first
    /// boots it (the others wait on a lock), the rest attach to it; a boot
    /// failure is recorded and given to every later test without a new boot.
    /// A reaper destroys it when the nextest run ends, however it ends.
    fn shared_boot(&self, run_id: &str) -> Result<(Env, bool), Error> {
        let shared = SharedDir::new(run_id, &self.init_file).map_err(|e| self.failed("could not be created", e))?;
        self.shared.store(true, Ordering::SeqCst);
        let _lock = shared.lock().map_err(|e| self.failed("could not be created", e))?;
        if let Some(outcome) = shared.outcome() {
            return match outcome {
                Ok(()) => {
                    let env = Env::load(&shared.workdir).map_err(|e| self.failed("could not be attached to", e))?;
                    Ok((env, true))
                }
                Err(message) => Err(Error::SharedBootFailed {
                    init_file: self.init_file.clone(),
                    message,
                }),
            };
        }
        let booted = (|| {
            // The environment lives as long as the nextest runner (found among
            // our ancestors: a wrapper between us ends with this process).
            let watch = nextest_runner().ok_or_else(|| {
                self.failed(
                    "could not be created",
                    Error::Reaper {
                        workdir: shared.workdir.clone(),
                        source: std::io::Error::other(
                            "NEXTEST_RUN_ID is set, but no cargo-nextest process is among this test process's ancestors",
                        ),
                    },
                )
            })?;
            let reaper = reaper::spawn_shared(&shared.workdir, &shared.dir, watch)
                .map_err(|e| self.failed("could not be created", e))?;
            let env = Env::init(
                &self.init_file,
                InitOptions {
                    workdir: Some(shared.workdir.clone()),
                    owner: Owner::of_pid(reaper),
                    warm: registry::wants_cold(&self.init_file).then_some(false),
                    ..Default::default()
                },
            )
            .map_err(|e| self.failed("could not be created", e))?;
            self.start_or_tear_down(env)
        })();
        shared.record(booted.as_ref().map(|_| ()).map_err(|e| error_chain(e)));
        booted.map(|env| (env, false))
    }

    /// A test using this environment failed.
    pub(crate) fn mark_failed(&self, env: &Env) {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        if first && Keep::from_env() == Keep::OnFailure {
            let why = match std::env::var_os("LAGO_KEEP") {
                None => "LAGO_DEBUG=shell with no terminal to open a shell on, and a test failed",
                Some(_) => "LAGO_KEEP=on-failure and a test failed",
            };
            self.keep(env, why);
        }
    }

    fn keep(&self, env: &Env, why: &str) {
        // The reaper sees the marker and leaves the environment alone.
        if let Err(e) = std::fs::write(env.workdir().join(crate::host::workdir::KEEP_MARKER), why) {
            eprintln!("lago: cannot mark env {} as kept: {e}", env.id());
        }
        let vm = env.get_vms().keys().next().cloned().unwrap_or_else(|| "VM".into());
        // Inside lago's test namespace, the guests are reachable from there only.
        let wrap = if std::env::var_os("LAGO_IN_NETNS").is_some() {
            "scripts/netns-run "
        } else {
            ""
        };
        eprintln!(
            "lago: keeping env {} ({why}); get in with: {wrap}lago -w {} shell {vm}   (remove with: {wrap}lago -w {} destroy --yes)",
            env.id(),
            env.workdir().display(),
            env.workdir().display()
        );
    }

    fn kept(&self) -> bool {
        matches!(self.cell.get(), Some(Ok(env)) if env.workdir().join(crate::host::workdir::KEEP_MARKER).exists())
    }

    /// Tears the environment down now (unless kept, or shared with other
    /// processes of a nextest run: its reaper does that when the run ends).
    pub(crate) fn teardown(&self) {
        let Some(Ok(env)) = self.cell.get() else { return };
        if self.kept() || self.shared.load(Ordering::SeqCst) {
            return;
        }
        let what = format!("env {} ({})", env.id(), env.workdir().display());
        if let Ok(mut l) = TEARING.lock() {
            l.push(what.clone());
        }
        match env.teardown() {
            Ok(()) => crate::host::workdir::remove_test_dir(env.workdir()),
            Err(e) => eprintln!("lago: tearing down env {} failed: {}", env.id(), error_chain(&e)),
        }
        if let Ok(mut l) = TEARING.lock() {
            l.retain(|w| *w != what);
        }
    }
}

/// Tears down the environments of these init files (resolved paths) that
/// this process booted (unless kept), once the tests using them are done,
/// and forgets them (a later test boots a new one); environments of other
/// init files stay.
pub(crate) fn teardown_these(init_files: &[PathBuf]) {
    let suites: Vec<Arc<Suite>> = registry()
        .lock()
        .map(|mut r| init_files.iter().filter_map(|p| r.remove(p)).collect())
        .unwrap_or_default();
    teardown_each(&suites, true);
}

/// Tears down every environment this process booted (unless kept).
pub fn teardown_all() {
    let suites: Vec<Arc<Suite>> = registry()
        .lock()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    teardown_each(&suites, false);
}

/// Tears `suites` down at once, each on a thread of its own; with
/// `wait_unused`, each once no test of this process uses it.
fn teardown_each(suites: &[Arc<Suite>], wait_unused: bool) {
    std::thread::scope(|s| {
        for suite in suites {
            s.spawn(move || {
                if wait_unused {
                    suite.wait_unused();
                }
                suite.teardown()
            });
        }
    });
}

/// The nextest runner this test process runs under: the nearest ancestor
/// whose command is `cargo-nextest` (pid, start ticks). Not the parent: a
/// wrapper script or target runner may sit between them.
fn nextest_runner() -> Option<(u32, u64)> {
    let mut pid = rustix::process::getppid()?.as_raw_nonzero().get().unsigned_abs();
    for _ in 0..64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, parent) = comm_and_parent(&stat)?;
        if comm == "cargo-nextest" {
            return crate::host::owner::start_ticks(pid).map(|t| (pid, t));
        }
        if parent <= 1 {
            return None;
        }
        pid = parent;
    }
    None
}

/// The command name and the parent pid in a `/proc/<pid>/stat` line.
fn comm_and_parent(stat: &str) -> Option<(&str, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    // After the name: state, then the parent's pid.
    let parent = stat.get(close + 1..)?.split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, parent))
}

/// A new workdir path: `env` inside a new folder of the temporary folder
/// (`lago-test-XXXXXX`, mode 0700, created here and kept: its name is never
/// released, so nobody else can take it over). `init` creates `env` in it
/// (so that destroying the environment removes it); the reaper or the
/// teardown removes the folder once it is empty.
fn fresh_workdir() -> Result<PathBuf, Error> {
    let tmp = tempfile::Builder::new()
        .prefix(crate::host::workdir::TEST_DIR_PREFIX)
        .tempdir()
        .map_err(|source| Error::Workdir {
            action: "create",
            path: std::env::temp_dir(),
            source,
        })?;
    Ok(tmp.keep().join("env"))
}

/// Sweeps what crashed runs left (bounded), once per process, before the first boot.
fn sweep_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let opts = crate::ops::gc::GcOptions {
            deadline: Some(Instant::now() + std::time::Duration::from_secs(10)),
            ..Default::default()
        };
        match crate::ops::gc::sweep(&opts) {
            Ok(report) => {
                for f in report.removed() {
                    eprintln!(
                        "lago: swept env {} that a crashed run left ({} domains, {} networks, {} leases)",
                        f.env_id,
                        f.domains.len(),
                        f.networks.len(),
                        f.subnets.len()
                    );
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "sweeping environments of crashed runs failed"),
        }
    });
}

/// The folder where the processes of one nextest run meet for one init file.
struct SharedDir {
    dir: PathBuf,
    workdir: PathBuf,
}

impl SharedDir {
    fn new(run_id: &str, init_file: &Path) -> Result<SharedDir, Error> {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::DirBuilderExt;
        let run: String = run_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(64)
            .collect();
        let hash: String = Sha256::digest(init_file.as_os_str().as_encoded_bytes())
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = std::env::temp_dir()
            .join(format!("{}{run}", crate::host::workdir::MEETING_PREFIX))
            .join(hash);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| Error::Workdir {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        Ok(SharedDir {
            workdir: dir.join("env"),
            dir,
        })
    }

    /// Held while booting; others wait (bounded) for the outcome.
    fn lock(&self) -> Result<std::fs::File, Error> {
        let path = self.dir.join("boot.lock");
        crate::util::lock::lock_exclusive(&path, std::time::Duration::from_secs(30 * 60)).map_err(|e| match e {
            crate::util::lock::LockFailure::Io(source) => Error::Workdir {
                action: "lock",
                path,
                source,
            },
            crate::util::lock::LockFailure::Timeout(_) => Error::Workdir {
                action: "lock",
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another test process held it for 30 minutes",
                ),
            },
        })
    }

    /// What the first process recorded: booted, or the boot's error.
    fn outcome(&self) -> Option<Result<(), String>> {
        let text = std::fs::read_to_string(self.dir.join("outcome")).ok()?;
        Some(match text.strip_prefix("failed\n") {
            Some(message) => Err(message.to_owned()),
            None => Ok(()),
        })
    }

    /// The run-wide use lock: shared, or exclusive for a resetting test.
    fn use_lock(&self, exclusive: bool) -> Result<std::fs::File, Error> {
        let path = self.dir.join("use.lock");
        let err = |source| Error::Workdir {
            action: "lock",
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        if exclusive { file.lock() } else { file.lock_shared() }.map_err(err)?;
        Ok(file)
    }

    /// Boots recorded for this run (each boot attempt adds one).
    fn boots(&self) -> usize {
        std::fs::read_to_string(self.dir.join("boots"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn record(&self, outcome: Result<(), String>) {
        let boots = self.boots() + 1;
        if let Err(e) = std::fs::write(self.dir.join("boots"), boots.to_string()) {
            eprintln!(
                "lago: cannot record the shared environment's boots in {}: {e}",
                self.dir.display()
            );
        }
        let text = match outcome {
            Ok(()) => "ready\n".to_owned(),
            Err(message) => format!("failed\n{message}"),
        };
        if let Err(e) = std::fs::write(self.dir.join("outcome"), text) {
            eprintln!(
                "lago: cannot record the shared environment's boot in {}: {e}",
                self.dir.display()
            );
        }
    }
}

fn install_signal_handler() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => {
                let spawned = std::thread::Builder::new()
                    .name("lago-signals".into())
                    .spawn(move || on_signals(signals));
                if let Err(e) = spawned {
                    eprintln!("lago: cannot watch for signals: {e}");
                }
            }
            Err(e) => eprintln!("lago: cannot watch for signals: {e}"),
        }
    });
}

/// The first signal tears every environment down, then exits. While that
/// runs, a second one says what is still being removed, and a third exits
/// at once (what is left is `lago gc`'s).
fn on_signals(mut signals: signal_hook::iterator::Signals) {
    let Some(first) = signals.forever().next() else { return };
    let _ = writeln!(
        std::io::stderr(),
        "lago: signal {first}: tearing down test environments"
    );
    let teardown = std::thread::spawn(teardown_all);
    let mut seen = 1;
    while !teardown.is_finished() {
        for sig in signals.pending() {
            seen += 1;
            if seen >= 3 {
                let _ = writeln!(
                    std::io::stderr(),
                    "lago: signal {sig} again: exiting now; `lago gc` removes what is left of: {}",
                    tearing_down().join(", ")
                );
                std::process::exit(128 + sig);
            }
            let _ = writeln!(
                std::io::stderr(),
                "lago: still tearing down {}; one more signal exits at once (`lago gc` removes what is left)",
                tearing_down().join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::process::exit(128 + first);
}

/// The environments being torn down now ("env ID (WORKDIR)").
fn tearing_down() -> Vec<String> {
    TEARING.lock().map(|l| l.clone()).unwrap_or_default()
}

static TEARING: Mutex<Vec<String>> = Mutex::new(Vec::new());
