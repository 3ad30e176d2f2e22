//! Suite-scoped environments: one per init file per test binary, booted on
//! first use, torn down when the binary ends (a watchdog process), on
//! SIGINT/SIGTERM/SIGHUP (a signal thread), and never while tests still run.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::env::{Env, InitOptions};
use crate::error::{Error, error_chain};

/// What `LAGO_KEEP` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Always tear down (default).
    Never,
    /// Keep the environment when a test that used it failed.
    OnFailure,
    /// Always keep it.
    Always,
}

impl Keep {
    /// From `LAGO_KEEP` (`never`, `on-failure`, `always`; anything else: never, with a warning).
    pub fn from_env() -> Keep {
        match std::env::var("LAGO_KEEP").as_deref() {
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
    cell: OnceLock<Result<Arc<Env>, Arc<Error>>>,
    boots: AtomicUsize,
    failed: AtomicBool,
    root: Mutex<Option<PathBuf>>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Suite>>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Arc<Suite>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The watchdogs' stdin pipes: kept open until this process ends.
fn watchdogs() -> &'static Mutex<Vec<ChildStdin>> {
    static W: OnceLock<Mutex<Vec<ChildStdin>>> = OnceLock::new();
    W.get_or_init(Default::default)
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
        .or_insert_with(|| {
            Arc::new(Suite {
                init_file: init_file.to_path_buf(),
                cell: OnceLock::new(),
                boots: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
                root: Mutex::new(None),
            })
        })
        .clone()
}

/// How many times this process booted the environment of `init_file` (0 or 1).
pub fn boots(init_file: &str) -> usize {
    suite(&resolve_init_file(init_file)).boots.load(Ordering::SeqCst)
}

impl Suite {
    /// The environment, booted by the first caller; concurrent callers wait
    /// for that one boot. A failed boot is not retried: every caller gets its error.
    pub(crate) fn env(self: &Arc<Self>) -> Result<Arc<Env>, Arc<Error>> {
        self.cell.get_or_init(|| self.boot().map_err(Arc::new)).clone()
    }

    fn boot(&self) -> Result<Arc<Env>, Error> {
        install_signal_handler();
        // The environment's log (logs/lago.log, copied into failure
        // artifacts), unless the tests installed their own subscriber.
        crate::logging::install(tracing::Level::DEBUG);
        let shown = self.init_file.display().to_string();
        let start = Instant::now();
        let failed = |what: &'static str, e: Error| Error::SuiteBoot {
            init_file: self.init_file.clone(),
            what,
            source: Box::new(e),
        };
        let root = tempfile::Builder::new()
            .prefix("lago-test-")
            .tempdir()
            .map_err(|source| {
                failed(
                    "could not be created",
                    Error::Workdir {
                        action: "create",
                        path: std::env::temp_dir(),
                        source,
                    },
                )
            })?
            .keep();
        // The temporary name is the workdir, created by lago itself, so that
        // destroying the env (also `lago destroy` of a kept one) removes it all.
        let _ = std::fs::remove_dir(&root);
        let workdir = root.clone();
        let env = match Env::init(
            &self.init_file,
            InitOptions {
                workdir: Some(workdir.clone()),
                ..Default::default()
            },
        ) {
            Ok(env) => env,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(failed("could not be created", e));
            }
        };
        spawn_watchdog(&env, &root);
        if let Ok(mut r) = self.root.lock() {
            *r = Some(root.clone());
        }
        if let Err(e) = env.start(&[]) {
            let _ = env.teardown();
            let _ = std::fs::remove_dir_all(&root);
            eprintln!(
                "lago: env {} ({}) failed to boot and was torn down",
                env.id(),
                root.display()
            );
            return Err(failed("failed to boot", e));
        }
        self.boots.fetch_add(1, Ordering::SeqCst);
        eprintln!(
            "lago: booted {shown} as env {} in {} ({:.1?})",
            env.id(),
            env.workdir().display(),
            start.elapsed()
        );
        if Keep::from_env() == Keep::Always {
            self.keep(&env, "LAGO_KEEP=always");
        }
        Ok(Arc::new(env))
    }

    /// A test using this environment failed.
    pub(crate) fn mark_failed(&self, env: &Env) {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        if first && Keep::from_env() == Keep::OnFailure {
            self.keep(env, "LAGO_KEEP=on-failure and a test failed");
        }
    }

    fn keep(&self, env: &Env, why: &str) {
        if let Some(root) = self.root.lock().ok().and_then(|r| r.clone()) {
            let _ = std::fs::write(root.join(crate::workdir::KEEP_MARKER), why);
        }
        let vm = env.get_vms().keys().next().cloned().unwrap_or_else(|| "VM".into());
        eprintln!(
            "lago: keeping env {} ({why}); get in with: lago -w {} shell {vm}   (remove with: lago -w {} destroy --yes)",
            env.id(),
            env.workdir().display(),
            env.workdir().display()
        );
    }

    fn kept(&self) -> bool {
        self.root
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .is_some_and(|root| root.join(crate::workdir::KEEP_MARKER).exists())
    }

    /// Tears the environment down now (unless kept).
    pub(crate) fn teardown(&self) {
        let Some(Ok(env)) = self.cell.get() else { return };
        if self.kept() {
            return;
        }
        if let Err(e) = env.teardown() {
            eprintln!("lago: tearing down env {} failed: {}", env.id(), error_chain(&e));
        }
        if let Some(root) = self.root.lock().ok().and_then(|r| r.clone()) {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// Tears down every environment this process booted (unless kept).
pub fn teardown_all() {
    let suites: Vec<Arc<Suite>> = registry()
        .lock()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    std::thread::scope(|s| {
        for suite in &suites {
            s.spawn(|| suite.teardown());
        }
    });
}

/// The shell script of the watchdog: it waits for this process to end (its
/// stdin reaches EOF however the process ends, SIGKILL included), then
/// removes what is left of the environment.
const WATCHDOG: &str = r#"
cat >/dev/null
[ -e "$ROOT/.lago-keep" ] && exit 0
if [ -e "$WORKDIR/env-id" ]; then
    for d in $(virsh -q -c "$URI" list --name 2>/dev/null | grep "^lago-$ID-"); do
        virsh -q -c "$URI" destroy "$d" >/dev/null 2>&1 &
    done
    wait
    for n in $(virsh -q -c "$URI" net-list --name 2>/dev/null | grep "^lago-$ID-"); do
        virsh -q -c "$URI" net-destroy "$n" >/dev/null 2>&1
    done
    for f in "$LEASES"/*.lease; do
        grep -q "\"env_id\": \"$ID\"" "$f" 2>/dev/null && rm -f "$f"
    done
fi
rm -rf "$ROOT"
"#;

fn spawn_watchdog(env: &Env, root: &Path) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .env("ROOT", root)
        .env("WORKDIR", env.workdir())
        .env("URI", env.libvirt_uri())
        .env("ID", env.id().as_str())
        .env("LEASES", env.lease_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the terminal does not kill it.
        .process_group(0)
        .spawn();
    match child {
        Ok(mut c) => {
            if let Some(stdin) = c.stdin.take()
                && let Ok(mut w) = watchdogs().lock()
            {
                w.push(stdin);
            }
        }
        Err(e) => eprintln!(
            "lago: cannot start the teardown watchdog ({e}); a killed test binary may leave env {} behind",
            env.id()
        ),
    }
}

fn install_signal_handler() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(mut signals) => {
                let spawned = std::thread::Builder::new().name("lago-signals".into()).spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        let _ = writeln!(std::io::stderr(), "lago: signal {sig}: tearing down test environments");
                        teardown_all();
                        std::process::exit(128 + sig);
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("lago: cannot watch for signals: {e}");
                }
            }
            Err(e) => eprintln!("lago: cannot watch for signals: {e}"),
        }
    });
}
