//! A VM of a running environment: SSH, copies, power.

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, VmState};
use crate::env::error::{Error, Result};
pub use crate::guest::boot::BootStage;
use crate::guest::boot::console_shows_up;
use crate::guest::console::{console_len, console_tail};
use crate::guest::ssh::{self, CommandStatus, Connection, CopyLimits, CopyReport, SshError, quote_command};
use crate::plan::VmPlan;
use lago_config::VmSpec;

/// A VM of an [`Env`](crate::Env).
pub struct Vm {
    pub(crate) spec: VmSpec,
    pub(crate) plan: VmPlan,
    pub(crate) domain_xml: String,
    pub(crate) backend: Arc<Backend>,
    pub(crate) conn: Connection,
    /// Start domains so that libvirtd destroys them when this process ends
    /// (for environments one process owns alone).
    pub(crate) autodestroy: Arc<std::sync::atomic::AtomicBool>,
    /// On a remote hypervisor: the volume its console log is written to
    /// (copied into the local console log as it grows).
    pub(crate) console_volume: Option<String>,
    /// How far [`Vm::wait_for_console_text`] has consumed the console log.
    pub(crate) console_cursor: std::sync::Mutex<u64>,
    /// Session mode: SSH goes through a user-mode NIC of its own, none of the plan's.
    pub(crate) session: bool,
}

impl fmt::Debug for Vm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.plan.name)
            .field("ip", &self.plan.ip)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// The VM's name (its hostname).
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// Its address on the management net.
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.plan.ip)
    }

    /// Its fully qualified name (`vm01.lago.local`).
    pub fn fqdn(&self) -> &str {
        &self.plan.fqdn
    }

    /// Its spec (from the init file).
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// Its plan (NICs, disks, libvirt name).
    pub fn plan(&self) -> &VmPlan {
        &self.plan
    }

    /// How lago reaches it over SSH (address, user, key, pinned host key, jump host).
    pub fn ssh_target(&self) -> &ssh::Target {
        self.conn.target()
    }

    /// The serial console log (on a remote hypervisor, first brought up to
    /// date from its console volume).
    pub fn console_log(&self) -> &Path {
        self.sync_console();
        &self.plan.console_log
    }

    /// Whether its files are volumes of a remote hypervisor (not files here).
    pub fn remote_storage(&self) -> bool {
        self.console_volume.is_some()
    }

    /// Appends what the remote console volume holds beyond the local copy.
    pub(crate) fn sync_console(&self) {
        let Some(vol) = &self.console_volume else { return };
        let local = &self.plan.console_log;
        let have = console_len(local);
        match self.backend.download_volume(vol, have, 16 << 20) {
            Ok(bytes) if !bytes.is_empty() => {
                // At the offset read from: two processes mirroring at once write the same bytes.
                use std::os::unix::fs::FileExt;
                let written = local
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::OpenOptions::new()
                            .create(true)
                            .write(true)
                            .truncate(false)
                            .open(local)
                    })
                    .and_then(|f| f.write_all_at(&bytes, have));
                if let Err(e) = written {
                    tracing::debug!(vm = %self.name(), error = %e, "cannot update the local console log");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(vm = %self.name(), error = %e, "cannot read the console volume"),
        }
    }

    /// Whether it is a machine lago did not create (`vm-provider: ssh`):
    /// `start`/`stop` leave it alone, and it is "running" when its SSH port answers.
    pub fn is_existing_machine(&self) -> bool {
        self.spec.provider == lago_config::Provider::Ssh
    }

    /// libvirt's view of it (an existing machine: whether its SSH port answers).
    pub fn state(&self) -> Result<VmState> {
        if self.is_existing_machine() {
            let addr = SocketAddr::new(self.ip(), self.conn.target().port);
            return Ok(match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) => VmState::Running,
                Err(_) => VmState::Down,
            });
        }
        Ok(self.backend.domain_state(&self.plan.libvirt_name)?)
    }

    /// `Ok` when the VM is running, else [`Error::NotRunning`] with its state
    /// (commands that need a live guest check this first).
    pub fn require_running(&self) -> Result<()> {
        match self.state()? {
            VmState::Running => Ok(()),
            state => Err(Error::NotRunning {
                vm: self.name().to_owned(),
                state,
            }),
        }
    }

    /// Runs a command (words, quoted for the shell) and returns its exit code and output.
    /// A non-zero exit is not an error.
    ///
    /// ```no_run
    /// # fn f(vm: &lago::Vm) -> lago::Result<()> {
    /// let st = vm.ssh(["hostname", "-f"])?;
    /// assert_eq!(st.out.trim(), "vm01.lago.local");
    /// # Ok(()) }
    /// ```
    pub fn ssh<I, S>(&self, command: I) -> Result<CommandStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.ssh_with(&quote_command(command), None, None)
    }

    /// Runs a shell command line with optional stdin data and timeout.
    pub fn ssh_with(
        &self,
        command_line: &str,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<CommandStatus> {
        self.ssh_recorded(command_line, || self.conn.exec(command_line, stdin, timeout))
    }

    /// Runs `command_line` within `timeout`, asking `interrupt` while it runs
    /// (see [`crate::guest::ssh::Connection::exec_interruptible`]).
    pub(crate) fn ssh_interruptible(
        &self,
        command_line: &str,
        timeout: Option<Duration>,
        interrupt: &dyn Fn() -> Option<String>,
    ) -> Result<CommandStatus> {
        self.ssh_recorded(command_line, || {
            self.conn.exec_interruptible(command_line, None, timeout, interrupt)
        })
    }

    /// An SSH failure as the user should see it: when the VM's domain is no
    /// longer running (its QEMU exited or was killed), that is the error,
    /// with the console's last lines, not the connection that broke.
    fn explain(&self, command_line: &str, e: crate::guest::ssh::SshError) -> Error {
        use crate::guest::ssh::SshError as S;
        let broken = matches!(
            e,
            S::Connect { .. } | S::Handshake { .. } | S::Channel { .. } | S::Io { .. } | S::Timeout { .. }
        );
        if broken && !self.is_existing_machine() && matches!(self.state(), Ok(VmState::Down)) {
            self.sync_console();
            return Error::VmWentDown {
                vm: self.name().to_owned(),
                command: command_line.to_owned(),
                console: console_tail(&self.plan.console_log, 0, 10),
                source: Box::new(e),
            };
        }
        e.into()
    }

    /// Runs `exec` (a command on this VM) and records it in the running
    /// test's transcript.
    fn ssh_recorded(
        &self,
        command_line: &str,
        exec: impl FnOnce() -> std::result::Result<CommandStatus, crate::guest::ssh::SshError>,
    ) -> Result<CommandStatus> {
        let start = Instant::now();
        let result = exec().map_err(|e| self.explain(command_line, e));
        crate::guest::transcript::record(|| crate::guest::transcript::Entry {
            vm: self.name().to_owned(),
            command: command_line.to_owned(),
            outcome: result.as_ref().map(|s| s.code).map_err(|e| e.to_string()),
            out: result.as_ref().map(|s| s.out.clone()).unwrap_or_default(),
            err: result.as_ref().map(|s| s.err.clone()).unwrap_or_default(),
            duration: start.elapsed(),
        });
        let st = result?;
        // Command lines may carry secrets: trace level only.
        tracing::trace!(vm = %self.name(), command = command_line, code = st.code, ms = start.elapsed().as_millis() as u64, "ssh");
        Ok(st)
    }

    /// Copies a local file or folder to the VM, like `cp -r`: to `remote`, or
    /// inside it when it is an existing folder (or ends with `/`). An existing
    /// file is replaced only by a file; an existing folder is never replaced
    /// or merged into. Bounded by [`CopyLimits::from_env`] (10 minutes, 1 GiB).
    pub fn copy_to(&self, local: impl AsRef<Path>, remote: &str) -> Result<()> {
        self.copy_to_with(local, remote, &CopyLimits::from_env()?).map(|_| ())
    }

    /// [`Vm::copy_to`] with explicit limits; says what was copied and skipped.
    pub fn copy_to_with(&self, local: impl AsRef<Path>, remote: &str, limits: &CopyLimits) -> Result<CopyReport> {
        let start = Instant::now();
        let r = self.conn.copy_to(local.as_ref(), remote, limits);
        self.record_copy(format!("copy-to {} {remote}", local.as_ref().display()), &r, start);
        Ok(r?)
    }

    fn record_copy(&self, what: String, r: &std::result::Result<CopyReport, SshError>, start: Instant) {
        crate::guest::transcript::record(|| crate::guest::transcript::Entry {
            vm: self.name().to_owned(),
            command: what,
            outcome: r.as_ref().map(|_| 0).map_err(|e| crate::util::text::error_chain(e)),
            out: String::new(),
            err: String::new(),
            duration: start.elapsed(),
        });
    }

    /// Copies the VM's file or folder `remote` to the host, like `cp -r`: to
    /// `local`, or inside it when it is an existing folder. An existing file
    /// is replaced only by a file; an existing folder is never replaced or
    /// merged into; nothing else is deleted. Only regular files and folders
    /// are written (symlinks, hard links, devices are skipped, with a
    /// warning in the log). Bounded by [`CopyLimits::from_env`].
    pub fn copy_from(&self, remote: &str, local: impl AsRef<Path>) -> Result<()> {
        self.copy_from_with(remote, local, &CopyLimits::from_env()?).map(|_| ())
    }

    /// [`Vm::copy_from`] with explicit limits; says what was copied and skipped.
    pub fn copy_from_with(&self, remote: &str, local: impl AsRef<Path>, limits: &CopyLimits) -> Result<CopyReport> {
        let start = Instant::now();
        let r = self.conn.copy_from(remote, local.as_ref(), limits);
        self.record_copy(format!("copy-from {remote} {}", local.as_ref().display()), &r, start);
        Ok(r?)
    }

    /// An interactive shell (or `command`) with a PTY on this terminal; returns its exit code.
    pub fn interactive_ssh(&self, command: Option<&[&str]>) -> Result<i32> {
        let line = command.map(|c| quote_command(c.iter().copied()));
        Ok(self.conn.interactive(line.as_deref())?)
    }

    /// Starts the VM (its nets must be up; [`Env::start`](crate::Env::start) sees to that) and waits for SSH.
    pub fn start(&self) -> Result<()> {
        // An existing machine is not lago's to start.
        if self.is_existing_machine() || self.state()? == VmState::Running {
            return Ok(());
        }
        self.sync_console();
        let offset = console_len(&self.plan.console_log);
        let t = Instant::now();
        let autodestroy = self.autodestroy.load(std::sync::atomic::Ordering::Relaxed);
        self.backend
            .start_domain(&self.plan.libvirt_name, &self.domain_xml, autodestroy)?;
        tracing::info!(vm = %self.name(), ms = t.elapsed().as_millis() as u64, "domain created");
        self.conn.reset();
        let budget = Duration::from_secs(self.spec.boot_time_sec);
        let t = Instant::now();
        self.wait_from(budget, offset)?;
        self.wait_ready(budget.saturating_sub(t.elapsed()), t, offset)
    }

    /// Whether the guest runs cloud-init (a seed, and not `tiny`, which
    /// reads the seed itself before its SSH server starts).
    fn runs_cloud_init(&self) -> bool {
        let tiny = matches!(
            self.plan.disks.first().map(|d| &d.source),
            Some(lago_config::DiskSource::Template { name, .. }) if name == crate::host::store::tiny::NAME
        );
        self.plan.seed.is_some() && !tiny && !self.is_existing_machine()
    }

    /// Waits, within `left`, until a cloud-init guest's cloud-init is done
    /// (`cloud-init status --wait`): until then it may restart sshd or
    /// still be writing users and files. Errors it reports are logged; a
    /// guest without cloud-init is ready at once.
    fn wait_ready(&self, left: Duration, start: Instant, offset: u64) -> Result<()> {
        if !self.runs_cloud_init() {
            return Ok(());
        }
        const LINE: &str = "if command -v cloud-init >/dev/null 2>&1; then cloud-init status --wait >/dev/null 2>&1; echo \"cloud-init $?\"; else echo none; fi";
        let mut last: Option<Box<SshError>> = None;
        let deadline = Instant::now() + left;
        // A session that sshd's restart dropped is opened again.
        for _ in 0..3 {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match self.conn.exec(LINE, None, Some(left)) {
                Ok(st) => {
                    let said = st.out.trim();
                    if said != "cloud-init 0" && said != "none" {
                        let long = self
                            .conn
                            .exec("cloud-init status --long", None, Some(Duration::from_secs(30)));
                        tracing::warn!(vm = %self.name(), said, status = ?long.map(|s| s.out), "cloud-init reported an error; the guest may lack part of its configuration");
                    }
                    tracing::info!(vm = %self.name(), stage = %BootStage::Ready, ms = start.elapsed().as_millis() as u64, "boot stage passed");
                    return Ok(());
                }
                Err(e @ SshError::Timeout { .. }) => {
                    last = Some(Box::new(e));
                    break;
                }
                Err(e) => {
                    self.conn.reset();
                    last = Some(Box::new(e));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Err(self.stalled(BootStage::Ready, start, last, offset))
    }

    /// Powers the VM off at once (no guest shutdown).
    pub fn stop(&self) -> Result<()> {
        self.conn.reset();
        if self.is_existing_machine() {
            return Ok(());
        }
        self.backend.stop_domain(&self.plan.libvirt_name)?;
        Ok(())
    }

    /// Presses the ACPI power button and waits up to `timeout` for the VM to power off.
    pub fn shutdown(&self, timeout: Duration) -> Result<()> {
        self.conn.reset();
        if self.is_existing_machine() {
            return Ok(());
        }
        self.backend.shutdown_domain(&self.plan.libvirt_name)?;
        let start = Instant::now();
        while self.state()? != VmState::Down {
            if start.elapsed() >= timeout {
                return Err(Error::ShutdownTimeout {
                    vm: self.name().to_owned(),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until the VM answers SSH (domain running → console shows the guest
    /// is up → port open → authenticated). The error names the stage that
    /// stalled and carries the last console lines.
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<()> {
        self.wait_from(timeout, 0)
    }

    pub(crate) fn wait_from(&self, timeout: Duration, console_offset: u64) -> Result<()> {
        let start = Instant::now();
        let target = self.conn.target().clone();
        let addr = SocketAddr::new(target.ip, target.port);
        // An existing machine has no domain and no console lago reads: its port is all there is.
        let mut stage = if self.is_existing_machine() {
            BootStage::PortOpen
        } else {
            BootStage::DomainRunning
        };
        let mut last_error: Option<Box<SshError>> = None;
        let mut last_state_check = Instant::now() - Duration::from_secs(1);
        let mut probes = Probes::default();
        // After a failed SSH attempt (say, keys not yet in place) the next waits 250 ms:
        // each attempt costs the guest a key exchange.
        let mut next_attempt = Instant::now();
        let mut console_scan = console_offset;
        let mut last_console_sync = Instant::now() - Duration::from_secs(1);
        let mut shown = stage;
        // Logs every stage from `shown` up to (not including) `now` as passed.
        let passed = |shown: &mut BootStage, now: BootStage| {
            for s in BootStage::ALL.into_iter().filter(|s| *s >= *shown && *s < now) {
                tracing::info!(vm = %self.name(), stage = %s, ms = start.elapsed().as_millis() as u64, "boot stage passed");
            }
            *shown = (*shown).max(now);
        };
        loop {
            passed(&mut shown, stage);
            if !self.is_existing_machine()
                && (last_state_check.elapsed() >= Duration::from_millis(500) || stage == BootStage::DomainRunning)
            {
                last_state_check = Instant::now();
                stage = self.domain_stage(stage, start, console_offset)?;
            }
            if self.console_volume.is_some() && last_console_sync.elapsed() >= Duration::from_millis(300) {
                last_console_sync = Instant::now();
                self.sync_console();
            }
            if stage == BootStage::GuestUp && console_shows_up(&self.plan.console_log, &mut console_scan) {
                stage = BootStage::PortOpen;
            }
            if stage >= BootStage::GuestUp {
                // Through a jump host, or a port QEMU forwards (it accepts
                // before the guest listens), a probe says nothing: the console does.
                let (probe, skipped) = probes.port(target.via.is_some() || self.session, stage, start, addr);
                match probe {
                    Ok(_) if Instant::now() < next_attempt => {}
                    Ok(_) => {
                        stage = stage.max(BootStage::Authenticated);
                        passed(&mut shown, stage);
                        match ssh::connect(&target, Duration::from_secs(5)) {
                            Ok(live) => {
                                self.conn.adopt(live);
                                tracing::info!(vm = %self.name(), ms = start.elapsed().as_millis() as u64, "SSH is up (authenticated)");
                                return Ok(());
                            }
                            Err(e @ SshError::HostKeyMismatch { .. }) => return Err(e.into()),
                            Err(e) => {
                                last_error = Some(Box::new(e));
                                next_attempt = Instant::now() + Duration::from_millis(250);
                            }
                        }
                    }
                    // Through a jump host, a real SSH error is kept over "waiting".
                    Err(_) if (target.via.is_some() || skipped) && last_error.is_some() => {}
                    Err(source) => {
                        last_error = Some(Box::new(SshError::Connect {
                            vm: self.name().to_owned(),
                            addr,
                            source,
                        }))
                    }
                }
            }
            if start.elapsed() >= timeout {
                return Err(self.stalled(stage, start, last_error, console_offset));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `stage` moved on by the domain's state: running, the guest boots;
    /// down, it never will ([`Error::DomainStopped`], with its console).
    fn domain_stage(&self, stage: BootStage, start: Instant, console_offset: u64) -> Result<BootStage> {
        match self.state()? {
            VmState::Running => Ok(stage.max(BootStage::GuestUp)),
            VmState::Down => {
                self.sync_console();
                Err(Error::DomainStopped {
                    vm: self.name().to_owned(),
                    stage,
                    waited: start.elapsed(),
                    console: console_tail(&self.plan.console_log, console_offset, 15),
                })
            }
            _ => Ok(stage),
        }
    }

    fn stalled(&self, stage: BootStage, start: Instant, last_error: Option<Box<SshError>>, offset: u64) -> Error {
        self.sync_console();
        Error::WaitForSsh {
            vm: self.name().to_owned(),
            stage,
            waited: start.elapsed(),
            last_error,
            console: console_tail(&self.plan.console_log, offset, 15),
        }
    }

    /// The running test's console watchdog on this VM: an error once its
    /// console showed a panic, an oops, … since the test started (`Ok`
    /// outside tests).
    pub(crate) fn watchdog(&self) -> Result<()> {
        match crate::guest::console::check(self.name(), self.console_log()) {
            Some(m) => Err(Error::ConsoleWatchdog(Box::new(m))),
            None => Ok(()),
        }
    }

    /// The last `n` lines the serial console printed (this boot and earlier ones).
    pub fn console_lines(&self, n: usize) -> Vec<String> {
        self.sync_console();
        console_tail(&self.plan.console_log, 0, n)
    }
}
/// When the wait for SSH last probed the guest's port, or went through the jump host.
struct Probes {
    last_probe: Instant,
    last_jump: Instant,
}

impl Default for Probes {
    fn default() -> Self {
        let long_ago = Instant::now() - Duration::from_secs(1);
        Probes {
            last_probe: long_ago,
            last_jump: long_ago,
        }
    }
}

impl Probes {
    /// Whether port 22 may be tried now (and, directly, whether it accepts a
    /// connection); when not, why, and whether the probe was only skipped.
    /// Through a jump host every probe is an SSH session to it: no direct
    /// port probe, and at most four attempts a second. Directly, until the
    /// console says the guest is up a probe (which blocks while the guest's
    /// address does not answer ARP) runs only every 500 ms, so that the
    /// console is read every 10 ms; after it, at once.
    fn port(
        &mut self,
        via_jump: bool,
        stage: BootStage,
        start: Instant,
        addr: SocketAddr,
    ) -> (std::io::Result<()>, bool) {
        let waiting = |why: &str| Err(std::io::Error::other(why.to_owned()));
        let up = stage >= BootStage::PortOpen;
        if !via_jump {
            if !up && self.last_probe.elapsed() < Duration::from_millis(500) {
                return (waiting("waiting for the console to show the guest is up"), true);
            }
            self.last_probe = Instant::now();
            let wait = if up { 1000 } else { 100 };
            return (
                TcpStream::connect_timeout(&addr, Duration::from_millis(wait)).map(|_| ()),
                false,
            );
        }
        if !up && start.elapsed() < Duration::from_secs(10) {
            return (waiting("waiting for the console to show the guest is up"), false);
        }
        if self.last_jump.elapsed() < Duration::from_millis(250) {
            return (waiting("waiting before the next attempt through the jump host"), false);
        }
        self.last_jump = Instant::now();
        (Ok(()), false)
    }
}
