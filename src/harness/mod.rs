//! Test-framework integration: suite-scoped environments shared by every
//! test of a binary that names the same init file, failure artifacts, the
//! `#[lago_env]` attribute's runtime, rstest fixtures ([`crate::fixtures`])
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
//! binary sweeps what crashed runs left (see [`crate::gc`]).

mod artifacts;
mod reaper;
pub mod runner;
mod suite;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use artifacts::artifacts_root;
pub use suite::{Keep, boots, resolve_init_file, teardown_all};

use crate::env::Env;
use crate::transcript;

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
    offsets: Vec<(String, u64)>,
    recorder: transcript::Recorder,
    done: bool,
}

impl TestGuard {
    pub(crate) fn start(env: Arc<Env>, suite: Arc<suite::Suite>, name: String) -> Self {
        let offsets = env
            .get_vms()
            .iter()
            .map(|(n, vm)| (n.clone(), crate::vm::console_len(vm.console_log())))
            .collect();
        let recorder: transcript::Recorder = Arc::new(Mutex::new(Vec::new()));
        transcript::set(Some(recorder.clone()));
        TestGuard {
            env,
            suite,
            name,
            offsets,
            recorder,
            done: false,
        }
    }

    pub(crate) fn env(&self) -> &Arc<Env> {
        &self.env
    }

    /// Records a failure: artifacts, keep policy. Returns the artifacts folder.
    pub(crate) fn fail(&mut self, message: &str) -> PathBuf {
        self.done = true;
        let entries = self.recorder.lock().map(|v| v.clone()).unwrap_or_default();
        let dir = artifacts::collect(&self.env, &self.name, message, &self.offsets, &entries);
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
        if !self.done && std::thread::panicking() {
            let dir = self.fail("the test panicked (see its output)");
            eprintln!("lago: failure artifacts of {} in {}", self.name, dir.display());
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

/// The environment of `init_file` for this process (booted on first use).
pub(crate) fn suite_env(init_file: &str) -> (Arc<suite::Suite>, Arc<Env>) {
    let suite = suite::suite(&resolve_init_file(init_file));
    match suite.env() {
        Ok(env) => (suite, env),
        Err(e) => panic!("lago: {}", crate::error::error_chain(&*e)),
    }
}

/// Runs test `name` against the environment of `init_file`; on failure,
/// writes its artifacts and names their folder in the failure message.
pub fn run_named<T: Outcome>(init_file: &str, name: &str, f: impl FnOnce(&Env) -> T) -> T {
    let (suite, env) = suite_env(init_file);
    let mut guard = TestGuard::start(env.clone(), suite, name.to_owned());
    match catch_unwind(AssertUnwindSafe(|| f(&env))) {
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

/// The runtime of `#[lago_env]`: [`run_named`] with the test's name.
pub fn run_env_test<T: Outcome>(init_file: &str, fallback_name: &str, f: impl FnOnce(&Env) -> T) -> T {
    let name = current_test_name(fallback_name);
    run_named(init_file, &name, f)
}
