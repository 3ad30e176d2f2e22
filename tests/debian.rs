//! The built-in `debian-12` cloud image under libvirt + QEMU: real systemd,
//! real cloud-init applying lago's seed, real OpenSSH, its own bootloader.
//!
//! `scripts/test` builds the image before entering the test network
//! namespace (the build needs Debian's mirror); this test publishes it as a
//! Lago repository served on 127.0.0.1, and boots both VMs from the image
//! pulled out of that repository into an empty store. One environment, many
//! assertions; then a second one of the same init file, restored from the
//! boot image the first start saved (warm start), and the same assertions.

#[path = "common/repo_server.rs"]
mod repo_server;

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lago::backend::VmState;
use lago::store::TemplateStore;
use lago::store::manage::PublishOptions;
use lago::{Env, InitOptions, Vm};

use common::{in_test_namespace, out};

fn env_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envs/debian.yaml")
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn debian_cloud_image_end_to_end() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    // The store's debian-12 (built by scripts/test), published as a repository.
    let built = TemplateStore::from_env()
        .offline(true)
        .resolve("debian-12", None)
        .unwrap();
    let t = Instant::now();
    let published = TemplateStore::from_env()
        .publish(
            &tmp.path().join("repo"),
            &[format!("debian-12:{}", built.version)],
            &PublishOptions {
                xz_level: 1,
                ..Default::default()
            },
        )
        .unwrap();
    eprintln!(
        "debian-12: published at xz -1 in {:.1?}: {} -> {} bytes",
        t.elapsed(),
        published[0].image_bytes,
        published[0].xz_bytes
    );
    let server = repo_server::Server::serve(&tmp.path().join("repo"));
    let store = TemplateStore::new(tmp.path().join("store"));
    let t = Instant::now();
    let env = Env::init(
        env_file(),
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            store: Some(store.clone()),
            template_repos: vec![server.url("repo.metadata")],
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("debian-12: init, pulling it from the repository: {:.1?}", t.elapsed());
    // Pulled once (two VMs share it), and what was pulled is what was built.
    assert_eq!(server.hits(&format!("debian-12/{}.xz", built.version)), 1);
    let pulled = store.resolve("debian-12", Some(&built.version)).unwrap();
    assert!(pulled.disk.starts_with(tmp.path().join("store")));
    let built_sha256 = repo_server::sha256_hex(&fs::read(&built.disk).unwrap());
    assert_eq!(pulled.sha256.as_deref(), Some(built_sha256.as_str()));
    assert!(pulled.source.as_deref().unwrap_or_default().starts_with("repo "));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&env)));
    env.destroy().unwrap();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    // The same init file again: restored from the boot image the first start saved.
    let env = Env::init(
        env_file(),
        InitOptions {
            workdir: Some(tmp.path().join("env2")),
            store: Some(store.clone()),
            template_repos: vec![server.url("repo.metadata")],
            ..Default::default()
        },
    )
    .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| restored(&env)));
    env.destroy().unwrap();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// A restored environment behaves as the booted one did.
fn restored(env: &Env) {
    let t = Instant::now();
    env.start(&[]).unwrap();
    eprintln!(
        "debian-12: start -> SSH answered by both VMs, restored: {:.1?}",
        t.elapsed()
    );
    assert_eq!(common::came_up(env), ["restored", "restored"]);
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.workdir().join(lago::env::STATE_FILE)).unwrap()).unwrap();
    let vms = env.get_vms();
    let (deb1, deb2) = (&vms["deb1"], &vms["deb2"]);
    for vm in [deb1, deb2] {
        booted_as_planned(vm, &saved);
        common::clock_is_the_hosts(vm);
    }
    users_and_units(env, deb1, deb2);
    names_resolve(deb1, deb2);
}

fn exercise(env: &Env) {
    // It boots through the generic path: its own bootloader, no kernel given by lago.
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.workdir().join(lago::env::STATE_FILE)).unwrap()).unwrap();
    for vm in ["deb1", "deb2"] {
        let xml = saved["domain_xml"][vm].as_str().unwrap();
        assert!(xml.contains("<boot dev='hd'/>") && !xml.contains("<kernel>"), "{xml}");
        assert!(
            saved["templates"][format!("{vm}/root")]
                .as_str()
                .unwrap()
                .starts_with("debian-12:")
        );
    }

    let t = Instant::now();
    env.start(&[]).unwrap();
    eprintln!(
        "debian-12: start -> SSH answered by both VMs: {:.1?} (TCG, booted together)",
        t.elapsed()
    );
    let vms = env.get_vms();
    let (deb1, deb2) = (&vms["deb1"], &vms["deb2"]);
    ready_when_start_returns(deb1, deb2);
    for vm in [deb1, deb2] {
        booted_as_planned(vm, &saved);
    }
    users_and_units(env, deb1, deb2);
    names_resolve(deb1, deb2);
    stock_openssh_works(env, deb2);
    acpi_shutdown(env, deb1, deb2);
}

fn ready_when_start_returns(deb1: &Vm, deb2: &Vm) {
    // `start` returned once cloud-init was done (before, it returned at the
    // first SSH answer, cloud-init still running and about to restart sshd):
    // new sessions, as `lago shell` opens, work at once.
    for vm in [deb1, deb2] {
        let ci = out(vm, &["cloud-init", "status"]);
        assert!(ci.contains("status: done"), "{}: right after start: {ci}", vm.name());
        for _ in 0..5 {
            let fresh = lago::ssh::Connection::new(vm.ssh_target().clone());
            let st = fresh.exec("hostname", None, Some(Duration::from_secs(30))).unwrap();
            assert_eq!(st.out.trim(), vm.name(), "{st:?}");
        }
    }
}

fn booted_as_planned(vm: &Vm, saved: &serde_json::Value) {
    // systemd finished booting; a degraded system lists its failed units.
    let st = vm.ssh(["systemctl", "is-system-running", "--wait"]).unwrap();
    let state = st.out.trim().to_owned();
    if state != "running" {
        let failed = vm.ssh(["systemctl", "--failed", "--no-legend", "--plain"]).unwrap().out;
        eprintln!("{}: system is {state}; failed units:\n{failed}", vm.name());
        assert_eq!(state, "degraded", "{}: {st:?}", vm.name());
    }
    // cloud-init applied the seed from lago's NoCloud disk, without errors.
    let ci = out(vm, &["cloud-init", "status", "--long"]);
    assert!(ci.contains("status: done") && ci.contains("DataSourceNoCloud"), "{ci}");

    // Names.
    assert_eq!(out(vm, &["hostname"]).trim(), vm.name());
    assert_eq!(out(vm, &["hostname", "--fqdn"]).trim(), vm.fqdn());

    // The host key is lago's (pinned before the first connection), and the only one.
    let saved_key = saved["host_keys"][vm.name()].as_str().unwrap().to_owned();
    // (cloud-init writes the public half 0600: read it as root.)
    let guest_key = out(vm, &["sudo", "-n", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
    let fields = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(fields(&guest_key), fields(&saved_key), "{}", vm.name());
    let keys = out(vm, &["sh", "-c", "ls /etc/ssh/ | grep '^ssh_host_'"]);
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"],
        "{}",
        vm.name()
    );

    // Every NIC has its planned MAC, name and address; the management NIC
    // has the default route and the DNS server, the other NIC neither.
    for (i, nic) in vm.plan().nics.iter().enumerate() {
        let dev = format!("eth{i}");
        let mac = out(vm, &["cat", &format!("/sys/class/net/{dev}/address")]);
        assert_eq!(mac.trim(), nic.mac.to_string(), "{} {dev}", vm.name());
        let addr = out(vm, &["ip", "-4", "-o", "addr", "show", "dev", &dev]);
        assert!(
            addr.contains(&format!(" {}/", nic.ip.unwrap())),
            "{} {dev}: {addr}",
            vm.name()
        );
    }
    let mgmt = vm.plan().nics.iter().position(|n| n.net == vm.plan().mgmt_net).unwrap();
    let routes = out(vm, &["ip", "-4", "route", "show", "default"]);
    assert_eq!(routes.lines().count(), 1, "{}: {routes}", vm.name());
    assert!(routes.contains(&format!("dev eth{mgmt} ")), "{}: {routes}", vm.name());
    let dns = out(vm, &["resolvectl", "dns"]);
    let with_dns: Vec<&str> = dns.lines().filter(|l| l.contains("192.168.")).collect();
    assert_eq!(with_dns.len(), 1, "{}: {dns}", vm.name());
    assert!(with_dns[0].contains(&format!("(eth{mgmt})")), "{}: {dns}", vm.name());
}

fn users_and_units(env: &Env, deb1: &Vm, deb2: &Vm) {
    // deb1 logs in as root; deb2 as `tester`, who has passwordless sudo.
    assert_eq!(out(deb1, &["id", "-un"]).trim(), "root");
    assert_eq!(out(deb2, &["id", "-un"]).trim(), "tester");
    assert_eq!(out(deb2, &["sudo", "-n", "id", "-u"]).trim(), "0");
    let root_keys = out(deb2, &["sudo", "-n", "cat", "/root/.ssh/authorized_keys"]);
    assert!(
        root_keys.contains("Please login as the user"),
        "with a non-root ssh-user, root logins are turned away as in any cloud image: {root_keys}"
    );
    // Root on deb2: the key is known, the login is refused with cloud-init's message.
    let as_root = lago::ssh::Target {
        vm: "deb2".into(),
        ip: deb2.ip(),
        port: 22,
        user: "root".into(),
        key: env.workdir().join("id_ed25519"),
        host_key: None,
        password: None,
        learned_host_key: None,
        via: None,
    };
    let st = lago::ssh::Connection::new(as_root)
        .exec("id -u", None, Some(Duration::from_secs(60)))
        .unwrap();
    assert!(st.out.contains("Please login as the user") && st.code != 0, "{st:?}");

    // The test-writing API on systemd guests: a unit that is active, and one
    // that fails (an error at once, with `systemctl status`), as a user with sudo.
    deb2.wait_for_unit("ssh.service", Duration::from_secs(60)).unwrap();
    deb2.succeed(["sudo", "-n", "systemd-run", "--unit=lago-fails", "false"])
        .unwrap();
    let e = deb2
        .wait_for_unit("lago-fails.service", Duration::from_secs(60))
        .unwrap_err();
    assert!(
        matches!(&e, lago::Error::UnitFailed { unit, status, .. } if unit == "lago-fails.service" && status.contains("lago-fails")),
        "{e}"
    );
    deb2.succeed(["sudo", "-n", "systemctl", "reset-failed", "lago-fails.service"])
        .unwrap();
}

fn names_resolve(deb1: &Vm, deb2: &Vm) {
    // Names of the other VM resolve, bare and qualified, from both sides.
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    for vm in [deb1, deb2] {
        want.insert(vm.name().to_owned(), vm.ip().to_string());
        want.insert(vm.fqdn().to_owned(), vm.ip().to_string());
    }
    for (from, to) in [(deb1, deb2), (deb2, deb1)] {
        for name in [to.name(), to.fqdn()] {
            let st = from.ssh(["getent", "hosts", name]).unwrap();
            assert!(st.success(), "{} cannot resolve {name}: {st:?}", from.name());
            assert_eq!(
                st.out.split_whitespace().next(),
                Some(want[name].as_str()),
                "{} resolved {name}",
                from.name()
            );
            let ping = from.ssh(["ping", "-c", "1", "-W", "5", name]).unwrap();
            assert!(ping.success(), "{} cannot ping {name}: {ping:?}", from.name());
        }
    }
}

fn stock_openssh_works(env: &Env, deb2: &Vm) {
    // Stock OpenSSH with `lago ssh-config`: ssh and scp (SFTP) both ways,
    // as the non-root user, strict host-key checking against the pinned keys.
    let cfg = env.workdir().join("logs/ssh_config.test");
    fs::write(&cfg, lago::inventory::ssh_config(&env.ssh_hosts().unwrap()).unwrap()).unwrap();
    let ssh = Command::new("ssh")
        .arg("-F")
        .arg(&cfg)
        .args(["-o", "BatchMode=yes", "deb2", "id", "-un"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ssh.stdout).trim(), "tester", "{ssh:?}");
    let local = env.workdir().join("logs/scp.test");
    fs::write(&local, "sent with scp\n").unwrap();
    for (from, to) in [
        (local.to_str().unwrap().to_owned(), "deb2:sent.txt".to_owned()),
        ("deb2:sent.txt".to_owned(), format!("{}.back", local.display())),
    ] {
        let scp = Command::new("scp")
            .arg("-F")
            .arg(&cfg)
            .args(["-o", "BatchMode=yes", &from, &to])
            .output()
            .unwrap();
        assert!(scp.status.success(), "scp {from} {to}: {scp:?}");
    }
    assert_eq!(
        fs::read_to_string(format!("{}.back", local.display())).unwrap(),
        "sent with scp\n"
    );
    assert_eq!(out(deb2, &["cat", "sent.txt"]), "sent with scp\n");
}

fn acpi_shutdown(env: &Env, deb1: &Vm, deb2: &Vm) {
    // `lago shutdown` powers deb2 off through ACPI: systemd stops and says so on the console.
    let t = Instant::now();
    let cli = Command::new(env!("CARGO_BIN_EXE_lago"))
        .arg("--workdir")
        .arg(env.workdir())
        .args(["shutdown", "deb2", "--timeout", "120"])
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    eprintln!("debian-12: lago shutdown (ACPI) took {:.1?}", t.elapsed());
    assert_eq!(deb2.state().unwrap(), VmState::Down);
    let console = fs::read_to_string(deb2.console_log()).unwrap();
    assert!(
        console.contains("reboot: Power down"),
        "no clean power-off on the console:\n{}",
        console.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(deb1.state().unwrap(), VmState::Running);
}
