//! Session mode: an ordinary user boots the multi-NIC lab on their own
//! libvirt daemon (`qemu:///session`), with no root, no bridge, no tap and
//! no route: each net is QEMU's sockets on a multicast group bound to
//! 127.0.0.1, SSH goes through a port forwarded on 127.0.0.1.
//!
//! `debian-12` boots the same way: cloud-init applies the static addresses
//! and the hosts lines of lago's seed, and DHCP (QEMU's own) only on the
//! user-mode NIC.
//!
//! `scripts/test` runs this binary as an unprivileged user inside the test
//! network namespace (root's `cargo test` run skips it).

mod common;

use std::process::Command;

use lago::{Env, InitOptions};

use common::{in_test_namespace, out};

fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "boots VMs as a user other than root: scripts/test runs it as one, inside the test network namespace"]
fn a_multi_nic_lab_boots_without_root() {
    in_session("multinic.yaml", lab_works);
}

/// Boots `file` as this user in session mode, runs `check` on it, destroys
/// it and checks that nothing of it is left, in the namespace or in libvirt.
fn in_session(file: &str, check: impl FnOnce(&Env)) {
    in_test_namespace();
    assert!(
        !rustix::process::geteuid().is_root(),
        "run as a user other than root (scripts/test does, with runuser)"
    );
    let (links, routes) = (ip(&["-o", "link"]), ip(&["route"]));
    let tmp = tempfile::tempdir().unwrap();
    let env = Env::init(
        common::envs(file),
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            libvirt_uri: Some("qemu:///session".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let (id, workdir) = (env.id().to_string(), env.workdir().to_path_buf());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start(&[]).unwrap();
        check(&env);
        // Nothing of it reached the network namespace.
        assert_eq!(ip(&["-o", "link"]), links, "no bridge, no tap");
        assert_eq!(ip(&["route"]), routes, "no route");
    }));
    env.destroy().unwrap();
    assert!(!workdir.exists(), "{}", workdir.display());
    let left = lago::backend::Backend::connect(Some("qemu:///session"))
        .unwrap()
        .domains_with_prefix(&format!("lago-{id}-"))
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

#[test]
#[ignore = "boots VMs as a user other than root: scripts/test runs it as one, inside the test network namespace"]
fn debian_12_boots_without_root() {
    in_session("debian.yaml", |env| {
        let (deb1, deb2) = (env.vm("deb1").unwrap(), env.vm("deb2").unwrap());
        for vm in [deb1, deb2] {
            assert_eq!(vm.ssh_target().ip.to_string(), "127.0.0.1");
            assert_eq!(out(vm, &["hostname"]).trim(), vm.name());
            let ci = out(vm, &["cloud-init", "status"]);
            assert!(ci.contains("status: done"), "{}: {ci}", vm.name());
            common::has_planned_addresses(vm);
            // The default route and resolver are the user-mode NIC's, the last.
            let user_nic = format!("eth{}", vm.plan().nics.len());
            let route = out(vm, &["ip", "route", "show", "default"]);
            assert!(route.contains(&format!("dev {user_nic}")), "{}: {route}", vm.name());
            assert_eq!(route.lines().count(), 1, "{}: {route}", vm.name());
        }
        // deb2's user is not root and has sudo (its name in /etc/hosts: no warning).
        assert_eq!(out(deb2, &["id", "-un"]).trim(), "tester");
        let sudo = deb2.ssh(["sudo", "-n", "id", "-u"]).unwrap();
        assert_eq!(sudo.out.trim(), "0", "{sudo:?}");
        assert!(!sudo.err.contains("unable to resolve"), "{sudo:?}");
        // Each VM's names resolve in the other, and both nets carry traffic.
        for (from, to) in [(deb1, deb2), (deb2, deb1)] {
            for name in [
                to.name().to_owned(),
                to.fqdn().to_owned(),
                format!("{}-back", to.name()),
            ] {
                let st = from.ssh(["getent", "hosts", &name]).unwrap();
                assert!(st.success(), "{} cannot resolve {name}: {st:?}", from.name());
                out(from, &["ping", "-c", "1", "-W", "5", &name]);
            }
        }
    });
}

fn lab_works(env: &Env) {
    let (vm01, vm02) = (env.vm("vm01").unwrap(), env.vm("vm02").unwrap());
    for vm in [vm01, vm02] {
        let t = vm.ssh_target();
        assert_eq!(
            t.ip.to_string(),
            "127.0.0.1",
            "{}: SSH goes through a forwarded port",
            vm.name()
        );
        assert_ne!(t.port, 22);
        assert_eq!(out(vm, &["hostname"]).trim(), vm.name());
        common::has_planned_addresses(vm);
    }
    // `lago status`: no libvirt network; each net is up while its VMs run, on its own group.
    let nets = env.status().unwrap().nets;
    assert!(nets.iter().all(|n| n.up && n.gateway.is_none()), "{nets:?}");
    let groups: std::collections::BTreeSet<_> = nets.iter().map(|n| n.socket.clone().unwrap()).collect();
    assert_eq!(groups.len(), nets.len(), "{nets:?}");
    // Names resolve from the seed's hosts lines; both nets carry traffic.
    out(vm01, &["ping", "-c", "1", "-W", "5", "vm02"]);
    let back = vm02.plan().nics[0].ip.unwrap().to_string();
    out(vm01, &["ping", "-c", "1", "-W", "5", &back]);
    out(vm02, &["ping", "-c", "1", "-W", "5", "vm01-back"]);
    // A cut link stops the back net and nothing else; it comes back.
    let nic = vm01.plan().nics.iter().position(|n| n.net == "back").unwrap();
    assert!(vm01.non_management_nics().contains(&nic));
    vm01.link_down(nic).unwrap();
    assert!(!vm01.ssh(["ping", "-c", "1", "-W", "2", &back]).unwrap().success());
    vm01.link_up(nic).unwrap();
    vm01.wait_until_succeeds(
        ["ping", "-c", "1", "-W", "2", &back],
        std::time::Duration::from_secs(20),
    )
    .unwrap();
    // Isolated, vm01 reaches no VM and still answers SSH; rejoined, it does again.
    env.isolate("vm01").unwrap();
    assert!(!vm01.ssh(["ping", "-c", "1", "-W", "2", "vm02"]).unwrap().success());
    assert_eq!(out(vm01, &["hostname"]).trim(), "vm01");
    env.rejoin("vm01").unwrap();
    vm01.wait_until_succeeds(
        ["ping", "-c", "1", "-W", "2", "vm02"],
        std::time::Duration::from_secs(20),
    )
    .unwrap();
    // Copies both ways through the forwarded port.
    let tmp = tempfile::tempdir().unwrap();
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tmp.path().join("blob"), &blob).unwrap();
    vm02.copy_to(tmp.path().join("blob"), "/tmp/blob").unwrap();
    vm02.copy_from("/tmp/blob", tmp.path().join("back")).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("back")).unwrap(), blob);
}
