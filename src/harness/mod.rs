//! Test-framework integration: suite-scoped environments shared by every
//! test of a binary that names the same init file, failure artifacts, the
//! `#[lago_env]` attribute's runtime, rstest fixtures ([`crate::harness::fixtures`])
//! and a libtest-mimic runner ([`runner`]).
//!
//! **Lifetime.** The first test that needs an init file's environment boots
//! it into a fresh temporary workdir; tests that need it at the same time
//! wait for that one boot; a failed boot fails each of them with the same
//! error and is not retried. It is torn down before the test binary exits,
//! pass or fail (an exit hook waits for its reaper, a process started before
//! `init` that runs the library's destroy), by that reaper alone when the
//! binary is killed, and at once on SIGINT, SIGTERM or SIGHUP. A panicking
//! test fails alone; the others go on using the environment.
//! `LAGO_KEEP=on-failure|always` keeps it and prints how to get in. Under
//! `cargo nextest run`, the test processes of one run share one environment
//! per init file, destroyed when the run ends. Before its first boot, a test
//! binary sweeps what crashed runs left (see [`crate::ops::gc`]).

mod artifacts;
mod debug;
pub mod fixtures;
mod reaper;
pub mod registry;
pub mod runner;
pub(crate) mod suite;

/// The console lines a test fails on (`fail_on_console`): lago's defaults.
/// The watchdog that matches them belongs to the guest layer (it reads
/// consoles); this path stays for users of
/// `lago::harness::watch::DEFAULT_PATTERNS`.
pub mod watch {
    pub use crate::guest::console::DEFAULT_PATTERNS;
}

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use artifacts::artifacts_root;
pub use registry::{Isolation, TestOptions};
pub use suite::{Keep, boots, resolve_init_file, teardown_all};

use crate::env::Env;
use crate::guest::console;
use crate::guest::transcript;

/// What a test function returned: `()` or a `Result`.
pub trait Outcome {
    /// Why it failed, if it did.
    fn failure(&self) -> Option<String>;
}

impl Outcome for () {
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<T, E: std::fmt::Debug> Outcome for Result<T, E> {
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(|e| format!("{e:?}"))
    }
}

/// Watches one test: console offsets and the SSH transcript from its start,
/// artifacts if it fails (also when it panics while this guard is alive).
pub(crate) struct TestGuard {
    env: Arc<Env>,
    suite: Arc<suite::Suite>,
    name: String,
    pub(crate) recorder: transcript::Recorder,
    pub(crate) watch: Arc<console::Watch>,
    /// Each VM's name, console log, and its length when the test started.
    consoles: Vec<(String, PathBuf, u64)>,
    /// A failure bundle on failure.
    pub(crate) bundle: bool,
    done: bool,
}

impl TestGuard {
    /// Starts watching test `name`; `fail_on_console` adds a pattern to the
    /// console watchdog's (an invalid one fails the test, naming it).
    pub(crate) fn start(env: Arc<Env>, suite: Arc<suite::Suite>, name: String, opts: &TestOptions) -> Self {
        let fail_on_console = opts.fail_on_console;
        let consoles: Vec<(String, PathBuf, u64)> = env
            .get_vms()
            .iter()
            .map(|(n, vm)| {
                let log = vm.console_log().to_path_buf();
                let len = crate::guest::console::console_len(&log);
                (n.clone(), log, len)
            })
            .collect();
        let watch = Arc::new(Self::watch_from(&name, fail_on_console, &consoles));
        let recorder: transcript::Recorder = Arc::new(Mutex::new(Vec::new()));
        transcript::set(Some(recorder.clone()));
        console::set(Some(watch.clone()));
        TestGuard {
            env,
            suite,
            name,
            recorder,
            watch,
            consoles,
            bundle: opts.bundles(),
            done: false,
        }
    }

    fn watch_from(name: &str, fail_on_console: Option<&str>, consoles: &[(String, PathBuf, u64)]) -> console::Watch {
        let from = consoles.iter().map(|(_, log, len)| (log.clone(), *len));
        match console::Watch::new(fail_on_console, from) {
            Ok(w) => w,
            Err(e) => panic!("lago: {name}: {e}"),
        }
    }

    /// Watches the consoles for `pattern` too, from where the test started.
    pub(crate) fn fail_on_console(&mut self, pattern: &str) {
        self.watch = Arc::new(Self::watch_from(&self.name, Some(pattern), &self.consoles));
        console::set(Some(self.watch.clone()));
    }

    /// The console watchdog's first match since the test started, as the
    /// failure message, scanning every console once more.
    pub(crate) fn watchdog(&self) -> Option<String> {
        self.env
            .watch_consoles(&self.watch)
            .map(|m| crate::env::error::Error::ConsoleWatchdog(Box::new(m)).to_string())
    }

    pub(crate) fn env(&self) -> &Arc<Env> {
        &self.env
    }

    /// Records a failure: artifacts, keep policy. Returns the artifacts folder.
    pub(crate) fn fail(&mut self, message: &str) -> PathBuf {
        self.done = true;
        let entries = self.recorder.lock().map(|v| v.clone()).unwrap_or_default();
        let dir = artifacts::collect(&self.env, &self.name, message, &self.consoles, &entries);
        if self.bundle {
            artifacts::bundle(&self.env, &self.name, message, &dir);
        }
        debug::shell_on_failure(&self.env, &self.name, message);
        self.suite.mark_failed(&self.env);
        dir
    }

    pub(crate) fn pass(&mut self) {
        self.done = true;
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        transcript::set(None);
        console::set(None);
        if self.done {
            return;
        }
        if std::thread::panicking() {
            let dir = self.fail("the test panicked (see its output)");
            eprintln!("lago: failure artifacts of {} in {}", self.name, dir.display());
        } else if let Some(w) = self.watchdog() {
            // A fixture's test ended (its guard is dropped with the fixture):
            // what the consoles showed meanwhile fails it.
            let dir = self.fail(&w);
            panic!("lago: {}: {w}\nlago: failure artifacts in {}", self.name, dir.display());
        }
    }
}

/// The current test's name: libtest names each test's thread after it.
pub(crate) fn current_test_name(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" && !n.is_empty() => n.to_owned(),
        _ => fallback.to_owned(),
    }
}

fn panic_message(p: &(dyn Any + Send)) -> Option<String> {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
}

/// Runs test `name` against the environment of `init_file`; on failure,
/// writes its artifacts and names their folder in the failure message.
pub fn run_named<T: Outcome>(init_file: &str, name: &str, f: impl FnOnce(&Env) -> T) -> T {
    run_named_with(init_file, name, TestOptions::default(), f)
}

/// Tears a fresh environment down when its test is done (also when it panicked).
pub(crate) struct FreshTeardown(Option<Arc<suite::Suite>>);

impl Drop for FreshTeardown {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.teardown();
        }
    }
}

/// The suite, its environment and the test's hold on it, as `opts` asks.
pub(crate) fn prepare(
    init_file: &str,
    name: &str,
    isolation: Isolation,
) -> (Arc<suite::Suite>, Arc<Env>, suite::UseGuard, FreshTeardown) {
    let path = resolve_init_file(init_file);
    let suite = match isolation {
        Isolation::Fresh => suite::Suite::fresh(&path),
        _ => suite::suite(&path),
    };
    let fresh = FreshTeardown((isolation == Isolation::Fresh).then(|| suite.clone()));
    let env = match suite.env() {
        Ok(env) => env,
        Err(e) => panic!("lago: {}", crate::env::error::error_chain(&*e)),
    };
    let hold = match suite.enter(&env, isolation) {
        Ok(g) => g,
        Err(e) => panic!(
            "lago: {name}: cannot give the test its environment ({isolation:?}): {}",
            crate::env::error::error_chain(&e)
        ),
    };
    (suite, env, hold, fresh)
}

/// Like [`run_named`], with isolation (`Shared`, `Reset`, `Fresh`). Without
/// a timeout; see [`run_named_timeout`].
pub fn run_named_with<T: Outcome>(init_file: &str, name: &str, opts: TestOptions, f: impl FnOnce(&Env) -> T) -> T {
    if opts.warm == Some(false) {
        registry::register_cold(init_file);
    }
    let (suite, env, _hold, _fresh) = prepare(init_file, name, opts.isolation);
    let guard = TestGuard::start(env.clone(), suite, name.to_owned(), &opts);
    let result = catch_unwind(AssertUnwindSafe(|| f(&env)));
    conclude(guard, name, result)
}

/// Like [`run_named_with`], failing the test (with its artifacts) when it
/// runs longer than `opts.timeout`. The body runs on a thread of its own,
/// which keeps running in the background after a timeout (threads cannot be
/// killed) until the binary exits.
pub fn run_named_timeout<T: Outcome + Send + 'static>(
    init_file: &str,
    name: &str,
    opts: TestOptions,
    f: impl FnOnce(&Env) -> T + Send + 'static,
) -> T {
    let Some(limit) = opts.timeout else {
        return run_named_with(init_file, name, opts, f);
    };
    if opts.warm == Some(false) {
        registry::register_cold(init_file);
    }
    let (suite, env, _hold, _fresh) = prepare(init_file, name, opts.isolation);
    let mut guard = TestGuard::start(env.clone(), suite, name.to_owned(), &opts);
    let (tx, rx) = std::sync::mpsc::channel();
    let recorder = guard.recorder.clone();
    let body_watch = guard.watch.clone();
    let body_env = env.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{name} (body)"))
        .spawn(move || {
            transcript::set(Some(recorder));
            console::set(Some(body_watch));
            let _ = tx.send(catch_unwind(AssertUnwindSafe(|| f(&body_env))));
        });
    if let Err(e) = spawned {
        let dir = guard.fail(&format!("cannot start the test's thread: {e}"));
        drop(guard);
        panic!(
            "lago: {name}: cannot start the test's thread: {e}\nlago: failure artifacts in {}",
            dir.display()
        );
    }
    // The consoles are watched while the body runs: a panic fails the test at once.
    let started = std::time::Instant::now();
    let why = loop {
        let left = limit.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.min(std::time::Duration::from_millis(200))) {
            Ok(result) => return conclude(guard, name, result),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break "its thread ended without a result".to_owned();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(w) = guard.watchdog() {
            break format!("{w} (its body keeps running in the background until the test binary exits)");
        }
        if started.elapsed() >= limit {
            break format!(
                "timed out after {limit:?} (its body keeps running in the background until the test binary exits)"
            );
        }
    };
    let dir = guard.fail(&why);
    drop(guard);
    panic!("lago: {name}: {why}\nlago: failure artifacts in {}", dir.display());
}

/// Records a test's outcome: artifacts on failure or panic; the panic goes on.
fn conclude<T: Outcome>(mut guard: TestGuard, name: &str, result: std::thread::Result<T>) -> T {
    // What the consoles showed while the test ran fails it, whatever it returned.
    if let Some(w) = guard.watchdog() {
        let why = match &result {
            // A test that failed because a helper saw the same is said once.
            Ok(v) => match v.failure() {
                Some(f) if !f.contains("the serial console shows") => format!("{w}\nthe test also failed: {f}"),
                _ => w.clone(),
            },
            Err(p) => match panic_message(p.as_ref()) {
                Some(m) if !m.contains("the serial console shows") => format!("{w}\nthe test also panicked: {m}"),
                _ => w.clone(),
            },
        };
        let dir = guard.fail(&why);
        drop(guard);
        panic!("lago: {name}: {why}\nlago: failure artifacts in {}", dir.display());
    }
    match result {
        Ok(v) => {
            match v.failure() {
                Some(why) => {
                    let dir = guard.fail(&why);
                    eprintln!("lago: failure artifacts of {name} in {}", dir.display());
                }
                None => guard.pass(),
            }
            v
        }
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            let dir = guard.fail(msg.as_deref().unwrap_or("the test panicked"));
            drop(guard);
            match msg {
                Some(m) => resume_unwind(Box::new(format!("{m}\nlago: failure artifacts in {}", dir.display()))),
                None => {
                    eprintln!("lago: failure artifacts of {name} in {}", dir.display());
                    resume_unwind(payload)
                }
            }
        }
    }
}

/// Runs every `#[lago_env]` test of this target through the runner
/// ([`runner::Runner`]): for `harness = false` targets (nightly suites),
/// with libtest's arguments, `--junit`, failure artifacts, and trials
/// ignored with the reason when libvirt cannot be reached.
///
/// ```ignore
/// // tests/nightly.rs, with `[[test]] name = "nightly" harness = false`
/// use lago::{lago_env, Vm};
///
/// #[lago_env("tests/envs/tiny1.yaml", timeout = "120s")]
/// fn knows_its_name(vm01: &Vm) {
///     assert_eq!(vm01.ssh(["hostname"]).unwrap().out.trim(), "vm01");
/// }
///
/// lago::harness::main!();
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! __lago_harness_main {
    () => {
        fn main() {
            $crate::harness::run_registered()
        }
    };
}
pub use crate::__lago_harness_main as main;

/// What [`main!`] runs: a runner with one suite per init file, holding
/// the registered tests (those with rstest parameters run under `cargo test` only).
pub fn run_registered() -> ! {
    let mut suites: std::collections::BTreeMap<&'static str, runner::Suite> = Default::default();
    for r in registry::registrations() {
        let Some(body) = r.body else {
            eprintln!(
                "lago: {} takes rstest parameters: it runs under `cargo test`, not in this runner",
                r.name
            );
            continue;
        };
        let suite = suites
            .remove(r.init_file)
            .unwrap_or_else(|| runner::Suite::new(r.init_file));
        suites.insert(r.init_file, suite.registered(r.name, r.options, r.ignored, body));
    }
    suites
        .into_values()
        .fold(runner::Runner::new(), runner::Runner::suite)
        .run()
}

/// The runtime of `#[lago_env]`: [`run_named`] with the test's name.
pub fn run_env_test<T: Outcome>(init_file: &str, fallback_name: &str, f: impl FnOnce(&Env) -> T) -> T {
    let name = current_test_name(fallback_name);
    run_named(init_file, &name, f)
}

/// The runtime of `#[lago_env(…, isolation = …)]`.
pub fn run_env_test_with<T: Outcome>(
    init_file: &str,
    fallback_name: &str,
    opts: TestOptions,
    f: impl FnOnce(&Env) -> T,
) -> T {
    let name = current_test_name(fallback_name);
    run_named_with(init_file, &name, opts, f)
}

/// The runtime of `#[lago_env(…, timeout = …)]` (tests without rstest parameters).
pub fn run_env_test_timeout<T: Outcome + Send + 'static>(
    init_file: &str,
    fallback_name: &str,
    opts: TestOptions,
    f: fn(&Env) -> T,
) -> T {
    let name = current_test_name(fallback_name);
    run_named_timeout(init_file, &name, opts, f)
}
