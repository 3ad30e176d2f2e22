//! An interactive session bound to this terminal (`lago shell`): a PTY in
//! raw mode that follows the window's size.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use ssh2::Session;

use super::SshError;
use super::nonblock::wait_socket;

pub(super) fn interactive(vm: &str, sess: &Session, tcp: &TcpStream, command: Option<&str>) -> Result<i32, SshError> {
    use rustix::termios;
    let shown = command.unwrap_or("<login shell>").to_owned();
    let chan_err = |source| SshError::Channel {
        vm: vm.to_owned(),
        command: shown.clone(),
        source,
    };
    let stdin = std::io::stdin();
    let tty = termios::isatty(&stdin);
    let size = || {
        termios::tcgetwinsize(std::io::stdout())
            .ok()
            .map(|w| (u32::from(w.ws_col), u32::from(w.ws_row)))
    };
    let mut ch = sess.channel_session().map_err(chan_err)?;
    if tty {
        let (w, h) = size().unwrap_or((80, 24));
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        ch.request_pty(&term, None, Some((w, h, 0, 0))).map_err(chan_err)?;
    }
    match command {
        Some(c) => ch.exec(c).map_err(chan_err)?,
        None => ch.shell().map_err(chan_err)?,
    }
    let saved = if tty { termios::tcgetattr(&stdin).ok() } else { None };
    if let Some(orig) = &saved {
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw);
    }
    let result = pump(vm, &shown, sess, tcp, &mut ch, &size);
    if let Some(orig) = &saved {
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, orig);
    }
    result
}

fn pump(
    vm: &str,
    shown: &str,
    sess: &Session,
    tcp: &TcpStream,
    ch: &mut ssh2::Channel,
    size: &dyn Fn() -> Option<(u32, u32)>,
) -> Result<i32, SshError> {
    use rustix::event::{PollFd, PollFlags, poll};
    let io_err = |source| SshError::Io {
        vm: vm.to_owned(),
        command: shown.to_owned(),
        source,
    };
    sess.set_blocking(false);
    let mut last = size();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 16 * 1024];
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = loop {
        for (is_err, sink) in [(false, &mut out as &mut dyn Write), (true, &mut err as &mut dyn Write)] {
            loop {
                let r = if is_err {
                    ch.stderr().read(&mut buf)
                } else {
                    ch.read(&mut buf)
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = sink.write_all(&buf[..n]);
                        let _ = sink.flush();
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        if ch.eof() {
            break Ok(());
        }
        let now = size();
        if now != last {
            if let Some((w, h)) = now {
                let _ = ch.request_pty_size(w, h, None, None);
            }
            last = now;
        }
        let tcp_fd = tcp.as_fd();
        let mut fds = vec![PollFd::new(&tcp_fd, PollFlags::IN)];
        let stdin_fd = stdin.as_fd();
        if stdin_open {
            fds.push(PollFd::new(&stdin_fd, PollFlags::IN));
        }
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let _ = poll(&mut fds, Some(&ts));
        let ready = stdin_open && fds.get(1).is_some_and(|f| !f.revents().is_empty());
        if ready {
            match rustix::io::read(stdin_fd, &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = ch.send_eof();
                }
                Ok(n) => {
                    let mut data = &buf[..n];
                    while !data.is_empty() {
                        match ch.write(data) {
                            Ok(k) => data = &data[k..],
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                wait_socket(sess, tcp, Duration::from_millis(20))
                            }
                            Err(e) => return Err(io_err(e)),
                        }
                    }
                }
            }
        }
    };
    sess.set_blocking(true);
    result?;
    let _ = ch.wait_close();
    Ok(ch.exit_status().unwrap_or(-1))
}
