//! `lago deploy` ([`Env::deploy`]): each VM's `metadata: deploy-scripts`
//! (Lago's key; `ovirt-scripts` too), copied to the VM and run there in
//! order over SSH, the VMs in parallel. A VM's first failing script stops
//! that VM; the error names the VM, the script and its exit code.
//!
//! The scripts go to a fresh `mktemp -d` folder on the guest, removed
//! afterwards; each runs from the SSH user's home folder, under the
//! interpreter its `#!` line names (a script without one under `/bin/sh`),
//! so a `noexec` `/tmp` does not matter. Each script's output
//! goes to the log (and to a caller's sink, see [`Env::deploy_with`]) line
//! by line as it runs. A script gets `LAGO_DEPLOY_TIMEOUT` seconds (default
//! 3600).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::env::Env;
use crate::env::error::{Error, Result};
use crate::env::vm::Vm;
use crate::guest::ssh::{CopyLimits, Streams, quote_command};

/// Seconds a deploy script may run (`LAGO_DEPLOY_TIMEOUT`).
pub const ENV_TIMEOUT: &str = "LAGO_DEPLOY_TIMEOUT";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the setup and cleanup commands on the guest may take.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a failed script's output kept for its error.
const TAIL_LINES: usize = 20;

/// What [`Env::deploy`] ran.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// Per VM, in start order.
    pub vms: Vec<VmDeployed>,
}

/// The scripts run on one VM.
#[derive(Debug, Clone, Serialize)]
pub struct VmDeployed {
    /// The VM the scripts ran on.
    pub vm: String,
    /// Its scripts, in order.
    pub scripts: Vec<ScriptRun>,
}

/// One script's run.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptRun {
    /// The script (on this machine).
    pub script: PathBuf,
    /// Its exit code (always 0 in a report: a failure is an error).
    pub code: i32,
    /// How long it ran.
    pub secs: f64,
}

/// A line a deploy script wrote.
#[derive(Debug, Clone, Copy)]
pub struct DeployLine<'a> {
    /// The VM the script runs on.
    pub vm: &'a str,
    /// The script's path on this host.
    pub script: &'a Path,
    /// Whether it came on stderr.
    pub stderr: bool,
    /// The line (no newline).
    pub line: &'a str,
}

/// Splits a stream into lines for the log and the caller's sink, keeping the last few.
struct Lines<'a> {
    vm: &'a str,
    script: &'a Path,
    stderr: bool,
    buf: Vec<u8>,
    tail: VecDeque<String>,
    sink: &'a (dyn Fn(DeployLine<'_>) + Sync),
}

impl Lines<'_> {
    fn emit(&mut self, raw: &[u8]) {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end_matches('\r');
        if self.stderr {
            tracing::warn!(vm = self.vm, script = %self.script.display(), "{line}");
        } else {
            tracing::info!(vm = self.vm, script = %self.script.display(), "{line}");
        }
        (self.sink)(DeployLine {
            vm: self.vm,
            script: self.script,
            stderr: self.stderr,
            line,
        });
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }

    fn finish(&mut self) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
    }
}

impl Write for Lines<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            self.emit(&line[..line.len() - 1]);
        }
        // A line with no end in sight is emitted in pieces (bounded memory).
        if self.buf.len() > 64 << 10 {
            let rest = std::mem::take(&mut self.buf);
            self.emit(&rest);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn timeout_from_env() -> Result<Duration> {
    match std::env::var(ENV_TIMEOUT) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(Error::Usage {
                message: format!("{ENV_TIMEOUT}={v:?}: expected a whole number of seconds above 0"),
            }),
        },
    }
}

/// The interpreter (and its one optional argument, as the kernel reads a
/// `#!` line) that runs a script starting with `head`; `/bin/sh` without one.
fn interpreter(head: &[u8]) -> Vec<String> {
    let Some(rest) = head.strip_prefix(b"#!") else {
        return vec!["/bin/sh".into()];
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim();
    match line.split_once([' ', '\t']) {
        _ if line.is_empty() => vec!["/bin/sh".into()],
        Some((interp, arg)) if !arg.trim().is_empty() => vec![interp.to_owned(), arg.trim().to_owned()],
        _ => vec![line.to_owned()],
    }
}

/// Checks that every script of `vm` is a readable regular file (before anything runs).
fn check_scripts(vm: &Vm) -> Result<()> {
    for s in &vm.spec().deploy_scripts {
        let bad = |reason: String| Error::DeployScript {
            vm: vm.name().to_owned(),
            script: s.clone(),
            reason,
        };
        match std::fs::metadata(s) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad("not a regular file".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        std::fs::File::open(s).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

fn deploy_vm(
    vm: &Vm,
    timeout: Duration,
    limits: &CopyLimits,
    sink: &(dyn Fn(DeployLine<'_>) + Sync),
) -> Result<VmDeployed> {
    let mut done = VmDeployed {
        vm: vm.name().to_owned(),
        scripts: Vec::new(),
    };
    if vm.spec().deploy_scripts.is_empty() {
        return Ok(done);
    }
    vm.require_running()?;
    let made = vm.ssh_with(
        &quote_command(["mktemp", "-d", "/tmp/lago-deploy.XXXXXX"]),
        None,
        Some(HOUSEKEEPING_TIMEOUT),
    )?;
    let dir = made.out.trim().to_owned();
    if !made.success() || !dir.starts_with("/tmp/lago-deploy.") || dir.contains(['\n', '\'']) {
        return Err(Error::DeployFailed {
            vm: vm.name().to_owned(),
            script: PathBuf::from("(mktemp -d)"),
            code: made.code,
            stderr_tail: made.err.trim().to_owned(),
        });
    }
    let result = run_scripts(vm, &dir, timeout, limits, sink, &mut done);
    // The folder is ours (mktemp made it): removed whatever happened.
    if let Err(e) = vm.ssh_with(
        &quote_command(["rm", "-rf", "--", &dir]),
        None,
        Some(HOUSEKEEPING_TIMEOUT),
    ) {
        tracing::warn!(vm = vm.name(), dir, error = %e, "cannot remove the deploy folder");
    }
    result.map(|()| done)
}

fn run_scripts(
    vm: &Vm,
    dir: &str,
    timeout: Duration,
    limits: &CopyLimits,
    sink: &(dyn Fn(DeployLine<'_>) + Sync),
    done: &mut VmDeployed,
) -> Result<()> {
    for (i, script) in vm.spec().deploy_scripts.iter().enumerate() {
        let base = script
            .file_name()
            .map(|n| n.to_string_lossy().replace(['/', '\n'], "_"))
            .unwrap_or_else(|| "script".into());
        let remote = format!("{dir}/{:02}-{base}", i + 1);
        vm.copy_to_with(script, &remote, limits)?;
        let mut head = [0u8; 256];
        let n = std::fs::File::open(script)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|e| Error::DeployScript {
                vm: vm.name().to_owned(),
                script: script.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(vm = vm.name(), script = %script.display(), "deploy: running");
        let t = Instant::now();
        let mut words = interpreter(&head[..n]);
        words.push(remote.clone());
        let command = quote_command(&words);
        let mut out = Lines {
            vm: vm.name(),
            script,
            stderr: false,
            buf: Vec::new(),
            tail: VecDeque::new(),
            sink,
        };
        let mut err = Lines {
            stderr: true,
            buf: Vec::new(),
            tail: VecDeque::new(),
            ..out
        };
        let code = vm.conn.exec_streams(
            &command,
            &mut Streams {
                stdin: &mut std::io::empty(),
                out: &mut out,
                err: &mut err,
                interrupt: None,
            },
            Some(timeout),
        );
        out.finish();
        err.finish();
        let code = code?;
        if code != 0 {
            let tail = if err.tail.is_empty() { &out.tail } else { &err.tail };
            return Err(Error::DeployFailed {
                vm: vm.name().to_owned(),
                script: script.clone(),
                code,
                stderr_tail: tail.iter().cloned().collect::<Vec<_>>().join("\n"),
            });
        }
        done.scripts.push(ScriptRun {
            script: script.clone(),
            code,
            secs: t.elapsed().as_secs_f64(),
        });
    }
    Ok(())
}

impl Env {
    /// Runs each chosen VM's (`&[]`: all) deploy scripts in order, the VMs
    /// in parallel; their output goes to the log. See [`Env::deploy_with`].
    pub fn deploy(&self, names: &[&str]) -> Result<DeployReport> {
        self.deploy_with(names, &|_| {})
    }

    /// Like [`Env::deploy`], handing every line the scripts write to `sink`
    /// as it comes (the CLI prints them). Every script is checked to exist
    /// before any runs; a VM with scripts must be running.
    pub fn deploy_with(&self, names: &[&str], sink: &(dyn Fn(DeployLine<'_>) + Sync)) -> Result<DeployReport> {
        let vms = self.select(names)?;
        let timeout = timeout_from_env()?;
        let limits = CopyLimits::from_env()?;
        for vm in &vms {
            check_scripts(vm)?;
        }
        let vms = crate::env::error::map_parallel(
            "deploy",
            &vms,
            |vm| vm.name().to_owned(),
            |vm| deploy_vm(vm, timeout, &limits, sink),
        )?;
        Ok(DeployReport { vms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn scripts_run_under_the_interpreter_their_first_line_names() {
        assert_eq!(interpreter(b"echo hi\n"), ["/bin/sh"]);
        assert_eq!(interpreter(b"#!/bin/bash\necho"), ["/bin/bash"]);
        assert_eq!(interpreter(b"#! /usr/bin/env python3\n"), ["/usr/bin/env", "python3"]);
        assert_eq!(
            interpreter(b"#!/bin/sh -e -x\n"),
            ["/bin/sh", "-e -x"],
            "one argument, as the kernel reads it"
        );
        assert_eq!(interpreter(b"#!\n"), ["/bin/sh"]);
        assert_eq!(interpreter(b""), ["/bin/sh"]);
    }

    #[test]
    fn output_is_split_into_lines_and_the_tail_kept() {
        let seen = Mutex::new(Vec::new());
        let sink = |l: DeployLine<'_>| seen.lock().unwrap().push((l.stderr, l.line.to_owned()));
        let script = PathBuf::from("/s.sh");
        let mut w = Lines {
            vm: "vm01",
            script: &script,
            stderr: true,
            buf: Vec::new(),
            tail: VecDeque::new(),
            sink: &sink,
        };
        w.write_all(b"one\r\ntw").unwrap();
        w.write_all(b"o\n").unwrap();
        for i in 0..30 {
            w.write_all(format!("l{i}\n").as_bytes()).unwrap();
        }
        w.write_all(b"no newline").unwrap();
        w.finish();
        let tail = w.tail.clone();
        drop(w);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen[0], (true, "one".to_owned()));
        assert_eq!(seen[1], (true, "two".to_owned()));
        assert_eq!(seen.last().unwrap().1, "no newline");
        assert_eq!(seen.len(), 33);
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.back().unwrap(), "no newline");
    }
}
