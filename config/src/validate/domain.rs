//! A VM (`domains.<name>`): its keys and its decoder, which reads the VM's
//! own settings, then its NICs (see `nic`) and disks (see `disk`), and
//! applies the per-VM management-net rule (see `rules`).

use std::path::Path;

use super::net::Nets;
use super::rules::{self, Unique};
use super::{disk::disk, is_hostname_label, nic::nic, opt};
use crate::decode::{Decoder, Fields, child, index, to_json};
use crate::spec::*;
use crate::yaml::{Kind, Node};

const VM_KEYS: &[&str] = &[
    "memory",
    "vcpu",
    "cpu_model",
    "nics",
    "disks",
    "metadata",
    "groups",
    "artifacts",
    "bootstrap",
    "ssh-user",
    "boot_time_sec",
    "distro",
];
const VM_UNSUPPORTED: &[(&str, &str)] = &[
    ("cpu_custom", "use `cpu_model`"),
    ("vm-type", "there are no VM type plugins; every VM is a libvirt domain"),
    ("vm-provider", "every VM runs under libvirt"),
    ("service_provider", "manage guest services over SSH"),
    ("service_class", "manage guest services over SSH"),
    (
        "root-password",
        "guests are reached with the environment's SSH key; no password is set",
    ),
    (
        "ssh-password",
        "guests are reached with the environment's SSH key; no password is set",
    ),
    (
        "type",
        "OVA import is not supported; convert the disk and use a `file` or qcow2 template disk",
    ),
    (
        "based-on",
        "share settings with YAML anchors and merge keys (`<<: *common`) instead",
    ),
    ("skip-export", "export is not supported"),
];

/// Reads the VM `key`: `node` (its settings map), given the nets read so far.
pub(super) fn domain(
    d: &mut Decoder,
    key: &Node,
    node: &Node,
    nets: &mut Nets,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<VmSpec> {
    let name = key.key_text().unwrap_or_default();
    let path = child("domains", &name);
    if !is_hostname_label(&name) {
        d.report(
            Some(key.pos),
            &path,
            format!("expected a VM name usable as a hostname (1-63 letters, digits or `-`, not starting or ending with `-`), found {name:?}"),
        );
    }
    let f = d.map(node, &path, "a map of VM settings", VM_KEYS, VM_UNSUPPORTED)?;
    let mut vm = settings(d, &f, name, &path);
    let nics_path = child(&path, "nics");
    let (nics, nics_ok) = nics(d, &f, node, &nics_path, nets);
    if nics_ok {
        vm.mgmt_net = rules::one_management_net(d, nets, &nics, f.key_pos("nics"), &nics_path);
    }
    vm.nics = nics;
    vm.disks = disks(d, &f, node, &child(&path, "disks"), base_dir, var);
    Some(vm)
}

/// The VM's own settings, defaults filled in; no NICs, disks or management net yet.
fn settings(d: &mut Decoder, f: &Fields<'_>, name: String, path: &str) -> VmSpec {
    let memory_mib = opt(d, f, "memory", path, |d, n, p| d.uint(n, p, 1, 4 << 20)).unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpu = opt(d, f, "vcpu", path, |d, n, p| d.uint(n, p, 1, 255))
        .map(|v| v as u32)
        .unwrap_or(DEFAULT_VCPU);
    let cpu_model = opt(d, f, "cpu_model", path, |d, n, p| d.string(n, p));
    let metadata = match f.get("metadata") {
        Some(n) => metadata(d, n, &child(path, "metadata")),
        None => serde_json::Map::new(),
    };
    let groups = opt(d, f, "groups", path, |d, n, p| d.strings(n, p, true)).unwrap_or_default();
    let artifacts = opt(d, f, "artifacts", path, artifacts).unwrap_or_default();
    let bootstrap = opt(d, f, "bootstrap", path, |d, n, p| d.boolean(n, p)).unwrap_or(true);
    let ssh_user = opt(d, f, "ssh-user", path, ssh_user).unwrap_or_else(|| DEFAULT_SSH_USER.to_owned());
    let boot_time_sec =
        opt(d, f, "boot_time_sec", path, |d, n, p| d.uint(n, p, 1, 86_400)).unwrap_or(DEFAULT_BOOT_TIME_SEC);
    let distro = opt(d, f, "distro", path, |d, n, p| d.string(n, p));
    VmSpec {
        name,
        memory_mib,
        vcpu,
        cpu_model,
        nics: Vec::new(),
        disks: Vec::new(),
        metadata,
        groups,
        artifacts,
        bootstrap,
        ssh_user,
        boot_time_sec,
        distro,
        mgmt_net: String::new(),
    }
}

/// `metadata`: any map (empty when null).
fn metadata(d: &mut Decoder, n: &Node, p: &str) -> serde_json::Map<String, serde_json::Value> {
    match to_json(n) {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Null => serde_json::Map::new(),
        _ => {
            d.report(Some(n.pos), p, format!("expected a map, found {}", n.describe()));
            serde_json::Map::new()
        }
    }
}

/// `artifacts`: a list of absolute guest paths.
fn artifacts(d: &mut Decoder, n: &Node, p: &str) -> Option<Vec<String>> {
    let list = d.strings(n, p, false)?;
    let items: &[Node] = match &n.kind {
        Kind::Seq(items) => items,
        _ => &[],
    };
    for (i, (a, item)) in list.iter().zip(items).enumerate() {
        if !a.starts_with('/') {
            d.report(
                Some(item.pos),
                &index(p, i),
                format!("expected an absolute guest path, found {a:?}"),
            );
        }
    }
    Some(list)
}

/// `ssh-user`: a Unix user name.
fn ssh_user(d: &mut Decoder, n: &Node, p: &str) -> Option<String> {
    let s = d.string(n, p)?;
    let ok = s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !s.as_bytes()[0].is_ascii_digit()
        && s.as_bytes()[0] != b'-';
    if !ok {
        d.report(
            Some(n.pos),
            p,
            format!("expected a user name like `root` or `tester` (lowercase letters, digits, `_`, `-`), found {s:?}"),
        );
        return None;
    }
    Some(s)
}

/// The `nics` list at `nics_path`: the NICs read, and whether the list and
/// every NIC in it are valid (the management-net rule only applies then).
fn nics(d: &mut Decoder, f: &Fields<'_>, node: &Node, nics_path: &str, nets: &mut Nets) -> (Vec<NicSpec>, bool) {
    let mut nics = Vec::new();
    let mut nics_ok = true;
    match f.get("nics") {
        None => {
            d.report(
                Some(node.pos),
                nics_path,
                "expected `nics`, a list with at least one NIC, found no `nics` key",
            );
            nics_ok = false;
        }
        Some(list_node) => match d.list(list_node, nics_path, "a list of NICs") {
            None => nics_ok = false,
            Some([]) => {
                d.report(
                    Some(list_node.pos),
                    nics_path,
                    "expected at least one NIC, found an empty list",
                );
                nics_ok = false;
            }
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match nic(d, item, &index(nics_path, i), nets) {
                        Some(n) => nics.push(n),
                        None => nics_ok = false,
                    }
                }
            }
        },
    }
    (nics, nics_ok)
}

/// The `disks` list at `disks_path`: the disks read; names and devices must be
/// unique in the VM.
fn disks(
    d: &mut Decoder,
    f: &Fields<'_>,
    node: &Node,
    disks_path: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Vec<DiskSpec> {
    let mut disks = Vec::new();
    match f.get("disks") {
        None => d.report(
            Some(node.pos),
            disks_path,
            "expected `disks`, a list whose first entry is the root disk, found no `disks` key",
        ),
        Some(list_node) => {
            if let Some(items) = d.list(list_node, disks_path, "a list of disks") {
                if items.is_empty() {
                    d.report(
                        Some(list_node.pos),
                        disks_path,
                        "expected at least one disk (the first is the root disk), found an empty list",
                    );
                }
                let mut names = Unique::default();
                let mut devs = Unique::default();
                for (i, item) in items.iter().enumerate() {
                    let p = index(disks_path, i);
                    if let Some(disk) = disk(d, item, &p, base_dir, var, &mut names, &mut devs) {
                        disks.push(disk);
                    }
                }
            }
        }
    }
    disks
}
