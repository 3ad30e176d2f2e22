//! Running host tools (qemu-img, mkfs.ext4, ldd) with their stderr kept for errors.

use std::fmt;
use std::process::{Command, Output};

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
