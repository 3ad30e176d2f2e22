//! Init-file validation: one bad file per rule under `tests/data/invalid/`,
//! each checked for the exact problems (position, key path, message) it yields.

use std::path::{Path, PathBuf};

use lago::config::{self, ConfigError, DiskBus, DiskFormat, DiskSource, NetKind};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

fn no_vars(_: &str) -> Option<String> {
    None
}

/// (line, column, key path, fragments the message must contain)
type Expect<'a> = (usize, usize, &'a str, &'a [&'a str]);

fn check(file: &str, expected: &[Expect<'_>]) {
    let path = data(&format!("invalid/{file}"));
    let err = config::load_with_env(&path, &no_vars).expect_err(file);
    let ConfigError::Invalid(problems) = &err else {
        panic!("{file}: expected an Invalid error, got {err}");
    };
    assert_eq!(problems.file, path);
    let got: Vec<String> = problems.list.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems.list.len(),
        expected.len(),
        "{file}: problems were:\n{}",
        got.join("\n")
    );
    for (p, (line, col, key, fragments)) in problems.list.iter().zip(expected) {
        let pos = p.pos.expect("every problem here has a position");
        assert_eq!((pos.line, pos.col), (*line, *col), "{file}: position of {p}");
        assert_eq!(p.path, *key, "{file}: key path of {p}");
        let text = p.to_string();
        for f in *fragments {
            assert!(text.contains(f), "{file}: {text:?} lacks {f:?}");
        }
    }
    // The error's text names the file, and each problem's line:column and key path.
    let shown = err.to_string();
    for (line, col, key, _) in expected {
        assert!(
            shown.contains(&format!("{}:{line}:{col}: {key}: ", path.display())),
            "{shown}"
        );
    }
}

#[test]
fn wrong_type() {
    check(
        "wrong_type.yaml",
        &[(
            3,
            13,
            "domains.vm01.memory",
            &["expected an integer", "found string \"lots\""],
        )],
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    check(
        "unknown_key.yaml",
        &[(
            3,
            5,
            "domains.vm01.memroy",
            &["unknown key `memroy`", "expected one of", "did you mean `memory`?"],
        )],
    );
}

#[test]
fn lago_keys_we_do_not_support_say_why() {
    check(
        "lago_only_key.yaml",
        &[(
            9,
            9,
            "domains.vm01.disks[0].build",
            &["Lago key that lago does not support", "virt-customize"],
        )],
    );
}

#[test]
fn empty_vm_name() {
    check(
        "empty_vm_name.yaml",
        &[(2, 3, "domains.\"\"", &["expected a VM name", "found \"\""])],
    );
}

#[test]
fn duplicate_vm_name() {
    check(
        "duplicate_vm_name.yaml",
        &[(5, 3, "domains.vm01", &["duplicate key `vm01`", "first written at 2:3"])],
    );
}

#[test]
fn nic_on_unknown_net() {
    check(
        "unknown_net.yaml",
        &[(
            4,
            14,
            "domains.vm01.nics[0].net",
            &["unknown net `lgo`", "(`lago`)", "did you mean `lago`?"],
        )],
    );
}

#[test]
fn vm_without_management_net() {
    check(
        "no_mgmt_net.yaml",
        &[(
            3,
            5,
            "domains.vm01.nics",
            &["expected a NIC on a management net (`mgmt`)", "management: true"],
        )],
    );
}

#[test]
fn vm_on_several_management_nets() {
    check(
        "several_mgmt_nets.yaml",
        &[(
            3,
            5,
            "domains.vm01.nics",
            &["exactly one management net", "found 2: a, b"],
        )],
    );
}

#[test]
fn duplicate_dev() {
    check(
        "duplicate_dev.yaml",
        &[(
            6,
            40,
            "domains.vm01.disks[1].dev",
            &["unique device", "`vda`", "domains.vm01.disks[0] (at 5:40)"],
        )],
    );
}

#[test]
fn duplicate_disk_name() {
    check(
        "duplicate_disk_name.yaml",
        &[(
            6,
            29,
            "domains.vm01.disks[1].name",
            &["unique disk name", "`root`", "(at 5:29)"],
        )],
    );
}

#[test]
fn static_ip_outside_its_net() {
    check(
        "ip_outside_net.yaml",
        &[(
            5,
            13,
            "domains.vm01.nics[0].ip",
            &[
                "inside net `lago` (192.168.201.0/24, set by gw 192.168.201.1 at 9:9)",
                "found 192.168.202.5",
            ],
        )],
    );
}

#[test]
fn static_ip_outside_the_pool() {
    check(
        "ip_outside_pool.yaml",
        &[(
            5,
            13,
            "domains.vm01.nics[0].ip",
            &["subnet pool 192.168.200.0-192.168.255.255", "found 10.0.0.5"],
        )],
    );
}

#[test]
fn static_ip_used_twice() {
    check(
        "ip_used_twice.yaml",
        &[(
            10,
            13,
            "domains.vm02.nics[0].ip",
            &["unique address", "192.168.210.5", "domains.vm01.nics[0] (at 5:13)"],
        )],
    );
}

#[test]
fn dhcp_range_outside_2_to_254() {
    check(
        "dhcp_out_of_range.yaml",
        &[
            (8, 14, "nets.lago.dhcp.start", &["from 2 to 254", "found 1"]),
            (9, 12, "nets.lago.dhcp.end", &["from 2 to 254", "found 255"]),
        ],
    );
}

#[test]
fn dhcp_start_after_end() {
    check(
        "dhcp_start_after_end.yaml",
        &[(8, 14, "nets.lago.dhcp", &["`start` <= `end`", "start 200 > end 100"])],
    );
}

#[test]
fn memory_zero() {
    check(
        "memory_zero.yaml",
        &[(3, 13, "domains.vm01.memory", &["from 1 to", "found 0"])],
    );
}

#[test]
fn vcpu_zero() {
    check(
        "vcpu_zero.yaml",
        &[(3, 11, "domains.vm01.vcpu", &["from 1 to 255", "found 0"])],
    );
}

#[test]
fn template_disk_without_template_name() {
    check(
        "template_without_name.yaml",
        &[(
            5,
            13,
            "domains.vm01.disks[0].template_name",
            &["expected `template_name`", "found no `template_name` key"],
        )],
    );
}

#[test]
fn a_template_digest_that_is_not_a_sha256() {
    check(
        "bad_digest.yaml",
        &[(
            5,
            64,
            "domains.vm01.disks[0].template_digest",
            &["expected a sha256 digest (64 hex digits", "found `md5:abc`"],
        )],
    );
}

#[test]
fn file_disk_without_path() {
    check(
        "file_without_path.yaml",
        &[(
            5,
            13,
            "domains.vm01.disks[0].path",
            &["expected `path`", "found no `path` key"],
        )],
    );
}

#[test]
fn size_on_a_disk_that_is_not_empty() {
    check(
        "size_on_template.yaml",
        &[(
            9,
            15,
            "domains.vm01.disks[0].size",
            &["only applies to `type: empty` disks", "`type: template`"],
        )],
    );
}

#[test]
fn unparsable_size() {
    check(
        "bad_size.yaml",
        &[(
            8,
            15,
            "domains.vm01.disks[0].size",
            &["expected a size like `10G`", "\"ten gigs\""],
        )],
    );
}

#[test]
fn no_nets() {
    check("no_nets.yaml", &[(2, 7, "nets", &["at least one network"])]);
}

#[test]
fn unset_variable_in_a_path() {
    check(
        "unset_variable.yaml",
        &[(
            8,
            15,
            "domains.vm01.disks[0].path",
            &["`LAGO_TEST_UNSET_VARIABLE`", "is not set"],
        )],
    );
}

#[test]
fn bridge_nets_take_no_addresses() {
    check(
        "bridge_misuse.yaml",
        &[
            (6, 13, "domains.vm01.nics[1].ip", &["no `ip` on bridge net `lab`"]),
            (12, 11, "nets.lab.dhcp", &["does not apply to a bridge net"]),
        ],
    );
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    check(
        "many_problems.yaml",
        &[
            (3, 13, "domains.vm01.memory", &["found -5"]),
            (4, 11, "domains.vm01.vcpu", &["found string \"two\""]),
            (6, 14, "domains.vm01.nics[0].net", &["unknown net `nope`"]),
            (8, 15, "domains.vm01.disks[0].type", &["did you mean `template`?"]),
            (10, 14, "domains.vm01.disks[0].dev", &["found \"xda\""]),
            (12, 11, "domains.vm02.nics", &["at least one NIC"]),
            (13, 12, "domains.vm02.disks", &["at least one disk"]),
            (14, 5, "domains.vm02.ssh_user", &["did you mean `ssh-user`?"]),
            (17, 11, "nets.lago.type", &["did you mean `nat`?"]),
            (18, 10, "nets.lago.mtu", &["from 68 to 65535", "found 10"]),
        ],
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let path = data("invalid/syntax_error.yaml");
    match config::load(&path) {
        Err(ConfigError::Syntax { path: p, pos, message }) => {
            assert_eq!(p, path);
            assert_eq!((pos.line, pos.col), (4, 5));
            assert!(!message.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn empty_file() {
    let path = data("invalid/empty.yaml");
    let err = config::load(&path).unwrap_err();
    assert!(matches!(&err, ConfigError::Empty { path: p } if *p == path), "{err:?}");
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn missing_file() {
    let path = data("invalid/does-not-exist.yaml");
    let err = config::load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::NotFound { path: p } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("does-not-exist.yaml"), "{err}");
}

#[test]
fn the_seed_example_parses() {
    let spec = config::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/LagoInitFile")).unwrap();
    assert_eq!(spec.vms.len(), 1);
    let vm = &spec.vms[0];
    assert_eq!(vm.name, "vm01");
    assert_eq!(vm.memory_mib, 1024);
    assert_eq!(vm.mgmt_net, "lago");
    assert_eq!(vm.disks[0].dev, "sda");
    assert_eq!(vm.disks[0].bus, DiskBus::Scsi);
    assert_eq!(
        vm.disks[0].source,
        DiskSource::Template {
            name: "el7.3-base".into(),
            version: None,
            digest: None,
        }
    );
    let net = &spec.nets[0];
    assert_eq!(net.kind, NetKind::Nat);
    assert!(net.management);
    assert_eq!(net.dns_domain.as_deref(), Some("lago.local"));
    assert_eq!(net.dhcp.map(|d| (d.start, d.end)), Some((100, 254)));
}

#[test]
fn json_gives_the_same_spec_as_yaml() {
    let yaml = config::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/LagoInitFile")).unwrap();
    let json = config::load(data("valid/seed.json")).unwrap();
    assert_eq!(json.vms, yaml.vms);
    assert_eq!(json.nets, yaml.nets);
}

#[test]
fn every_key_with_defaults_filled_in() {
    let path = data("valid/full.yaml");
    let dir = path.parent().unwrap().to_path_buf();
    let spec = config::load(&path).unwrap();
    let vm01 = spec.vm("vm01").unwrap();
    assert_eq!((vm01.memory_mib, vm01.vcpu, vm01.boot_time_sec), (256, 1, 120));
    assert_eq!(vm01.cpu_model.as_deref(), Some("qemu64"));
    assert_eq!(vm01.distro.as_deref(), Some("debian"));
    assert_eq!(vm01.groups, ["web", "db"]);
    assert_eq!(vm01.artifacts, ["/var/log/messages", "/etc/hostname"]);
    assert_eq!(vm01.metadata["owner"], "team-a");
    assert_eq!(vm01.mgmt_net, "mgmt");
    assert_eq!(
        vm01.disks[0].source,
        DiskSource::Template {
            name: "tiny".into(),
            version: Some("1".into()),
            digest: Some("ab".repeat(32)),
        }
    );
    assert_eq!(vm01.disks[1].source, DiskSource::Empty { size_bytes: 1 << 30 });
    assert_eq!(vm01.disks[1].format, DiskFormat::Raw);
    assert_eq!(vm01.disks[2].bus, DiskBus::Ide);
    assert!(vm01.disks[2].is_cdrom());
    assert_eq!(
        vm01.disks[2].source,
        DiskSource::File {
            path: dir.join("images/tools.iso"),
            make_a_copy: false
        }
    );
    assert_eq!(
        vm01.disks[3].source,
        DiskSource::File {
            path: dir.join("extra.qcow2"),
            make_a_copy: true
        }
    );
    let vm02 = spec.vm("vm02").unwrap();
    assert_eq!(vm02.groups, ["web"]);
    assert!(!vm02.bootstrap);
    assert_eq!(vm02.ssh_user, "root");
    assert_eq!(vm02.nics[0].ip, Some("192.168.230.10".parse().unwrap()));
    assert_eq!(
        vm02.disks[0].source,
        DiskSource::TemplateFile {
            path: "/var/lib/images/debian.qcow2".into()
        }
    );
    let mgmt = spec.net("mgmt").unwrap();
    assert_eq!(mgmt.dns_domain.as_deref(), Some("test.example"));
    assert_eq!(mgmt.mtu, 1400);
    let storage = spec.net("storage").unwrap();
    assert_eq!(storage.kind, NetKind::Isolated);
    assert!(!storage.management);
    assert_eq!(storage.dns_domain, None);
    assert_eq!(storage.gw, Some("192.168.231.1".parse().unwrap()));
    assert_eq!(spec.net("lab").unwrap().kind, NetKind::Bridge { bridge: "br0".into() });
    assert_eq!(spec.net("lab").unwrap().dhcp, None);
}

#[test]
fn management_net_is_picked_by_sorted_name_when_none_is_flagged() {
    let text = "domains:\n  vm01:\n    nics: [{net: zeta}, {net: alpha}]\n    disks: [{type: empty, name: root, dev: vda, size: 1G}]\nnets:\n  zeta: {}\n  alpha: {}\n";
    let spec = config::from_str(text, "/tmp/x.yaml").unwrap();
    assert_eq!(spec.vms[0].mgmt_net, "alpha");
    assert!(spec.net("alpha").unwrap().management);
    assert!(!spec.net("zeta").unwrap().management);
    assert_eq!(spec.net("zeta").unwrap().dns_domain, None);
}

// ---- Bounded, panic-free input: crashers kept as regression files. ----

/// A limit error: its variant, position and message (naming the limit).
fn check_limit(err: &ConfigError, line: usize, col: usize, fragment: &str) {
    let ConfigError::Limit { pos, message, .. } = err else {
        panic!("expected a Limit error, got {err:?}");
    };
    assert_eq!((pos.line, pos.col), (line, col), "{err}");
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
}

#[test]
fn alias_bombs_stop_at_the_expansion_limit() {
    let path = data("invalid/billion_laughs.yaml");
    let start = std::time::Instant::now();
    let err = config::load_with_env(&path, &no_vars).unwrap_err();
    check_limit(&err, 8, 8, "aliases expand to more than the limit of 100000 nodes");
    assert!(
        err.to_string().starts_with(&format!("{}:8:8: ", path.display())),
        "{err}"
    );
    // Not a speed target: a guard against the minute-long expansion it was.
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn deep_nesting_stops_at_the_depth_limit() {
    let err = config::load_with_env(data("invalid/deep_nesting.yaml"), &no_vars).unwrap_err();
    // The top map is level 1; the 64th list is the 65th level.
    check_limit(&err, 3, 3 + 2 * 63, "nest deeper than the limit of 64 levels");
    // Flow lists: the YAML scanner's own bound may be reached first, further on the line.
    let err = config::load_with_env(data("invalid/deep_flow_nesting.yaml"), &no_vars).unwrap_err();
    match &err {
        ConfigError::Limit { pos, message, .. } => {
            assert_eq!(pos.line, 2, "{err}");
            assert!(pos.col >= 10 + 63, "{err}");
            assert!(message.contains("nest deeper than the limit of 64 levels"), "{err}");
        }
        other => panic!("expected a Limit error, got {other:?}"),
    }
    // Exactly at the limit is fine for the loader (the validator then says what it expected).
    let ok_depth = format!("domains: {}{}\nnets: {{lago: {{}}}}\n", "[".repeat(63), "]".repeat(63));
    let err = config::from_str(&ok_depth, "/x/init.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
}

#[test]
fn an_alias_cannot_smuggle_depth_past_the_limit() {
    let text = format!(
        "x-deep: &d {}{}\ndomains: {}*d{}\nnets: {{lago: {{}}}}\n",
        "[".repeat(40),
        "]".repeat(40),
        "[".repeat(30),
        "]".repeat(30)
    );
    let err = config::from_str(&text, "/x/init.yaml").unwrap_err();
    check_limit(&err, 2, 10 + 30, "through this alias");
}

#[test]
fn files_over_a_mebibyte_and_endless_devices_are_refused() {
    // /dev/zero never ends: the read stops at the cap.
    let err = config::load_with_env("/dev/zero", &no_vars).unwrap_err();
    check_limit(&err, 1, (1 << 20) + 1, "larger than the limit of 1048576 bytes");
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&big, line.repeat((2 << 20) / line.len())).unwrap();
    let err = config::load_with_env(&big, &no_vars).unwrap_err();
    check_limit(&err, (1 << 20) / line.len() + 1, (1 << 20) % line.len() + 1, "1 MiB");
    let err = config::from_str(&line.repeat((2 << 20) / line.len()), "/x/init.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Limit { .. }), "{err:?}");
}

#[test]
fn text_that_is_not_utf8_is_an_error_at_its_place() {
    let path = data("invalid/not_utf8.yaml");
    let err = config::load_with_env(&path, &no_vars).unwrap_err();
    match &err {
        ConfigError::Encoding { pos, .. } => assert_eq!((pos.line, pos.col), (3, 14), "{err}"),
        other => panic!("expected an Encoding error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("not_utf8.yaml:3:14: expected UTF-8 text"),
        "{err}"
    );
}

#[test]
fn a_folder_is_not_an_init_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = config::load_with_env(tmp.path(), &no_vars).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
}

#[test]
fn a_multibyte_device_name_is_a_problem_not_a_panic() {
    check(
        "non_ascii_dev.yaml",
        &[(
            6,
            40,
            "domains.vm01.disks[0].dev",
            &["expected a device like `vda`", "found \"vé\""],
        )],
    );
}

#[test]
fn forty_thousand_keys_load_in_linear_time() {
    use std::fmt::Write as _;
    // Duplicate checks were quadratic (~30 s for this).
    let mut text = String::from(
        "domains:\n  vm01:\n    nics: [{net: lago}]\n    disks: [{type: empty, name: root, dev: vda, size: 1G}]\n    metadata:\n",
    );
    for i in 0..40_000 {
        let _ = writeln!(text, "      k{i}: {i}");
    }
    text += "nets:\n  lago: {}\n";
    let start = std::time::Instant::now();
    let spec = config::from_str(&text, "/x/init.yaml").unwrap();
    assert_eq!(spec.vms[0].metadata.len(), 40_000);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // Many nets, each named by a NIC: lookups by name, not scans.
    let mut text = String::from("domains:\n  vm01:\n    nics:\n");
    for i in 0..8_000 {
        let _ = writeln!(text, "      - net: n{i}");
    }
    text += "    disks: [{type: empty, name: root, dev: vda, size: 1G}]\nnets:\n";
    for i in 0..8_000 {
        let _ = writeln!(text, "  n{i}: {{management: {}}}", i == 0);
    }
    let start = std::time::Instant::now();
    let _ = config::from_str(&text, "/x/init.yaml");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn very_long_unknown_names_get_no_suggestion_and_no_quadratic_work() {
    let long = "n".repeat(300_000);
    // (An implicit YAML key is at most 1024 characters; `? key` has no such limit.)
    let text = format!(
        "domains:\n  vm01:\n    ? {long}\n    : 1\n    nics: [{{net: {long}}}]\n    disks: [{{type: empty, name: root, dev: vda, size: 1G}}]\nnets:\n  lago: {{}}\n"
    );
    let start = std::time::Instant::now();
    let err = config::from_str(&text, "/x/init.yaml").unwrap_err();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let problems = err.problems();
    assert_eq!(problems.len(), 2, "{err}");
    assert!(problems.iter().all(|p| p.hint.is_none()), "{err}");
    assert_eq!(problems[1].path, "domains.vm01.nics[0].net");
}

#[test]
fn kernel_keys_deploy_scripts_and_skip_export() {
    let spec = config::load_with_env(data("valid/deploy_and_kernel.yaml"), &no_vars).unwrap();
    let dir = data("valid");
    let vm01 = spec.vm("vm01").unwrap();
    let k = vm01.kernel_boot.as_ref().expect("kernel boot");
    assert_eq!(k.kernel, dir.join("boot/vmlinuz"));
    assert_eq!(k.initrd.as_deref(), Some(dir.join("boot/initrd.img").as_path()));
    assert_eq!(k.args.as_deref(), Some("console=ttyS0 quiet"));
    assert!(vm01.skip_export);
    assert_eq!(
        vm01.deploy_scripts,
        [dir.join("scripts/one.sh"), PathBuf::from("/opt/two.sh")]
    );
    let vm02 = spec.vm("vm02").unwrap();
    assert_eq!(
        vm02.deploy_scripts,
        [dir.join("three.sh")],
        "Lago's older ovirt-scripts"
    );
    assert!(vm02.kernel_boot.is_none() && !vm02.skip_export);
    check(
        "kernel_keys.yaml",
        &[
            (3, 5, "domains.vm01.initrd", &["needs `kernel`"]),
            (
                5,
                23,
                "domains.vm01.metadata.deploy-scripts",
                &["expected a list of script paths"],
            ),
        ],
    );
}
