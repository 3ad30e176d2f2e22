//! A hypervisor reached through `qemu+ssh://`: an `sshd` the test starts on
//! 127.0.0.1 (inside the test network namespace) plays the hypervisor host.
//! libvirt's connection goes through it, and so does every SSH connection to
//! the guests (a `direct-tcpip` channel per connection, as `ProxyJump`), which
//! its log proves.
//!
//! Boots VMs: `#[ignore]`d in a plain `cargo test`, run by `scripts/test`.

#[path = "common/sshd.rs"]
mod sshd;

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lago::backend::Backend;
use lago::remote::{JumpError, LibvirtUri};
use lago::{Env, Error, InitOptions};
use sshd::Sshd;

use common::{envs, in_test_namespace, lago_in};

/// Volumes of the `lago` pool, as the hypervisor lists them (through the remote URI).
fn volumes(uri: &str) -> Vec<String> {
    let out = std::process::Command::new("virsh")
        .args(["-c", uri, "vol-list", "lago"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut fs::File::open(path).unwrap(), &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Local files under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn pair_through_qemu_ssh_and_the_hypervisor_as_jump_host() {
    in_test_namespace();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let uri = sshd.uri();
    let t = Instant::now();
    let env = Env::init(
        envs("pair.yaml"),
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            libvirt_uri: Some(uri.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("remote: init {:.2?}", t.elapsed());
    let id = env.id().to_string();
    let workdir = env.workdir().to_path_buf();
    // Nothing of the disks is local: overlays, empty disks and seeds are volumes on the hypervisor.
    assert!(
        files_under(&workdir.join("images")).is_empty(),
        "local images: {:?}",
        files_under(&workdir.join("images"))
    );
    let prefix = format!("lago-{id}-");
    let ours: Vec<String> = volumes(&uri).into_iter().filter(|v| v.starts_with(&prefix)).collect();
    for want in [
        "vm01-root.qcow2",
        "vm02-root.qcow2",
        "vm02-data.qcow2",
        "vm01-cidata.img",
        "vm01-console.log",
    ] {
        assert!(ours.contains(&format!("{prefix}{want}")), "no volume {want}: {ours:?}");
    }
    // Template volumes are named by the sha256 of their content, each with its upload marker.
    let tiny = lago::store::TemplateStore::from_env().resolve("tiny", None).unwrap();
    let all = volumes(&uri);
    for file in std::iter::once(&tiny.disk).chain(&tiny.kernel) {
        let want = format!("lago-templates-{}", sha256_of(file));
        assert!(
            all.contains(&want) && all.contains(&format!("{want}.done")),
            "no {want}: {all:?}"
        );
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&env, &sshd, tmp.path())));
    env.destroy().unwrap();
    // Nothing left on the hypervisor (asked through the same remote URI) nor here.
    let b = Backend::connect(Some(&uri)).unwrap();
    let prefix = format!("lago-{id}-");
    assert!(b.domains_with_prefix(&prefix).unwrap().is_empty(), "domains left");
    assert!(b.networks_with_prefix(&prefix).unwrap().is_empty(), "networks left");
    assert!(!workdir.exists());
    let left: Vec<String> = volumes(&uri).into_iter().filter(|v| v.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "volumes left: {left:?}");
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn a_failing_remote_boot_shows_its_console_and_leaves_nothing() {
    in_test_namespace();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let uri = sshd.uri();
    let blank = tmp.path().join("blank.raw");
    fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let text = fs::read_to_string(envs("broken.yaml"))
        .unwrap()
        .replace("$LAGO_TEST_BLANK_DISK", &blank.display().to_string());
    let init = tmp.path().join("broken.yaml");
    fs::write(&init, text).unwrap();
    let env = Env::init(
        &init,
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            libvirt_uri: Some(uri.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let prefix = format!("lago-{}-", env.id());
    let err = env.start(&[]).unwrap_err();
    match &err {
        Error::WaitForSsh { vm, console, .. } => {
            assert_eq!(vm, "vm01");
            assert!(
                console
                    .iter()
                    .any(|l| l.contains("No bootable device") || l.contains("Booting")),
                "the console, read through libvirt, is in the error: {err}"
            );
        }
        other => panic!("expected WaitForSsh, got {other}"),
    }
    env.destroy().unwrap();
    let left: Vec<String> = volumes(&uri).into_iter().filter(|v| v.starts_with(&prefix)).collect();
    assert!(left.is_empty(), "volumes left: {left:?}");
}

fn exercise(env: &Env, sshd: &Sshd, tmp: &Path) {
    let t = Instant::now();
    env.start(&[]).unwrap();
    eprintln!(
        "remote: start -> every VM answers SSH through the jump host: {:.2?}",
        t.elapsed()
    );
    let vms = env.get_vms();
    let (vm01, vm02) = (&vms["vm01"], &vms["vm02"]);
    for vm in [vm01, vm02] {
        let st = vm.ssh(["hostname", "-f"]).unwrap();
        assert_eq!(st.out.trim(), format!("{}.lago.local", vm.name()), "{st:?}");
    }
    // Every guest connection went through the host: its log names each guest's port 22.
    let log = sshd.log_text();
    for vm in [vm01, vm02] {
        assert!(
            log.contains(&format!("to {} port 22", vm.ip())),
            "sshd forwarded no channel to {} ({}):\n{log}",
            vm.name(),
            vm.ip()
        );
    }
    // Copies both ways over the tunnel, 4 MiB.
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i * 13 % 251) as u8).collect();
    fs::write(tmp.join("up.bin"), &data).unwrap();
    vm02.copy_to(tmp.join("up.bin"), "/tmp/up.bin").unwrap();
    vm02.copy_from("/tmp/up.bin", tmp.join("down.bin")).unwrap();
    assert_eq!(fs::read(tmp.join("down.bin")).unwrap(), data);
    let ping = vm01.ssh(["ping", "-c", "1", "-W", "3", "vm02"]).unwrap();
    assert!(ping.success(), "{ping:?}");
    // Snapshots of qcow2 volumes work through libvirt alone: disks and memory, reverted.
    vm01.ssh(["sh", "-c", "echo before > /root/state"]).unwrap();
    env.snapshot("booted").unwrap();
    vm01.ssh(["sh", "-c", "echo after > /root/state"]).unwrap();
    env.revert("booted").unwrap();
    assert_eq!(vm01.ssh(["cat", "/root/state"]).unwrap().out, "before\n");
    // Another process attaches through the same URI and jump host.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("-w")
        .arg(env.workdir())
        .args(["shell", "vm01", "--", "cat", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vm01");

    // The host's key is checked strictly: an unknown or changed key is refused.
    let jump = LibvirtUri::parse(&sshd.uri()).unwrap().jump_host().unwrap();
    let mut target = vm01.ssh_target().clone();
    let empty = tmp.join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let other = tmp.join("other_known_hosts");
    let stranger = lago::keys::KeyPair::generate("stranger").unwrap();
    fs::write(
        &other,
        format!("[127.0.0.1]:{} {}\n", sshd.port, stranger.public_openssh),
    )
    .unwrap();
    for (kh, want) in [
        (&empty, "is not in known_hosts"),
        (&other, "is NOT the one known_hosts holds"),
    ] {
        let mut j = jump.clone();
        j.known_hosts = kh.clone();
        target.via = Some(Arc::new(j));
        let Err(err) = lago::ssh::connect(&target, Duration::from_secs(10)) else {
            panic!("connected with known_hosts {}", kh.display());
        };
        let lago::ssh::SshError::Jump {
            source: JumpError::HostKey { reason, .. },
            ..
        } = &err
        else {
            panic!("expected a host-key refusal, got {err:?}");
        };
        assert!(reason.contains(want), "{reason}");
    }
    // A wrong key for the host: authentication fails, saying what was tried.
    let mut j = jump.clone();
    let wrong = tmp.join("wrong_key");
    lago::keys::KeyPair::generate("wrong").unwrap().write(&wrong).unwrap();
    j.keyfile = Some(wrong.clone());
    target.via = Some(Arc::new(j));
    let Err(err) = lago::ssh::connect(&target, Duration::from_secs(10)) else {
        panic!("authenticated with a wrong key");
    };
    assert!(
        matches!(&err, lago::ssh::SshError::Jump { source: JumpError::Auth { tried, .. }, .. } if tried.contains("wrong_key")),
        "{err:?}"
    );
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn two_clients_of_one_daemon_never_lease_the_same_subnet() {
    in_test_namespace();
    let sshd = Sshd::start();
    let uri = sshd.uri();
    let tmp = tempfile::tempdir().unwrap();
    // Two machines: each its own lease directory; only the daemon is shared.
    let init = |name: &str| {
        Env::init(
            envs("tiny1.yaml"),
            InitOptions {
                workdir: Some(tmp.path().join(name)),
                libvirt_uri: Some(uri.clone()),
                leases: Some(lago::lease::LeaseStore::new(tmp.path().join(format!("leases-{name}")))),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let a = init("a");
    let b = init("b");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| claims_are_per_daemon(&a, &b, &uri)));
    let _ = a.teardown();
    let _ = b.teardown();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

fn claims_are_per_daemon(a: &Env, b: &Env, uri: &str) {
    let subnet = |e: &Env| e.plan().nets[0].subnet.unwrap();
    assert_ne!(
        subnet(a),
        subnet(b),
        "the second client saw the first one's claim on the daemon"
    );
    let backend = Backend::connect(Some(uri)).unwrap();
    // A claim is atomic in the daemon: another env cannot take it, its owner keeps it.
    assert!(!backend.claim_subnet(subnet(a), b.id().as_str()).unwrap());
    assert!(backend.claim_subnet(subnet(a), a.id().as_str()).unwrap());
    let claims = || -> Vec<String> {
        let out = std::process::Command::new("virsh")
            .args(["-c", uri, "net-list", "--all", "--name"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(lago::backend::storage::CLAIM_PREFIX))
            .map(str::to_owned)
            .collect()
    };
    let before = claims();
    for e in [a, b] {
        let want = format!("{}{}", lago::backend::storage::CLAIM_PREFIX, subnet(e).third_octet());
        assert!(before.contains(&want), "{want} in {before:?}");
    }
    let (sa, sb) = (subnet(a), subnet(b));
    a.teardown().unwrap();
    b.teardown().unwrap();
    let after = claims();
    for s in [sa, sb] {
        let gone = format!("{}{}", lago::backend::storage::CLAIM_PREFIX, s.third_octet());
        assert!(!after.contains(&gone), "{gone} still claimed: {after:?}");
    }
}

/// Runs `lago` with `args`; its exit status, as `Some(code)` or `None` for a signal.
fn lago_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = lago_in(None, args);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Five rounds of `init`, `start`, `shell`, `copy-to-vm`, `destroy` through
/// the CLI: every call exits 0 (before, a remote `start` or `shell` could die
/// of SIGSEGV at exit: the tunnel's pump thread was still in libssh2 while
/// the exit handlers tore OpenSSL down). Returns the tally printed.
fn cli_rounds(label: &str, uri: Option<&str>, tmp: &Path) -> String {
    let payload = tmp.join("payload.txt");
    fs::write(&payload, "payload\n").unwrap();
    let init_file = envs("tiny1.yaml");
    let (mut calls, mut failed) = (0, Vec::new());
    for round in 0..5 {
        let w = tmp.join(format!("{label}-{round}"));
        let w = w.to_str().unwrap();
        let mut init = vec!["-w", w, "init", init_file.to_str().unwrap()];
        if let Some(u) = uri {
            init.extend(["--libvirt-uri", u]);
        }
        let (code, err) = lago_cli(&init);
        assert_eq!(code, Some(0), "{label}: init: {err}");
        let steps: [&[&str]; 4] = [
            &["-w", w, "start"],
            &["-w", w, "shell", "vm01", "--", "cat", "/etc/hostname"],
            &[
                "-w",
                w,
                "copy-to-vm",
                "vm01",
                payload.to_str().unwrap(),
                "/tmp/payload.txt",
            ],
            &["-w", w, "destroy", "--yes"],
        ];
        for args in steps {
            calls += 1;
            let (code, err) = lago_cli(args);
            if code != Some(0) {
                failed.push(format!("{:?} -> {code:?}: {}", &args[2..], err.trim()));
            }
        }
        // Whatever happened, nothing stays for the next round.
        let _ = lago_cli(&["-w", w, "destroy", "--yes"]);
    }
    let tally = format!("{label}: {} of {calls} CLI calls exited 0", calls - failed.len());
    eprintln!("{tally}");
    assert!(failed.is_empty(), "{tally}; failures:\n{}", failed.join("\n"));
    tally
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn cli_calls_exit_zero_through_the_remote_path_and_locally() {
    in_test_namespace();
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    cli_rounds("remote", Some(&sshd.uri()), tmp.path());
    cli_rounds("local", None, tmp.path());
}

/// `virsh -c uri` with `args`; its stdout.
fn virsh(uri: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes volume `name` of the `lago` pool, if it is there.
fn vol_delete(uri: &str, name: &str) {
    let _ = std::process::Command::new("virsh")
        .args(["-c", uri, "vol-delete", "--pool", "lago", name])
        .output();
}

/// Writes `content` into volume `name` of the `lago` pool, creating it.
fn plant_volume(uri: &str, tmp: &Path, name: &str, size: usize, content: &[u8]) {
    let f = tmp.join(format!("{name}.plant"));
    let mut bytes = content.to_vec();
    bytes.resize(size, 0);
    fs::write(&f, bytes).unwrap();
    virsh(
        uri,
        &["vol-create-as", "lago", name, &size.to_string(), "--format", "raw"],
    );
    virsh(uri, &["vol-upload", "--pool", "lago", name, f.to_str().unwrap()]);
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Template uploads on a shared daemon (no VM): a lock another client
/// holds and rewrites is waited for, never taken over, and its upload's
/// volume never deleted; a lock that stopped being rewritten is taken over
/// and the same bytes go into the volume the dead upload left; a file whose
/// bytes do not have the digest asked for gets no `.done` marker.
#[test]
#[ignore = "needs the test namespace's libvirtd: run through scripts/test"]
fn template_uploads_wait_take_over_dead_ones_and_never_delete_a_volume() {
    in_test_namespace();
    let uri = "qemu:///system";
    let tmp = tempfile::tempdir().unwrap();
    let backend = Arc::new(Backend::connect(Some(uri)).unwrap());
    backend.ensure_pool().unwrap();
    let image = tmp.path().join("image.raw");
    let data: Vec<u8> = (0..(6u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(&image, &data).unwrap();
    let sha = sha256_of(&image);
    let name = format!("lago-templates-{sha}");
    let cleanup = || {
        for v in volumes(uri).into_iter().filter(|v| v.starts_with(&name)) {
            vol_delete(uri, &v);
        }
    };
    cleanup();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Another client uploads: its lock is fresh, and its volume half written.
        plant_volume(
            uri,
            tmp.path(),
            &format!("{name}.uploading"),
            128,
            format!("{} theirs", unix_now()).as_bytes(),
        );
        plant_volume(uri, tmp.path(), &name, data.len(), &data[..1 << 20]);
        let waiter = {
            let (backend, image, sha) = (backend.clone(), image.clone(), sha.clone());
            std::thread::spawn(move || backend.template_volume(&image, &sha))
        };
        std::thread::sleep(Duration::from_secs(3));
        assert!(!waiter.is_finished(), "a fresh lock is waited for");
        assert!(!volumes(uri).contains(&format!("{name}.done")));
        assert!(volumes(uri).contains(&name), "the other client's volume is not deleted");
        // That client dies: its lock stops being rewritten and goes stale.
        let stale = format!("{} theirs", unix_now() - 3600);
        let f = tmp.path().join("stale");
        let mut bytes = stale.into_bytes();
        bytes.resize(128, 0);
        fs::write(&f, bytes).unwrap();
        virsh(
            uri,
            &[
                "vol-upload",
                "--pool",
                "lago",
                &format!("{name}.uploading"),
                f.to_str().unwrap(),
            ],
        );
        let path = waiter.join().unwrap().unwrap();
        let all = volumes(uri);
        assert!(all.contains(&format!("{name}.done")), "{all:?}");
        // The same volume, now whole: downloaded, it has the digest of its name.
        let back = tmp.path().join("back.raw");
        virsh(uri, &["vol-download", "--pool", "lago", &name, back.to_str().unwrap()]);
        assert_eq!(sha256_of(&back), sha);
        assert!(path.ends_with(&name), "{path}");
        // Done: reused at once.
        let t = Instant::now();
        assert_eq!(backend.template_volume(&image, &sha).unwrap(), path);
        assert!(t.elapsed() < Duration::from_secs(5));
        // A file that does not have the digest asked for: no marker.
        let liar = "0".repeat(64);
        let err = backend.template_volume(&image, &liar).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
        assert!(!volumes(uri).contains(&format!("lago-templates-{liar}.done")));
        for v in [
            format!("lago-templates-{liar}"),
            format!("lago-templates-{liar}.uploading"),
        ] {
            vol_delete(uri, &v);
        }
    }));
    cleanup();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
