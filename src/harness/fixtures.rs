//! rstest fixtures for suite-scoped environments.
//!
//! Wrap these in your own `#[fixture]`s; the environment is the same one
//! `#[lago_env]` tests of the binary use, and a failing test gets its
//! failure artifacts (see [`crate::harness`]).
//!
//! ```no_run
//! use lago::fixtures::{SuiteEnv, SuiteVm};
//! use rstest::{fixture, rstest};
//!
//! #[fixture]
//! fn pair() -> SuiteEnv {
//!     lago::fixtures::env("tests/envs/pair.yaml")
//! }
//!
//! #[fixture]
//! fn vm01() -> SuiteVm {
//!     lago::fixtures::vm("tests/envs/pair.yaml", "vm01")
//! }
//!
//! #[rstest]
//! #[case("vm01")]
//! #[case("vm02")]
//! fn knows_its_name(pair: SuiteEnv, #[case] name: &str) {
//!     let st = pair.vm(name).ssh(["hostname"]).unwrap();
//!     assert_eq!(st.out.trim(), name);
//! }
//!
//! #[rstest]
//! fn has_a_root_disk(vm01: SuiteVm) {
//!     assert!(vm01.ssh(["test", "-b", "/dev/vda"]).unwrap().success());
//! }
//! ```

use std::ops::Deref;

use crate::env::Env;
use crate::env::vm::Vm;
use crate::harness::{FreshTeardown, Isolation, TestGuard, TestOptions, current_test_name, prepare, suite::UseGuard};

/// The suite environment of an init file, for one test.
pub struct SuiteEnv {
    // Dropped in this order: artifacts (on failure), then the hold, then a fresh env.
    guard: TestGuard,
    _hold: UseGuard,
    _fresh: FreshTeardown,
}

impl std::fmt::Debug for SuiteEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuiteEnv").field("env", self.guard.env()).finish()
    }
}

impl SuiteEnv {
    /// Also fails the test when a line of a VM's serial console matches the
    /// regular expression `pattern` while it runs (the console watchdog
    /// always looks for kernel panics, oopses, `BUG:` lines and hung tasks).
    /// An invalid pattern fails the test, naming it.
    ///
    /// ```no_run
    /// let env = lago::fixtures::env("tests/envs/pair.yaml").fail_on_console("segfault|Out of memory");
    /// ```
    #[must_use]
    pub fn fail_on_console(mut self, pattern: &str) -> Self {
        self.guard.fail_on_console(pattern);
        self
    }

    /// A failure bundle if the test fails (`true`), or none (`false`),
    /// whatever `LAGO_BUNDLE` says: every VM of the environment saved at
    /// that instant into `<artifacts>/<test>/bundle/` for `lago replay`.
    ///
    /// ```no_run
    /// let env = lago::fixtures::env("tests/envs/pair.yaml").bundle(true);
    /// ```
    #[must_use]
    pub fn bundle(mut self, on_failure: bool) -> Self {
        self.guard.bundle = on_failure;
        self
    }

    /// The VM called `name` (panics, naming the VMs there are, if there is none).
    pub fn vm(&self, name: &str) -> &Vm {
        match self.guard.env().vm(name) {
            Ok(vm) => vm,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Deref for SuiteEnv {
    type Target = Env;
    fn deref(&self) -> &Env {
        self.guard.env()
    }
}

/// The environment of `init_file` (relative to the crate under test),
/// booted on first use and shared by the test binary.
pub fn env(init_file: &str) -> SuiteEnv {
    env_with(init_file, Isolation::Shared)
}

/// Like [`env()`], with isolation: `Reset` reverts the VMs to their state
/// right after boot and gives this test the environment to itself; `Fresh`
/// boots an environment for this test alone (destroyed when the fixture is dropped).
pub fn env_with(init_file: &str, isolation: Isolation) -> SuiteEnv {
    let name = current_test_name(init_file);
    let (suite, env, hold, fresh) = prepare(init_file, &name, isolation);
    SuiteEnv {
        guard: TestGuard::start(env, suite, name, &TestOptions::default()),
        _hold: hold,
        _fresh: fresh,
    }
}

/// One VM of a suite environment, for one test.
#[derive(Debug)]
pub struct SuiteVm {
    env: SuiteEnv,
    name: String,
}

impl SuiteVm {
    /// The whole environment.
    pub fn env(&self) -> &SuiteEnv {
        &self.env
    }
}

impl Deref for SuiteVm {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        self.env.vm(&self.name)
    }
}

/// The VM `name` of the environment of `init_file`.
pub fn vm(init_file: &str, name: &str) -> SuiteVm {
    let env = env(init_file);
    let _ = env.vm(name);
    SuiteVm {
        env,
        name: name.to_owned(),
    }
}
