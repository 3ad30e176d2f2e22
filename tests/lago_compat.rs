//! Real Lago init files: every `LagoInitFile`, `init.json` and
//! `common/init-configs` file in the history of oVirt's system tests,
//! rendered as its suites rendered them (`tests/data/lago-compat/`,
//! `SOURCES.md` says from where; `render.py` makes them again).
//!
//! Each must load, or fail only for an error that is real (listed below
//! with the reason); every warning names the Lago key it is about.

use std::path::{Path, PathBuf};

use lago::config::{self, ConfigError, LoadOptions, Provider};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lago-compat");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "json")))
        .collect();
    files.sort();
    files
}

/// Variables the suites' paths use (`$LAGO_INITFILE_PATH` is lago's own).
fn vars(name: &str) -> Option<String> {
    Some(format!("/srv/{name}"))
}

const OVA: &str = "OVA import is not supported";
const BAD_IP: &str = "found \"192,168.200.3\"";
const DOWNLOAD: &str = "lago downloads nothing";

/// The files that do not load, and the real errors each has (every problem
/// reported must be one of these).
const REAL_ERRORS: &[(&str, &[&str])] = &[
    // The image-ng suites imported an appliance OVA (refused: lago does not
    // download or convert OVAs) and wrote the engine's address with a comma.
    ("image-ng-suite-3.6__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image-ng-suite-4.0__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image-ng-suite-4.1__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image-ng-suite-4.2__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image-ng-suite-master__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image_ng_suite_3.6__LagoInitFile.in.yaml", &[OVA, BAD_IP]),
    ("image_ng_suite_3.6__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("image_ng_suite_3.6__init.json", &[OVA, BAD_IP]),
    ("image_ng_suite_4.0__LagoInitFile.yaml", &[OVA, BAD_IP]),
    ("init-configs__1_appliance_2_nodes.yaml", &[OVA, BAD_IP]),
    ("init-configs__1_appliance_2_nodes_el7.yaml", &[OVA, BAD_IP]),
    // Also downloads node disks by URL (refused), so they have no `path`.
    (
        "image_suite_3.6__init.json",
        &[OVA, BAD_IP, DOWNLOAD, "expected `path` (the image file)"],
    ),
];

#[test]
fn ovirt_system_tests_init_files_load_or_fail_only_for_real_errors() {
    let files = corpus();
    assert_eq!(files.len(), 89, "the rendered corpus (SOURCES.md)");
    let mut loaded = 0;
    let mut warned_keys = std::collections::BTreeSet::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected = REAL_ERRORS.iter().find(|(f, _)| *f == name).map(|(_, e)| *e);
        match (config::load_with_env(path, &vars), expected) {
            (Ok(spec), None) => {
                loaded += 1;
                for w in &spec.warnings {
                    // Each warning is about one key, named in its path and its message.
                    let key = w.path.rsplit('.').next().unwrap_or_default().trim_matches('"');
                    let names_it = w.message.contains(&format!("`{key}`"))
                        || w.message.contains("hostname")
                        || w.message.contains("ignored");
                    assert!(names_it && w.pos.is_some(), "{name}: {w}");
                    warned_keys.insert(key.to_owned());
                }
            }
            (Ok(_), Some(_)) => panic!("{name} loads, but is listed as failing"),
            (Err(e), None) => panic!("{name} does not load:\n{e}"),
            (Err(e), Some(reasons)) => {
                let ConfigError::Invalid(problems) = &e else {
                    panic!("{name}: {e}");
                };
                for p in &problems.list {
                    let text = p.to_string();
                    assert!(
                        reasons.iter().any(|r| text.contains(r)),
                        "{name}: unexpected problem {text}"
                    );
                }
                for r in reasons {
                    assert!(e.to_string().contains(r), "{name}: no {r:?} in\n{e}");
                }
            }
        }
    }
    assert_eq!(loaded, 77, "77 of 89 load; the rest are listed in REAL_ERRORS");
    for key in ["vm-type", "service_provider", "cpu", "cpus"] {
        assert!(warned_keys.contains(key), "no warning about `{key}`: {warned_keys:?}");
    }
}

#[test]
fn lago_keys_are_honoured_or_warned_about() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lago-compat/he-basic-suite-4.3__LagoInitFile.yaml");
    let spec = config::load_with_env(&path, &vars).unwrap();
    // The hosted engine: an existing machine, reached at its address with a password.
    let engine = spec.vm("lago-he-basic-suite-4-3-engine").unwrap();
    assert_eq!(engine.provider, Provider::Ssh);
    assert_eq!(engine.ssh_password.as_deref(), Some("123456"));
    assert!(engine.disks.is_empty());
    assert_eq!(engine.nics[0].ip, Some("192.168.200.99".parse().unwrap()));
    // Lago's plugin choices are kept in the metadata.
    assert_eq!(engine.metadata["vm-type"], "ovirt-engine");
    assert_eq!(engine.metadata["vm-provider"], "ssh");
    assert_eq!(engine.metadata["service_provider"], "systemd");
    assert_eq!(engine.metadata["distro"], "el7");
    let storage = spec.vm("lago-he-basic-suite-4-3-storage").unwrap();
    assert_eq!(storage.provider, Provider::Libvirt);
    assert_eq!(storage.memory_mib, 750);
    let w: Vec<String> = spec.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter().any(|w| w.contains(
            "storage.cpu: `cpu` (a Lago key) is ignored: as in Lago, it has no effect: `vcpu` sets the number of CPUs"
        )),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("engine.vm-type: kept in the VM's metadata as `vm-type`")),
        "{w:#?}"
    );
    // Strict: the same warnings are errors.
    let err = config::load_with(&path, LoadOptions { strict: true }).unwrap_err();
    assert_eq!(err.problems().len(), spec.warnings.len(), "{err}");
    assert!(err.to_string().contains("strict mode makes it an error"), "{err}");
}

#[test]
fn prototypes_quoted_numbers_names_and_top_level_keys() {
    let yaml = r#"
vm-common-settings: &common
  memory: "2047"
prototypes:
  host:
    nics: [{net: lago}]
    disks: [{type: empty, name: root, dev: vda, size: 1G}]
    metadata: {role: host}
domains:
  lago_host_0:
    based-on: host
    <<: *common
  lago_host_1:
    based-on: host
    memory: 1024
    metadata: {role: special}
nets:
  lago: {}
"#;
    let spec = config::from_str(yaml, "/x/LagoInitFile").unwrap();
    let (h0, h1) = (&spec.vms[0], &spec.vms[1]);
    assert_eq!(
        (h0.memory_mib, h1.memory_mib),
        (2047, 1024),
        "quoted numbers, and own keys win"
    );
    assert_eq!(h0.metadata["role"], "host");
    assert_eq!(h1.metadata["role"], "special");
    assert_eq!(h0.disks.len(), 1, "the prototype's disks");
    assert_eq!(
        (h0.hostname.as_str(), h1.hostname.as_str()),
        ("lago-host-0", "lago-host-1")
    );
    let w: Vec<String> = spec.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("top-level key `vm-common-settings` is ignored")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|w| w.contains("hostname and DNS name are `lago-host-0`")),
        "{w:#?}"
    );
    assert_eq!(w.len(), 3, "{w:#?}");

    // A top-level key that looks like a typo is an error; an unknown prototype too.
    let err = config::from_str("domain:\n  vm01: {}\nnets:\n  lago: {}\n", "/x/f").unwrap_err();
    assert!(
        err.to_string().contains("unknown top-level key `domain`")
            && err.to_string().contains("did you mean `domains`?"),
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
    let yaml = "domains:\n  old:\n    vm-provider: ssh\n    ssh-key: ~/.ssh/id_ed25519\n    nics: [{net: outside, ip: 10.1.2.3}]\nnets:\n  outside: {}\n";
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
