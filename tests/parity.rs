//! Lago's other verbs, through the `lago` binary on a running environment
//! (every command from another process, with `-w`): status in every format,
//! deploy, collect, ssh-config with the real OpenSSH client, the Ansible
//! inventory parsed back, and an export booted again as a new environment.
//!
//! Boots VMs: `#[ignore]`d in a plain `cargo test`, run by `scripts/test`
//! inside the test network namespace.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{in_test_namespace, lago_cmd};

fn lago(args: &[&str], cwd: &Path) -> Output {
    lago_cmd().args(args).current_dir(cwd).output().expect("lago runs")
}

/// `lago -w <workdir> args…`, which must succeed; its stdout.
fn ok(workdir: &Path, args: &[&str]) -> String {
    let mut all = vec!["-w", workdir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = lago(&all, workdir.parent().unwrap());
    assert!(
        out.status.success(),
        "lago {all:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `lago -w <workdir> args…`, which must fail with `code`; its stderr.
fn fails(workdir: &Path, args: &[&str], code: i32) -> String {
    let mut all = vec!["-w", workdir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = lago(&all, workdir.parent().unwrap());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "lago {all:?}:\n{err}");
    err
}

const INIT: &str = "\
domains:
  vm01:
    memory: 192
    boot_time_sec: 120
    vm-type: web-server
    groups: [web, edge]
    nics: [{net: lan}]
    disks:
      - {type: template, template_name: tiny, name: root, dev: vda}
      - {type: empty, name: data, dev: vdb, size: 64M, format: raw}
    artifacts: [/etc/hostname, /tmp/deployed, /var/log/does-not-exist]
    metadata:
      deploy-scripts: [scripts/10-first.sh, $LAGO_INITFILE_PATH/scripts/20-second]
  vm02:
    memory: 192
    boot_time_sec: 120
    skip-export: true
    nics: [{net: lan}]
    disks:
      - {type: template, template_name: tiny, name: root, dev: vda}
    metadata:
      deploy-scripts: [scripts/fails.sh]
nets:
  lan: {}
";

fn write_env(dir: &Path) -> PathBuf {
    let scripts = dir.join("scripts");
    fs::create_dir_all(&scripts).unwrap();
    fs::write(
        scripts.join("10-first.sh"),
        "#!/bin/sh\necho \"first on $(hostname)\"\necho one > /tmp/deployed\necho a warning >&2\n",
    )
    .unwrap();
    // No #! line: runs under /bin/sh.
    fs::write(
        scripts.join("20-second"),
        "echo two >> /tmp/deployed\necho second done\n",
    )
    .unwrap();
    fs::write(
        scripts.join("fails.sh"),
        "#!/bin/sh\necho about to fail >&2\nexit 3\necho never\n",
    )
    .unwrap();
    let init = dir.join("LagoInitFile");
    fs::write(&init, INIT).unwrap();
    init
}

/// Whatever fails, both environments go.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for w in &self.0 {
            if w.exists() {
                let _ = lago(&["-w", w.to_str().unwrap(), "destroy", "--yes"], Path::new("/"));
            }
        }
    }
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn lago_verbs_on_a_running_environment_and_an_export_booted_elsewhere() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let init = write_env(tmp.path());
    let w = tmp.path().join("env");
    let w2 = tmp.path().join("env2");
    let _cleanup = Cleanup(vec![w.clone(), w2.clone()]);

    // validate in YAML, parsed back.
    let plan: serde_yaml::Value =
        serde_yaml::from_str(&ok(&w, &["validate", init.to_str().unwrap(), "--format", "yaml"])).unwrap();
    assert_eq!(plan["preview"].as_bool(), Some(true));
    assert_eq!(plan["vms"][0]["name"].as_str(), Some("vm01"));

    ok(&w, &["init", init.to_str().unwrap()]);
    ok(&w, &["start"]);

    status_in_every_format(&w);
    let ip = {
        let st: serde_json::Value = serde_json::from_str(&ok(&w, &["status", "--json"])).unwrap();
        st["vms"][0]["ip"].as_str().unwrap().to_owned()
    };
    deploy(&w);
    collect(&w, tmp.path());
    ssh_config(&w, tmp.path());
    ansible_inventory(&w, &ip);
    export_and_boot_elsewhere(&w, &w2, tmp.path());
}

fn status_in_every_format(w: &Path) {
    let table = ok(w, &["status"]);
    assert!(table.contains("vm01") && table.contains("running"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(w, &["status", "--format", "json"])).unwrap();
    let yaml: serde_json::Value = serde_yaml::from_str(&ok(w, &["status", "--format", "yaml"])).unwrap();
    assert_eq!(json, yaml, "YAML and JSON come from the same data");
    assert_eq!(yaml["vms"][0]["state"], "running");
    assert_eq!(yaml["vms"][0]["metadata"]["vm-type"], "web-server");
    let flat = ok(w, &["status", "--out-format", "flat"]);
    assert!(flat.lines().any(|l| l == "vms/0/name: vm01"), "{flat}");
    assert!(flat.lines().any(|l| l == "vms/1/state: running"), "{flat}");
    let err = fails(w, &["status", "--format", "xml"], 2);
    assert!(err.contains("table, json, yaml or flat"), "{err}");
}

fn deploy(w: &Path) {
    // vm02's script fails: the error names the VM, the script and its code;
    // vm01's scripts ran meanwhile, their output on the terminal.
    let err = fails(w, &["deploy"], 1);
    assert!(err.contains("vm02: deploy script"), "{err}");
    assert!(err.contains("fails.sh exited with code 3"), "{err}");
    assert!(err.contains("about to fail"), "its output is in the error: {err}");
    assert!(!err.contains("never"), "{err}");
    assert!(err.contains("[vm01 10-first.sh] first on vm01"), "{err}");
    assert!(err.contains("[vm01 10-first.sh] a warning"), "{err}");
    // One VM, as JSON.
    let report: serde_json::Value = serde_json::from_str(&ok(w, &["deploy", "vm01", "--json"])).unwrap();
    let scripts = report["vms"][0]["scripts"].as_array().unwrap();
    assert_eq!(scripts.len(), 2);
    assert!(scripts[1]["script"].as_str().unwrap().ends_with("scripts/20-second"));
    assert_eq!(ok(w, &["shell", "vm01", "--", "cat", "/tmp/deployed"]), "one\ntwo\n");
    let left = ok(w, &["shell", "vm01", "--", "ls", "/tmp"]);
    assert!(!left.contains("lago-deploy"), "the guest folder is removed: {left}");
    let err = fails(w, &["deploy", "vm09"], 2);
    assert!(err.contains("no VM named `vm09`"), "{err}");
}

fn collect(w: &Path, tmp: &Path) {
    let out = tmp.join("collected");
    let report: serde_json::Value = serde_json::from_str(&ok(
        w,
        &["collect", "--output", out.to_str().unwrap(), "--format", "json"],
    ))
    .unwrap();
    assert_eq!(
        fs::read_to_string(out.join("vm01/etc_hostname")).unwrap().trim(),
        "vm01"
    );
    assert_eq!(fs::read_to_string(out.join("vm01/tmp_deployed")).unwrap(), "one\ntwo\n");
    assert!(
        fs::read_to_string(out.join("vm01/console.log"))
            .unwrap()
            .contains("lago-tiny: up")
    );
    assert!(fs::metadata(out.join("vm02/console.log")).unwrap().len() > 0);
    assert!(out.join("lago.log").is_file());
    let missing = &report["vms"][0]["missing"];
    assert_eq!(missing[0]["source"], "/var/log/does-not-exist", "{report}");
    // Never into a folder that holds anything.
    let err = fails(w, &["collect", "--output", out.to_str().unwrap()], 2);
    assert!(err.contains("is not empty") && err.contains("`vm01`"), "{err}");
    let table = ok(w, &["collect", "-o", tmp.join("collected2").to_str().unwrap(), "vm01"]);
    assert!(
        table.contains("vm01:/etc/hostname") && table.contains("missing"),
        "{table}"
    );
    assert!(!tmp.join("collected2/vm02").exists());
}

fn ssh_config(w: &Path, tmp: &Path) {
    let cfg = tmp.join("ssh_config");
    let text = ok(w, &["ssh-config"]);
    assert!(text.contains("StrictHostKeyChecking yes"), "{text}");
    fs::write(&cfg, &text).unwrap();
    let ssh = |cfg: &Path, args: &[&str]| {
        Command::new("ssh")
            .arg("-F")
            .arg(cfg)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
            .args(args)
            .output()
            .expect("ssh runs")
    };
    let out = ssh(&cfg, &["vm01", "hostname"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vm01");
    let out = ssh(&cfg, &["vm02", "cat", "/tmp/deployed", "||", "echo", "none"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "none");
    // (scp and sftp need the guest's sftp-server, which `tiny` has not: tests/debian.rs runs them.)
    // The host key is pinned: another key in the known-hosts file is refused.
    let known = w.join("ssh_known_hosts");
    let pinned = fs::read_to_string(&known).unwrap();
    assert_eq!(pinned.lines().count(), 2, "{pinned}");
    let wrong = tmp.join("wrong_known_hosts");
    let other = lago::keys::KeyPair::generate("other").unwrap();
    fs::write(&wrong, format!("vm01 {}\n", other.public_openssh)).unwrap();
    fs::write(
        tmp.join("ssh_config_wrong"),
        text.replace(&known.display().to_string(), &wrong.display().to_string()),
    )
    .unwrap();
    let out = ssh(&tmp.join("ssh_config_wrong"), &["vm01", "true"]);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Host key verification failed") || err.contains("HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    let hosts: serde_json::Value = serde_json::from_str(&ok(w, &["ssh-config", "--json"])).unwrap();
    assert_eq!(hosts[0]["name"], "vm01");
    assert!(hosts[0]["host_key"].as_str().unwrap().starts_with("ssh-ed25519 "));
}

fn ansible_inventory(w: &Path, ip: &str) {
    let ini = ok(w, &["ansible_hosts"]);
    let group = |name: &str| -> Vec<String> {
        let mut lines = ini.lines().skip_while(|l| *l != format!("[{name}]")).skip(1);
        let mut hosts = Vec::new();
        for l in lines.by_ref() {
            if l.is_empty() || l.starts_with('[') {
                break;
            }
            hosts.push(l.split(' ').next().unwrap().to_owned());
        }
        hosts
    };
    assert_eq!(group("vm-type=web-server"), ["vm01"], "{ini}");
    assert_eq!(group("vm-type=default"), ["vm02"], "{ini}");
    assert_eq!(group("groups=web"), ["vm01"], "{ini}");
    assert_eq!(group("groups=edge"), ["vm01"], "{ini}");
    assert_eq!(group("vm-provider=local-libvirt"), ["vm01", "vm02"], "{ini}");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&ok(w, &["ansible-hosts", "--format", "yaml"])).unwrap();
    let vm01 = &yaml["all"]["hosts"]["vm01"];
    assert_eq!(vm01["ansible_host"].as_str(), Some(ip));
    assert_eq!(vm01["ansible_user"].as_str(), Some("root"));
    let key = vm01["ansible_ssh_private_key_file"].as_str().unwrap();
    assert_eq!(Path::new(key), w.join("id_ed25519"));
    assert!(yaml["all"]["children"]["groups=web"]["hosts"]["vm01"].is_mapping());
    // The SSH arguments Ansible would use reach the VM, with the pinned key.
    let common = vm01["ansible_ssh_common_args"].as_str().unwrap();
    assert!(common.contains("StrictHostKeyChecking=yes"), "{common}");
    // As Ansible would: the arguments split like a shell's.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh {common} -o BatchMode=yes -i '{key}' -l root {ip} hostname"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vm01");
    let by_distro = ok(w, &["ansible-hosts", "-k", "vm-type"]);
    assert!(!by_distro.contains("[groups="), "{by_distro}");
}

fn export_and_boot_elsewhere(w: &Path, w2: &Path, tmp: &Path) {
    // State written in the guest: a file on the root disk, bytes on the raw data disk.
    ok(
        w,
        &[
            "shell",
            "vm01",
            "--",
            "sh",
            "-c",
            "echo exported > /root/marker && printf data-disk | dd of=/dev/vdb 2>/dev/null && sync",
        ],
    );
    // A folder that holds something is refused before any VM is touched.
    let full = tmp.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep.txt"), "mine").unwrap();
    let err = fails(w, &["export", "-d", full.to_str().unwrap(), "--shutdown"], 2);
    assert!(err.contains("is not empty") && err.contains("`keep.txt`"), "{err}");
    assert!(ok(w, &["status"]).lines().filter(|l| l.contains("running")).count() == 2);
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1);
    let dst = tmp.join("export");
    let err = fails(w, &["export", "--dst-dir", dst.to_str().unwrap()], 2);
    assert!(err.contains("`vm01` is running") && err.contains("--shutdown"), "{err}");
    assert!(!dst.exists(), "a refused export writes nothing");
    let report: serde_json::Value =
        serde_json::from_str(&ok(w, &["export", "-d", dst.to_str().unwrap(), "--shutdown", "--json"])).unwrap();
    assert_eq!(
        report["vms"],
        serde_json::json!(["vm01"]),
        "vm02 is skip-export: {report}"
    );
    let st: serde_json::Value = serde_json::from_str(&ok(w, &["status", "--json"])).unwrap();
    assert_eq!(st["vms"][0]["state"], "down");
    assert_eq!(st["vms"][1]["state"], "running", "a VM not exported keeps running");
    let info = |p: &Path| -> serde_json::Value {
        let out = Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(p)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let root = dst.join("vm01-root.qcow2");
    assert!(info(&root)["backing-filename"].is_null(), "standalone: {}", info(&root));
    assert!(dst.join("vm01-data.qcow2").is_file());
    let init = fs::read_to_string(dst.join("LagoInitFile")).unwrap();
    assert!(init.contains("kernel: $LAGO_INITFILE_PATH/"), "{init}");
    assert!(!init.contains("vm02") && !init.contains("deploy-scripts"), "{init}");

    // Disks hold what the guest wrote: owner-only, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    for f in fs::read_dir(&dst).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with(".qcow2") || name.ends_with(".raw") {
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        }
    }

    // Layered: the overlay on one copy of the template; the same content as standalone.
    let layered = tmp.join("export-layered");
    ok(w, &["export", "-d", layered.to_str().unwrap(), "--layered", "vm01"]);
    let overlay = info(&layered.join("vm01-root.qcow2"));
    for f in fs::read_dir(&layered).unwrap().flatten() {
        if f.file_name().to_string_lossy().ends_with(".qcow2") {
            assert_eq!(
                f.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                f.path()
            );
        }
    }
    let backing = overlay["backing-filename"].as_str().unwrap();
    assert!(
        backing.starts_with("tiny-") && !backing.contains('/'),
        "relative to the folder: {overlay}"
    );
    let same = Command::new("qemu-img")
        .args(["compare", "-q"])
        .arg(&root)
        .arg(layered.join("vm01-root.qcow2"))
        .status()
        .unwrap();
    assert!(same.success(), "layered and standalone exports hold the same disk");
    assert!(
        fs::metadata(layered.join("vm01-root.qcow2")).unwrap().len() < fs::metadata(&root).unwrap().len(),
        "the overlay holds only what the VM changed"
    );

    // The first environment goes; the export boots on its own.
    ok(w, &["destroy", "--yes"]);
    ok(w2, &["init", dst.join("LagoInitFile").to_str().unwrap()]);
    ok(w2, &["start"]);
    assert_eq!(ok(w2, &["shell", "vm01", "--", "cat", "/root/marker"]), "exported\n");
    assert_eq!(
        ok(w2, &["shell", "vm01", "--", "head", "-c", "9", "/dev/vdb"]),
        "data-disk"
    );
    assert_eq!(ok(w2, &["shell", "vm01", "--", "hostname"]).trim(), "vm01");
    ok(w2, &["destroy", "--yes"]);
    // The exported files were only read.
    assert!(info(&root)["backing-filename"].is_null());
    assert!(dst.join("LagoInitFile").is_file());
}
