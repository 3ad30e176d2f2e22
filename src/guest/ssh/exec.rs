//! One command over an open session: its input streamed in, its output
//! streamed out, bounded by a deadline, ended early by the process's exit
//! or the caller's interrupt check.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ssh2::{Channel, Session};

use super::nonblock::{retry, wait_socket, would_block};
use super::{CommandStatus, SshError};

/// A command's outcome with raw output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatus {
    /// Exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Standard output, as raw bytes.
    pub out: Vec<u8>,
    /// Standard error, as raw bytes.
    pub err: Vec<u8>,
}

impl RawStatus {
    pub(super) fn lossy(self) -> CommandStatus {
        CommandStatus {
            code: self.code,
            out: String::from_utf8_lossy(&self.out).into_owned(),
            err: String::from_utf8_lossy(&self.err).into_owned(),
        }
    }
}

/// How often an interruptible command asks whether to stop waiting.
pub const INTERRUPT_EVERY: Duration = Duration::from_millis(200);

/// How a command failed.
pub(super) enum Failure {
    /// The session looks dead: reconnecting may help.
    Stale(SshError),
    /// Reconnecting would not help.
    Fatal(SshError),
}

/// Where a command's input comes from and its output goes, and what may
/// end the wait for it early.
pub(crate) struct Streams<'a> {
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    /// Asked every [`INTERRUPT_EVERY`]: a reason ends the wait.
    pub interrupt: Option<&'a dyn Fn() -> Option<String>>,
}

/// The most of one output stream read in one pass (a guest streaming
/// without a pause cannot outrun the deadline).
const PASS_BYTES: usize = 1 << 20;

/// Runs `command` on session `sess` (socket `tcp` for polling) with `io`,
/// within `timeout`; its exit code (`-1` when killed by a signal).
pub(super) fn run(
    vm: &str,
    sess: &Session,
    tcp: &TcpStream,
    command: &str,
    io: &mut Streams<'_>,
    timeout: Option<Duration>,
) -> Result<i32, Failure> {
    let _call = crate::util::exit::InFlight::enter();
    let exec = Exec {
        vm,
        command,
        sess,
        tcp,
        timeout,
        // (A timeout too far to represent is no deadline.)
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
    };
    sess.set_blocking(false);
    let result = exec.run(io);
    sess.set_blocking(true);
    result
}

/// One command's run: what it needs to make its errors and to know when to stop.
struct Exec<'a> {
    vm: &'a str,
    command: &'a str,
    sess: &'a Session,
    tcp: &'a TcpStream,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl Exec<'_> {
    fn run(&self, io: &mut Streams<'_>) -> Result<i32, Failure> {
        // Opening the channel: a failure here usually means a dead session.
        let mut ch = retry(
            self.sess,
            self.tcp,
            || self.sess.channel_session(),
            || self.stop(),
            |e| Failure::Stale(self.channel_error(e)),
        )?;
        retry(
            self.sess,
            self.tcp,
            || ch.exec(self.command),
            || self.stop(),
            |e| Failure::Stale(self.channel_error(e)),
        )?;
        let input_failed = self.stream(&mut ch, io)?;
        retry(
            self.sess,
            self.tcp,
            || ch.wait_close(),
            || self.stop(),
            |e| Failure::Fatal(self.channel_error(e)),
        )?;
        let code = ch.exit_status().map_err(|e| Failure::Fatal(self.channel_error(e)))?;
        let code = match ch.exit_signal() {
            Ok(sig) if sig.exit_signal.is_some() => -1,
            _ => code,
        };
        // A command may exit without reading all its input: its exit code tells.
        match input_failed {
            Some(e) if code == 0 => Err(Failure::Fatal(self.io_error(e))),
            _ => Ok(code),
        }
    }

    /// Moves input in and output out until the command's output ends;
    /// returns why the input could not all be written, if it could not.
    fn stream(&self, ch: &mut Channel, io: &mut Streams<'_>) -> Result<Option<std::io::Error>, Failure> {
        let mut input = Input::default();
        let mut last_asked = Instant::now();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // A keepalive now and then (libssh2 sends one only when due).
            let _ = self.sess.keepalive_send();
            let fed = input.feed(ch, io.stdin).map_err(|e| {
                let _ = ch.close();
                Failure::Fatal(self.io_error(e))
            })?;
            let read = self.drain(ch, io, &mut buf)?;
            if ch.eof() {
                return Ok(input.failed);
            }
            if let Some(reason) = self.stop() {
                let _ = ch.close();
                return Err(reason);
            }
            if let Some(ask) = io.interrupt
                && last_asked.elapsed() >= INTERRUPT_EVERY
            {
                last_asked = Instant::now();
                if let Some(reason) = ask() {
                    let _ = ch.close();
                    return Err(Failure::Fatal(SshError::Interrupted {
                        vm: self.vm.to_owned(),
                        command: self.command.to_owned(),
                        reason,
                    }));
                }
            }
            if !fed && !read {
                wait_socket(self.sess, self.tcp, Duration::from_millis(50));
            }
        }
    }

    /// Copies what the command printed (stdout, then stderr) to `io`;
    /// whether anything came.
    fn drain(&self, ch: &mut Channel, io: &mut Streams<'_>, buf: &mut [u8]) -> Result<bool, Failure> {
        let mut progressed = false;
        for stream in [0, 1] {
            let mut this_pass = 0;
            while this_pass < PASS_BYTES {
                let r = if stream == 0 {
                    ch.read(buf)
                } else {
                    ch.stderr().read(buf)
                };
                let n = match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Failure::Fatal(self.io_error(e))),
                };
                let sink: &mut dyn Write = if stream == 0 { &mut *io.out } else { &mut *io.err };
                if let Err(e) = sink.write_all(&buf[..n]) {
                    let _ = ch.close();
                    return Err(Failure::Fatal(self.io_error(e)));
                }
                this_pass += n;
                progressed = true;
            }
        }
        Ok(progressed)
    }

    /// Why to stop waiting now: the deadline passed, or the process exits.
    fn stop(&self) -> Option<Failure> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(Failure::Fatal(SshError::Timeout {
                vm: self.vm.to_owned(),
                command: self.command.to_owned(),
                timeout: self.timeout.unwrap_or_default(),
            }));
        }
        crate::util::exit::shutting_down().then(|| {
            Failure::Fatal(SshError::Exiting {
                vm: self.vm.to_owned(),
                command: self.command.to_owned(),
            })
        })
    }

    fn channel_error(&self, source: ssh2::Error) -> SshError {
        SshError::Channel {
            vm: self.vm.to_owned(),
            command: self.command.to_owned(),
            source,
        }
    }

    fn io_error(&self, source: std::io::Error) -> SshError {
        SshError::Io {
            vm: self.vm.to_owned(),
            command: self.command.to_owned(),
            source,
        }
    }
}

/// A command's input on its way: the chunk read from the caller and how
/// much of it went, whether the input ended (and EOF was sent), and why
/// writing it failed (the command stopped reading).
#[derive(Default)]
struct Input {
    pending: Vec<u8>,
    sent: usize,
    done: bool,
    eof_sent: bool,
    failed: Option<std::io::Error>,
}

impl Input {
    /// Moves the next bytes of `stdin` into the channel, then EOF once it
    /// ended; whether anything moved. Reading `stdin` failing is an error.
    fn feed(&mut self, ch: &mut Channel, stdin: &mut dyn Read) -> std::io::Result<bool> {
        if self.sent == self.pending.len() && !self.done {
            self.pending.resize(32 * 1024, 0);
            match stdin.read(&mut self.pending) {
                Ok(0) => {
                    self.pending.clear();
                    self.done = true;
                }
                Ok(n) => self.pending.truncate(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => self.pending.clear(),
                Err(e) => return Err(e),
            }
            self.sent = 0;
        }
        let mut progressed = false;
        if self.sent < self.pending.len() {
            match ch.write(&self.pending[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    progressed = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    // The command stopped reading: no more input, no EOF to send.
                    self.failed = Some(e);
                    self.done = true;
                    self.eof_sent = true;
                    self.pending.clear();
                    self.sent = 0;
                }
            }
        }
        if self.done && !self.eof_sent {
            match ch.send_eof() {
                Ok(()) => self.eof_sent = true,
                Err(e) if would_block(&e) => {}
                Err(_) => self.eof_sent = true,
            }
        }
        Ok(progressed)
    }
}
