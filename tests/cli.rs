//! The `lago` binary: `validate` prints a stable plan; bad input exits 2 with
//! the problems on stderr, no panic, and nothing written anywhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::lago_cmd;

fn lago(args: &[&str], cwd: &Path, state: &Path) -> Output {
    lago_cmd()
        .args(args)
        .current_dir(cwd)
        .env("LAGO_LEASE_DIR", state.join("leases"))
        .env("XDG_STATE_HOME", state)
        .output()
        .expect("lago runs")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/LagoInitFile")
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(listing(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

#[test]
fn validate_prints_the_seed_example_plan_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let path = example();
    let args = ["validate", path.to_str().unwrap()];
    let first = lago(&args, tmp.path(), tmp.path());
    let second = lago(&args, tmp.path(), tmp.path());
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let text = String::from_utf8(first.stdout.clone()).unwrap();
    assert_eq!(first.stdout, second.stdout);
    assert!(text.contains("vm01"), "{text}");
    assert!(text.contains("net lago"), "{text}");
    assert!(text.contains("192.168.200.2   54:52:c0:a8:c8:02"), "{text}");
    assert!(text.contains("192.168.200.0/24  gateway 192.168.200.1"), "{text}");
    assert!(text.contains("vm01.lago.local"), "{text}");
    assert!(text.contains("sda    disk root      virtio-scsi"), "{text}");
    // No lease, no workdir: validate writes nothing.
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}

#[test]
fn validate_json_has_vms_nics_and_nets() {
    let tmp = tempfile::tempdir().unwrap();
    let path = example();
    let out = lago(&["validate", "--json", path.to_str().unwrap()], tmp.path(), tmp.path());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nic = &v["vms"][0]["nics"][0];
    assert_eq!(v["vms"][0]["name"], "vm01");
    assert_eq!(nic["net"], "lago");
    let ip: std::net::Ipv4Addr = nic["ip"].as_str().unwrap().parse().unwrap();
    let net = &v["nets"][0];
    assert_eq!(net["name"], "lago");
    let gw: std::net::Ipv4Addr = net["gateway"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        ip.octets()[..3],
        gw.octets()[..3],
        "the VM's address is in its net's subnet"
    );
    let o = ip.octets();
    assert_eq!(
        nic["mac"],
        format!("54:52:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    let again = lago(&["validate", "--json", path.to_str().unwrap()], tmp.path(), tmp.path());
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn validate_defaults_to_lago_init_file_in_the_current_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    fs::copy(example(), work.join("LagoInitFile")).unwrap();
    let out = lago(&["validate"], &work, &tmp.path().join("state"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("vm01"));
}

#[test]
fn invalid_input_exits_2_with_every_problem_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid/many_problems.yaml");
    fs::copy(&bad, work.join("env.yaml")).unwrap();
    let before = listing(tmp.path());
    let out = lago(&["validate", "env.yaml"], &work, &tmp.path().join("state"));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: 10 problems in "), "{err}");
    assert!(
        err.contains("env.yaml:3:13: domains.vm01.memory: expected an integer"),
        "{err}"
    );
    assert!(err.contains("env.yaml:17:11: nets.lago.type:"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    assert_eq!(listing(tmp.path()), before);
}

#[test]
fn missing_empty_and_broken_files_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    for (file, expected) in [
        ("/dev/zero", "larger than the limit of 1048576 bytes"),
        (
            "billion_laughs.yaml",
            "billion_laughs.yaml:8:8: aliases expand to more than the limit",
        ),
        ("deep_nesting.yaml", "nest deeper than the limit of 64 levels"),
        ("nope.yaml", "not found"),
        ("empty.yaml", "is empty"),
        ("syntax_error.yaml", "syntax_error.yaml:4:5: YAML syntax error"),
    ] {
        let path = data.join(file);
        let out = lago(&["validate", path.to_str().unwrap()], tmp.path(), tmp.path());
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected), "{file}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(listing(tmp.path()).is_empty());
}

/// An init file whose one VM boots from a raw file (no template store needed),
/// for `init`/`destroy` against libvirt's in-process `test:///default` driver.
fn file_disk_env(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.raw");
    fs::write(&disk, vec![0u8; 4096]).unwrap();
    let init = dir.join("init.yaml");
    fs::write(
        &init,
        "domains:\n  vm01:\n    nics: [{net: lago}]\n    disks: [{type: file, name: root, dev: vda, format: raw, path: disk.raw}]\nnets:\n  lago: {}\n",
    )
    .unwrap();
    init
}

fn lago_in(args: &[&str], cwd: &Path, state: &Path, workdir: &Path) -> Output {
    let mut all = vec!["-w", workdir.to_str().unwrap()];
    all.extend_from_slice(args);
    lago(&all, cwd, state)
}

#[test]
fn init_refuses_a_folder_that_holds_anything_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let init = file_disk_env(tmp.path());
    for name in ["project", ".ssh"] {
        let folder = tmp.path().join(name);
        fs::create_dir(&folder).unwrap();
        fs::write(folder.join("keep.txt"), "precious").unwrap();
        let before = listing(&folder);
        let out = lago_in(
            &["init", init.to_str().unwrap(), "--libvirt-uri", "test:///default"],
            tmp.path(),
            &tmp.path().join("state"),
            &folder,
        );
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("workdir {} is not empty", folder.display())),
            "{err}"
        );
        assert!(err.contains("`keep.txt`"), "{err}");
        assert_eq!(listing(&folder), before);
        assert_eq!(fs::read_to_string(folder.join("keep.txt")).unwrap(), "precious");
        // destroy does not touch a folder that holds no environment.
        let out = lago_in(&["destroy", "--yes"], tmp.path(), &tmp.path().join("state"), &folder);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no lago environment"));
        assert_eq!(listing(&folder), before);
    }
}

#[test]
fn destroy_removes_only_what_lago_created() {
    let tmp = tempfile::tempdir().unwrap();
    let init = file_disk_env(tmp.path());
    let state = tmp.path().join("state");
    let uri = ["--libvirt-uri", "test:///default"];

    // A folder lago creates: gone after destroy.
    let new = tmp.path().join("new/env");
    let out = lago_in(
        &["init", init.to_str().unwrap(), uri[0], uri[1]],
        tmp.path(),
        &state,
        &new,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(new.join("env.json").is_file() && new.join("id_ed25519").is_file());
    let out = lago_in(&["destroy", "--yes"], tmp.path(), &state, &new);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!new.exists());
    assert!(tmp.path().join("new").is_dir(), "the parent is not lago's");

    // An empty folder the user made: emptied, kept.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = lago_in(
        &["init", init.to_str().unwrap(), uri[0], uri[1]],
        tmp.path(),
        &state,
        &empty,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Files the user puts into the workdir later survive destroy too.
    fs::write(empty.join("notes.txt"), "mine").unwrap();
    let out = lago_in(&["destroy", "--yes"], tmp.path(), &state, &empty);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&empty), [empty.join("notes.txt")]);

    // A second init on a workdir that holds an environment is refused.
    let out = lago_in(
        &["init", init.to_str().unwrap(), uri[0], uri[1]],
        tmp.path(),
        &state,
        &new,
    );
    assert!(out.status.success());
    let out = lago_in(
        &["init", init.to_str().unwrap(), uri[0], uri[1]],
        tmp.path(),
        &state,
        &new,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds an environment"));
    assert!(new.join("env.json").is_file(), "the first environment is intact");
    // The disk file the init file named is the user's: never removed.
    let out = lago_in(&["destroy", "--yes"], tmp.path(), &state, &new);
    assert!(out.status.success());
    assert_eq!(fs::read(tmp.path().join("disk.raw")).unwrap().len(), 4096);
}

#[test]
fn a_damaged_pinned_host_key_is_an_error_not_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let init = file_disk_env(tmp.path());
    let state = tmp.path().join("state");
    let w = tmp.path().join("env");
    let out = lago_in(
        &["init", init.to_str().unwrap(), "--libvirt-uri", "test:///default"],
        tmp.path(),
        &state,
        &w,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = w.join("env.json");
    let mut saved: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert!(saved["host_keys"]["vm01"].is_string(), "the VM's host key is pinned");
    saved["host_keys"]["vm01"] = "ssh-ed25519 garbage".into();
    fs::write(&path, serde_json::to_string(&saved).unwrap()).unwrap();
    let out = lago_in(&["status"], tmp.path(), &state, &w);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("vm01: the pinned SSH host key") && err.contains("refusing to connect"),
        "{err}"
    );
    let out = lago_in(&["destroy", "--yes"], tmp.path(), &state, &w);
    assert!(
        out.status.success(),
        "a damaged state can still be destroyed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!w.exists());
}

#[test]
fn lago_keys_lago_ignores_are_warnings_and_strict_makes_them_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("LagoInitFile");
    fs::write(
        &f,
        "domains:\n  vm_01:\n    vm-type: ovirt-host\n    cpu: 2\n    memory: \"1024\"\n    nics: [{net: lago}]\n    disks: [{type: empty, name: root, dev: vda, size: 1G, comment: the root disk}]\nnets:\n  lago: {}\n",
    )
    .unwrap();
    let out = lago(&["validate"], tmp.path(), tmp.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4:5: domains.vm_01.cpu: `cpu` (a Lago key) is ignored"),
        "{err}"
    );
    assert!(
        err.contains(":3:5: domains.vm_01.vm-type: kept in the VM's metadata"),
        "{err}"
    );
    assert!(err.contains("hostname and DNS name are `vm-01`"), "{err}");
    assert_eq!(err.matches("warning: ").count(), 3, "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1024 MiB"));
    let out = lago(&["validate", "--json"], tmp.path(), tmp.path());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 3);
    let out = lago(&["validate", "--strict"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 problems") && err.contains("strict mode makes it an error"),
        "{err}"
    );
}

/// `lago doctor` runs every check and says, in JSON, what it found; a libvirt
/// URI nobody listens on is a failure with a fix (exit 1). Inside lago's test
/// network namespace (scripts/test), the real host passes: exit 0, no failure.
#[test]
fn doctor_checks_the_host_and_names_fixes() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("nobody.sock");
    let uri = format!("qemu+unix:///system?socket={}", sock.display());
    let out = lago(&["doctor", "--libvirt-uri", &uri, "--json"], tmp.path(), tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let checks: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "libvirt",
            "mode",
            "qemu",
            "kvm",
            "dnsmasq",
            "netns",
            "subnets",
            "other-libvirtd",
            "store",
            "warm",
            "tiny",
            "leases",
            "mmdebstrap",
            "nextest"
        ]
    );
    let libvirt = &checks[0];
    assert_eq!(libvirt["status"], "fail", "{libvirt}");
    assert!(libvirt["fix"].as_str().unwrap().contains("libvirtd"), "{libvirt}");
    // The table says the same.
    let out = lago(&["doctor", "--libvirt-uri", &uri], tmp.path(), tmp.path());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("FAIL  libvirt") && table.contains("fix: "), "{table}");
    if std::env::var_os("LAGO_IN_NETNS").is_some() {
        let out = lago(&["doctor", "--json"], tmp.path(), tmp.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(!stdout.contains("\"fail\""), "{stdout}");
    }
}
