//! Helpers shared by integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lago::backend::Backend;
use lago::lease::LeaseStore;

/// VM tests refuse to run outside the test network namespace (where they
/// would create networks in the host's).
pub fn in_test_namespace() {
    assert!(
        std::env::var_os("LAGO_IN_NETNS").is_some(),
        "VM tests must run inside lago's test network namespace: scripts/test, or scripts/netns-run cargo test -- --include-ignored"
    );
}

/// An init file of `tests/envs/` (or of `LAGO_TEST_ENVS`, a copy a test run
/// as another user can read).
pub fn envs(name: &str) -> PathBuf {
    match std::env::var_os("LAGO_TEST_ENVS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(name),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envs").join(name),
    }
}

/// `cmd` on `vm` over SSH, which must succeed: its stdout.
pub fn out(vm: &lago::Vm, cmd: &[&str]) -> String {
    let st = vm.ssh(cmd).unwrap();
    assert!(st.success(), "{}: {cmd:?}: {st:?}", vm.name());
    st.out
}

/// `vm`'s clock is the host's, within 2 s.
pub fn clock_is_the_hosts(vm: &lago::Vm) {
    let guest: i64 = out(vm, &["date", "+%s"]).trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - host).abs() <= 2,
        "{}: guest clock {guest}, host {host}",
        vm.name()
    );
}

/// Every NIC of `vm` has its planned address (a /24).
pub fn has_planned_addresses(vm: &lago::Vm) {
    let addrs = out(vm, &["ip", "-4", "-o", "addr"]);
    for nic in &vm.plan().nics {
        let ip = nic.ip.unwrap().to_string();
        assert!(
            addrs.contains(&format!("{ip}/24")),
            "{}: {ip} missing in {addrs}",
            vm.name()
        );
    }
}

/// The `child` test binary (`tests/child.rs`), built beside the running test binary by `cargo test`.
pub fn child_exe() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("child-") && p.extension().is_none()
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .expect("the `child` test binary is built (cargo test builds it; or: cargo test --test child)")
}

/// The `child` test binary in `mode`, its artifacts in `artifacts`.
pub fn child(mode: &str, artifacts: &Path) -> Command {
    let mut c = Command::new(child_exe());
    c.env("LAGO_CHILD", mode)
        .env("LAGO_ARTIFACTS_DIR", artifacts)
        .env("CARGO_MANIFEST_DIR", manifest_dir())
        .env_remove("LAGO_KEEP");
    c
}

/// Starts the child whose test sleeps, and returns once it has booted, with
/// what it printed on stderr so far and the rest of its stderr (kept open:
/// the child still writes to it when interrupted).
pub fn spawn_until_ready(
    artifacts: &Path,
) -> (
    std::process::Child,
    String,
    impl Iterator<Item = std::io::Result<String>>,
) {
    let mut c = child("sleep", artifacts)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut lines = BufReader::new(c.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains("child: ready to be interrupted") {
            break;
        }
    }
    (c, stderr, lines)
}

/// Whether `line` is the harness's line for an environment it started
/// ("lago: booted …", or "lago: restored …" from a boot image).
pub fn is_boot_line(line: &str) -> bool {
    line.contains("lago: booted ") || line.contains("lago: restored ")
}

/// `(env id, workdir)` from the harness's "booted (or restored) … as env ID in WORKDIR" line.
pub fn booted(stderr: &str) -> (String, PathBuf) {
    let line = stderr
        .lines()
        .find(|l| is_boot_line(l))
        .unwrap_or_else(|| panic!("no boot line in:\n{stderr}"));
    let rest = line.split(" as env ").nth(1).unwrap();
    let (id, rest) = rest.split_once(" in ").unwrap();
    let workdir = rest.rsplit_once(" (").map(|(w, _)| w).unwrap_or(rest);
    (id.to_owned(), PathBuf::from(workdir))
}

/// Waits (the watchdog works after the binary is gone) until nothing of env `id` is left.
pub fn assert_nothing_left(id: &str, workdir: &Path, within: Duration) {
    let b = Backend::connect(None).unwrap();
    let prefix = format!("lago-{id}-");
    let start = Instant::now();
    loop {
        let domains = b.domains_with_prefix(&prefix).unwrap();
        let nets = b.networks_with_prefix(&prefix).unwrap();
        let leases: Vec<_> = LeaseStore::from_env()
            .list()
            .unwrap()
            .into_iter()
            .filter(|l| l.env_id.as_str() == id)
            .collect();
        let root_left = workdir.exists();
        if domains.is_empty() && nets.is_empty() && leases.is_empty() && !root_left {
            return;
        }
        assert!(
            start.elapsed() <= within,
            "after {within:?}, env {id} left: domains {domains:?}, networks {nets:?}, leases {leases:?}, workdir left: {root_left}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid of the reaper that watches `workdir`.
pub fn reaper_of(workdir: &Path) -> Option<i32> {
    let needle = format!("LAGO_REAPER_WORKDIR={}\0", workdir.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        String::from_utf8_lossy(&environ).contains(&needle).then_some(pid)
    })
}

/// The crate's folder: as cargo sets it when it runs a test, or a copy's
/// (`scripts/rootless-test` runs tests as a user who cannot read the clone).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The `lago` binary of this build (or a copy of it, `LAGO_TEST_BIN`).
pub fn lago_exe() -> PathBuf {
    std::env::var_os("LAGO_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_lago")))
}

/// The `lago` binary of this build, with backtraces on.
pub fn lago_cmd() -> Command {
    let mut c = Command::new(lago_exe());
    c.env("RUST_BACKTRACE", "1");
    c
}

/// `lago args…`, in the mount namespace of process `ns` when given.
pub fn lago_in(ns: Option<u32>, args: &[&str]) -> std::process::Output {
    let exe = lago_exe();
    let mut c = match ns {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-m", "--"]).arg(&exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(args).output().unwrap()
}

pub fn env_id_of(workdir: &Path, ns: Option<u32>) -> String {
    let out = lago_in(ns, &["-w", workdir.to_str().unwrap(), "status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["env_id"].as_str().unwrap().to_owned()
}

/// `lago -w WORKDIR destroy --yes`, which must succeed.
pub fn destroy_with_cli(workdir: &Path) {
    let destroyed = lago_cmd()
        .arg("-w")
        .arg(workdir)
        .args(["destroy", "--yes"])
        .output()
        .unwrap();
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
}

/// How each VM of `env` came up at its last start (`restored`, `booted`).
pub fn came_up(env: &lago::Env) -> Vec<String> {
    env.status()
        .unwrap()
        .vms
        .into_iter()
        .filter_map(|v| v.came_up)
        .collect()
}
