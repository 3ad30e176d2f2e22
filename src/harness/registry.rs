//! The `#[lago_env]` tests of a binary, registered before `main` (the
//! attribute emits a constructor), so that a `harness = false` target can run
//! them all with [`crate::harness::main!`] and so that a suite knows, when it
//! boots, whether some test will want it reset to its post-boot state.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::env::Env;

/// What a trial returns: `Ok(())`, or any error (`?` converts it), or a
/// message (`Err("…".into())`).
pub type TrialResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How a test shares its suite's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// With every other test of the binary (or nextest run) naming the same
    /// init file, in parallel. The default.
    #[default]
    Shared,
    /// Like `Shared`, but the VMs are reverted to their state right after
    /// boot before the test runs, and the test has the environment to itself
    /// (it waits for the tests running on it to finish, and they for it).
    Reset,
    /// An environment of its own, booted for the test and destroyed after it.
    Fresh,
}

/// Options of one test (`#[lago_env("…", isolation = "reset", timeout = "120s")]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestOptions {
    /// How it shares the environment.
    pub isolation: Isolation,
    /// Fail it (with its failure artifacts) when it runs longer.
    pub timeout: Option<Duration>,
    /// A regular expression that fails the test when a line of a VM's serial
    /// console matches it while the test runs, besides the watchdog's own
    /// (kernel panics, oopses, `BUG:` lines, hung tasks).
    pub fail_on_console: Option<&'static str>,
    /// Warm start for the environment it runs in: `Some(false)` boots it
    /// instead of restoring it from a boot image (and saves none), for every
    /// test of that init file in the binary, when it is said before the
    /// environment boots (the attribute's and a runner suite's are);
    /// `None` or `Some(true)`: as `LAGO_WARM` says (on, `0` turns it off).
    pub warm: Option<bool>,
    /// A failure bundle when the test fails (`bundle = "on-failure"`):
    /// every VM of its environment saved at that instant into
    /// `<artifacts>/<test>/bundle/`, which `lago replay` restores. `None`:
    /// as `LAGO_BUNDLE` says (`on-failure`, else none).
    pub bundle: Option<bool>,
}

impl TestOptions {
    /// With isolation `isolation`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lago::harness::{Isolation, TestOptions};
    /// let o = TestOptions::default()
    ///     .isolation(Isolation::Reset)
    ///     .timeout(Duration::from_secs(120))
    ///     .fail_on_console("segfault|Out of memory");
    /// assert_eq!(o.isolation, Isolation::Reset);
    /// assert_eq!(o.fail_on_console, Some("segfault|Out of memory"));
    /// ```
    #[must_use]
    pub const fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// With a timeout past which the test fails (with its failure artifacts).
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// With warm start on or off for its environment (see [`TestOptions::warm`](#structfield.warm)).
    #[must_use]
    pub const fn warm(mut self, warm: bool) -> Self {
        self.warm = Some(warm);
        self
    }

    /// With a failure bundle when it fails, or none (see [`TestOptions::bundle`](#structfield.bundle)).
    #[must_use]
    pub const fn bundle(mut self, on_failure: bool) -> Self {
        self.bundle = Some(on_failure);
        self
    }

    /// Whether a failure of the test is bundled: its option, else `LAGO_BUNDLE=on-failure`.
    pub fn bundles(&self) -> bool {
        self.bundle
            .unwrap_or_else(|| std::env::var("LAGO_BUNDLE").is_ok_and(|v| v.trim() == "on-failure"))
    }

    /// With a console pattern that fails the test (see [`TestOptions::fail_on_console`](#structfield.fail_on_console)).
    #[must_use]
    pub const fn fail_on_console(mut self, pattern: &'static str) -> Self {
        self.fail_on_console = Some(pattern);
        self
    }
}

/// One `#[lago_env]` test, as the attribute registers it.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// The init file (absolute).
    pub init_file: &'static str,
    /// `module::path::test_name`.
    pub name: &'static str,
    /// Its options from the attribute (isolation, timeout, console pattern).
    pub options: TestOptions,
    /// `#[ignore]`d.
    pub ignored: bool,
    /// Its body, when it takes no parameters besides VMs and the env (rstest
    /// cases cannot run outside rstest).
    pub body: Option<fn(&Env) -> TrialResult>,
}

static REGISTRY: Mutex<Vec<Registration>> = Mutex::new(Vec::new());

/// Registers a test (called before `main`: only pushes to a list).
pub fn register(r: Registration) {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).push(r);
}

/// Every test registered so far, sorted by name.
pub fn registrations() -> Vec<Registration> {
    let mut all = REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).clone();
    all.sort_by_key(|r| r.name);
    all
}

/// Says that a test resets the environment of `init_file` (for runner
/// suites, whose tests are known before they run).
pub(crate) fn register_reset(init_file: &str) {
    let path = super::resolve_init_file(init_file);
    RESETS.lock().unwrap_or_else(|p| p.into_inner()).push(path);
}

static RESETS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Says that a test asks for the environment of `init_file` to boot, not to
/// be restored (runner suites and `run_named_with` callers; the attribute's
/// tests are in the registry).
pub(crate) fn register_cold(init_file: &str) {
    let path = super::resolve_init_file(init_file);
    COLDS.lock().unwrap_or_else(|p| p.into_inner()).push(path);
}

static COLDS: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

/// Whether a test of this binary asks for its environment of `init_file`
/// to boot, not to be restored (`warm = false`).
pub(crate) fn wants_cold(init_file: &Path) -> bool {
    let registered = REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|r| r.options.warm == Some(false) && Path::new(r.init_file) == init_file);
    registered
        || COLDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|p| p == init_file)
}

/// Whether a test of this binary resets the environment of `init_file`
/// (then the suite takes its post-boot snapshot as soon as it has booted).
pub(crate) fn wants_reset(init_file: &Path) -> bool {
    let registered = REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|r| r.options.isolation == Isolation::Reset && Path::new(r.init_file) == init_file);
    registered
        || RESETS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|p| p == init_file)
}
