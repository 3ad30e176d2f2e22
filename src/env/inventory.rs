//! Reaching the VMs with stock tools: an Ansible inventory
//! ([`Env::ansible_inventory`], Lago's `ansible_hosts`), an OpenSSH client
//! config ([`Env::ssh_hosts`], [`ssh_config`]), and the `known_hosts` file
//! both use, holding the host keys lago pinned (strict checking stays on).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::env::Env;
use crate::env::error::{Error, Result};

/// The keys Lago grouped an inventory by.
pub const DEFAULT_GROUP_KEYS: &[&str] = &["vm-type", "groups", "vm-provider"];

pub use crate::host::workdir::KNOWN_HOSTS_FILE;

/// How an inventory is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InventoryFormat {
    /// Ansible's INI inventory (Lago's format).
    #[default]
    Ini,
    /// Ansible's YAML inventory.
    Yaml,
    /// The YAML inventory's structure as JSON (Ansible reads both).
    Json,
}

impl std::str::FromStr for InventoryFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ini" => Ok(InventoryFormat::Ini),
            "yaml" => Ok(InventoryFormat::Yaml),
            "json" => Ok(InventoryFormat::Json),
            other => Err(format!(
                "unknown inventory format `{other}`: expected ini, yaml or json"
            )),
        }
    }
}

/// How to reach one VM with OpenSSH.
#[derive(Debug, Clone, Serialize)]
pub struct SshHost {
    /// The VM's name (the `Host` alias).
    pub name: String,
    /// Its management address.
    pub hostname: String,
    /// Its fully qualified name on the management net (`vm01.lago.local`).
    pub fqdn: String,
    /// The guest's SSH port (22).
    pub port: u16,
    /// The guest user to log in as (`ssh-user`).
    pub user: String,
    /// The private key file on this host (lago's own, or the VM's `ssh-key`).
    pub identity_file: PathBuf,
    /// The known-hosts file holding its pinned host key.
    pub known_hosts: PathBuf,
    /// Its pinned host key (`ssh-ed25519 AAAA…`); `None` for a machine lago
    /// did not create and has not reached yet (strict checking then refuses it).
    pub host_key: Option<String>,
}

/// An Ansible inventory: hosts with their variables, and groups of hosts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// Host → variables.
    pub hosts: BTreeMap<String, BTreeMap<String, String>>,
    /// Group → hosts (group names as Lago made them: `key=value`).
    pub groups: BTreeMap<String, Vec<String>>,
}

/// A value for OpenSSH's config and `-o` options: quoted when it holds
/// blanks; `%` doubled when it is a path (ssh expands `%` tokens in paths).
fn ssh_quote(v: &str, path: bool) -> Result<String> {
    if v.contains(['"', '\n', '\r']) {
        return Err(Error::Usage {
            message: format!("{v:?}: OpenSSH config values cannot hold quotes or newlines"),
        });
    }
    let v = if path { v.replace('%', "%%") } else { v.to_owned() };
    Ok(if v.contains([' ', '\t']) { format!("\"{v}\"") } else { v })
}

/// A group name Ansible takes as a section header: letters, digits and `_.=-`
/// kept, anything else (`]`, blanks, newlines) made `_`.
fn group_name(key: &str, value: &str) -> String {
    format!("{key}={value}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.=-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A value in an INI inventory line (Ansible splits host lines like a shell).
fn ini_value(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-,:@+=".contains(&b))
    {
        v.to_owned()
    } else {
        crate::guest::ssh::quote_command([v])
    }
}

impl Inventory {
    /// The inventory as text in `format`.
    pub fn render(&self, format: InventoryFormat) -> Result<String> {
        let render_err = |e: String| Error::Render { message: e };
        match format {
            InventoryFormat::Ini => Ok(self.ini()),
            InventoryFormat::Yaml => serde_yaml::to_string(&self.ansible_doc()).map_err(|e| render_err(e.to_string())),
            InventoryFormat::Json => serde_json::to_string_pretty(&self.ansible_doc())
                .map(|s| s + "\n")
                .map_err(|e| render_err(e.to_string())),
        }
    }

    fn ini(&self) -> String {
        let mut s = String::from("# lago ansible inventory: host keys are pinned (strict checking)\n");
        let line = |name: &str| {
            let mut l = name.to_owned();
            for (k, v) in self.hosts.get(name).into_iter().flatten() {
                let _ = write!(l, " {k}={}", ini_value(v));
            }
            l
        };
        for name in self.hosts.keys() {
            let _ = writeln!(s, "{}", line(name));
        }
        for (group, hosts) in &self.groups {
            let _ = writeln!(s, "\n[{group}]");
            for h in hosts {
                let _ = writeln!(s, "{}", line(h));
            }
        }
        s
    }

    /// Ansible's YAML inventory structure: `all: {hosts, children}`.
    fn ansible_doc(&self) -> serde_json::Value {
        let children: serde_json::Map<String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(g, hosts)| {
                let hosts: serde_json::Map<String, serde_json::Value> =
                    hosts.iter().map(|h| (h.clone(), serde_json::json!({}))).collect();
                (g.clone(), serde_json::json!({ "hosts": hosts }))
            })
            .collect();
        serde_json::json!({ "all": { "hosts": self.hosts, "children": children } })
    }
}

/// An OpenSSH client config for `hosts`: `ssh -F <file> vm01` works, with
/// the environment's key and strict checking against the pinned host keys.
pub fn ssh_config(hosts: &[SshHost]) -> Result<String> {
    let mut s = String::from("# lago ssh-config: host keys are pinned; strict checking stays on\n");
    for h in hosts {
        let _ = writeln!(s, "\nHost {}", h.name);
        if h.host_key.is_none() {
            let _ = writeln!(
                s,
                "  # no host key known yet: strict checking refuses it until lago has reached it once"
            );
        }
        let _ = writeln!(s, "  HostName {}", h.hostname);
        let _ = writeln!(s, "  Port {}", h.port);
        let _ = writeln!(s, "  User {}", ssh_quote(&h.user, false)?);
        let _ = writeln!(
            s,
            "  IdentityFile {}",
            ssh_quote(&h.identity_file.display().to_string(), true)?
        );
        let _ = writeln!(s, "  IdentitiesOnly yes");
        let _ = writeln!(
            s,
            "  UserKnownHostsFile {}",
            ssh_quote(&h.known_hosts.display().to_string(), true)?
        );
        let _ = writeln!(s, "  GlobalKnownHostsFile /dev/null");
        let _ = writeln!(s, "  StrictHostKeyChecking yes");
        let _ = writeln!(s, "  HostKeyAlias {}", h.name);
        let _ = writeln!(s, "  LogLevel ERROR");
    }
    Ok(s)
}

fn openssh_key(blob: &[u8]) -> Option<String> {
    let key = ssh_key::PublicKey::from_bytes(blob).ok()?;
    let mut text = key.to_openssh().ok()?;
    // Drop the comment: a known_hosts line is `<hosts> <type> <base64>`.
    if let Some((kind, rest)) = text.split_once(' ')
        && let Some((b64, _comment)) = rest.split_once(' ')
    {
        text = format!("{kind} {b64}");
    }
    Some(text)
}

impl Env {
    /// Writes the environment's `known_hosts` file (`ssh_known_hosts` in the
    /// workdir: each VM's pinned host key, under its name, address and FQDN)
    /// and returns its path. Rewritten on each call, from the saved state.
    pub fn known_hosts_file(&self) -> Result<PathBuf> {
        let mut text = String::new();
        for vm in self.get_vms().values() {
            if let Some(key) = self.host_key_of(vm) {
                let _ = writeln!(text, "{},{},{} {key}", vm.name(), vm.ip(), vm.fqdn());
            }
        }
        let path = self.workdir().join(KNOWN_HOSTS_FILE);
        write_private(&path, text.as_bytes())?;
        Ok(path)
    }

    fn host_key_of(&self, vm: &crate::env::vm::Vm) -> Option<String> {
        let target = vm.conn.target();
        let blob = match &target.host_key {
            Some(b) => Some(b.clone()),
            None => target.learned_host_key.as_ref().and_then(|p| std::fs::read(p).ok()),
        };
        blob.and_then(|b| openssh_key(&b))
    }

    /// How to reach each VM with OpenSSH (writes the known-hosts file; see
    /// [`ssh_config`] for the config text).
    pub fn ssh_hosts(&self) -> Result<Vec<SshHost>> {
        let known_hosts = self.known_hosts_file()?;
        Ok(self
            .plan()
            .start_order
            .vms
            .iter()
            .filter_map(|n| self.get_vms().get(n))
            .map(|vm| {
                let t = vm.conn.target();
                SshHost {
                    name: vm.name().to_owned(),
                    hostname: t.ip.to_string(),
                    fqdn: vm.fqdn().to_owned(),
                    port: t.port,
                    user: t.user.clone(),
                    identity_file: t.key.clone(),
                    known_hosts: known_hosts.clone(),
                    host_key: self.host_key_of(vm),
                }
            })
            .collect())
    }

    /// An Ansible inventory of the VMs, grouped by the VM keys `keys` as
    /// Lago did (`vm-type`, `groups`, `vm-provider` by default; other keys
    /// are looked up in the VM's metadata): group `key=value`. Each host has
    /// `ansible_host`, `ansible_user`, `ansible_ssh_private_key_file` and
    /// SSH arguments that pin its host key (writes the known-hosts file).
    pub fn ansible_inventory(&self, keys: &[&str]) -> Result<Inventory> {
        let mut inv = Inventory::default();
        for h in self.ssh_hosts()? {
            let vm = self.vm(&h.name)?;
            // Ansible splits these like a shell: each option is one quoted word.
            let known = format!(
                "UserKnownHostsFile={}",
                ssh_quote(&h.known_hosts.display().to_string(), true)?
            );
            let common = crate::guest::ssh::quote_command([
                "-o",
                known.as_str(),
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("HostKeyAlias={}", h.name),
                "-o",
                "IdentitiesOnly=yes",
            ]);
            let vars = BTreeMap::from([
                ("ansible_host".to_owned(), h.hostname.clone()),
                ("ansible_port".to_owned(), h.port.to_string()),
                ("ansible_user".to_owned(), h.user.clone()),
                (
                    "ansible_ssh_private_key_file".to_owned(),
                    h.identity_file.display().to_string(),
                ),
                ("ansible_ssh_common_args".to_owned(), common),
                ("ansible_host_key_checking".to_owned(), "true".to_owned()),
            ]);
            inv.hosts.insert(h.name.clone(), vars);
            for key in keys {
                for value in group_values(vm, key) {
                    inv.groups
                        .entry(group_name(key, &value))
                        .or_default()
                        .push(h.name.clone());
                }
            }
        }
        Ok(inv)
    }
}

/// The values of VM key `key` that name its groups.
fn group_values(vm: &crate::env::vm::Vm, key: &str) -> Vec<String> {
    let spec = vm.spec();
    match key {
        "groups" => spec.groups.clone(),
        "vm-provider" => vec![
            match spec.provider {
                lago_config::Provider::Ssh => "ssh",
                lago_config::Provider::Libvirt => "local-libvirt",
            }
            .to_owned(),
        ],
        "vm-type" => vec![
            spec.metadata
                .get("vm-type")
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_owned(),
        ],
        "distro" if spec.distro.is_some() => spec.distro.clone().into_iter().collect(),
        other => match spec.metadata.get(other) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    serde_json::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect(),
            Some(serde_json::Value::Number(n)) => vec![n.to_string()],
            Some(serde_json::Value::Bool(b)) => vec![b.to_string()],
            _ => Vec::new(),
        },
    }
}

/// Replaces `path` (in the workdir) with `data`, mode 0600, atomically: the
/// new content is written beside, under `logs/` (removed with the workdir),
/// and renamed over it, so a reader never sees a half-written file.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let err = |source| Error::Workdir {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let logs = path.parent().unwrap_or(Path::new(".")).join("logs");
    let mut tmp = tempfile::NamedTempFile::new_in(&logs).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    // NamedTempFile is created 0600.
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> SshHost {
        SshHost {
            name: name.into(),
            hostname: "192.168.200.2".into(),
            fqdn: format!("{name}.lago.local"),
            port: 22,
            user: "tester".into(),
            identity_file: "/w/id_ed25519".into(),
            known_hosts: "/my work/100%/ssh_known_hosts".into(),
            host_key: None,
        }
    }

    #[test]
    fn ssh_config_pins_keys_and_quotes_paths() {
        let text = ssh_config(&[host("vm01")]).unwrap();
        for line in [
            "Host vm01",
            "  HostName 192.168.200.2",
            "  User tester",
            "  IdentityFile /w/id_ed25519",
            "  UserKnownHostsFile \"/my work/100%%/ssh_known_hosts\"",
            "  StrictHostKeyChecking yes",
            "  HostKeyAlias vm01",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(text.contains("no host key known yet"));
        let mut bad = host("vm02");
        bad.identity_file = "/a\"b".into();
        assert!(ssh_config(&[bad]).unwrap_err().is_usage());
    }

    #[test]
    fn group_names_cannot_open_sections_or_add_lines() {
        assert_eq!(group_name("groups", "web"), "groups=web");
        assert_eq!(
            group_name("groups", "a]\nvm09 ansible_host=1.2.3.4\n[x"),
            "groups=a__vm09_ansible_host=1.2.3.4__x"
        );
        assert_eq!(group_name("vm-type", "ovirt host:1"), "vm-type=ovirt_host_1");
    }

    #[test]
    fn inventories_render_as_ini_yaml_and_json() {
        let mut inv = Inventory::default();
        inv.hosts.insert(
            "vm01".into(),
            BTreeMap::from([
                ("ansible_host".into(), "192.168.200.2".into()),
                ("ansible_ssh_common_args".into(), "-o A=b -o C=d".into()),
            ]),
        );
        inv.groups.insert("vm-type=default".into(), vec!["vm01".into()]);
        let ini = inv.render(InventoryFormat::Ini).unwrap();
        assert!(
            ini.contains(
                "\n[vm-type=default]\nvm01 ansible_host=192.168.200.2 ansible_ssh_common_args='-o A=b -o C=d'\n"
            ),
            "{ini}"
        );
        let yaml: serde_yaml::Value = serde_yaml::from_str(&inv.render(InventoryFormat::Yaml).unwrap()).unwrap();
        assert_eq!(
            yaml["all"]["hosts"]["vm01"]["ansible_host"].as_str(),
            Some("192.168.200.2")
        );
        assert!(yaml["all"]["children"]["vm-type=default"]["hosts"]["vm01"].is_mapping());
        let json: serde_json::Value = serde_json::from_str(&inv.render(InventoryFormat::Json).unwrap()).unwrap();
        assert_eq!(json["all"]["hosts"]["vm01"]["ansible_host"], "192.168.200.2");
        assert!("toml".parse::<InventoryFormat>().is_err());
    }

    #[test]
    fn known_hosts_lines_drop_the_key_comment() {
        let pair = crate::host::keys::KeyPair::generate("vm01@lago-x").unwrap();
        let blob = crate::host::keys::public_blob(&pair.public_openssh).unwrap();
        let line = openssh_key(&blob).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert_eq!(line.split(' ').count(), 2, "{line}");
    }
}
