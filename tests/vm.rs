//! Real VMs under libvirt + QEMU (TCG here), talked to over SSH.
//!
//! These boot guests, so they are `#[ignore]`d in a plain `cargo test` and run
//! by `scripts/test` (`--include-ignored`) inside the test network namespace;
//! run outside it, they refuse to start instead of creating networks in the
//! host's namespace. Few environments, many assertions each.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lago::backend::{Backend, VmState};
use lago::lease::LeaseStore;
use lago::{Env, Error, InitOptions, Vm};

use common::{assert_nothing_left, envs, in_test_namespace, out};

const NEEDS_VMS: &str = "boots VMs: run through scripts/test (inside the test network namespace)";

/// The host-wide lease store is used, as in real use: tests running at the
/// same time must get different subnets.
fn options(tmp: &Path) -> InitOptions {
    InitOptions {
        workdir: Some(tmp.join("env")),
        ..Default::default()
    }
}

/// Leases held by the environment in `workdir`.
fn leases_of(workdir: &Path) -> usize {
    LeaseStore::from_env()
        .list()
        .unwrap()
        .iter()
        .filter(|l| l.workdir == workdir)
        .count()
}

/// Nothing of env `id` is left: no domain, no network, no lease, no workdir.
fn sha256_local(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(fs::read(path).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn pair_of_vms_end_to_end() {
    in_test_namespace();
    let _ = NEEDS_VMS;
    let tmp = tempfile::tempdir().unwrap();
    let env = Env::init(envs("pair.yaml"), options(tmp.path())).unwrap();
    let id = env.id().to_string();
    let workdir = env.workdir().to_path_buf();
    // Whatever fails below, the environment goes away.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&env, tmp.path())));
    env.destroy().unwrap();
    assert_nothing_left(&id, &workdir, Duration::ZERO);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn exercise(env: &Env, tmp: &Path) {
    // Workdir and key permissions.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(env.workdir()), 0o700);
    assert_eq!(mode(&env.workdir().join("id_ed25519")), 0o600);

    env.start(&[]).unwrap();
    let vms = env.get_vms();
    assert_eq!(vms.len(), 2);
    let (vm01, vm02) = (&vms["vm01"], &vms["vm02"]);
    assert_eq!(vm01.state().unwrap(), VmState::Running);
    names_and_disks(vm01, vm02);
    commands(vm01);
    copies_round_trip(vm01, tmp);
    host_key_is_pinned(env, vm01, tmp);
    a_second_process_attaches(env);
    stop_start_and_shutdown(env, vm01, vm02);
}

fn names_and_disks(vm01: &Vm, vm02: &Vm) {
    for vm in [vm01, vm02] {
        let st = vm.ssh(["hostname", "-f"]).unwrap();
        assert_eq!(st.code, 0, "{st:?}");
        assert_eq!(st.out.trim(), format!("{}.lago.local", vm.name()));
    }
    let ping = vm01.ssh(["ping", "-c", "1", "-W", "3", "vm02"]).unwrap();
    assert!(ping.success(), "vm01 cannot ping vm02 by name: {ping:?}");
    assert!(ping.out.contains(&vm02.ip().to_string()), "{ping:?}");
    let ping = vm02.ssh(["ping", "-c", "1", "-W", "3", "vm01.lago.local"]).unwrap();
    assert!(ping.success(), "vm02 cannot ping vm01.lago.local: {ping:?}");

    // vm02 booted from a virtio-scsi disk and has the 1 GiB empty disk.
    // (tiny's kernel mounts the root itself, so /proc/mounts names it /dev/root: the device numbers tell.)
    let root = vm02.ssh(["sh", "-c", "stat -c %d /; cat /sys/block/sda/dev"]).unwrap();
    assert!(root_is(&root.out), "root is not /dev/sda: {root:?}");
    let size = vm02.ssh(["cat", "/sys/block/vda/size"]).unwrap();
    assert_eq!(size.out.trim().parse::<u64>().unwrap() * 512, 1 << 30, "{size:?}");
}

fn big_blob() -> Vec<u8> {
    (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect()
}

fn commands(vm01: &Vm) {
    // Exit codes and stderr.
    let st = vm01
        .ssh(["sh", "-c", "echo out; echo 'it failed' >&2; exit 7"])
        .unwrap();
    assert_eq!((st.code, st.out.as_str(), st.err.as_str()), (7, "out\n", "it failed\n"));
    let st = vm01.ssh(["ls", "/no/such/path"]).unwrap();
    assert!(!st.success() && st.err.contains("No such file"), "{st:?}");
    // Arguments are quoted, not re-split by the remote shell.
    let st = vm01.ssh(["echo", "a  b", "$HOME"]).unwrap();
    assert_eq!(st.out, "a  b $HOME\n");

    // Stdin data, small and 1 MiB.
    let st = vm01.ssh_with("cat", Some(b"hello from stdin"), None).unwrap();
    assert_eq!(st.out, "hello from stdin");
    let st = vm01.ssh_with("wc -c", Some(&big_blob()), None).unwrap();
    assert_eq!(st.out.trim(), (1 << 20).to_string());

    // A per-call timeout.
    let err = vm01
        .ssh_with("sleep 10", None, Some(Duration::from_millis(500)))
        .unwrap_err();
    assert!(matches!(err, Error::Ssh(lago::ssh::SshError::Timeout { .. })), "{err}");
    assert_eq!(
        vm01.ssh(["true"]).unwrap().code,
        0,
        "the session recovers after a timeout"
    );
}

fn copies_round_trip(vm01: &Vm, tmp: &Path) {
    // Copy round trip: a file and a directory, checked by checksum.
    let file = tmp.join("blob.bin");
    fs::write(&file, big_blob()).unwrap();
    vm01.copy_to(&file, "/root/in/blob.bin").unwrap();
    let st = vm01.ssh(["sha256sum", "/root/in/blob.bin"]).unwrap();
    assert_eq!(st.out.split_whitespace().next(), Some(sha256_local(&file).as_str()));
    let dir = tmp.join("tree");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    fs::write(dir.join("sub/b.txt"), "beta\n").unwrap();
    vm01.copy_to(&dir, "/root/tree").unwrap();
    assert_eq!(vm01.ssh(["cat", "/root/tree/sub/b.txt"]).unwrap().out, "beta\n");
    let back = tmp.join("back");
    vm01.copy_from("/root/tree", &back).unwrap();
    assert_eq!(fs::read_to_string(back.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(fs::read_to_string(back.join("sub/b.txt")).unwrap(), "beta\n");
    let blob_back = tmp.join("blob.back");
    vm01.copy_from("/root/in/blob.bin", &blob_back).unwrap();
    assert_eq!(sha256_local(&blob_back), sha256_local(&file));
    assert!(vm01.copy_from("/no/such/file", tmp.join("x")).is_err());
}

fn host_key_is_pinned(env: &Env, vm01: &Vm, tmp: &Path) {
    // The guest's host key is pinned: another key is refused.
    let mut target = lago::ssh::Target {
        vm: "vm01".into(),
        ip: vm01.ip(),
        port: 22,
        user: "root".into(),
        key: env.workdir().join("id_ed25519"),
        host_key: Some(lago::keys::KeyPair::generate("impostor").unwrap().public_blob),
        password: None,
        learned_host_key: None,
        via: None,
    };
    match lago::ssh::connect(&target, Duration::from_secs(5)) {
        Err(lago::ssh::SshError::HostKeyMismatch { .. }) => {}
        other => panic!("expected a host key mismatch, got {:?}", other.map(|_| ())),
    }
    target.host_key = None;
    target.key = tmp.join("nope");
    assert!(
        lago::ssh::connect(&target, Duration::from_secs(5)).is_err(),
        "no key, no entry"
    );
}

fn a_second_process_attaches(env: &Env) {
    // A second process attaches to the running environment (load_env).
    let out = Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(["-w"])
        .arg(env.workdir())
        .args(["shell", "vm02", "--", "cat", "/etc/hostname"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vm02");
    let other = lago::sdk::load_env(env.workdir()).unwrap();
    assert_eq!(other.vm("vm01").unwrap().ssh(["hostname"]).unwrap().out.trim(), "vm01");
    let status = other.status().unwrap();
    assert!(status.vms.iter().all(|v| v.state == VmState::Running));
    assert!(status.nets.iter().all(|n| n.up));
    // `lago status --json` names every field (a NIC is an object, not a tuple).
    let out = Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("-w")
        .arg(env.workdir())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vm01 = other.vm("vm01").unwrap();
    let nic = &json["vms"][0]["nics"][0];
    assert_eq!(json["vms"][0]["name"], "vm01", "{json}");
    assert_eq!(nic["mac"], vm01.plan().nics[0].mac.to_string(), "{json}");
    assert_eq!(nic["ip"], vm01.ip().to_string(), "{json}");
    assert_eq!(nic["net"], vm01.plan().nics[0].net.as_str(), "{json}");
}

fn stop_start_and_shutdown(env: &Env, vm01: &Vm, vm02: &Vm) {
    // Hard stop and start again: the overlay keeps what was written.
    vm01.ssh(["sh", "-c", "echo kept > /root/kept && sync"]).unwrap();
    env.stop(&["vm01"]).unwrap();
    assert_eq!(vm01.state().unwrap(), VmState::Down);
    assert!(vm02.ssh(["true"]).unwrap().success(), "vm02 is untouched");
    env.start(&["vm01"]).unwrap();
    assert_eq!(vm01.ssh(["cat", "/root/kept"]).unwrap().out, "kept\n");

    // ACPI shutdown powers the guest off cleanly, within the bound.
    env.shutdown(&["vm02"], Duration::from_secs(30)).unwrap();
    assert_eq!(vm02.state().unwrap(), VmState::Down);
    assert!(
        vm02.console_lines(50).iter().any(|l| l.contains("lago-tiny: down")),
        "{:?}",
        vm02.console_lines(20)
    );

    // Stopping everything takes the network down too.
    env.stop(&[]).unwrap();
    let status = env.status().unwrap();
    assert!(status.nets.iter().all(|n| !n.up));
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn failures_leave_nothing_behind() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();

    // init fails half-way (a template file that is not an image): no workdir, no lease.
    let junk = tmp.path().join("junk.qcow2");
    fs::write(&junk, "not an image").unwrap();
    let init = tmp.path().join("bad-template.yaml");
    fs::write(
        &init,
        format!(
            "domains:\n  vm01:\n    nics: [{{net: lago}}]\n    disks: [{{type: template, template_type: qcow2, path: {}, name: root, dev: vda}}]\nnets:\n  lago: {{}}\n",
            junk.display()
        ),
    )
    .unwrap();
    let err = Env::init(&init, options(tmp.path())).unwrap_err();
    assert!(matches!(err, Error::Image(_)), "{err}");
    assert!(!tmp.path().join("env").exists());
    assert_eq!(leases_of(&tmp.path().join("env")), 0);

    // start fails (nothing bootable): the error names the stalled stage, and
    // the VM and network this start created are gone again.
    let blank = tmp.path().join("blank.raw");
    fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let text = fs::read_to_string(envs("broken.yaml"))
        .unwrap()
        .replace("$LAGO_TEST_BLANK_DISK", &blank.display().to_string());
    let init = tmp.path().join("broken.yaml");
    fs::write(&init, text).unwrap();
    let env = Env::init(&init, options(tmp.path())).unwrap();
    let id = env.id().to_string();
    let workdir = env.workdir().to_path_buf();
    let err = env.start(&[]).unwrap_err();
    match &err {
        Error::WaitForSsh { vm, stage, console, .. } => {
            assert_eq!(vm, "vm01");
            assert_eq!(*stage, lago::vm::BootStage::GuestUp, "{err}");
            assert!(
                console
                    .iter()
                    .any(|l| l.contains("No bootable device") || l.contains("Booting")),
                "{err}"
            );
        }
        other => panic!("expected WaitForSsh, got {other}"),
    }
    let b = Backend::connect(None).unwrap();
    assert!(
        b.domains_with_prefix(&format!("lago-{id}-")).unwrap().is_empty(),
        "start rolled back its VM"
    );
    assert!(
        b.networks_with_prefix(&format!("lago-{id}-")).unwrap().is_empty(),
        "and its network"
    );
    env.destroy().unwrap();
    assert_nothing_left(&id, &workdir, Duration::ZERO);
    // Destroying again (or a workdir that is gone) is fine.
    lago::env::destroy_workdir(&workdir, None).unwrap();
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn multi_nic_vms_on_two_nets_copies_like_cp_and_snapshots() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let env = Env::init(envs("multinic.yaml"), options(tmp.path())).unwrap();
    let id = env.id().to_string();
    let workdir = env.workdir().to_path_buf();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start(&[]).unwrap();
        networks_per_nic(&env);
        copies_like_cp(&env, tmp.path());
        snapshot_and_revert(&env);
    }));
    env.destroy().unwrap();
    assert_nothing_left(&id, &workdir, Duration::ZERO);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn networks_per_nic(env: &Env) {
    let vms = env.get_vms();
    for vm in vms.values() {
        assert_eq!(out(vm, &["hostname", "-f"]).trim(), format!("{}.lago.local", vm.name()));
        // Every NIC has its planned address.
        for (i, nic) in vm.plan().nics.iter().enumerate() {
            let ip = nic.ip.unwrap().to_string();
            let shown = out(vm, &["ip", "-4", "-o", "addr", "show", "dev", &format!("eth{i}")]);
            assert!(shown.contains(&format!("{ip}/24")), "{} eth{i}: {shown}", vm.name());
        }
        // The default route goes out of the management NIC, whatever its position.
        let mgmt = vm.plan().nics.iter().position(|n| n.net == "lago").unwrap();
        let routes = out(vm, &["ip", "route"]);
        let default: Vec<&str> = routes
            .lines()
            .find(|l| l.starts_with("default"))
            .unwrap_or_else(|| panic!("{}: no default route: {routes}", vm.name()))
            .split_whitespace()
            .collect();
        let dev = format!("eth{mgmt}");
        assert!(
            default.windows(2).any(|w| w == ["dev", dev.as_str()]),
            "{}: {routes}",
            vm.name()
        );
    }
    // DNS names from every VM: <vm>, <vm>-<net>, <vm>-eth<N>, each answering pings at its address.
    for from in vms.values() {
        for to in vms.values() {
            let mut names = vec![(to.name().to_owned(), to.ip().to_string())];
            for (i, nic) in to.plan().nics.iter().enumerate() {
                let ip = nic.ip.unwrap().to_string();
                names.push((format!("{}-{}", to.name(), nic.net), ip.clone()));
                names.push((format!("{}-eth{i}", to.name()), ip));
            }
            for (name, ip) in names {
                let st = from.ssh(["ping", "-c", "1", "-W", "3", &name]).unwrap();
                assert!(st.success(), "{} cannot ping {name}: {st:?}", from.name());
                // A VM's own bare name is 127.0.1.1 in its /etc/hosts, as on Debian.
                let own = from.name() == name && st.out.contains("(127.0.1.1)");
                assert!(
                    own || st.out.contains(&format!("({ip})")),
                    "{} resolved {name} wrong: {}",
                    from.name(),
                    st.out
                );
            }
        }
    }
    // Traffic to a back-end address goes over the isolated net's NIC.
    let (vm01, vm02) = (&vms["vm01"], &vms["vm02"]);
    let back02 = vm02.plan().nics[0].ip.unwrap().to_string();
    let route = out(vm01, &["ip", "route", "get", &back02]);
    assert!(route.contains("dev eth1"), "{route}");
    // vm02: sd* root and the extra raw disk of 64 MiB.
    let root = out(vm02, &["sh", "-c", "stat -c %d /; cat /sys/block/sda/dev"]);
    assert!(root_is(&root), "root is not /dev/sda: {root}");
    let size: u64 = out(vm02, &["cat", "/sys/block/sdb/size"]).trim().parse().unwrap();
    assert_eq!(size * 512, 64 << 20);
}

fn is_copy_err(e: &Error) -> bool {
    matches!(e, Error::Ssh(lago::ssh::SshError::Copy { .. }))
}

fn copies_like_cp(env: &Env, tmp: &Path) {
    let vm = env.vm("vm01").unwrap();
    copies_from_like_cp(env, vm, tmp);
    only_files_and_folders_land(vm, tmp);
    copies_are_bounded(vm, tmp);
    copies_to_like_cp(vm, tmp);
}

fn copies_from_like_cp(env: &Env, vm: &Vm, tmp: &Path) {
    // Onto an existing folder: the copy goes inside; nothing there is touched.
    let here = tmp.join("here");
    fs::create_dir(&here).unwrap();
    fs::write(here.join("keep.txt"), "mine").unwrap();
    vm.copy_from("/etc/hostname", &here).unwrap();
    assert_eq!(fs::read_to_string(here.join("hostname")).unwrap(), "vm01\n");
    assert_eq!(fs::read_to_string(here.join("keep.txt")).unwrap(), "mine");
    // The CLI the issue was found with: `copy-from-vm vm01 /etc/hostname .`
    let cwd = tmp.join("cwd");
    fs::create_dir(&cwd).unwrap();
    fs::write(cwd.join("project.rs"), "fn main() {}").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("-w")
        .arg(env.workdir())
        .args(["copy-from-vm", "vm01", "/etc/hostname", "."])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read_to_string(cwd.join("project.rs")).unwrap(), "fn main() {}");
    assert_eq!(fs::read_to_string(cwd.join("hostname")).unwrap(), "vm01\n");
    // A file replaces a file.
    let file = tmp.join("existing.txt");
    fs::write(&file, "old").unwrap();
    vm.copy_from("/etc/hostname", &file).unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "vm01\n");
    // A folder never replaces a file, nor goes into an existing folder of its name.
    out(vm, &["sh", "-c", "mkdir -p /root/d/sub && echo x > /root/d/sub/x"]);
    let err = vm.copy_from("/root/d", &file).unwrap_err();
    assert!(is_copy_err(&err), "{err}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "vm01\n");
    fs::create_dir_all(here.join("d")).unwrap();
    fs::write(here.join("d/mine"), "m").unwrap();
    let err = vm.copy_from("/root/d", &here).unwrap_err();
    assert!(
        is_copy_err(&err) && err.to_string().contains("existing folder"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(here.join("d/mine")).unwrap(), "m");
    assert!(!here.join("d/sub").exists());
}

fn only_files_and_folders_land(vm: &Vm, tmp: &Path) {
    use lago::ssh::CopyLimits;
    // Guest data: only regular files and folders land on the host.
    out(
        vm,
        &[
            "sh",
            "-c",
            "mkdir -p /root/evil && echo ok > /root/evil/file && ln -s /etc/passwd /root/evil/link \
             && ln /root/evil/file /root/evil/hard && mkfifo /root/evil/fifo",
        ],
    );
    let got = tmp.join("evil");
    let report = vm.copy_from_with("/root/evil", &got, &CopyLimits::default()).unwrap();
    assert!(fs::symlink_metadata(got.join("link")).is_err(), "no symlink written");
    assert!(fs::symlink_metadata(got.join("fifo")).is_err(), "no fifo written");
    let kinds: Vec<&str> = report.skipped.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds.len(), 3, "{report:?}");
    assert!(
        kinds.contains(&"symlink") && kinds.contains(&"fifo") && kinds.contains(&"hard link"),
        "{report:?}"
    );
    // tar stores the first of two hard-linked names as the file, the other as a link to it.
    let written: Vec<String> = ["file", "hard"]
        .iter()
        .filter_map(|n| fs::read_to_string(got.join(n)).ok())
        .collect();
    assert_eq!(written, ["ok\n"], "{report:?}");
    // A guest path starting with `-` is a path, not a tar option.
    out(vm, &["sh", "-c", "echo dash > /tmp/-rf"]);
    vm.copy_from("/tmp/-rf", tmp.join("dash")).unwrap();
    assert_eq!(fs::read_to_string(tmp.join("dash")).unwrap(), "dash\n");
}

fn copies_are_bounded(vm: &Vm, tmp: &Path) {
    use lago::ssh::{CopyLimits, SshError};
    // Limits: bytes and time; nothing placed, nothing left over.
    out(vm, &["sh", "-c", "head -c 200000 /dev/urandom > /root/big"]);
    let capped = tmp.join("capped");
    fs::create_dir(&capped).unwrap();
    let err = vm
        .copy_from_with(
            "/root/big",
            capped.join("big"),
            &CopyLimits::new(Duration::from_secs(60), 50_000),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Ssh(SshError::CopyTooLarge { limit: 50_000, .. })),
        "{err}"
    );
    assert!(
        fs::read_dir(&capped).unwrap().next().is_none(),
        "no spool or staging files left"
    );
    let err = vm
        .copy_from_with(
            "/root/big",
            capped.join("big"),
            &CopyLimits::new(Duration::from_millis(1), 1 << 30),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Ssh(SshError::Timeout { .. })), "{err}");
    assert!(vm.ssh(["true"]).unwrap().success(), "the session recovers");
}

fn copies_to_like_cp(vm: &Vm, tmp: &Path) {
    // To the guest, the same rules.
    let a = tmp.join("a.txt");
    fs::write(&a, "A").unwrap();
    out(vm, &["mkdir", "-p", "/root/into"]);
    vm.copy_to(&a, "/root/into").unwrap();
    assert_eq!(out(vm, &["cat", "/root/into/a.txt"]), "A");
    vm.copy_to(&a, "/root/newdir/").unwrap();
    assert_eq!(out(vm, &["cat", "/root/newdir/a.txt"]), "A");
    out(vm, &["sh", "-c", "echo old > /root/f"]);
    vm.copy_to(&a, "/root/f").unwrap();
    assert_eq!(out(vm, &["cat", "/root/f"]), "A", "a file replaces a file");
    let dir = tmp.join("tree2");
    fs::create_dir_all(dir.join("s")).unwrap();
    fs::write(dir.join("s/z"), "z").unwrap();
    let err = vm.copy_to(&dir, "/root/f").unwrap_err();
    assert!(is_copy_err(&err) && err.to_string().contains("not a folder"), "{err}");
    assert_eq!(out(vm, &["cat", "/root/f"]), "A", "the guest file is untouched");
    out(vm, &["mkdir", "-p", "/root/into/a.txt.d", "/root/into2/a.txt"]);
    let err = vm.copy_to(&a, "/root/into2").unwrap_err();
    assert!(
        is_copy_err(&err) && err.to_string().contains("existing folder"),
        "{err}"
    );
    // A sparse file travels as a plain one (busybox tar cannot read GNU sparse entries).
    let sparse = tmp.join("sparse.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&sparse).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(b"end").unwrap();
    }
    vm.copy_to(&sparse, "/root/sparse.img").unwrap();
    let sum = out(vm, &["sha256sum", "/root/sparse.img"]);
    assert_eq!(sum.split_whitespace().next(), Some(sha256_local(&sparse).as_str()));
    let err = vm.copy_to(&a, "relative/path").unwrap_err();
    assert!(is_copy_err(&err), "{err}");
    assert_eq!(
        out(vm, &["sh", "-c", "ls -a /root/into /root | grep -c lago-copy || true"]).trim(),
        "0"
    );
}

fn snapshot_and_revert(env: &Env) {
    use lago::snapshot::SnapshotKind;
    let (vm01, vm02) = (env.vm("vm01").unwrap(), env.vm("vm02").unwrap());
    // State before: a file on each, a running "service" on vm01, zeros at the start of vm02's raw disk.
    for vm in [vm01, vm02] {
        out(vm, &["sh", "-c", "echo before > /root/state && sync"]);
    }
    out(
        vm01,
        &["sh", "-c", "sleep 100000 >/dev/null 2>&1 & echo $! > /run/svc.pid"],
    );
    let svc = out(vm01, &["cat", "/run/svc.pid"]);
    let info = env.snapshot("s1").unwrap();
    // vm01's disks are qcow2: disks and memory; vm02 has a raw disk: disk copies.
    assert_eq!(info.vms["vm01"], SnapshotKind::Memory);
    assert_eq!(info.vms["vm02"], SnapshotKind::Disk);
    assert!(matches!(env.snapshot("s1"), Err(Error::SnapshotExists { .. })));

    // Change everything.
    for vm in [vm01, vm02] {
        out(vm, &["sh", "-c", "echo after > /root/state && sync"]);
    }
    out(vm01, &["sh", "-c", "kill $(cat /run/svc.pid); rm /run/svc.pid"]);
    out(
        vm02,
        &["sh", "-c", "echo scribble | dd of=/dev/sdb conv=fsync 2>/dev/null"],
    );
    std::thread::sleep(Duration::from_secs(3));

    let t = std::time::Instant::now();
    env.revert("s1").unwrap();
    eprintln!(
        "revert of vm01 (memory) and vm02 (disks + boot), in parallel: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    for vm in [vm01, vm02] {
        assert_eq!(out(vm, &["cat", "/root/state"]), "before\n", "{}", vm.name());
    }
    // The memory revert brings the running service back, with the same pid.
    assert_eq!(out(vm01, &["cat", "/run/svc.pid"]), svc);
    assert!(
        vm01.ssh(["sh", "-c", &format!("kill -0 {}", svc.trim())])
            .unwrap()
            .success(),
        "the service runs"
    );
    // The raw disk is back too.
    let head = out(vm02, &["sh", "-c", "head -c 8 /dev/sdb | od -An -tx1"]);
    assert_eq!(head.split_whitespace().collect::<Vec<_>>(), ["00"; 8], "{head}");
    // Guest clocks are the host's, not the snapshot's.
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for vm in [vm01, vm02] {
        let guest: i64 = out(vm, &["date", "+%s"]).trim().parse().unwrap();
        assert!((guest - host).abs() <= 2, "{}: guest {guest}, host {host}", vm.name());
    }
    let names: Vec<String> = env.snapshots().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["s1"]);
    // The CLI sees them too.
    let o = Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("-w")
        .arg(env.workdir())
        .args(["snapshot", "--list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["name"], "s1");
    assert_eq!(listed[0]["vms"]["vm02"], "disk");
    let o = Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("-w")
        .arg(env.workdir())
        .args(["revert", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no snapshot named `nope` (snapshots: s1)"));
    assert!(matches!(env.revert("nope"), Err(Error::NoSuchSnapshot { .. })));
    assert!(matches!(env.snapshot("../x"), Err(Error::SnapshotName { .. })));
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn passwords_and_machines_lago_did_not_create() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let a_file = tmp.path().join("a.yaml");
    fs::write(
        &a_file,
        "domains:\n  vm01:\n    memory: 192\n    boot_time_sec: 60\n    root-password: s3cret\n    nics: [{net: lago}]\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\nnets:\n  lago: {}\n",
    )
    .unwrap();
    let a = Env::init(&a_file, options(&tmp.path().join("a"))).unwrap();
    let (a_id, a_workdir) = (a.id().to_string(), a.workdir().to_path_buf());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.start(&[]).unwrap();
        root_password_is_set_and_ssh_stays_key_only(&a, tmp.path());
        an_existing_machine_is_reached_not_created(&a, tmp.path());
    }));
    a.destroy().unwrap();
    assert_nothing_left(&a_id, &a_workdir, Duration::ZERO);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn root_password_is_set_and_ssh_stays_key_only(a: &Env, tmp: &Path) {
    use sha_crypt::PasswordVerifier;
    let vm = a.vm("vm01").unwrap();
    let line = out(vm, &["grep", "^root:", "/etc/passwd"]);
    let hash = line.split(':').nth(1).unwrap();
    assert!(hash.starts_with("$6$"), "{line}");
    let parsed = sha_crypt::PasswordHashRef::new(hash).unwrap();
    assert!(
        sha_crypt::ShaCrypt::default()
            .verify_password(b"s3cret", parsed)
            .is_ok(),
        "the hash is of the root-password"
    );
    // The console asks for it.
    assert!(
        out(vm, &["ps"]).contains("getty"),
        "a login prompt on the serial console"
    );
    // SSH does not take passwords.
    let target = lago::ssh::Target {
        vm: "vm01".into(),
        ip: vm.ip(),
        port: 22,
        user: "root".into(),
        key: tmp.join("no-such-key"),
        host_key: None,
        password: Some(lago::ssh::Secret("s3cret".into())),
        learned_host_key: None,
        via: None,
    };
    let err = lago::ssh::connect(&target, Duration::from_secs(5))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, lago::ssh::SshError::AuthPassword { .. }), "{err}");
}

fn an_existing_machine_is_reached_not_created(a: &Env, tmp: &Path) {
    let vm01 = a.vm("vm01").unwrap();
    // A user with a password, and an SSH server that takes passwords: a machine
    // "that only knows a password". The old listener goes (its sessions stay).
    let hash = lago::keys::password_hash("tester-pw").unwrap();
    out(
        vm01,
        &[
            "sh",
            "-c",
            &format!(
                "echo 'tester:{hash}:1000:1000:tester:/root:/bin/sh' >> /etc/passwd \
                 && for p in $(pidof dropbear); do [ \"$(cut -d' ' -f4 /proc/$p/stat)\" = 1 ] && kill $p; done; \
                 for i in 1 2 3 4 5 6 7 8 9 10; do \
                   dropbear -r /etc/dropbear/dropbear_ed25519_host_key -p 22 2>/dev/null && break; sleep 0.2; \
                 done"
            ),
        ],
    );
    let b_file = tmp.join("b.yaml");
    fs::write(
        &b_file,
        format!(
            "domains:\n  by-key:\n    vm-provider: ssh\n    ssh-key: {}\n    nics: [{{net: ext1, ip: {ip}}}]\n  by-password:\n    vm-provider: ssh\n    ssh-user: tester\n    ssh-password: tester-pw\n    nics: [{{net: ext2, ip: {ip}}}]\nnets:\n  ext1: {{management: true}}\n  ext2: {{management: true}}\n",
            a.workdir().join("id_ed25519").display(),
            ip = vm01.ip()
        ),
    )
    .unwrap();
    let b = Env::init(&b_file, options(&tmp.join("b"))).unwrap();
    let (b_id, b_workdir) = (b.id().to_string(), b.workdir().to_path_buf());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Nothing is leased or created for it.
        assert_eq!(leases_of(b.workdir()), 0);
        b.start(&[]).unwrap();
        let backend = Backend::connect(None).unwrap();
        let prefix = format!("lago-{}-", b.id());
        assert!(backend.domains_with_prefix(&prefix).unwrap().is_empty());
        assert!(backend.networks_with_prefix(&prefix).unwrap().is_empty());
        let by_key = b.vm("by-key").unwrap();
        assert!(by_key.is_existing_machine());
        assert_eq!(by_key.state().unwrap(), VmState::Running, "its SSH port answers");
        by_key.wait_for_ssh(Duration::from_secs(30)).unwrap();
        assert_eq!(out(by_key, &["hostname"]).trim(), "vm01");
        // Copies work; its host key was learned and is pinned from now on.
        let f = tmp.join("to-existing.txt");
        fs::write(&f, "hello").unwrap();
        by_key.copy_to(&f, "/root/to-existing.txt").unwrap();
        by_key.copy_from("/root/to-existing.txt", tmp.join("back.txt")).unwrap();
        assert_eq!(fs::read_to_string(tmp.join("back.txt")).unwrap(), "hello");
        let learned = b.workdir().join("known_hosts/by-key");
        assert!(learned.is_file(), "learned on first contact");
        // Password authentication for a machine that only knows a password.
        let by_password = b.vm("by-password").unwrap();
        assert_eq!(out(by_password, &["id", "-un"]).trim(), "tester");
        // stop leaves it alone.
        b.stop(&[]).unwrap();
        assert_eq!(vm01.state().unwrap(), VmState::Running);
        // Another key presented later is refused.
        fs::write(&learned, b"not the key it had").unwrap();
        let err = by_key.ssh(["true"]).unwrap_err();
        assert!(
            matches!(err, Error::Ssh(lago::ssh::SshError::HostKeyMismatch { .. })),
            "{err}"
        );
    }));
    b.destroy().unwrap();
    assert!(!b_workdir.exists());
    assert_eq!(leases_of(&b_workdir), 0);
    assert!(
        Backend::connect(None)
            .unwrap()
            .networks_with_prefix(&format!("lago-{b_id}-"))
            .unwrap()
            .is_empty()
    );
    // The machine itself is untouched.
    assert_eq!(vm01.ssh(["hostname"]).unwrap().out.trim(), "vm01");
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Whether `out` of `stat -c %d /; cat /sys/block/<disk>/dev` says the root
/// filesystem is on that disk (device numbers: /proc/mounts names a root the
/// kernel mounted itself /dev/root).
fn root_is(out: &str) -> bool {
    let mut lines = out.lines();
    let (Some(dev), Some(majmin)) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some((major, minor)) = majmin.trim().split_once(':') else {
        return false;
    };
    match (dev.trim().parse::<u64>(), major.parse::<u64>(), minor.parse::<u64>()) {
        (Ok(d), Ok(ma), Ok(mi)) => d == (ma << 8 | mi),
        _ => false,
    }
}

/// `tiny` from a fresh template store boots the distribution's kernel through
/// lago's initramfs (the path every machine takes until `lago template build
/// tiny --kernel` has run): the initramfs finds an sd* root, the seed makes a
/// non-root user whose key works, and the kernel is Debian's.
#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn tiny_on_the_distribution_kernel_and_initramfs() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let store = lago::store::TemplateStore::new(tmp.path().join("store"));
    let env = Env::init(
        envs("distro-kernel.yaml"),
        InitOptions {
            store: Some(store),
            ..options(tmp.path())
        },
    )
    .unwrap();
    let id = env.id().to_string();
    let workdir = env.workdir().to_path_buf();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start(&[]).unwrap();
        let vm = env.vm("vm01").unwrap();
        let out = |cmd: &str| {
            let r = vm.ssh(["sh", "-c", cmd]).unwrap();
            assert!(r.success(), "{cmd}: {r:?}");
            r.out
        };
        assert_eq!(out("id -un").trim(), "tester");
        assert_eq!(out("hostname").trim(), "vm01");
        assert!(out("uname -r").trim().ends_with("-cloud-amd64"), "not Debian's kernel");
        // The initramfs mounted the root by its name: /proc/mounts says /dev/sda.
        assert_eq!(out("grep ' / ' /proc/mounts | cut -d' ' -f1").trim(), "/dev/sda");
        assert!(root_is(&out("stat -c %d /; cat /sys/block/sda/dev")));
        // The template this store built boots through an initrd.
        let tiny = tmp.path().join("store/tiny");
        let metas: Vec<serde_json::Value> = fs::read_dir(&tiny)
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("template.json")).ok())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect();
        assert_eq!(metas.len(), 1, "{metas:?}");
        assert!(metas[0]["initrd"].is_string(), "{:?}", metas[0]);
    }));
    env.destroy().unwrap();
    assert_nothing_left(&id, &workdir, Duration::ZERO);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
