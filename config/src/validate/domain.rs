//! A VM (`domains.<name>`): its keys and its decoder, which reads the VM's
//! own settings, then its NICs (see `nic`) and disks (see `disk`), and
//! applies the per-VM management-net rule (see `rules`).

use std::path::Path;

use super::net::Nets;
use super::rules;
use super::unique::Unique;
use super::{disk::disk, is_hostname_label, nic::nic, one_of, opt, path_value};
use crate::decode::{Decoder, Fields, Keys, child, index, to_json};
use crate::spec::*;
use crate::yaml::{Kind, Node};

const VM_KEYS: Keys = Keys {
    known: &[
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
        "root-password",
        "ssh-password",
        "ssh-key",
        "vm-provider",
        "vm-type",
        "service_provider",
        "service_class",
        "skip-export",
        "kernel",
        "initrd",
        "kernel-args",
    ],
    refused: &[
        (
            "type",
            "OVA import is not supported: convert the OVA's disk and use a `file` or qcow2 template disk",
        ),
        (
            "url",
            "OVA import is not supported: convert the OVA's disk and use a `file` or qcow2 template disk",
        ),
    ],
    ignored: &[
        ("cpu", "as in Lago, it has no effect: `vcpu` sets the number of CPUs"),
        ("cpus", "as in Lago, it has no effect: `vcpu` sets the number of CPUs"),
        (
            "cpu_custom",
            "the accelerator chooses the CPU (`cpu_model` sets an exact model)",
        ),
    ],
};

/// Lago keys kept in the VM's metadata under their own name (status output,
/// inventories group by them, as Lago did): `(key, what lago does not do)`.
const KEPT_IN_METADATA: &[(&str, &str)] = &[
    ("vm-type", "lago has no VM type plugins"),
    ("service_provider", "lago has no service plugins"),
    ("service_class", "lago has no service plugins"),
];

/// `vm-provider` values.
const PROVIDERS: &[&str] = &["local-libvirt", "ssh"];

/// A VM name's hostname: the name with `_` as `-` (hostnames take no `_`),
/// or why the name cannot be one.
pub(super) fn hostname_of(name: &str) -> Result<String, String> {
    let host = name.replace('_', "-");
    if is_hostname_label(&host) {
        Ok(host)
    } else {
        Err(format!(
            "expected a VM name of 1-63 letters, digits, `-` or `_`, not starting or ending with `-` or `_` (it is the guest's hostname, with `_` as `-`), found {name:?}"
        ))
    }
}

/// Reads the VM `key`: `node` (its settings map, prototypes merged in),
/// given the nets read so far.
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
    let hostname = match hostname_of(&name) {
        Ok(h) => {
            if h != name {
                d.warn(
                    Some(key.pos),
                    &path,
                    format!("the guest's hostname and DNS name are `{h}` (`_` is not allowed in hostnames)"),
                );
            }
            h
        }
        Err(msg) => {
            d.report(Some(key.pos), &path, msg);
            name.clone()
        }
    };
    let f = d.map(node, &path, "a map of VM settings", &VM_KEYS)?;
    let mut vm = settings(d, &f, name, &path, base_dir, var);
    vm.hostname = hostname;
    let nics_path = child(&path, "nics");
    let (nics, nics_ok) = nics(d, &f, node, &nics_path, nets, vm.provider);
    if nics_ok {
        vm.mgmt_net = rules::one_management_net(d, nets, &nics, f.key_pos("nics"), &nics_path);
    }
    vm.nics = nics;
    let disks_path = child(&path, "disks");
    match (vm.provider, f.get("disks")) {
        (Provider::Ssh, Some(n)) => d.warn(
            Some(n.pos),
            &disks_path,
            "ignored: a `vm-provider: ssh` VM exists already; lago creates no disks for it",
        ),
        (Provider::Ssh, None) => {}
        // An OVA import (refused above) was to bring the disk.
        (Provider::Libvirt, None) if f.get("url").is_some() || f.get("type").is_some() => {}
        (Provider::Libvirt, _) => vm.disks = disks(d, &f, node, &disks_path, base_dir, var),
    }
    Some(vm)
}

/// The provider a VM map names (`local-libvirt` when none, or when it is not valid).
pub(super) fn provider_of(node: &Node) -> Provider {
    let Kind::Map(entries) = &node.kind else {
        return Provider::Libvirt;
    };
    let named_ssh = entries
        .iter()
        .any(|(k, v)| k.key_text().as_deref() == Some("vm-provider") && matches!(&v.kind, Kind::Str(s) if s == "ssh"));
    if named_ssh { Provider::Ssh } else { Provider::Libvirt }
}

/// The VM's own settings, defaults filled in; no NICs, disks or management net yet.
fn settings(
    d: &mut Decoder,
    f: &Fields<'_>,
    name: String,
    path: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> VmSpec {
    let memory_mib = opt(d, f, "memory", path, |d, n, p| d.uint(n, p, 1, 4 << 20)).unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpu = opt(d, f, "vcpu", path, |d, n, p| d.uint(n, p, 1, 255))
        .map(|v| v as u32)
        .unwrap_or(DEFAULT_VCPU);
    let cpu_model = opt(d, f, "cpu_model", path, |d, n, p| d.string(n, p));
    let mut metadata = match f.get("metadata") {
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
    let provider = match opt(d, f, "vm-provider", path, |d, n, p| one_of(d, n, p, PROVIDERS)).as_deref() {
        Some("ssh") => Provider::Ssh,
        _ => Provider::Libvirt,
    };
    let root_password = opt(d, f, "root-password", path, password);
    let ssh_password = opt(d, f, "ssh-password", path, password);
    let ssh_key = opt(d, f, "ssh-key", path, |d, n, p| path_value(d, n, p, base_dir, var));
    if let (Provider::Libvirt, Some(n)) = (provider, f.get("ssh-key")) {
        d.report(
            Some(n.pos),
            &child(path, "ssh-key"),
            "`ssh-key` only applies to `vm-provider: ssh` VMs (lago makes the key of the VMs it creates)",
        );
    }
    // Lago's plugin choices: kept where inventories and status output find them.
    for (key, no_plugin) in KEPT_IN_METADATA {
        if let Some(n) = f.get(key)
            && let Some(v) = d.string(n, &child(path, key))
        {
            d.warn(
                f.key_pos(key),
                &child(path, key),
                format!("kept in the VM's metadata as `{key}` ({no_plugin})"),
            );
            let key = if *key == "service_class" {
                "service_provider"
            } else {
                key
            };
            metadata.entry(key.to_owned()).or_insert(serde_json::Value::String(v));
        }
    }
    if f.get("vm-provider").is_some() {
        let p = match provider {
            Provider::Ssh => "ssh",
            Provider::Libvirt => "local-libvirt",
        };
        metadata
            .entry("vm-provider")
            .or_insert(serde_json::Value::String(p.into()));
    }
    if let Some(distro) = &distro {
        metadata
            .entry("distro")
            .or_insert(serde_json::Value::String(distro.clone()));
    }
    let skip_export = opt(d, f, "skip-export", path, |d, n, p| d.boolean(n, p)).unwrap_or(false);
    let kernel_boot = kernel_boot(d, f, path, provider, base_dir, var);
    let deploy_scripts = deploy_scripts(d, f, path, base_dir, var);
    VmSpec {
        hostname: name.clone(),
        name,
        provider,
        root_password,
        ssh_password,
        ssh_key,
        memory_mib,
        vcpu,
        cpu_model,
        nics: Vec::new(),
        disks: Vec::new(),
        metadata,
        groups,
        artifacts,
        bootstrap: bootstrap && provider == Provider::Libvirt,
        ssh_user,
        boot_time_sec,
        distro,
        mgmt_net: String::new(),
        kernel_boot,
        deploy_scripts,
        skip_export,
    }
}

/// `kernel`, `initrd`, `kernel-args`: a kernel booted directly (lago's keys;
/// `lago export` writes them for templates that boot that way, like `tiny`).
fn kernel_boot(
    d: &mut Decoder,
    f: &Fields<'_>,
    path: &str,
    provider: Provider,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<KernelBoot> {
    let kernel = opt(d, f, "kernel", path, |d, n, p| path_value(d, n, p, base_dir, var));
    let initrd = opt(d, f, "initrd", path, |d, n, p| path_value(d, n, p, base_dir, var));
    let args = opt(d, f, "kernel-args", path, |d, n, p| d.string(n, p));
    if kernel.is_none() {
        for key in ["initrd", "kernel-args"] {
            if f.get(key).is_some() && f.get("kernel").is_none() {
                d.report(
                    f.key_pos(key),
                    &child(path, key),
                    format!("`{key}` needs `kernel` (the kernel image to boot directly), found no `kernel` key"),
                );
            }
        }
        return None;
    }
    if provider == Provider::Ssh {
        d.report(
            f.key_pos("kernel"),
            &child(path, "kernel"),
            "`kernel` only applies to VMs lago creates, not to `vm-provider: ssh` machines",
        );
        return None;
    }
    Some(KernelBoot {
        kernel: kernel?,
        initrd,
        args,
    })
}

/// `metadata: deploy-scripts` (or Lago's older `ovirt-scripts`): a list of
/// script paths, resolved like every path of the init file.
fn deploy_scripts(
    d: &mut Decoder,
    f: &Fields<'_>,
    path: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Vec<std::path::PathBuf> {
    let Some(meta) = f.get("metadata") else {
        return Vec::new();
    };
    let Kind::Map(entries) = &meta.kind else {
        return Vec::new();
    };
    let meta_path = child(path, "metadata");
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(key) = k.key_text() else { continue };
        if key != "deploy-scripts" && key != "ovirt-scripts" {
            continue;
        }
        let p = child(&meta_path, &key);
        if matches!(v.kind, Kind::Null) {
            continue;
        }
        let Some(items) = d.list(v, &p, "a list of script paths") else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            if let Some(pb) = path_value(d, item, &index(&p, i), base_dir, var) {
                out.push(pb);
            }
        }
    }
    out
}

/// A password: any non-empty string (or a number, which YAML makes of `123456`).
fn password(d: &mut Decoder, n: &Node, p: &str) -> Option<String> {
    match &n.kind {
        Kind::Int(i) => Some(i.to_string()),
        _ => d.string(n, p),
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
fn nics(
    d: &mut Decoder,
    f: &Fields<'_>,
    node: &Node,
    nics_path: &str,
    nets: &mut Nets,
    provider: Provider,
) -> (Vec<NicSpec>, bool) {
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
                    match nic(d, item, &index(nics_path, i), nets, provider) {
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
