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
        /// The limit.
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

/// Runs `cmd` to completion; a non-zero exit is an error carrying the end of stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output, CommandError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let out = cmd.output().map_err(|e| CommandError {
        command: command.clone(),
        failure: CommandFailure::Spawn(e),
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    Err(CommandError {
        command,
        failure: CommandFailure::Exit {
            code: out.status.code(),
            stderr: tail,
        },
    })
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
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CommandError {
            command: command.clone(),
            failure: CommandFailure::Spawn(e),
        })?;
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
    let start = Instant::now();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut keep = |line: String, tail: &mut VecDeque<String>| {
        on_line(&line);
        if tail.len() == 10 {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    let mut timed_out = false;
    let mut term_sent: Option<Instant> = None;
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
        if start.elapsed() > limit {
            timed_out = true;
            let pid = rustix::process::Pid::from_child(&child);
            match term_sent {
                None => {
                    tracing::warn!(%command, ?limit, "stopping a command that ran too long");
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    term_sent = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(30) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
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
    if timed_out {
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
