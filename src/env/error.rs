//! The crate's error: one variant per stage, each wrapping that stage's error.

use std::path::PathBuf;
use std::time::Duration;

/// Anything lago can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The init file is invalid.
    #[error(transparent)]
    Config(#[from] lago_config::ConfigError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// Subnet leasing failed.
    #[error(transparent)]
    Lease(#[from] crate::host::lease::LeaseError),
    /// A template could not be found or built.
    #[error(transparent)]
    Store(#[from] crate::host::store::StoreError),
    /// A disk image operation failed.
    #[error(transparent)]
    Image(#[from] crate::host::image::ImageError),
    /// A key could not be made.
    #[error(transparent)]
    Key(#[from] crate::host::keys::KeyError),
    /// A libvirt call failed (connecting, starting or stopping objects, snapshots, storage).
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    /// Reaching a guest, logging in, running a command or copying over SSH failed.
    #[error(transparent)]
    Ssh(#[from] crate::guest::ssh::SshError),
    /// The workdir already holds an environment.
    #[error("workdir {} already holds an environment (destroy it first: lago -w {} destroy --yes)", path.display(), path.display())]
    WorkdirExists {
        /// The workdir given, which already has an `env-id` or `env.json`.
        path: PathBuf,
    },
    /// The folder given as a new workdir holds files (lago takes only a new or empty folder).
    #[error("workdir {} is not empty (it holds {}); lago takes only a new or empty folder as a workdir, so that destroy never removes anything lago did not create: give another one with -w", path.display(), crate::host::workdir::some_names(holds))]
    WorkdirNotEmpty {
        /// The folder given as the new workdir.
        path: PathBuf,
        /// The names of its entries, or a note that it is a file.
        holds: Vec<String>,
    },
    /// An output folder (`collect`, `export`) that is a link or another
    /// user's folder (who could swap what lago writes there for links).
    #[error("{}: {why}; lago writes only into a new folder, or an empty one you own", path.display())]
    OutputNotOurs {
        /// The output folder given to `collect` or `export`.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// A workdir that is not a folder of the user running lago: a link, or
    /// a folder another user owns (who could plant links in it).
    #[error("workdir {}: {why}; lago works only in a folder it made, or an empty one you own, and never through a link", path.display())]
    WorkdirNotOurs {
        /// The workdir path as given (lago does not follow it if it is a link).
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// A command's arguments do not make sense together (a message for people).
    #[error("{message}")]
    Usage {
        /// What is wrong.
        message: String,
    },
    /// No workdir was given and none was found.
    #[error("no .lago workdir in {} or any parent; give one with -w or create one with `lago init`", cwd.display())]
    NoWorkdir {
        /// Where the search started.
        cwd: PathBuf,
    },
    /// Data could not be rendered in the output format asked for.
    #[error("cannot render the output: {message}")]
    Render {
        /// The serializer's message.
        message: String,
    },
    /// An output folder (`collect`, `export`) that holds something: lago
    /// writes only into a new or empty folder, so that nothing is overwritten.
    #[error("{} is not empty (it holds {}); lago writes only into a new or empty folder, so that it overwrites nothing: give another one", path.display(), crate::host::workdir::some_names(holds))]
    OutputNotEmpty {
        /// The output folder given to `collect` or `export`.
        path: PathBuf,
        /// The names of all its entries (the message shows the first five).
        holds: Vec<String>,
    },
    /// Writing an output file or folder failed.
    #[error("cannot {action} {}", path.display())]
    Output {
        /// What was being done.
        action: &'static str,
        /// The output file or folder the action was on.
        path: PathBuf,
        /// The I/O error the action returned.
        #[source]
        source: std::io::Error,
    },
    /// A deploy script named by the init file cannot be used.
    #[error("{vm}: deploy script {}: {reason}", script.display())]
    DeployScript {
        /// The VM whose deploy script it is.
        vm: String,
        /// The script's path on the host, as resolved from the init file.
        script: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A deploy script exited non-zero (the VM's later scripts were not run).
    #[error("{vm}: deploy script {} exited with code {code}{}", script.display(), if stderr_tail.is_empty() { String::new() } else { format!("; its last output:\n{stderr_tail}") })]
    DeployFailed {
        /// The VM the script ran on.
        vm: String,
        /// The script's host path (`(mktemp -d)` if making the guest's temporary folder failed).
        script: PathBuf,
        /// Its exit code (`-1` if a signal killed it).
        code: i32,
        /// The end of its output (stderr, else stdout).
        stderr_tail: String,
    },
    /// VMs to export are running: their disks would be copied mid-write.
    #[error("cannot export while {} {} running: shut {} down first (lago shutdown {}) or pass --shutdown; a disk is never copied while its VM writes to it", crate::host::workdir::some_names(vms), if vms.len() == 1 { "is" } else { "are" }, if vms.len() == 1 { "it" } else { "them" }, vms.join(" "))]
    ExportRunning {
        /// The running VMs.
        vms: Vec<String>,
    },
    /// No environment in the workdir.
    #[error("no lago environment in {} (expected {}; create one with `lago init`)", path.display(), path.join(crate::env::STATE_FILE).display())]
    NoEnv {
        /// The workdir that has no `env.json`.
        path: PathBuf,
    },
    /// A workdir file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Workdir {
        /// What was being done.
        action: &'static str,
        /// The file or folder the action was on.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The saved state is not readable.
    #[error("environment state {} is corrupt", path.display())]
    State {
        /// The JSON file (`env.json`, `owner.json` or a snapshot's record).
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A VM's pinned SSH host key in the saved state cannot be read.
    #[error("{vm}: the pinned SSH host key in {} cannot be read; refusing to connect without it (the state file is damaged: destroy and init again)", state.display())]
    HostKey {
        /// The VM whose pinned key cannot be read.
        vm: String,
        /// The workdir's `env.json`, which holds the key.
        state: PathBuf,
    },
    /// No VM of that name.
    #[error("no VM named `{name}` in this environment (VMs: {})", known.join(", "))]
    NoSuchVm {
        /// The name asked for.
        name: String,
        /// The VMs there are.
        known: Vec<String>,
    },
    /// A VM did not answer SSH in time.
    #[error("{vm}: no SSH after {waited:?}: stalled at stage `{stage}`{}{}", last_error.as_ref().map(|e| format!(" (last error: {})", error_chain(e))).unwrap_or_default(), console_tail(console))]
    WaitForSsh {
        /// The VM that did not answer.
        vm: String,
        /// The stage that did not complete.
        stage: crate::guest::boot::BootStage,
        /// How long we waited.
        waited: Duration,
        /// The last connection error.
        #[source]
        last_error: Option<Box<crate::guest::ssh::SshError>>,
        /// The last lines of the serial console.
        console: Vec<String>,
    },
    /// [`Vm::succeed`](crate::Vm::succeed): the command exited with another code than 0.
    #[error("{vm}: `{command}` exited with code {} after {elapsed:.1?} (expected 0){}", status.code, outputs(status))]
    CommandFailed {
        /// The VM the command ran on.
        vm: String,
        /// The command, quoted as one shell line.
        command: String,
        /// Its exit code, stdout and stderr.
        status: Box<crate::guest::ssh::CommandStatus>,
        /// How long it ran.
        elapsed: Duration,
    },
    /// [`Vm::fail`](crate::Vm::fail): the command exited with 0.
    #[error(
        "{vm}: `{command}` succeeded after {elapsed:.1?} (expected it to fail){}",
        outputs(status)
    )]
    CommandSucceeded {
        /// The VM the command ran on.
        vm: String,
        /// The command, quoted as one shell line.
        command: String,
        /// Its exit code (0), stdout and stderr.
        status: Box<crate::guest::ssh::CommandStatus>,
        /// How long it ran.
        elapsed: Duration,
    },
    /// A `wait_*` helper of [`Vm`](crate::Vm) gave up.
    #[error("{vm}: timed out after {waited:.1?} waiting for {what}; last attempt: {last}")]
    WaitTimeout {
        /// The VM the helper polled.
        vm: String,
        /// What was waited for (`` `cmd` to succeed ``, `TCP port 80`, …).
        what: String,
        /// How long it waited before giving up.
        waited: Duration,
        /// What the last attempt saw.
        last: String,
    },
    /// [`Vm::wait_for_unit`](crate::Vm::wait_for_unit) on a guest without systemd.
    #[error(
        "{vm}: cannot wait for unit `{unit}`: the guest does not run systemd (no /run/systemd/system); wait for what the service does instead (wait_for_port, wait_for_file, wait_until_succeeds)"
    )]
    NoSystemd {
        /// The VM whose guest has no systemd.
        vm: String,
        /// The unit name as given (`nginx`, `nginx.service`).
        unit: String,
    },
    /// [`Vm::wait_for_unit`](crate::Vm::wait_for_unit): the unit failed.
    #[error("{vm}: unit `{unit}` failed; `systemctl status` says:\n{status}")]
    UnitFailed {
        /// The VM the unit runs on.
        vm: String,
        /// The unit that reached the `failed` state, as given.
        unit: String,
        /// `systemctl status` output (bounded).
        status: String,
    },
    /// A NIC index a VM does not have.
    #[error("{vm} has no NIC {nic} (it has {count}: eth0..eth{})", count.saturating_sub(1))]
    NoSuchNic {
        /// The VM asked about.
        vm: String,
        /// The index asked for.
        nic: usize,
        /// How many it has.
        count: usize,
    },
    /// A regular expression that does not parse (console patterns).
    #[error("{what} {pattern:?} is not a valid regular expression: {message}")]
    BadPattern {
        /// Where the pattern came from (`fail_on_console`, `wait_for_console_text`, …).
        what: &'static str,
        /// The pattern text as given.
        pattern: String,
        /// The regex crate's explanation.
        message: String,
    },
    /// The console watchdog saw a kernel panic, an oops, a `BUG:` line, a
    /// hung task or a pattern of the test's while a test ran.
    #[error("{}: the serial console shows {}: {:?} (console log: {})", .0.vm, .0.what, .0.line, .0.console_log.display())]
    ConsoleWatchdog(Box<ConsoleMatch>),
    /// A test suite's environment could not be created or booted (every test
    /// that needs it gets this error; the boot is not retried).
    #[error("environment {} {what} (`lago doctor` checks this host and names fixes)", init_file.display())]
    SuiteBoot {
        /// The init file the suite's environment is made from.
        init_file: PathBuf,
        /// `could not be created` or `failed to boot`.
        what: &'static str,
        /// The error that creating or booting it returned.
        #[source]
        source: Box<Error>,
    },
    /// Destroying an environment's libvirt objects failed: its leases and
    /// workdir are kept, so that a later destroy or `lago gc` finds it.
    #[error("env {env_id}: libvirt objects may be left, so its leases and workdir {} are kept (run `lago destroy` or `lago gc` again once libvirt answers)", workdir.display())]
    TeardownIncomplete {
        /// The id of the environment being destroyed (its libvirt objects are `lago-<id>-…`).
        env_id: String,
        /// Its workdir, kept so that a later destroy or `lago gc` finds it.
        workdir: PathBuf,
        /// The libvirt failure.
        #[source]
        source: Box<Error>,
    },
    /// A boot image could not be used (the VMs boot instead).
    #[error("{vm}: boot image {}: {what}", path.display())]
    BootImage {
        /// The VM (or VMs, comma-separated) it was for.
        vm: String,
        /// The boot image's folder or file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A failure bundle was not made (the environment cannot be saved whole,
    /// or it would be over its bound); nothing of it is left.
    #[error("failure bundle {}: not made: {why}", path.display())]
    BundleSkipped {
        /// Where it would have gone.
        path: std::path::PathBuf,
        /// Why not.
        why: String,
    },
    /// A failure bundle cannot be replayed.
    #[error("failure bundle {}: cannot replay it: {what}", path.display())]
    Replay {
        /// The bundle's folder.
        path: std::path::PathBuf,
        /// What is missing or wrong.
        what: String,
    },
    /// A snapshot name that cannot be used.
    #[error("snapshot name {name:?}: expected 1-64 letters, digits, `-`, `_` or `.` (not starting with `.`)")]
    SnapshotName {
        /// The name as given.
        name: String,
    },
    /// A snapshot of that name exists.
    #[error("snapshot `{name}` exists already; revert to it, or take one under another name")]
    SnapshotExists {
        /// The name already taken.
        name: String,
    },
    /// No snapshot of that name.
    #[error("no snapshot named `{name}` (snapshots: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    NoSuchSnapshot {
        /// The name asked for.
        name: String,
        /// The snapshots there are.
        known: Vec<String>,
    },
    /// A VM uses a disk lago did not create: a snapshot would write into it.
    #[error("{vm}: cannot snapshot: its disk {} is used in place (`type: file` without `make_a_copy`), and reverting would write into a file lago did not create", path.display())]
    SnapshotForeignDisk {
        /// The VM whose disk is used in place.
        vm: String,
        /// The disk image from the init file, which lago did not create.
        path: PathBuf,
    },
    /// Copying a disk for a snapshot (or back) failed.
    #[error("{vm}: copying its disks for the snapshot failed")]
    SnapshotCopy {
        /// The VM whose disks were being copied.
        vm: String,
        /// The copy's failure.
        #[source]
        source: crate::util::cmd::CommandError,
    },
    /// `lago gc` found objects on a libvirt URI it could not reach.
    #[error(
        "cannot remove objects on {uri}: it was not asked (lago gc --all-uris asks every URI environments recorded) or could not be reached"
    )]
    NoBackendForGc {
        /// The libvirt URI the environment recorded.
        uri: String,
    },
    /// The reaper process of a test environment could not be started.
    #[error("cannot start the reaper of {} (the process that tears it down when the tests end)", workdir.display())]
    Reaper {
        /// The workdir it would watch.
        workdir: PathBuf,
        /// The spawn failure, or why no reaper can watch this run.
        #[source]
        source: std::io::Error,
    },
    /// Under nextest, another test process of this run failed to boot the
    /// shared environment (its error, as text: it happened in that process).
    #[error("environment {} failed to boot in another test process of this nextest run (not retried): {message}", init_file.display())]
    SharedBootFailed {
        /// The init file of the shared environment.
        init_file: PathBuf,
        /// That process's error.
        message: String,
    },
    /// A VM's domain stopped (or crashed) while lago waited for SSH.
    #[error(
        "{vm}: the domain stopped (or crashed) {waited:?} into the boot, at stage `{stage}`{}",
        console_tail(console)
    )]
    DomainStopped {
        /// The VM whose domain stopped.
        vm: String,
        /// The stage it had reached.
        stage: crate::guest::boot::BootStage,
        /// How long after the start.
        waited: Duration,
        /// The last lines of the serial console.
        console: Vec<String>,
    },
    /// A VM did not power off after the ACPI request in time.
    #[error("{vm}: still running {waited:?} after the ACPI shutdown request")]
    ShutdownTimeout {
        /// The VM still running.
        vm: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The connection to libvirtd broke during an operation (libvirtd
    /// stopped or restarted, or the SSH transport to a remote one went away).
    #[error(
        "the connection to libvirtd ({uri}) broke during {during}: libvirtd stopped or restarted, or its transport went away; once it is back, `lago destroy` (or `lago gc`) removes what is left"
    )]
    LibvirtGone {
        /// The libvirt URI.
        uri: String,
        /// The operation it broke (such as `start`).
        during: &'static str,
        /// The failure it caused.
        #[source]
        source: Box<Error>,
    },
    /// A VM's domain stopped (its QEMU exited or was killed) while lago
    /// talked to it.
    #[error("{vm}: its domain is not running any more (QEMU exited or was killed) while `{command}` ran; the console's last lines:\n{}", console.join("\n"))]
    VmWentDown {
        /// The VM whose domain went down.
        vm: String,
        /// The command that was running over SSH, as one shell line.
        command: String,
        /// The last lines of its serial console.
        console: Vec<String>,
        /// The SSH failure that showed it.
        #[source]
        source: Box<crate::guest::ssh::SshError>,
    },
    /// A VM is not running.
    #[error("{vm} is not running (state: {state}); start it first")]
    NotRunning {
        /// The VM that is not running.
        vm: String,
        /// Its domain state (`down`, `paused`, …).
        state: crate::backend::VmState,
    },
    /// An operation on several VMs failed for more than one of them; each
    /// keeps its own error (the first is the `source`).
    #[error("cannot {action} {} VMs:{failures}", failures.0.len())]
    Vms {
        /// What was being done (`start`, `stop`, `shut down`, `destroy`).
        action: &'static str,
        /// Each VM's failure.
        #[source]
        failures: VmFailures,
    },
    /// A worker thread panicked (a bug in lago: please report it).
    #[error("{vm}: {action} panicked: {message}")]
    Panicked {
        /// The VM the thread worked on.
        vm: String,
        /// What it was doing.
        action: &'static str,
        /// The panic message.
        message: String,
    },
}

impl From<crate::guest::console::PatternError> for Error {
    fn from(e: crate::guest::console::PatternError) -> Self {
        Error::BadPattern {
            what: e.what,
            pattern: e.pattern,
            message: e.message,
        }
    }
}

impl From<crate::host::workdir::WorkdirError> for Error {
    fn from(e: crate::host::workdir::WorkdirError) -> Self {
        use crate::host::workdir::WorkdirError as W;
        match e {
            W::Io { action, path, source } => Error::Workdir { action, path, source },
            W::Exists { path } => Error::WorkdirExists { path },
            W::NotEmpty { path, holds } => Error::WorkdirNotEmpty { path, holds },
            W::NotOurs { path, why } => Error::WorkdirNotOurs { path, why },
        }
    }
}

impl Error {
    /// Whether the error is the caller's input (an invalid init file, a
    /// workdir or VM that does not exist, a VM that is not running, a bad
    /// name): the `lago` command exits 2 for these, 1 for everything else.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Plan(_)
                | Error::NoWorkdir { .. }
                | Error::NoEnv { .. }
                | Error::NoSuchVm { .. }
                | Error::NotRunning { .. }
                | Error::WorkdirExists { .. }
                | Error::WorkdirNotEmpty { .. }
                | Error::WorkdirNotOurs { .. }
                | Error::SnapshotName { .. }
                | Error::SnapshotExists { .. }
                | Error::NoSuchSnapshot { .. }
                | Error::Usage { .. }
                | Error::OutputNotEmpty { .. }
                | Error::OutputNotOurs { .. }
                | Error::DeployScript { .. }
                | Error::ExportRunning { .. }
        )
    }
}

/// One VM's failure in an operation on several.
#[derive(Debug)]
pub struct VmFailure {
    /// The VM this failure belongs to.
    pub vm: String,
    /// Its error (its message may already start with the VM's name).
    pub error: Error,
}

/// The failures of an operation on several VMs, rendered one per line with
/// each error's full chain of causes.
#[derive(Debug)]
pub struct VmFailures(pub Vec<VmFailure>);

impl std::fmt::Display for VmFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for v in &self.0 {
            let text = error_chain(&v.error);
            if text.starts_with(&format!("{}:", v.vm)) {
                write!(f, "\n  {text}")?;
            } else {
                write!(f, "\n  {}: {text}", v.vm)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VmFailures {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.first().map(|v| &v.error as &(dyn std::error::Error + 'static))
    }
}

/// Runs `work` on every item in parallel (one thread each) and waits for
/// all; a failure (or a panic) of one does not stop the others. One failure
/// is returned as is, several as [`Error::Vms`].
pub(crate) fn for_each_parallel<T: Sync>(
    action: &'static str,
    items: &[T],
    name: impl Fn(&T) -> String,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    map_parallel(action, items, name, work).map(|_| ())
}

/// Like [`for_each_parallel`], returning each item's result in order.
pub(crate) fn map_parallel<T: Sync, R: Send>(
    action: &'static str,
    items: &[T],
    name: impl Fn(&T) -> String,
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let results = run_parallel(action, items, name, work);
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (vm, r) in results {
        match r {
            Ok(v) => done.push(v),
            Err(error) => failures.push(VmFailure { vm, error }),
        }
    }
    match failures.len() {
        0 => Ok(done),
        1 => Err(failures.remove(0).error),
        _ => Err(Error::Vms {
            action,
            failures: VmFailures(failures),
        }),
    }
}

/// Runs `work` on every item at once, each on a thread of its own, and
/// returns each item's name and result in order (a panic is
/// [`Error::Panicked`] for its item).
pub(crate) fn run_parallel<T: Sync, R: Send>(
    action: &'static str,
    items: &[T],
    name: impl Fn(&T) -> String,
    work: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<(String, Result<R>)> {
    crate::util::parallel::each(items, name, work)
        .into_iter()
        .map(|(vm, r)| {
            let r = r.unwrap_or_else(|message| {
                Err(Error::Panicked {
                    vm: vm.clone(),
                    action,
                    message,
                })
            });
            (vm, r)
        })
        .collect()
}

pub(crate) use crate::util::parallel::panic_text;

pub use crate::guest::console::ConsoleMatch;

/// A command's stdout and stderr for an error message, each bounded to its
/// last 2000 characters.
pub(crate) fn outputs(st: &crate::guest::ssh::CommandStatus) -> String {
    fn tail(s: &str) -> String {
        const MAX: usize = 2000;
        let s = s.trim_end();
        if s.is_empty() {
            return "(empty)".into();
        }
        match s.char_indices().rev().nth(MAX - 1) {
            Some((i, _)) if i > 0 => format!("…{}", &s[i..]),
            _ => s.to_owned(),
        }
    }
    format!("\n  stdout: {}\n  stderr: {}", tail(&st.out), tail(&st.err))
}

fn console_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return "; the serial console is empty".into();
    }
    format!("; last console lines:\n    {}", lines.join("\n    "))
}

/// `Result` with lago's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use crate::util::text::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    /// A real libvirt failure (the in-process test driver refuses bad XML),
    /// with libvirt's reason as its source.
    fn libvirt_failure(vm: &str) -> Error {
        let b = Backend::connect(Some("test:///default")).unwrap();
        b.start_domain(vm, "<domain type='test'><name>x</name></domain>", false)
            .unwrap_err()
            .into()
    }

    #[test]
    fn several_failures_keep_each_vm_and_its_root_cause() {
        let names = ["engine".to_owned(), "host0".to_owned()];
        let err = for_each_parallel("start", &names, String::clone, |n| Err(libvirt_failure(n))).unwrap_err();
        let Error::Vms { action, failures } = &err else {
            panic!("expected Error::Vms, got {err:?}");
        };
        assert_eq!(*action, "start");
        assert_eq!(failures.0.iter().map(|f| f.vm.as_str()).collect::<Vec<_>>(), names);
        // libvirt's own reason is in the message, for each VM, and reachable as a source.
        // (Error::Backend is transparent: its source is libvirt's error.)
        let cause = std::error::Error::source(&failures.0[0].error)
            .map(|c| c.to_string())
            .expect("libvirt's error is the source");
        assert!(!cause.is_empty());
        let shown = err.to_string();
        assert!(
            shown.starts_with("cannot start 2 VMs:\n  engine: cannot start VM engine"),
            "{shown}"
        );
        assert_eq!(shown.matches(&cause).count(), 2, "{shown}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(error_chain(&err), shown, "the chain adds nothing the message lacks");
    }

    #[test]
    fn one_failure_is_returned_as_it_is() {
        let names = ["a".to_owned(), "b".to_owned()];
        let err = for_each_parallel("stop", &names, String::clone, |n| {
            if n == "b" { Err(libvirt_failure(n)) } else { Ok(()) }
        })
        .unwrap_err();
        assert!(matches!(err, Error::Backend(_)), "{err:?}");
    }

    #[test]
    fn a_panicking_worker_is_an_error_naming_its_vm() {
        let names = ["vm01".to_owned(), "vm02".to_owned()];
        let err = for_each_parallel("destroy", &names, String::clone, |n| {
            if n == "vm02" {
                panic!("worker bug");
            }
            Ok(())
        })
        .unwrap_err();
        match err {
            Error::Panicked { vm, action, message } => {
                assert_eq!(
                    (vm.as_str(), action, message.as_str()),
                    ("vm02", "destroy", "worker bug")
                );
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }

    #[test]
    fn a_stalled_boot_keeps_its_last_ssh_error_as_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::WaitForSsh {
            vm: "vm01".into(),
            stage: crate::guest::boot::BootStage::PortOpen,
            waited: Duration::from_secs(4),
            last_error: Some(Box::new(crate::guest::ssh::SshError::Connect {
                vm: "vm01".into(),
                addr: "192.168.200.2:22".parse().unwrap(),
                source: io,
            })),
            console: vec!["lago-tiny: up".into()],
        };
        let shown = err.to_string();
        assert!(
            shown.contains("(last error: vm01: cannot connect to 192.168.200.2:22: connection refused)"),
            "{shown}"
        );
        let src = std::error::Error::source(&err).expect("a source");
        assert!(src.to_string().contains("cannot connect"));
        assert!(std::error::Error::source(src).is_some(), "down to the I/O error");
    }

    #[test]
    fn a_watchdog_match_names_the_vm_what_and_the_line() {
        let m = ConsoleMatch {
            vm: "vm01".into(),
            what: "pattern `segfault`".into(),
            line: "app: segfault at 0".into(),
            console_log: "/w/logs/vm01.console.log".into(),
        };
        let e = Error::ConsoleWatchdog(Box::new(m)).to_string();
        assert!(
            e.starts_with("vm01: the serial console shows pattern `segfault`: \"app: segfault at 0\""),
            "{e}"
        );
    }
}
