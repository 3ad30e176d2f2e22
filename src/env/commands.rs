//! The test-writing API: NixOS-test-driver-style commands on [`Vm`] and
//! [`Env`] (`succeed`, `fail`, `wait_until_succeeds`, `wait_for_port`,
//! `wait_for_unit`, `wait_for_console_text`, link control, `reboot`,
//! `crash`, `ssh_all`), so that tests need no retry loops of their own.
//!
//! Every failure is an [`Error`] that names the VM, the command, its exit
//! code, stdout, stderr and the time spent; the commands go into the failed
//! test's SSH transcript like any other. Every wait is bounded by its
//! timeout, retries with a short back-off (100 ms growing to 1 s), and fails
//! at once when the console watchdog of the running test sees a kernel panic,
//! an oops, a `BUG:` line, a hung task or the test's own pattern
//! (the console watchdog: `crate::guest::console`).
//!
//! ```no_run
//! # fn f(env: &lago::Env) -> lago::Result<()> {
//! use std::time::Duration;
//! let (server, client) = (env.vm("server")?, env.vm("client")?);
//! server.succeed(["sh", "-c", "nohup my-daemon --port 8080 >/dev/null 2>&1 &"])?;
//! server.wait_for_port(8080, Duration::from_secs(30))?;
//! client.succeed(["wget", "-qO-", "http://server:8080/health"])?;
//! env.isolate("server")?;                          // every NIC but the management one
//! client.wait_until_fails(["ping", "-c1", "-W1", "server-eth1"], Duration::from_secs(10))?;
//! env.rejoin("server")?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::env::Env;
use crate::env::error::{Error, Result, error_chain, outputs};
use crate::env::vm::Vm;
use crate::guest::console as watch;
use crate::guest::console::console_len;
use crate::guest::ssh::{CommandStatus, quote_command};

/// How long `succeed`, `fail` and `ssh_all` wait for a command unless told.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The bound on `succeed`, `fail` and `ssh_all`: `LAGO_COMMAND_TIMEOUT`
/// (`90s`, `10m`, `1h`, or whole seconds), else [`DEFAULT_COMMAND_TIMEOUT`].
pub fn command_timeout() -> Result<Duration> {
    match std::env::var("LAGO_COMMAND_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => parse_timeout(&v).ok_or_else(|| {
            crate::guest::ssh::SshError::Setting {
                name: "LAGO_COMMAND_TIMEOUT",
                value: v.clone(),
                expected: "a duration such as 90s, 10m or 1h, or whole seconds".into(),
            }
            .into()
        }),
        _ => Ok(DEFAULT_COMMAND_TIMEOUT),
    }
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(0) => None,
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => lago_config::parse_duration(t),
    }
}

/// The first pause between attempts, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// A wait's attempt: done with a value, or not yet (with what it saw).
enum Attempt<T> {
    Done(T),
    Again(String),
}

impl Vm {
    /// Retries `attempt` until it is done or `timeout` has passed; the
    /// timeout error says what the last attempt saw.
    fn retry<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut attempt: impl FnMut(Duration) -> Result<Attempt<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut pause = BACKOFF.0;
        loop {
            self.watchdog()?;
            let left = timeout.saturating_sub(start.elapsed());
            let last = match attempt(left.max(Duration::from_secs(1)))? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Again(saw) => saw,
            };
            self.watchdog()?;
            if start.elapsed() >= timeout {
                return Err(Error::WaitTimeout {
                    vm: self.name().to_owned(),
                    what: what.to_owned(),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
            pause = (pause * 3 / 2).min(BACKOFF.1);
        }
    }

    /// Runs `line` within `timeout` while the running test's console
    /// watchdog watches this VM: trouble on the console ends the wait at
    /// once, as the watchdog's error.
    fn ssh_watched(&self, line: &str, timeout: Duration) -> Result<CommandStatus> {
        let ask = || self.watchdog().err().map(|e| e.to_string());
        match self.ssh_interruptible(line, Some(timeout), &ask) {
            Err(e @ Error::Ssh(crate::guest::ssh::SshError::Interrupted { .. })) => {
                self.watchdog()?;
                Err(e)
            }
            other => other,
        }
    }

    /// One run of `line` for a wait: an SSH failure (a guest rebooting, a
    /// link down) is an attempt that saw it, not an error.
    fn try_line(&self, line: &str, limit: Duration) -> std::result::Result<CommandStatus, String> {
        self.ssh_with(line, None, Some(limit))
            .map_err(|e| format!("no answer over SSH: {}", error_chain(&e)))
    }

    /// Runs `command` (words, quoted for the shell, as [`Vm::ssh`] takes
    /// them; `["sh", "-c", "a | b"]` for a pipeline) and returns its stdout,
    /// or [`Error::CommandFailed`] with the exit code, stdout, stderr and
    /// the time it took when it exits with another code than 0. Bounded by
    /// [`command_timeout`] (10 minutes unless `LAGO_COMMAND_TIMEOUT` says);
    /// the running test's console watchdog is checked while it runs.
    ///
    /// ```no_run
    /// # fn f(vm: &lago::Vm) -> lago::Result<()> {
    /// let kernel = vm.succeed(["uname", "-r"])?;
    /// vm.succeed(["systemctl", "is-active", "nginx"])?;
    /// # Ok(()) }
    /// ```
    pub fn succeed<I, S>(&self, command: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.succeed_within(command, command_timeout()?)
    }

    /// [`Vm::succeed`] bounded by `timeout` (an [`crate::guest::ssh::SshError::Timeout`] past it).
    pub fn succeed_within<I, S>(&self, command: I, timeout: Duration) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (line, status, elapsed) = self.run_watched(command, timeout)?;
        if status.success() {
            return Ok(status.out);
        }
        Err(Error::CommandFailed {
            vm: self.name().to_owned(),
            command: line,
            status: Box::new(status),
            elapsed,
        })
    }

    /// Runs `command` once within `timeout`, the watchdog watching this VM
    /// meanwhile; then its verdict. The command line, its status and how
    /// long it ran.
    fn run_watched<I, S>(&self, command: I, timeout: Duration) -> Result<(String, CommandStatus, Duration)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line = quote_command(command);
        let start = Instant::now();
        let status = self.ssh_watched(&line, timeout);
        let elapsed = start.elapsed();
        self.watchdog()?;
        Ok((line, status?, elapsed))
    }

    /// Runs `command` and returns its status when it fails (any exit code
    /// but 0); [`Error::CommandSucceeded`] when it succeeds. Bounded and
    /// watched as [`Vm::succeed`].
    pub fn fail<I, S>(&self, command: I) -> Result<CommandStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.fail_within(command, command_timeout()?)
    }

    /// [`Vm::fail`] bounded by `timeout`.
    pub fn fail_within<I, S>(&self, command: I, timeout: Duration) -> Result<CommandStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (line, status, elapsed) = self.run_watched(command, timeout)?;
        if !status.success() {
            return Ok(status);
        }
        Err(Error::CommandSucceeded {
            vm: self.name().to_owned(),
            command: line,
            status: Box::new(status),
            elapsed,
        })
    }

    /// Runs `command` until it succeeds, at most `timeout` (each attempt is
    /// bounded by what is left), and returns the stdout of the attempt that
    /// did. The timeout error shows the last attempt's exit code and output.
    pub fn wait_until_succeeds<I, S>(&self, command: I, timeout: Duration) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line = quote_command(command);
        self.until_succeeds(&format!("`{line}` to succeed"), &line, timeout)
    }

    /// Runs `line` until it succeeds (`what` names the wait in its timeout error).
    fn until_succeeds(&self, what: &str, line: &str, timeout: Duration) -> Result<String> {
        self.retry(what, timeout, |left| {
            Ok(match self.try_line(line, left) {
                Ok(st) if st.success() => Attempt::Done(st.out),
                Ok(st) => Attempt::Again(format!("exit code {}{}", st.code, outputs(&st))),
                Err(e) => Attempt::Again(e),
            })
        })
    }

    /// Runs `command` until it fails, at most `timeout`, and returns the
    /// status of the attempt that did.
    pub fn wait_until_fails<I, S>(&self, command: I, timeout: Duration) -> Result<CommandStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line = quote_command(command);
        self.retry(&format!("`{line}` to fail"), timeout, |left| {
            Ok(match self.try_line(&line, left) {
                Ok(st) if !st.success() => Attempt::Done(st),
                Ok(st) => Attempt::Again(format!("exit code 0{}", outputs(&st))),
                Err(e) => Attempt::Again(e),
            })
        })
    }

    /// Waits until TCP `port` of the guest accepts a connection, checked from
    /// the host side over the VM's management network (through the
    /// hypervisor host on a remote hypervisor), as a client would reach it.
    pub fn wait_for_port(&self, port: u16, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::new(self.ip(), port);
        let via = self.ssh_target().via.clone();
        self.retry(&format!("TCP port {port} on {addr}"), timeout, |left| {
            let limit = left.min(Duration::from_secs(2));
            let connected = match &via {
                Some(jump) => jump.tunnel(addr, limit).map(drop).map_err(|e| error_chain(&e)),
                None => TcpStream::connect_timeout(&addr, limit)
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            Ok(match connected {
                Ok(()) => Attempt::Done(()),
                Err(e) => Attempt::Again(format!("connect: {e}")),
            })
        })
    }

    /// Waits until `path` exists in the guest.
    pub fn wait_for_file(&self, path: &str, timeout: Duration) -> Result<()> {
        let line = quote_command(["test", "-e", path]);
        self.until_succeeds(&format!("file {path}"), &line, timeout).map(drop)
    }

    /// Waits until systemd unit `unit` is active. A unit that fails is an
    /// error at once ([`Error::UnitFailed`], with `systemctl status`); a
    /// guest without systemd is [`Error::NoSystemd`].
    pub fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<()> {
        let has_systemd = self.ssh(["test", "-d", "/run/systemd/system"])?;
        if !has_systemd.success() {
            return Err(Error::NoSystemd {
                vm: self.name().to_owned(),
                unit: unit.to_owned(),
            });
        }
        let line = quote_command(["systemctl", "is-active", unit]);
        self.retry(&format!("unit `{unit}` to be active"), timeout, |left| {
            let st = match self.try_line(&line, left) {
                Ok(st) => st,
                Err(e) => return Ok(Attempt::Again(e)),
            };
            match st.out.trim() {
                "active" => Ok(Attempt::Done(())),
                "failed" => {
                    let status = self.ssh(["systemctl", "status", "--no-pager", "-n", "20", unit])?;
                    Err(Error::UnitFailed {
                        vm: self.name().to_owned(),
                        unit: unit.to_owned(),
                        status: status.out.chars().take(4000).collect(),
                    })
                }
                other => Ok(Attempt::Again(format!("`systemctl is-active` says {other:?}"))),
            }
        })
    }

    /// Waits until a line of the serial console matches the regular
    /// expression `pattern`, and returns that line. Lines are consumed: the
    /// first call looks at the whole console log, each later one only at
    /// what came after the last match, so waiting twice for the same text
    /// waits for it to appear again.
    pub fn wait_for_console_text(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let re = watch::compile("wait_for_console_text", pattern).map_err(Error::from)?;
        self.retry(&format!("console text matching `{pattern}`"), timeout, |_| {
            let log = self.console_log();
            let mut cursor = self.console_cursor.lock().unwrap_or_else(|p| p.into_inner());
            let mut last = String::new();
            let found = watch::next_line(log, &mut cursor, |line| {
                if re.is_match(line) {
                    return true;
                }
                last = line.chars().take(200).collect();
                false
            });
            Ok(match found {
                Some(line) => Attempt::Done(line),
                None => Attempt::Again(format!("no new line matches; the last read: {last:?}")),
            })
        })
    }

    fn nic_mac(&self, nic: usize) -> Result<String> {
        self.plan
            .nics
            .get(nic)
            .map(|n| n.mac.to_string())
            .ok_or_else(|| Error::NoSuchNic {
                vm: self.name().to_owned(),
                nic,
                count: self.plan.nics.len(),
            })
    }

    /// Cuts NIC `nic` (`eth<nic>` in the guest) as if its cable were pulled:
    /// the guest sees no carrier and nothing passes, until [`Vm::link_up`].
    /// Cutting the management NIC also cuts lago's SSH to this VM.
    pub fn link_down(&self, nic: usize) -> Result<()> {
        self.set_link(nic, false)
    }

    /// Restores NIC `nic`'s link.
    pub fn link_up(&self, nic: usize) -> Result<()> {
        self.set_link(nic, true)
    }

    fn set_link(&self, nic: usize, up: bool) -> Result<()> {
        let mac = self.nic_mac(nic)?;
        self.backend.set_link(&self.plan.libvirt_name, &mac, up)?;
        tracing::info!(vm = %self.name(), nic, up, "link set");
        Ok(())
    }

    /// The indexes of its NICs but the management one (the one SSH uses).
    pub fn non_management_nics(&self) -> Vec<usize> {
        // Session mode: SSH has a NIC of its own; every NIC of the plan may go down.
        let mgmt = self.plan.mgmt_nic().filter(|_| !self.session);
        (0..self.plan.nics.len()).filter(|i| Some(*i) != mgmt).collect()
    }

    /// Reboots the guest from inside (`reboot`, through `sudo -n` for a
    /// user that is not root) and waits until it has booted again and
    /// answers SSH (within its `boot_time_sec`).
    pub fn reboot(&self) -> Result<()> {
        self.require_running()?;
        self.sync_console();
        let offset = console_len(&self.plan.console_log);
        let old = self.boot_id()?;
        let root = self.ssh(["id", "-u"])?.out.trim() == "0";
        if !root {
            self.succeed(["sudo", "-n", "true"])?;
        }
        let line = if root { "reboot" } else { "sudo -n reboot" };
        let start = Instant::now();
        // The session may die with the guest before the command returns.
        match self.ssh_with(line, None, Some(Duration::from_secs(10))) {
            Ok(status) if !status.success() => {
                return Err(Error::CommandFailed {
                    vm: self.name().to_owned(),
                    command: line.to_owned(),
                    status: Box::new(status),
                    elapsed: start.elapsed(),
                });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(vm = %self.name(), error = %error_chain(&e), "the session ended with the reboot"),
        }
        self.wait_new_boot(&old, offset)
    }

    /// The guest's boot id (a new one each boot).
    fn boot_id(&self) -> Result<String> {
        Ok(self
            .succeed(["cat", "/proc/sys/kernel/random/boot_id"])?
            .trim()
            .to_owned())
    }

    /// After a reboot or reset begun when the console log was `offset` long:
    /// waits for SSH, then until the guest answering is a new boot (the old
    /// one may still answer for a moment while it shuts down), within
    /// `boot_time_sec`. Console text from before is not waited for again.
    fn wait_new_boot(&self, old: &str, offset: u64) -> Result<()> {
        {
            let mut cursor = self.console_cursor.lock().unwrap_or_else(|p| p.into_inner());
            *cursor = (*cursor).max(offset);
        }
        let timeout = Duration::from_secs(self.spec.boot_time_sec);
        let start = Instant::now();
        self.conn.reset();
        self.wait_from(timeout, offset)?;
        self.retry(
            "a new boot (its boot id to change)",
            timeout.saturating_sub(start.elapsed()),
            |limit| {
                let line = "cat /proc/sys/kernel/random/boot_id";
                Ok(match self.try_line(line, limit.min(Duration::from_secs(5))) {
                    Ok(st) if st.success() && st.out.trim() != old => Attempt::Done(()),
                    Ok(_) => {
                        self.conn.reset();
                        Attempt::Again("the old boot still answers".into())
                    }
                    Err(e) => {
                        self.conn.reset();
                        Attempt::Again(e)
                    }
                })
            },
        )
    }

    /// Resets the VM at once, like its reset button (no shutdown, unwritten
    /// data is lost), and waits until it has booted again and answers SSH.
    pub fn crash(&self) -> Result<()> {
        self.require_running()?;
        self.sync_console();
        let offset = console_len(&self.plan.console_log);
        let old = self.boot_id()?;
        self.conn.reset();
        self.backend.reset_domain(&self.plan.libvirt_name)?;
        tracing::info!(vm = %self.name(), "reset");
        self.wait_new_boot(&old, offset)
    }
}

impl Env {
    /// Runs `command` on every VM at once and returns each VM's result by name.
    #[must_use = "each VM's result says whether its command ran"]
    pub fn ssh_all<I, S>(&self, command: I) -> BTreeMap<String, Result<CommandStatus>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        match command_timeout() {
            Ok(t) => self.ssh_all_within(command, t),
            Err(e) => {
                let why = e.to_string();
                self.get_vms()
                    .keys()
                    .map(|n| (n.clone(), Err(Error::Usage { message: why.clone() })))
                    .collect()
            }
        }
    }

    /// [`Env::ssh_all`], each command bounded by `timeout`.
    pub fn ssh_all_within<I, S>(&self, command: I, timeout: Duration) -> BTreeMap<String, Result<CommandStatus>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line = quote_command(command);
        let recorder = crate::guest::transcript::current();
        let watch = watch::current();
        let vms: Vec<&Vm> = self.get_vms().values().collect();
        crate::env::error::run_parallel(
            "ssh",
            &vms,
            |vm| vm.name().to_owned(),
            |vm| {
                // Into the running test's transcript and watchdog, as on its own thread.
                crate::guest::transcript::set(recorder.clone());
                watch::set(watch.clone());
                vm.ssh_watched(&line, timeout)
            },
        )
        .into_iter()
        .collect()
    }

    /// Cuts every NIC of VM `vm` but its management one, so the VM is
    /// partitioned from the other VMs' nets while lago keeps its way in.
    /// Undone by [`Env::rejoin`].
    /// When a link cannot be cut, those already cut are restored.
    pub fn isolate(&self, vm: &str) -> Result<()> {
        let v = self.vm(vm)?;
        let mut cut = Vec::new();
        for nic in v.non_management_nics() {
            if let Err(e) = v.link_down(nic) {
                for n in cut {
                    let _ = v.link_up(n);
                }
                return Err(e);
            }
            cut.push(nic);
        }
        Ok(())
    }

    /// Restores the links [`Env::isolate`] cut.
    pub fn rejoin(&self, vm: &str) -> Result<()> {
        let v = self.vm(vm)?;
        for nic in v.non_management_nics() {
            v.link_up(nic)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_carry_everything_a_test_writer_needs() {
        let e = Error::CommandFailed {
            vm: "vm01".into(),
            command: "systemctl is-active nginx".into(),
            status: Box::new(CommandStatus {
                code: 3,
                out: "inactive\n".into(),
                err: String::new(),
            }),
            elapsed: Duration::from_millis(120),
        };
        assert_eq!(
            e.to_string(),
            "vm01: `systemctl is-active nginx` exited with code 3 after 120.0ms (expected 0)\n  stdout: inactive\n  stderr: (empty)"
        );
        let e = Error::WaitTimeout {
            vm: "vm02".into(),
            what: "TCP port 80 on 192.168.200.3:80".into(),
            waited: Duration::from_millis(5000),
            last: "connect: Connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "vm02: timed out after 5.0s waiting for TCP port 80 on 192.168.200.3:80; last attempt: connect: Connection refused"
        );
        let long = CommandStatus {
            code: 1,
            out: "x".repeat(5000),
            err: "boom".into(),
        };
        let text = outputs(&long);
        assert!(
            text.len() < 2100 && text.contains("…") && text.ends_with("stderr: boom"),
            "{text}"
        );
    }
}
