//! Lago's init files, as Lago users wrote them: `tests/data/lago-shapes/`
//! holds files written for these tests in the shapes of oVirt's system-test
//! suites (hosted engine, prototypes, YAML anchors, an appliance import).
//! Each loads, with a warning for every Lago key lago does not act on, or
//! fails only for an error that is real.
//!
//! (The measurement over the real files of that history is a report:
//! `cargo run --example lago_compat -- DIR`; see docs/coming-from-lago.md.)

use std::path::{Path, PathBuf};

use lago::config::{self, ConfigError, LoadOptions, Provider};

fn shape(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lago-shapes")
        .join(name)
}

/// Variables paths use (`$LAGO_INITFILE_PATH` is lago's own).
fn vars(name: &str) -> Option<String> {
    Some(format!("/srv/{name}"))
}

fn warnings(name: &str) -> Vec<String> {
    let spec = config::load_with_env(shape(name), &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
    spec.warnings.iter().map(|w| w.to_string()).collect()
}

#[test]
fn a_hosted_engine_suite_loads_with_its_existing_engine() {
    let spec = config::load_with_env(shape("hosted_engine.yaml"), &vars).unwrap();
    // The engine: an existing machine, reached at its address with a password.
    let engine = spec.vm("suite-he-engine").unwrap();
    assert_eq!(engine.provider, Provider::Ssh);
    assert_eq!(engine.ssh_password.as_deref(), Some("123456"));
    assert!(engine.disks.is_empty());
    assert_eq!(engine.nics[0].ip, Some("192.168.200.99".parse().unwrap()));
    assert_eq!(engine.nics[1].ip, None, "its other NICs need no address");
    // Lago's plugin choices are kept in the metadata.
    assert_eq!(engine.metadata["vm-type"], "ovirt-engine");
    assert_eq!(engine.metadata["vm-provider"], "ssh");
    assert_eq!(engine.metadata["service_provider"], "systemd");
    assert_eq!(engine.metadata["distro"], "el7");
    let storage = spec.vm("suite-he-storage").unwrap();
    assert_eq!((storage.provider, storage.memory_mib), (Provider::Libvirt, 750));
    assert_eq!(storage.disks.len(), 2, "a disk `comment` is free text");
    // The engine's address pins the management net, as any static address does.
    assert!(spec.net("suite-he-net-management").unwrap().is_managed());

    let w = warnings("hosted_engine.yaml");
    let expected = [
        "8:5: domains.suite-he-engine.vm-type: kept in the VM's metadata as `vm-type` (lago has no VM type plugins)",
        "11:5: domains.suite-he-engine.service_provider: kept in the VM's metadata as `service_provider`",
        "22:5: domains.suite-he-storage.cpu: `cpu` (a Lago key) is ignored: as in Lago, it has no effect: `vcpu` sets the number of CPUs",
        "23:5: domains.suite-he-storage.service_provider: kept in the VM's metadata",
        "28:24: domains.suite-he-storage.disks[0].template_name: `template_name` is ignored on a `template_type: qcow2` disk, as in Lago",
        "42:5: domains.suite-he-host-0.vm-type: kept in the VM's metadata as `vm-type`",
    ];
    assert_eq!(w.len(), expected.len(), "{w:#?}");
    for (got, want) in w.iter().zip(expected) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}");
    }
    // Strict: the same warnings are errors.
    let err = config::load_with(shape("hosted_engine.yaml"), LoadOptions { strict: true }).unwrap_err();
    assert_eq!(err.problems().len(), expected.len(), "{err}");
    assert!(err.to_string().contains("strict mode makes it an error"), "{err}");
}

#[test]
fn prototypes_and_quoted_numbers_load_as_lago_read_them() {
    let spec = config::load_with_env(shape("prototypes.json"), &vars).unwrap();
    assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    let (engine, h0, h1) = (&spec.vms[0], &spec.vms[1], &spec.vms[2]);
    assert_eq!(engine.memory_mib, 4096, "a quoted number");
    // The prototype's keys fill in what the VM lacks; the VM's own win.
    assert_eq!(h0.disks[0].name, "root");
    assert_eq!(h0.metadata["ovirt-role"], "host");
    assert_eq!(h0.memory_mib, config::DEFAULT_MEMORY_MIB);
    assert_eq!(h1.memory_mib, 2048);
    assert_eq!(h1.nics[0].net, "lago");
}

#[test]
fn anchor_holders_and_underscored_names_load_with_warnings() {
    let spec = config::load_with_env(shape("anchors.yaml"), &vars).unwrap();
    let engine = &spec.vms[0];
    assert_eq!(engine.hostname, "lago-suite-engine");
    assert_eq!(engine.root_password.as_deref(), Some("123456"), "from the anchor");
    let w = warnings("anchors.yaml");
    for want in [
        "3:1: vm-common-settings: top-level key `vm-common-settings` is ignored",
        "7:1: nat-settings: top-level key `nat-settings` is ignored",
        "5:3: domains.lago_suite_engine.service_provider: kept in the VM's metadata",
        "11:3: domains.lago_suite_engine: the guest's hostname and DNS name are `lago-suite-engine`",
        "14:5: domains.lago_suite_engine.cpus: `cpus` (a Lago key) is ignored",
        "17:3: domains.lago_suite_host0: the guest's hostname and DNS name are `lago-suite-host0`",
    ] {
        assert!(w.iter().any(|g| g.starts_with(want)), "no {want:?} in {w:#?}");
    }
}

#[test]
fn ova_imports_downloads_and_malformed_addresses_are_real_errors() {
    let err = config::load_with_env(shape("appliance.yaml"), &vars).unwrap_err();
    let ConfigError::Invalid(p) = &err else { panic!("{err}") };
    let got: Vec<String> = p.list.iter().map(|p| p.to_string()).collect();
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].starts_with(
        "5:5: domains.engine.type: `type` is a Lago key that lago does not support: OVA import is not supported"
    ));
    assert!(got[1].starts_with("6:5: domains.engine.url: `url` is a Lago key that lago does not support: OVA import"));
    assert!(got[2].starts_with(
        "10:13: domains.engine.nics[0].ip: expected an IPv4 address like 192.168.200.10, found \"192,168.200.3\""
    ));

    let err = config::load_with_env(shape("downloads.json"), &vars).unwrap_err();
    assert!(
        err.to_string()
            .contains("disks[1].url: `url` is a Lago key that lago does not support: lago downloads nothing"),
        "{err}"
    );
}

#[test]
fn typos_stay_errors_and_names_stay_distinct() {
    // A top-level key that looks like a typo is an error; an unknown prototype too.
    let err = config::from_str("domain:\n  vm01: {}\nnets:\n  lago: {}\n", "/x/f").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown top-level key `domain`") && text.contains("did you mean `domains`?"),
        "{err}"
    );
    let err = config::from_str(
        "prototypes: {host: {}}\ndomains:\n  vm01: {based-on: hots}\nnets:\n  lago: {}\n",
        "/x/f",
    )
    .unwrap_err();
    assert!(err.to_string().contains("did you mean `host`?"), "{err}");
    // Names whose hostnames collide.
    let err = config::from_str(
        "domains:\n  a_b: {nics: [{net: l}], disks: [{type: empty, name: r, dev: vda, size: 1G}]}\n  a-b: {nics: [{net: l}], disks: [{type: empty, name: r, dev: vda, size: 1G}]}\nnets:\n  l: {}\n",
        "/x/f",
    )
    .unwrap_err();
    assert!(err.to_string().contains("distinct hostnames"), "{err}");
}

#[test]
fn existing_machines_need_an_address_and_their_own_nets_are_external() {
    let yaml = "domains:\n  old:\n    vm-provider: ssh\n    ssh-key: /keys/old\n    nics: [{net: outside, ip: 10.1.2.3}]\nnets:\n  outside: {}\n";
    let spec = config::from_str(yaml, "/x/f").unwrap();
    let old = &spec.vms[0];
    assert_eq!(old.provider, Provider::Ssh);
    assert!(!old.bootstrap);
    assert!(
        spec.nets[0].external,
        "only an existing machine uses it: nothing is created for it"
    );
    assert!(!spec.nets[0].is_managed());
    // Any address goes there (it is not leased from the pool).
    assert_eq!(old.nics[0].ip, Some("10.1.2.3".parse().unwrap()));
    let err = config::from_str(
        "domains:\n  old:\n    vm-provider: ssh\n    nics: [{net: outside}]\nnets:\n  outside: {}\n",
        "/x/f",
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected `ip` on the management net"), "{err}");
    let err = config::from_str(
        "domains:\n  vm01:\n    ssh-key: /k\n    nics: [{net: l}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  l: {}\n",
        "/x/f",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("`ssh-key` only applies to `vm-provider: ssh` VMs"),
        "{err}"
    );
}
