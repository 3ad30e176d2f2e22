//! Faults in the middle of each step. Every case ends with the same checks:
//! nothing of the environment is left (no domain, network, volume, lease or
//! workdir file), or `lago gc` names it and removes it; the user's own files
//! are intact; and the error named the cause. `docs/reliability.md` lists
//! the cases and what each shows.
//!
//! Boots VMs and stops the test namespace's libvirtd: `#[ignore]`d in a
//! plain `cargo test`, run by `scripts/test`, one case at a time.

mod common;
#[path = "common/sshd.rs"]
mod sshd;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{assert_nothing_left, booted, child, env_id_of, envs, lago_in, spawn_until_ready};
use lago::backend::Backend;
use lago::{Env, Error, InitOptions};

/// The cases stop daemons and fill filesystems: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    assert!(
        std::env::var_os("LAGO_IN_NETNS").is_some(),
        "VM tests must run inside lago's test network namespace: scripts/test"
    );
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn lago(args: &[&str]) -> Output {
    lago_in(None, args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = lago(args);
    assert!(out.status.success(), "lago {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A file of the user's beside the environment, checked at the end.
struct UserFile(PathBuf);

impl UserFile {
    fn put(dir: &Path) -> UserFile {
        let f = dir.join("mine.txt");
        fs::write(&f, "the user's own").unwrap();
        UserFile(f)
    }

    fn intact(&self) {
        assert_eq!(
            fs::read_to_string(&self.0).unwrap(),
            "the user's own",
            "{}",
            self.0.display()
        );
    }
}

/// Destroys the environment in a workdir when dropped, whatever happened
/// (a no-op once the case destroyed it): a failing case leaks nothing.
struct DestroyOnDrop(PathBuf, Option<String>);

impl Drop for DestroyOnDrop {
    fn drop(&mut self) {
        let _ = lago::env::destroy_workdir(&self.0, self.1.as_deref());
    }
}

/// Nothing of env `id` is left on the daemon, in the leases or on disk (its
/// volumes included, on a pool that exists).
fn nothing_left(id: &str, workdir: &Path, uri: Option<&str>) {
    assert_nothing_left(id, workdir, Duration::from_secs(30));
    let b = Backend::connect(uri).unwrap();
    let prefix = format!("lago-{id}-");
    assert!(
        b.delete_volumes_with_prefix(&prefix).unwrap().is_empty(),
        "volumes of {id} left"
    );
}

fn libvirtd_pid() -> i32 {
    fs::read_to_string("/run/libvirtd.pid").unwrap().trim().parse().unwrap()
}

/// Starts the test namespace's libvirtd again (and waits until it answers).
fn restart_libvirtd() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-run");
    let st = Command::new(script).arg("--ensure").status().unwrap();
    assert!(st.success(), "libvirtd did not come back");
    assert!(Backend::connect(None).is_ok());
}

/// Runs `case` with a tmpfs (`opts`) mounted at `at`, unmounted after it
/// whatever happens.
fn with_tmpfs(name: &str, opts: &str, at: &Path, case: impl FnOnce() + std::panic::UnwindSafe) {
    mount(name, opts, at);
    let outcome = std::panic::catch_unwind(case);
    let _ = Command::new("umount").arg(at).status();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn mount(kind: &str, opts: &str, at: &Path) {
    fs::create_dir_all(at).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, kind])
        .arg(at)
        .status()
        .unwrap();
    assert!(st.success(), "mount {opts} at {}", at.display());
}

#[test]
#[ignore = "boots VMs and kills libvirtd: run through scripts/test"]
fn libvirtd_killed_during_start() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mine = UserFile::put(tmp.path());
    let w = tmp.path().join("env");
    let ws = w.to_str().unwrap();
    ok(&["-w", ws, "init", envs("tiny1.yaml").to_str().unwrap()]);
    let _cleanup = DestroyOnDrop(w.clone(), None);
    let id = env_id_of(&w, None);
    let notes = UserFile::put(&w);
    let start = Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(["-w", ws, "start"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the domain runs, while `start` waits for the guest.
    let b = Backend::connect(None).unwrap();
    let t = Instant::now();
    while b.domains_with_prefix(&format!("lago-{id}-")).unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "the domain never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(b);
    Command::new("kill")
        .args(["-9", &libvirtd_pid().to_string()])
        .status()
        .unwrap();
    let out = start.wait_with_output().unwrap();
    restart_libvirtd();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("the connection to libvirtd (qemu:///system) broke during start"),
        "{said}"
    );
    ok(&["-w", ws, "destroy", "--yes"]);
    // The user's notes in the workdir keep it: they are all that is left there.
    notes.intact();
    let left: Vec<_> = fs::read_dir(&w).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["mine.txt"]);
    fs::remove_dir_all(&w).unwrap();
    nothing_left(&id, &w, None);
    mine.intact();
}

/// The QEMU process of one VM of a pair killed while a test talks to it.
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn one_vms_qemu_killed_mid_test() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mine = UserFile::put(tmp.path());
    let env = Env::init(
        envs("pair.yaml"),
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            ..Default::default()
        },
    )
    .unwrap();
    let (id, w) = (env.id().to_string(), env.workdir().to_path_buf());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start(&[]).unwrap();
        let needle = format!("guest=lago-{id}-vm01");
        let qemu = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find(|e| {
                fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .and_then(|e| e.file_name().to_str().map(str::to_owned))
            .expect("vm01's QEMU");
        Command::new("kill").args(["-9", &qemu]).status().unwrap();
        let e = env
            .vm("vm01")
            .unwrap()
            .succeed_within(["true"], Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(&e, Error::VmWentDown { vm, .. } if vm == "vm01"),
            "the error names the VM whose QEMU died: {e}"
        );
        assert!(e.to_string().contains("not running any more"), "{e}");
        // The other VM goes on.
        assert_eq!(env.vm("vm02").unwrap().succeed(["hostname"]).unwrap().trim(), "vm02");
    }));
    env.destroy().unwrap();
    nothing_left(&id, &w, None);
    mine.intact();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[test]
#[ignore = "mounts a filesystem: run through scripts/test"]
fn the_workdirs_filesystem_full_during_init() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    with_tmpfs("lago-small", "size=300k", &small, || {
        let mine = UserFile::put(&small);
        let w = small.join("env");
        let out = lago(&["-w", w.to_str().unwrap(), "init", envs("tiny1.yaml").to_str().unwrap()]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains("No space left on device") && said.contains(&w.display().to_string()),
            "the error names the cause and the file: {said}"
        );
        // Rolled back: the folder it made, its leases, its use records.
        assert!(!w.exists());
        let leases = lago::LeaseStore::from_env().list().unwrap();
        assert!(leases.iter().all(|l| !l.workdir.starts_with(&small)), "{leases:?}");
        mine.intact();
    });
}

/// SIGINT while a test runs: the teardown starts; a second one says what is
/// still being removed, a third exits at once (the reaper finishes the job).
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn sigint_twice_and_three_times_during_teardown() {
    let _one = serial();
    use rustix::process::{Pid, Signal, kill_process};
    for signals in [2, 3] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, stderr, rest) = spawn_until_ready(tmp.path());
        let (id, workdir) = booted(&stderr);
        let pid = Pid::from_raw(c.id() as i32).unwrap();
        for _ in 0..signals {
            kill_process(pid, Signal::INT).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        let status = c.wait().unwrap();
        let said: String = rest.map_while(Result::ok).map(|l| l + "\n").collect();
        assert_eq!(status.code(), Some(130), "{said}");
        if signals == 2 {
            assert!(said.contains(&format!("still tearing down env {id}")), "{said}");
        } else {
            assert!(said.contains("exiting now") && said.contains(&id), "{said}");
        }
        nothing_left(&id, &workdir, None);
    }
}

/// The hypervisor host's sshd dies while a copy runs through it: the copy
/// fails naming the VM; once sshd is back, the environment goes.
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn the_remote_sshd_killed_mid_copy() {
    let _one = serial();
    let mut sshd = sshd::Sshd::start();
    let uri = sshd.uri();
    let tmp = tempfile::tempdir().unwrap();
    let mine = UserFile::put(tmp.path());
    let env = Env::init(
        envs("tiny1.yaml"),
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            libvirt_uri: Some(uri.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let (id, w) = (env.id().to_string(), env.workdir().to_path_buf());
    let _cleanup = DestroyOnDrop(w.clone(), Some(uri.clone()));
    env.start(&[]).unwrap();
    let big = tmp.path().join("big.bin");
    fs::write(&big, vec![7u8; 48 << 20]).unwrap();
    let t = Instant::now();
    let copy = std::thread::scope(|s| {
        let copying = s.spawn(|| env.vm("vm01").unwrap().copy_to(&big, "/tmp/big.bin"));
        std::thread::sleep(Duration::from_millis(700));
        sshd.kill_all();
        copying.join().unwrap()
    });
    let took = t.elapsed();
    // Back first, so that whatever the checks say, the teardown can reach the hypervisor.
    sshd.restart();
    let e = copy.unwrap_err();
    assert!(e.to_string().contains("vm01"), "the error names the VM: {e}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // The env's own libvirt connection broke with sshd: its teardown opens another.
    env.destroy().unwrap();
    nothing_left(&id, &w, Some(&uri));
    mine.intact();
}

/// `lago gc` run again and again while a test binary boots and uses its
/// environment: its owner runs, so nothing of it is touched.
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn gc_racing_a_booting_test_binary() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = child("fixture", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sweeps = 0;
    let mut removed = Vec::new();
    while c.try_wait().unwrap().is_none() {
        let out = lago(&["gc"]);
        sweeps += 1;
        removed.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(": removed"))
                .map(str::to_owned),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = c.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("child: hostname vm01"),
        "{stdout}\n{stderr}"
    );
    let (id, workdir) = booted(&stderr);
    assert!(sweeps >= 3, "gc ran {sweeps} times");
    assert!(
        removed.iter().all(|l| !l.contains(&id)),
        "gc removed the live env: {removed:?}"
    );
    nothing_left(&id, &workdir, None);
}

#[test]
#[ignore = "mounts a filesystem: run through scripts/test"]
fn a_read_only_lease_dir() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let leases = tmp.path().join("leases");
    with_tmpfs("lago-ro", "ro,size=64k", &leases, || {
        let mine = UserFile::put(tmp.path());
        let w = tmp.path().join("env");
        let out = Command::new(env!("CARGO_BIN_EXE_lago"))
            .env("LAGO_LEASE_DIR", &leases)
            .args(["-w", w.to_str().unwrap(), "init", envs("tiny1.yaml").to_str().unwrap()])
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&leases.display().to_string()) && said.contains("Read-only file system"),
            "the error names the lease dir and why: {said}"
        );
        assert!(!w.exists(), "nothing of the workdir is left");
        mine.intact();
    });
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn a_corrupt_state_file() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mine = UserFile::put(tmp.path());
    let w = tmp.path().join("env");
    let ws = w.to_str().unwrap();
    ok(&["-w", ws, "init", envs("tiny1.yaml").to_str().unwrap()]);
    let _cleanup = DestroyOnDrop(w.clone(), None);
    ok(&["-w", ws, "start"]);
    let id = env_id_of(&w, None);
    let state = w.join("env.json");
    let whole = fs::read_to_string(&state).unwrap();
    fs::write(&state, &whole[..whole.len() / 2]).unwrap();
    let out = lago(&["-w", ws, "status"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&state.display().to_string()) && said.contains("corrupt"),
        "the error names the file: {said}"
    );
    // destroy still finds everything through the env id.
    ok(&["-w", ws, "destroy", "--yes"]);
    nothing_left(&id, &w, None);
    mine.intact();
}

/// `scripts/setup-host` in a mount namespace of its own, on stand-ins for
/// `/boot` and libvirt's autostart folder: it removes the autostart of
/// libvirt's `default` network only, and makes only the kernel tiny copies
/// readable.
#[test]
#[ignore = "runs scripts/setup-host: run through scripts/test"]
fn setup_host_touches_only_what_lago_owns() {
    let _one = serial();
    let module = fs::read_dir("/lib/modules")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.ends_with("-cloud-amd64"))
        .max()
        .expect("a cloud kernel's modules (scripts/setup-host installs linux-image-cloud-amd64)");
    let script = format!(
        r#"set -e
mount -t tmpfs lago-boot /boot
mount -t tmpfs lago-autostart /etc/libvirt/qemu/networks/autostart
for k in vmlinuz-{module} vmlinuz-1.0.0-1-cloud-amd64 vmlinuz-{module}-other vmlinuz-9.9.9-amd64; do
    echo kernel > /boot/$k; chmod 0600 /boot/$k
done
touch /etc/libvirt/qemu/networks/autostart/default.xml /etc/libvirt/qemu/networks/autostart/mine.xml
LAGO_SKIP_APT=1 {setup} >/dev/null 2>&1
stat -c '%a %n' /boot/vmlinuz-*
ls /etc/libvirt/qemu/networks/autostart
"#,
        setup = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts/setup-host")
            .display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let lines: Vec<String> = BufReader::new(out.stdout.as_slice())
        .lines()
        .map_while(Result::ok)
        .collect();
    let readable: Vec<&String> = lines.iter().filter(|l| l.starts_with("644 ")).collect();
    assert_eq!(readable, [&format!("644 /boot/vmlinuz-{module}")], "{said}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("600 ")).count(), 3, "{said}");
    let has = |n: &str| lines.iter().any(|l| l == n);
    assert!(has("mine.xml") && !has("default.xml"), "{said}");
}
