//! An OpenSSH server for remote-hypervisor tests: started by the test in the
//! test network namespace on 127.0.0.1, with its own config, host key,
//! authorized key and port (the user's `~/.ssh` is never touched), stopped
//! when dropped. It plays the hypervisor host: libvirt's `qemu+ssh://` URI
//! and lago's jump to the guests both go through it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    config: PathBuf,
    /// Holds the server's files (removed when dropped).
    _dir: tempfile::TempDir,
    pub port: u16,
    /// The client's private key (authorized for root).
    pub key: PathBuf,
    /// A known_hosts file holding the server's key under `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    /// `ssh` with that known_hosts file and strict checking (libvirt's `command=`).
    pub ssh_wrapper: PathBuf,
    /// sshd's log (LogLevel DEBUG1: it names every forwarded channel).
    pub log: PathBuf,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lago-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.is_file(), "openssh-server is needed (scripts/test installs it)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client"));
        fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let log = d.join("sshd.log");
        fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 AllowTcpForwarding yes\nLogLevel DEBUG1\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // Privilege separation needs this folder (it holds nothing).
        fs::create_dir_all("/run/sshd").unwrap();
        let child = spawn(&d.join("sshd_config"), &log);
        let host_pub = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let key_part: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let known_hosts = d.join("known_hosts");
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {}\n", key_part.join(" "))).unwrap();
        let ssh_wrapper = d.join("ssh");
        fs::write(
            &ssh_wrapper,
            format!(
                "#!/bin/sh\nexec ssh -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes \"$@\"\n",
                known_hosts.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&ssh_wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        listening(port);
        Sshd {
            child,
            config: d.join("sshd_config"),
            key: d.join("client"),
            known_hosts,
            ssh_wrapper,
            log,
            port,
            _dir: dir,
        }
    }

    /// `qemu+ssh://root@127.0.0.1:<port>/system` with this server's key files.
    pub fn uri(&self) -> String {
        format!(
            "qemu+ssh://root@127.0.0.1:{}/system?keyfile={}&known_hosts={}&command={}",
            self.port,
            self.key.display(),
            self.known_hosts.display(),
            self.ssh_wrapper.display()
        )
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the server and every session it forked, as a crash of the
    /// host's sshd would (libvirt's connection and lago's jumps break).
    pub fn kill_all(&mut self) {
        let root = self.child.id();
        let mut pids = vec![root];
        // Descendants, found by their parents (sessions fork twice).
        for _ in 0..4 {
            for e in fs::read_dir("/proc").unwrap().flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                    continue;
                };
                let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid.is_some_and(|p| pids.contains(&p)) && !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
        for pid in pids.iter().rev() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
    }

    /// Starts the server again: the same config, key and port.
    pub fn restart(&mut self) {
        self.child = spawn(&self.config, &self.log);
        listening(self.port);
    }
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(config)
        .arg("-E")
        .arg(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("sshd starts")
}

fn listening(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "sshd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
