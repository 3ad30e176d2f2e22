//! A libtest-mimic runner for system suites (`harness = false` test targets).
//!
//! ```no_run
//! // tests/system.rs, with `[[test]] name = "system" harness = false` in Cargo.toml
//! use lago::harness::runner::{Runner, Suite, ssh_ok};
//!
//! fn main() {
//!     Runner::new()
//!         .suite(
//!             Suite::new("tests/envs/pair.yaml")
//!                 .test("hostname", |env| {
//!                     let st = env.vm("vm01")?.ssh(["hostname"])?; // `?` on lago's errors, or any other
//!                     if st.out.trim() != "vm01" {
//!                         return Err(format!("got {st:?}").into()); // or a message
//!                     }
//!                     Ok(())
//!                 })
//!                 .test("ping", |env| {
//!                     let out = ssh_ok(env, "vm02", &["ping", "-c1", "vm01"])?;
//!                     assert!(out.contains("1 packets received")); // or a panic
//!                     Ok(())
//!                 }),
//!         )
//!         .run()
//! }
//! ```
//!
//! A trial returns [`TrialResult`]: `?` works on any error (lago's keep
//! their whole chain of causes in the report), and a message is
//! `Err("…".into())`. A panic fails the trial too.
//!
//! Each suite's environment boots once, when its first trial runs, and is
//! torn down when all trials are done. libtest's arguments work
//! (`--test-threads`, filters, `--exact`, `--list`, `--ignored`,
//! `--include-ignored`), so `cargo test` and `cargo nextest run` both drive
//! it. `--junit PATH` (or `LAGO_JUNIT=PATH`) writes a JUnit XML report. When
//! libvirt cannot be reached, every trial is reported as ignored, with the
//! reason, never as passed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Conclusion, Failed, Trial};

use super::registry::{Isolation, TestOptions};
use crate::env::Env;

pub use super::registry::TrialResult;

type TestFn = Arc<dyn Fn(&Env) -> TrialResult + Send + Sync>;

struct Case {
    name: String,
    f: TestFn,
    ignored: bool,
    options: TestOptions,
}

/// An init file and the tests that run against its environment.
pub struct Suite {
    init_file: String,
    cases: Vec<Case>,
    fail_on_console: Option<&'static str>,
    bundle: Option<bool>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("init_file", &self.init_file)
            .field("tests", &self.cases.iter().map(|c| &c.name).collect::<Vec<_>>())
            .finish()
    }
}

impl Suite {
    /// A suite for `init_file` (relative to the crate under test).
    pub fn new(init_file: impl Into<String>) -> Self {
        Suite {
            init_file: init_file.into(),
            cases: Vec::new(),
            fail_on_console: None,
            bundle: None,
        }
    }

    /// A failure bundle for each of its tests (that says nothing itself)
    /// that fails (`true`), or none (`false`), whatever `LAGO_BUNDLE` says.
    #[must_use]
    pub fn bundle(mut self, on_failure: bool) -> Self {
        self.bundle = Some(on_failure);
        self
    }

    /// Fails each of its tests (that sets no pattern of its own) when a line
    /// of a VM's serial console matches the regular expression `pattern`
    /// while it runs; the console watchdog always looks for kernel panics,
    /// oopses, `BUG:` lines and hung tasks.
    #[must_use]
    pub fn fail_on_console(mut self, pattern: &'static str) -> Self {
        self.fail_on_console = Some(pattern);
        self
    }

    /// Adds a test that runs `f` on the suite's environment, reported as `<init file stem>::<name>`.
    #[must_use]
    pub fn test(self, name: impl Into<String>, f: impl Fn(&Env) -> TrialResult + Send + Sync + 'static) -> Self {
        self.add(name.into(), Arc::new(f), false)
    }

    /// Adds a test that runs only with `--ignored` / `--include-ignored`.
    #[must_use]
    pub fn ignored_test(
        self,
        name: impl Into<String>,
        f: impl Fn(&Env) -> TrialResult + Send + Sync + 'static,
    ) -> Self {
        self.add(name.into(), Arc::new(f), true)
    }

    /// Adds a test with options: isolation (`Reset` reverts the VMs to
    /// their post-boot state first and runs it alone; `Fresh` boots an
    /// environment for it) and a timeout (it then fails, with its artifacts).
    #[must_use]
    pub fn test_with(
        self,
        name: impl Into<String>,
        options: TestOptions,
        f: impl Fn(&Env) -> TrialResult + Send + Sync + 'static,
    ) -> Self {
        self.add_with(name.into(), Arc::new(f), false, options)
    }

    /// A `#[lago_env]` test registered for [`crate::harness::main!`].
    pub(crate) fn registered(
        self,
        name: &str,
        options: TestOptions,
        ignored: bool,
        f: fn(&Env) -> TrialResult,
    ) -> Self {
        self.add_with(name.to_owned(), Arc::new(f), ignored, options)
    }

    fn add(self, name: String, f: TestFn, ignored: bool) -> Self {
        self.add_with(name, f, ignored, TestOptions::default())
    }

    fn add_with(mut self, name: String, f: TestFn, ignored: bool, options: TestOptions) -> Self {
        // The suite takes its post-boot snapshot as it boots.
        if options.isolation == Isolation::Reset {
            super::registry::register_reset(&self.init_file);
        }
        if options.warm == Some(false) {
            super::registry::register_cold(&self.init_file);
        }
        self.cases.push(Case {
            name,
            f,
            ignored,
            options,
        });
        self
    }

    fn prefix(&self) -> String {
        Path::new(&self.init_file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.init_file.clone())
    }
}

/// Runs `cmd` on VM `vm` and returns its stdout, or an error: lago's own
/// (unknown VM, SSH failure), or a message naming the command, its exit code
/// and stderr. The usual step of a runner test.
pub fn ssh_ok(env: &Env, vm: &str, cmd: &[&str]) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let st = env.vm(vm)?.ssh(cmd)?;
    if st.success() {
        Ok(st.out)
    } else {
        Err(format!("`{}` on {vm} exited {}: {}", cmd.join(" "), st.code, st.err.trim()).into())
    }
}

/// How a trial ended, for the JUnit report.
#[derive(Debug, Clone)]
struct Record {
    suite: String,
    name: String,
    time: Duration,
    failure: Option<String>,
    skipped: Option<String>,
}

/// The runner: suites in, libtest-format report out.
#[derive(Debug, Default)]
pub struct Runner {
    suites: Vec<Suite>,
}

impl Runner {
    /// An empty runner.
    pub fn new() -> Self {
        Runner::default()
    }

    /// Adds a suite; its tests run as trials alongside those of the other suites.
    #[must_use]
    pub fn suite(mut self, suite: Suite) -> Self {
        self.suites.push(suite);
        self
    }

    /// Runs with the process's arguments and exits with libtest's exit code.
    pub fn run(self) -> ! {
        let conclusion = self.run_with_args(std::env::args());
        conclusion.exit()
    }

    /// Runs with `args` (the first is the program name) and returns the conclusion.
    pub fn run_with_args(self, args: impl IntoIterator<Item = String>) -> Conclusion {
        let (junit, rest) = split_junit(args);
        let args = Arguments::from_iter(rest);
        let unreachable = if args.list {
            None
        } else {
            crate::backend::Backend::connect(None)
                .err()
                .map(|e| crate::util::text::error_chain(&e))
        };
        if let Some(why) = &unreachable {
            eprintln!("lago: VM trials are ignored: libvirt is not reachable here ({why})");
        }
        let records: Arc<Mutex<Vec<Record>>> = Arc::default();
        let mut trials = Vec::new();
        for suite in &self.suites {
            let prefix = suite.prefix();
            for case in &suite.cases {
                let name = format!("{prefix}::{}", case.name);
                let (init_file, f, rec) = (suite.init_file.clone(), case.f.clone(), records.clone());
                let mut options = case.options;
                options.fail_on_console = options.fail_on_console.or(suite.fail_on_console);
                options.bundle = options.bundle.or(suite.bundle);
                let (suite_name, trial_name) = (prefix.clone(), name.clone());
                let trial = Trial::test(name, move || {
                    let start = Instant::now();
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        // The report shows an error with its whole chain of causes.
                        crate::harness::run_named_timeout(&init_file, &trial_name, options, move |env| {
                            f(env).map_err(|e| crate::util::text::error_chain(&*e))
                        })
                    }));
                    let result: Result<(), String> = match result {
                        Ok(r) => r,
                        Err(p) => Err(p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "the test panicked".into())),
                    };
                    if let Ok(mut v) = rec.lock() {
                        v.push(Record {
                            suite: suite_name,
                            name: trial_name,
                            time: start.elapsed(),
                            failure: result.clone().err(),
                            skipped: None,
                        });
                    }
                    result.map_err(Failed::from)
                })
                .with_kind("vm")
                .with_ignored_flag(case.ignored || unreachable.is_some());
                trials.push(trial);
            }
        }
        // Ignored trials that are not run still belong in the report.
        if let Ok(mut v) = records.lock() {
            for t in trials.iter().filter(|t| args.is_ignored(t) && !args.is_filtered_out(t)) {
                let suite = t.name().split_once("::").map_or("", |(s, _)| s);
                v.push(Record {
                    suite: suite.to_owned(),
                    name: t.name().to_owned(),
                    time: Duration::ZERO,
                    failure: None,
                    skipped: Some(unreachable.clone().unwrap_or_else(|| "ignored".into())),
                });
            }
        }
        let conclusion = libtest_mimic::run(&args, trials);
        if !args.list {
            // Its own suites only: other tests of the binary may still use theirs.
            let own: Vec<_> = self
                .suites
                .iter()
                .map(|s| crate::harness::resolve_init_file(&s.init_file))
                .collect();
            super::suite::teardown_these(&own);
        }
        if let Some(path) = junit {
            let recs = records.lock().map(|v| v.clone()).unwrap_or_default();
            if let Err(e) = std::fs::write(&path, junit_xml(&recs)) {
                eprintln!("lago: cannot write the JUnit report {}: {e}", path.display());
            }
        }
        conclusion
    }
}

/// Takes `--junit PATH` / `--junit=PATH` out of the arguments (`LAGO_JUNIT` if absent).
fn split_junit(args: impl IntoIterator<Item = String>) -> (Option<PathBuf>, Vec<String>) {
    let mut junit = std::env::var_os("LAGO_JUNIT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--junit" {
            junit = it.next().map(PathBuf::from);
        } else if let Some(p) = a.strip_prefix("--junit=") {
            junit = Some(PathBuf::from(p));
        } else {
            rest.push(a);
        }
    }
    (junit, rest)
}

fn xml_escape(s: &str) -> String {
    crate::util::text::xml_escape(s)
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t' | '\r'))
        .collect()
}

/// The JUnit XML of `records`.
fn junit_xml(records: &[Record]) -> String {
    use std::fmt::Write as _;
    let failures = records.iter().filter(|r| r.failure.is_some()).count();
    let skipped = records.iter().filter(|r| r.skipped.is_some()).count();
    let total: f64 = records.iter().map(|r| r.time.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{total:.3}\">",
        records.len()
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"lago\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{total:.3}\">",
        records.len()
    );
    for r in records {
        let _ = write!(
            x,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&r.suite),
            xml_escape(&r.name),
            r.time.as_secs_f64()
        );
        match (&r.failure, &r.skipped) {
            (Some(f), _) => {
                let first = f.lines().next().unwrap_or("failed");
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml_escape(first),
                    xml_escape(f)
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml_escape(why)
                );
            }
            (None, None) => {
                let _ = writeln!(x, "/>");
            }
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_flag_is_taken_out_of_the_arguments() {
        let args = ["prog", "--junit", "out.xml", "--exact", "a::b"].map(String::from);
        let (junit, rest) = split_junit(args);
        assert_eq!(junit, Some(PathBuf::from("out.xml")));
        assert_eq!(rest, ["prog", "--exact", "a::b"]);
        let (junit, rest) = split_junit(["prog", "--junit=r.xml"].map(String::from));
        assert_eq!(junit, Some(PathBuf::from("r.xml")));
        assert_eq!(rest, ["prog"]);
    }

    #[test]
    fn junit_report_counts_and_escapes() {
        let recs = vec![
            Record {
                suite: "pair".into(),
                name: "pair::ok".into(),
                time: Duration::from_millis(1500),
                failure: None,
                skipped: None,
            },
            Record {
                suite: "pair".into(),
                name: "pair::bad".into(),
                time: Duration::ZERO,
                failure: Some("expected <1> & got 2\nmore".into()),
                skipped: None,
            },
            Record {
                suite: "pair".into(),
                name: "pair::skip".into(),
                time: Duration::ZERO,
                failure: None,
                skipped: Some("no libvirt".into()),
            },
        ];
        let x = junit_xml(&recs);
        assert!(
            x.contains("<testsuites tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<testcase classname=\"pair\" name=\"pair::ok\" time=\"1.500\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"expected &lt;1&gt; &amp; got 2\">"),
            "{x}"
        );
        assert!(x.contains("<skipped message=\"no libvirt\"/>"), "{x}");
    }
}
