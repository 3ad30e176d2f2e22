//! Session mode: an ordinary user boots the multi-NIC lab on their own
//! libvirt daemon (`qemu:///session`), with no root, no bridge, no tap and
//! no route: each net is QEMU's sockets on a multicast group bound to
//! 127.0.0.1, SSH goes through a port forwarded on 127.0.0.1.
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
    in_test_namespace();
    assert!(
        !rustix::process::geteuid().is_root(),
        "run as a user other than root (scripts/test does, with runuser)"
    );
    let (links, routes) = (ip(&["-o", "link"]), ip(&["route"]));
    let tmp = tempfile::tempdir().unwrap();
    let env = Env::init(
        common::envs("multinic.yaml"),
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
        lab_works(&env);
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
}
