//! Running host tools (qemu-img, mkfs.ext4, ldd) with their stderr kept for errors.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A host command that could not be run or failed.
#[derive(Debug, thiserror::Error)]
pub struct CommandError {
    /// The command line, for the message.
    pub command: String,
    /// What went wrong.
    pub failure: CommandFailure,
}

/// How a command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started (usually: not installed).
    Spawn(std::io::Error),
    /// It exited unsuccessfully.
    Exit {
        /// Exit code, if it exited (not killed).
        code: Option<i32>,
        /// The end of its stderr.
        stderr: String,
    },
    /// It ran past its time limit and was stopped.
    Timeout {
        /// The time limit it ran past.
        after: std::time::Duration,
        /// The end of its output.
        output: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            CommandFailure::Spawn(e) => write!(f, "cannot run `{}`: {e}", self.command),
            CommandFailure::Exit { code, stderr } => {
                let code = code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into());
                write!(f, "`{}` failed (exit {code})", self.command)?;
                if !stderr.trim().is_empty() {
                    write!(f, ": {}", stderr.trim())?;
                }
                Ok(())
            }
            CommandFailure::Timeout { after, output } => {
                write!(f, "`{}` was stopped after running {after:?}", self.command)?;
                if !output.trim().is_empty() {
                    write!(f, "; its last output: {}", output.trim())?;
                }
                Ok(())
            }
        }
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Starts `cmd` with stdin closed and stdout and stderr piped.
fn spawn_piped(cmd: &mut Command, command: &str) -> Result<std::process::Child, CommandError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CommandError {
            command: command.to_owned(),
            failure: CommandFailure::Spawn(e),
        })
}

/// Stops a child that ran past its limit: SIGTERM once, then SIGKILL once
/// `grace` has passed since.
struct Stopper {
    start: Instant,
    limit: Duration,
    grace: Duration,
    term_sent: Option<Instant>,
}

impl Stopper {
    fn new(limit: Duration, grace: Duration) -> Stopper {
        Stopper {
            start: Instant::now(),
            limit,
            grace,
            term_sent: None,
        }
    }

    /// Called as the child is waited for: signals it when it is late.
    fn tick(&mut self, child: &mut std::process::Child, command: &str) {
        if self.start.elapsed() <= self.limit {
            return;
        }
        match self.term_sent {
            None => {
                tracing::warn!(%command, limit = ?self.limit, "stopping a command that ran too long");
                let pid = rustix::process::Pid::from_child(child);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                self.term_sent = Some(Instant::now());
            }
            Some(t) if t.elapsed() > self.grace => {
                let _ = child.kill();
            }
            Some(_) => {}
        }
    }

    /// Whether the child had to be stopped.
    fn stopped(&self) -> bool {
        self.term_sent.is_some()
    }
}

/// How long a host tool may run by default (`qemu-img`, `mkfs.ext4`, `tar`, …).
pub(crate) const DEFAULT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The most of a tool's stdout kept (what lago parses is small).
const MAX_STDOUT: u64 = 16 << 20;

/// `program` in the folders of `path` (a `PATH` value), else in /usr/sbin
/// and /sbin, where Debian puts daemons and tools ordinary users' `PATH`
/// leaves out.
pub(crate) fn find_program_in(path: &std::ffi::OsStr, program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .chain(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `program` on this process's `PATH` (see [`find_program_in`]).
pub(crate) fn find_program(program: &str) -> Option<std::path::PathBuf> {
    find_program_in(&std::env::var_os("PATH").unwrap_or_default(), program)
}

/// Runs `cmd` (stdin closed) to completion within [`DEFAULT_LIMIT`]; a
/// non-zero exit is an error carrying the end of stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    run_within(cmd, DEFAULT_LIMIT)
}

/// Runs `cmd` (stdin closed) to completion, and stops it (SIGTERM, then
/// SIGKILL 10 s later) when it runs longer than `limit`: a wedged tool (a
/// `qemu-img` on a hung NFS store, a `make` that waits) never hangs lago.
pub(crate) fn run_within(cmd: &mut Command, limit: Duration) -> Result<Output, CommandError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = spawn_piped(cmd, &command)?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let reader = std::thread::spawn(move || {
            let Some(mut p) = pipe else { return };
            let mut chunk = [0u8; 64 << 10];
            // Whatever is beyond the bound is read and dropped, so the tool never blocks on a full pipe.
            while let Ok(n @ 1..) = p.read(&mut chunk) {
                let mut b = sink.lock().unwrap_or_else(|e| e.into_inner());
                let room = (MAX_STDOUT as usize).saturating_sub(b.len());
                b.extend_from_slice(&chunk[..n.min(room)]);
            }
        });
        (buf, reader)
    };
    let out = collect(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = collect(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let (status, timed_out) = wait_within(&mut child, &command, limit);
    // What is still in the pipes (bounded: a process the tool left behind may hold them open).
    let drained = Instant::now() + Duration::from_secs(2);
    while !(out.1.is_finished() && err.1.is_finished()) && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(5));
    }
    let take = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
        std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let (stdout, stderr) = (take(&out.0), take(&err.0));
    let status = status.map_err(|e| CommandError {
        command: command.clone(),
        failure: CommandFailure::Spawn(e),
    })?;
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    if timed_out {
        return Err(CommandError {
            command,
            failure: CommandFailure::Timeout {
                after: limit,
                output: tail(&stderr),
            },
        });
    }
    if status.success() {
        return Ok(Output { status, stdout, stderr });
    }
    Err(CommandError {
        command,
        failure: CommandFailure::Exit {
            code: status.code(),
            stderr: tail(&stderr),
        },
    })
}

/// Waits for `child`, stopping it once it ran `limit` (SIGTERM, SIGKILL
/// 10 s later); its status, and whether it was stopped.
fn wait_within(
    child: &mut std::process::Child,
    command: &str,
    limit: Duration,
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    let mut stopper = Stopper::new(limit, Duration::from_secs(10));
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Ok(status), stopper.stopped()),
            Ok(None) => {}
            Err(e) => return (Err(e), false),
        }
        stopper.tick(child, command);
        std::thread::sleep(pause);
        // Quick tools are seen at once, long ones polled gently.
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs `cmd` (stdin closed), handing each line it prints on stdout or
/// stderr to `on_line` as it comes, and stops it (SIGTERM, then SIGKILL 30 s
/// later) when it runs longer than `limit`. A failure carries its last lines.
pub(crate) fn run_streaming(
    cmd: &mut Command,
    limit: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<(), CommandError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = spawn_piped(cmd, &command)?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            // Bytes, not UTF-8 lines: a stray byte must not stop the reading (the
            // command would then die of SIGPIPE). Long lines are cut at 4 KiB.
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut r).take(4096).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut stopper = Stopper::new(limit, Duration::from_secs(30));
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut keep = |line: String, tail: &mut VecDeque<String>| {
        on_line(&line);
        if tail.len() == 10 {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => keep(line, &mut tail),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Both pipes closed but the command still runs: wait without spinning.
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(200)),
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        stopper.tick(&mut child, &command);
    };
    // What is still in the pipes (bounded: a process it left behind may hold them open).
    let drain_until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = drain_until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => keep(line, &mut tail),
            Err(_) => break,
        }
    }
    drop(readers);
    let output = Vec::from(tail).join("\n");
    let status = status.map_err(|e| CommandError {
        command: command.clone(),
        failure: CommandFailure::Spawn(e),
    })?;
    if stopper.stopped() {
        return Err(CommandError {
            command,
            failure: CommandFailure::Timeout { after: limit, output },
        });
    }
    if status.success() {
        return Ok(());
    }
    Err(CommandError {
        command,
        failure: CommandFailure::Exit {
            code: status.code(),
            stderr: output,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_stopped_at_its_limit_and_its_output_and_errors_are_kept() {
        let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2"])).unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        let failed = run(Command::new("sh").args(["-c", "echo why >&2; exit 4"])).unwrap_err();
        assert!(
            matches!(&failed.failure, CommandFailure::Exit { code: Some(4), stderr } if stderr == "why"),
            "{failed}"
        );
        // A wedged tool is stopped; helpers it started that hold its pipes do not hold lago up.
        let start = Instant::now();
        let err = run_within(
            Command::new("sh").args(["-c", "echo started >&2; sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(
            matches!(&err.failure, CommandFailure::Timeout { output, .. } if output.contains("started")),
            "{err}"
        );
        // A tool that prints more than the bound neither blocks nor fills memory.
        let big = run(Command::new("sh").args(["-c", "head -c 20000000 /dev/zero"])).unwrap();
        assert_eq!(big.stdout.len() as u64, MAX_STDOUT);
    }

    #[test]
    fn streaming_hands_over_every_line_and_keeps_the_tail_for_errors() {
        let mut seen = Vec::new();
        let err = run_streaming(
            Command::new("sh").args([
                "-c",
                "for i in $(seq 1 15); do echo out$i; done; sleep 0.3; echo err >&2; exit 3",
            ]),
            Duration::from_secs(30),
            |l| seen.push(l.to_owned()),
        )
        .unwrap_err();
        assert_eq!(seen.len(), 16, "{seen:?}");
        assert!(seen.contains(&"out15".to_owned()) && seen.contains(&"err".to_owned()));
        match err.failure {
            CommandFailure::Exit { code, stderr } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr.lines().count(), 10);
                assert!(stderr.contains("err"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        run_streaming(Command::new("true").arg("ok"), Duration::from_secs(30), |_| {}).unwrap();
    }

    #[test]
    fn streaming_stops_a_chatty_command_too_and_survives_stray_bytes() {
        let start = Instant::now();
        let err = run_streaming(
            Command::new("sh").args(["-c", "while true; do echo tick; sleep 0.05; done"]),
            Duration::from_millis(500),
            |_| {},
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(matches!(err.failure, CommandFailure::Timeout { .. }), "{err}");
        let mut seen = Vec::new();
        run_streaming(
            Command::new("sh").args(["-c", "printf 'bad \\377 byte\\n'; echo after"]),
            Duration::from_secs(30),
            |l| seen.push(l.to_owned()),
        )
        .unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1], "after");
    }

    #[test]
    fn streaming_stops_a_command_that_runs_too_long() {
        let start = Instant::now();
        let err = run_streaming(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
            |_| {},
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(
            matches!(&err.failure, CommandFailure::Timeout { output, .. } if output.contains("started")),
            "{err}"
        );
        assert!(err.to_string().contains("was stopped after running"), "{err}");
    }
}
