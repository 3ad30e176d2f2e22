//! The init-file schema: every key, its type, its default, and the rules that
//! tie keys together. One pass over the tree, collecting every problem.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;

use super::decode::{Decoder, Fields, child, index, suggest, to_json};
use super::error::{Pos, Problem};
use super::size::parse_size;
use super::spec::*;
use super::vars::expand_path;
use super::yaml::{Kind, Node};

/// First and last /24 of the subnet lease pool (third octet), as Lago.
pub const POOL_FIRST: u8 = 200;
/// Last third octet of the pool.
pub const POOL_LAST: u8 = 255;

const TOP_KEYS: &[&str] = &["domains", "nets"];
const TOP_UNSUPPORTED: &[(&str, &str)] = &[(
    "prototypes",
    "share settings with YAML anchors and merge keys (`<<: *common`) instead",
)];

const NET_KEYS: &[&str] = &["type", "dhcp", "management", "dns_domain_name", "gw", "mtu", "bridge"];
const NET_UNSUPPORTED: &[(&str, &str)] = &[(
    "main_dns",
    "every NAT/isolated net serves the environment's DNS records; use `management` and `dns_domain_name`",
)];
const NET_TYPES: &[&str] = &["nat", "isolated", "bridge"];

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

const NIC_KEYS: &[&str] = &["net", "ip"];
const NIC_UNSUPPORTED: &[(&str, &str)] = &[("mtu", "set `mtu` on the net")];

const DISK_KEYS: &[&str] = &[
    "type",
    "name",
    "dev",
    "format",
    "size",
    "template_name",
    "template_version",
    "template_type",
    "path",
    "make_a_copy",
];
const DISK_UNSUPPORTED: &[(&str, &str)] = &[
    ("url", "download the image yourself and point `path` at it"),
    (
        "build",
        "customise the guest over SSH after start, or bake it into the template",
    ),
    ("metadata", "put metadata on the VM"),
    ("skip-export", "export is not supported"),
    ("comment", "use a YAML comment (`# ...`)"),
];
const DISK_TYPES: &[&str] = &["template", "empty", "file"];
const DISK_FORMATS: &[&str] = &["qcow2", "raw", "iso"];
const TEMPLATE_TYPES: &[&str] = &["lago", "qcow2"];

/// What pins a managed net to one /24: its `gw` or its first static IP.
#[derive(Clone)]
struct Pin {
    octet: u8,
    pos: Pos,
    what: String,
}

struct NetDraft {
    spec: NetSpec,
    explicit_mgmt: Option<bool>,
    pin: Option<Pin>,
    ips: HashMap<Ipv4Addr, (String, Pos)>,
}

fn is_hostname_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_simple_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn subnet_text(octet: u8) -> String {
    format!("192.168.{octet}.0/24")
}

/// The pool /24 an address belongs to, if any.
fn pool_octet(ip: Ipv4Addr) -> Option<u8> {
    let o = ip.octets();
    (o[0] == 192 && o[1] == 168 && o[2] >= POOL_FIRST).then_some(o[2])
}

/// Validates the document `root` of init file `file` into an [`EnvSpec`].
pub(crate) fn validate(
    root: &Node,
    file: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvSpec, Vec<Problem>> {
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    let mut d = Decoder::default();
    let top = d.map_with_extensions(root, "", "a map with `domains` and `nets`", TOP_KEYS, TOP_UNSUPPORTED);

    let mut nets: Vec<NetDraft> = Vec::new();
    if let Some(top) = &top {
        match top.get("nets") {
            None => d.report(
                Some(root.pos),
                "nets",
                "expected a `nets` map with at least one network, found no `nets` key",
            ),
            Some(node) => {
                if let Some(entries) = d.named_entries(node, "nets", "a map of network names to networks") {
                    if entries.is_empty() {
                        d.report(Some(node.pos), "nets", "expected at least one network, found none");
                    }
                    for (k, v) in entries {
                        if let Some(n) = net(&mut d, k, v) {
                            nets.push(n);
                        }
                    }
                }
            }
        }
    }
    pick_management(&mut nets);

    let mut vms = Vec::new();
    if let Some(top) = &top {
        match top.get("domains") {
            None => d.report(
                Some(root.pos),
                "domains",
                "expected a `domains` map of VMs, found no `domains` key",
            ),
            Some(node) => {
                if let Some(entries) = d.named_entries(node, "domains", "a map of VM names to VMs") {
                    for (k, v) in entries {
                        if let Some(vm) = domain(&mut d, k, v, &mut nets, base_dir, var) {
                            vms.push(vm);
                        }
                    }
                }
            }
        }
    }
    check_pins_distinct(&mut d, &nets);

    if d.problems.is_empty() {
        Ok(EnvSpec {
            source: file.to_path_buf(),
            vms,
            nets: nets.into_iter().map(|n| n.spec).collect(),
        })
    } else {
        let mut problems = d.problems;
        problems.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
        Err(problems)
    }
}

fn one_of(d: &mut Decoder, node: &Node, path: &str, choices: &[&str]) -> Option<String> {
    let s = d.string(node, path)?;
    if choices.contains(&s.as_str()) {
        return Some(s);
    }
    let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    let msg = format!("expected one of {list}, found {s:?}");
    match suggest(&s, choices) {
        Some(h) => d.report_hint(Some(node.pos), path, msg, format!("did you mean `{h}`?")),
        None => d.report(Some(node.pos), path, msg),
    }
    None
}

fn net(d: &mut Decoder, key: &Node, node: &Node) -> Option<NetDraft> {
    let name = key.key_text().unwrap_or_default();
    let path = child("nets", &name);
    if !is_simple_name(&name, 32) {
        d.report(
            Some(key.pos),
            &path,
            format!("expected a net name of 1-32 letters, digits, `-`, `_` or `.` starting with a letter or digit, found {name:?}"),
        );
    }
    // A net with problems is still registered (as NAT), so that NICs naming
    // it do not add "unknown net" problems on top of the real one.
    let fallback = |name: String| NetDraft {
        spec: NetSpec {
            name,
            kind: NetKind::Nat,
            dhcp: Some(DEFAULT_DHCP),
            management: false,
            dns_domain: None,
            gw: None,
            mtu: DEFAULT_MTU,
        },
        explicit_mgmt: None,
        pin: None,
        ips: HashMap::new(),
    };
    let Some(f) = d.map(node, &path, "a map of network settings", NET_KEYS, NET_UNSUPPORTED) else {
        return Some(fallback(name));
    };
    let kind_s = match f.get("type") {
        Some(n) => one_of(d, n, &child(&path, "type"), NET_TYPES).unwrap_or_else(|| "nat".to_owned()),
        None => "nat".to_owned(),
    };
    let is_bridge = kind_s == "bridge";
    let kind = match kind_s.as_str() {
        "isolated" => NetKind::Isolated,
        "bridge" => {
            let bridge = match f.get("bridge") {
                Some(n) => d.string(n, &child(&path, "bridge")).unwrap_or_else(|| name.clone()),
                None => name.clone(),
            };
            if bridge.len() > 15 {
                d.report(
                    f.get("bridge").map(|n| n.pos).or(Some(key.pos)),
                    &child(&path, "bridge"),
                    format!("expected a host bridge name of at most 15 characters, found {bridge:?}"),
                );
            }
            NetKind::Bridge { bridge }
        }
        _ => NetKind::Nat,
    };
    if !is_bridge && let Some(n) = f.get("bridge") {
        d.report(
            Some(n.pos),
            &child(&path, "bridge"),
            format!("`bridge` only applies to `type: bridge` nets, found `type: {kind_s}`"),
        );
    }
    let bridge_forbids = |d: &mut Decoder, k: &str, why: &str| {
        if let (true, Some(n)) = (is_bridge, f.get(k)) {
            d.report(
                Some(n.pos),
                &child(&path, k),
                format!("`{k}` does not apply to a bridge net: {why}"),
            );
            true
        } else {
            false
        }
    };
    let unmanaged = "lago manages no addresses on a host bridge";

    let dhcp = if bridge_forbids(d, "dhcp", unmanaged) {
        None
    } else if let Some(n) = f.get("dhcp") {
        dhcp(d, n, &child(&path, "dhcp"))
    } else if is_bridge {
        None
    } else {
        Some(DEFAULT_DHCP)
    };

    let explicit_mgmt = match f.get("management") {
        Some(n) => d.boolean(n, &child(&path, "management")),
        None => None,
    };
    if is_bridge && explicit_mgmt == Some(true) {
        bridge_forbids(d, "management", "lago must know the VM's address on its management net");
    }

    let mut dns_domain = None;
    if !bridge_forbids(d, "dns_domain_name", unmanaged)
        && let Some(n) = f.get("dns_domain_name")
    {
        let p = child(&path, "dns_domain_name");
        if let Some(s) = d.string(n, &p) {
            if s.split('.').all(is_hostname_label) && s.len() <= 253 {
                dns_domain = Some(s);
            } else {
                d.report(
                    Some(n.pos),
                    &p,
                    format!("expected a DNS domain like `lago.local`, found {s:?}"),
                );
            }
        }
    }

    let mut gw = None;
    let mut pin = None;
    if !bridge_forbids(d, "gw", unmanaged)
        && let Some(n) = f.get("gw")
    {
        let p = child(&path, "gw");
        if let Some(ip) = d.ipv4(n, &p) {
            let host = ip.octets()[3];
            match pool_octet(ip) {
                    Some(octet) if (1..=254).contains(&host) => {
                        gw = Some(ip);
                        pin = Some(Pin { octet, pos: n.pos, what: format!("gw {ip}") });
                    }
                    Some(_) => d.report(Some(n.pos), &p, format!("expected a gateway address .1-.254, found {ip}")),
                    None => d.report(
                        Some(n.pos),
                        &p,
                        format!(
                            "expected an address in the subnet pool 192.168.{POOL_FIRST}.0-192.168.{POOL_LAST}.255, found {ip}"
                        ),
                    ),
                }
        }
    }

    let mtu = match f.get("mtu") {
        Some(n) => d
            .uint(n, &child(&path, "mtu"), 68, 65535)
            .map(|v| v as u32)
            .unwrap_or(DEFAULT_MTU),
        None => DEFAULT_MTU,
    };

    Some(NetDraft {
        spec: NetSpec {
            name,
            kind,
            dhcp,
            management: false,
            dns_domain,
            gw,
            mtu,
        },
        explicit_mgmt,
        pin,
        ips: HashMap::new(),
    })
}

fn dhcp(d: &mut Decoder, node: &Node, path: &str) -> Option<DhcpRange> {
    let f = d.map(node, path, "a map with `start` and `end`", &["start", "end"], &[])?;
    let octet = |d: &mut Decoder, k: &str| match f.get(k) {
        Some(n) => d.uint(n, &child(path, k), 2, 254).map(|v| v as u8),
        None => {
            d.report(
                Some(node.pos),
                &child(path, k),
                format!("expected `{k}` (a last octet from 2 to 254), found no `{k}` key"),
            );
            None
        }
    };
    let (start, end) = (octet(d, "start"), octet(d, "end"));
    let (start, end) = (start?, end?);
    if start > end {
        d.report(
            f.get("start").map(|n| n.pos),
            path,
            format!("expected `start` <= `end`, found start {start} > end {end}"),
        );
        return None;
    }
    Some(DhcpRange { start, end })
}

/// Lago's rule: nets flagged `management: true` are management nets; when none
/// is flagged, the first NAT/isolated net by sorted name (not flagged `false`) is.
fn pick_management(nets: &mut [NetDraft]) {
    let any_explicit = nets.iter().any(|n| n.explicit_mgmt == Some(true));
    if any_explicit {
        for n in nets.iter_mut() {
            n.spec.management = n.explicit_mgmt == Some(true);
        }
    } else if let Some(first) = nets
        .iter_mut()
        .filter(|n| n.spec.is_managed() && n.explicit_mgmt != Some(false))
        .min_by(|a, b| a.spec.name.cmp(&b.spec.name))
    {
        first.spec.management = true;
    }
    for n in nets.iter_mut() {
        if n.spec.management && n.spec.dns_domain.is_none() {
            n.spec.dns_domain = Some(DEFAULT_DNS_DOMAIN.to_owned());
        }
    }
}

fn check_pins_distinct(d: &mut Decoder, nets: &[NetDraft]) {
    let mut seen: BTreeMap<u8, &NetDraft> = BTreeMap::new();
    for n in nets {
        let Some(pin) = &n.pin else { continue };
        if let Some(other) = seen.get(&pin.octet) {
            let other_pin = other.pin.as_ref().map(|p| p.pos);
            d.report(
                Some(pin.pos),
                &child("nets", &n.spec.name),
                format!(
                    "{} puts net `{}` in {}, which net `{}` already uses ({}); expected one /24 per net",
                    pin.what,
                    n.spec.name,
                    subnet_text(pin.octet),
                    other.spec.name,
                    other_pin.map(|p| format!("at {p}")).unwrap_or_default(),
                ),
            );
        } else {
            seen.insert(pin.octet, n);
        }
    }
}

fn opt<T>(
    d: &mut Decoder,
    f: &Fields<'_>,
    key: &str,
    path: &str,
    read: impl FnOnce(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<T> {
    f.get(key).and_then(|n| read(d, n, &child(path, key)))
}

fn domain(
    d: &mut Decoder,
    key: &Node,
    node: &Node,
    nets: &mut [NetDraft],
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
    let memory_mib = opt(d, &f, "memory", &path, |d, n, p| d.uint(n, p, 1, 4 << 20)).unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpu = opt(d, &f, "vcpu", &path, |d, n, p| d.uint(n, p, 1, 255))
        .map(|v| v as u32)
        .unwrap_or(DEFAULT_VCPU);
    let cpu_model = opt(d, &f, "cpu_model", &path, |d, n, p| d.string(n, p));
    let metadata = match f.get("metadata") {
        Some(n) => match to_json(n) {
            serde_json::Value::Object(m) => m,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => {
                d.report(
                    Some(n.pos),
                    &child(&path, "metadata"),
                    format!("expected a map, found {}", n.describe()),
                );
                serde_json::Map::new()
            }
        },
        None => serde_json::Map::new(),
    };
    let groups = opt(d, &f, "groups", &path, |d, n, p| d.strings(n, p, true)).unwrap_or_default();
    let artifacts = opt(d, &f, "artifacts", &path, |d, n, p| {
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
    })
    .unwrap_or_default();
    let bootstrap = opt(d, &f, "bootstrap", &path, |d, n, p| d.boolean(n, p)).unwrap_or(true);
    let ssh_user = opt(d, &f, "ssh-user", &path, |d, n, p| {
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
                format!(
                    "expected a user name like `root` or `tester` (lowercase letters, digits, `_`, `-`), found {s:?}"
                ),
            );
            return None;
        }
        Some(s)
    })
    .unwrap_or_else(|| DEFAULT_SSH_USER.to_owned());
    let boot_time_sec =
        opt(d, &f, "boot_time_sec", &path, |d, n, p| d.uint(n, p, 1, 86_400)).unwrap_or(DEFAULT_BOOT_TIME_SEC);
    let distro = opt(d, &f, "distro", &path, |d, n, p| d.string(n, p));

    // NICs
    let mut nics = Vec::new();
    let mut mgmt_nets: Vec<String> = Vec::new();
    let mut nics_ok = true;
    let nics_path = child(&path, "nics");
    match f.get("nics") {
        None => {
            d.report(
                Some(node.pos),
                &nics_path,
                "expected `nics`, a list with at least one NIC, found no `nics` key",
            );
            nics_ok = false;
        }
        Some(list_node) => match d.list(list_node, &nics_path, "a list of NICs") {
            None => nics_ok = false,
            Some([]) => {
                d.report(
                    Some(list_node.pos),
                    &nics_path,
                    "expected at least one NIC, found an empty list",
                );
                nics_ok = false;
            }
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    match nic(d, item, &index(&nics_path, i), nets) {
                        Some(n) => {
                            if nets.iter().any(|x| x.spec.name == n.net && x.spec.management)
                                && !mgmt_nets.contains(&n.net)
                            {
                                mgmt_nets.push(n.net.clone());
                            }
                            nics.push(n);
                        }
                        None => nics_ok = false,
                    }
                }
            }
        },
    }
    let mut mgmt_net = String::new();
    if nics_ok {
        let all_mgmt: Vec<_> = nets
            .iter()
            .filter(|n| n.spec.management)
            .map(|n| format!("`{}`", n.spec.name))
            .collect();
        let pos = f.key_pos("nics");
        match mgmt_nets.len() {
            0 => d.report_hint(
                pos,
                &nics_path,
                format!(
                    "expected a NIC on a management net ({}), found none",
                    if all_mgmt.is_empty() {
                        "there is none".to_owned()
                    } else {
                        all_mgmt.join(", ")
                    }
                ),
                "set `management: true` on one of this VM's nets",
            ),
            1 => mgmt_net = mgmt_nets.remove(0),
            _ => d.report_hint(
                pos,
                &nics_path,
                format!(
                    "expected NICs on exactly one management net, found {}: {}",
                    mgmt_nets.len(),
                    mgmt_nets.join(", ")
                ),
                "set `management: false` on all but one of them",
            ),
        }
    }

    // Disks
    let mut disks = Vec::new();
    let disks_path = child(&path, "disks");
    match f.get("disks") {
        None => d.report(
            Some(node.pos),
            &disks_path,
            "expected `disks`, a list whose first entry is the root disk, found no `disks` key",
        ),
        Some(list_node) => {
            if let Some(items) = d.list(list_node, &disks_path, "a list of disks") {
                if items.is_empty() {
                    d.report(
                        Some(list_node.pos),
                        &disks_path,
                        "expected at least one disk (the first is the root disk), found an empty list",
                    );
                }
                let mut names: HashMap<String, (String, Pos)> = HashMap::new();
                let mut devs: HashMap<String, (String, Pos)> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    let p = index(&disks_path, i);
                    if let Some(disk) = disk(d, item, &p, base_dir, var, &mut names, &mut devs) {
                        disks.push(disk);
                    }
                }
            }
        }
    }

    Some(VmSpec {
        name,
        memory_mib,
        vcpu,
        cpu_model,
        nics,
        disks,
        metadata,
        groups,
        artifacts,
        bootstrap,
        ssh_user,
        boot_time_sec,
        distro,
        mgmt_net,
    })
}

fn nic(d: &mut Decoder, node: &Node, path: &str, nets: &mut [NetDraft]) -> Option<NicSpec> {
    let f = d.map(
        node,
        path,
        "a map with `net` (and optionally `ip`)",
        NIC_KEYS,
        NIC_UNSUPPORTED,
    )?;
    let net_path = child(path, "net");
    let Some(net_node) = f.get("net") else {
        d.report(
            Some(node.pos),
            &net_path,
            "expected `net`, the name of a network, found no `net` key",
        );
        return None;
    };
    let net_name = d.string(net_node, &net_path)?;
    if !nets.iter().any(|n| n.spec.name == net_name) {
        let names: Vec<&str> = nets.iter().map(|n| n.spec.name.as_str()).collect();
        let list = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let msg = format!("expected the name of a net in `nets` ({list}), found unknown net `{net_name}`");
        match suggest(&net_name, &names) {
            Some(h) => d.report_hint(Some(net_node.pos), &net_path, msg, format!("did you mean `{h}`?")),
            None => d.report(Some(net_node.pos), &net_path, msg),
        }
        return None;
    }
    let draft = nets.iter_mut().find(|n| n.spec.name == net_name)?;
    let ip = match f.get("ip") {
        None => None,
        Some(ip_node) => {
            let ip_path = child(path, "ip");
            let ip = d.ipv4(ip_node, &ip_path)?;
            static_ip(d, ip, ip_node.pos, &ip_path, path, draft)?;
            Some(ip)
        }
    };
    Some(NicSpec { net: net_name, ip })
}

fn static_ip(d: &mut Decoder, ip: Ipv4Addr, pos: Pos, ip_path: &str, nic_path: &str, net: &mut NetDraft) -> Option<()> {
    let name = net.spec.name.clone();
    if !net.spec.is_managed() {
        d.report(
            Some(pos),
            ip_path,
            format!(
                "expected no `ip` on bridge net `{name}`: lago manages no addresses there; configure the guest instead"
            ),
        );
        return None;
    }
    let host = ip.octets()[3];
    let gw_host = net.spec.gw.map(|g| g.octets()[3]).unwrap_or(1);
    let Some(octet) = pool_octet(ip) else {
        d.report(
            Some(pos),
            ip_path,
            format!(
                "expected an address in the subnet pool 192.168.{POOL_FIRST}.0-192.168.{POOL_LAST}.255, found {ip}"
            ),
        );
        return None;
    };
    if !(2..=254).contains(&host) || host == gw_host {
        d.report(
            Some(pos),
            ip_path,
            format!("expected a host address .2-.254 other than the gateway (.{gw_host}), found {ip}"),
        );
        return None;
    }
    match &net.pin {
        Some(pin) if pin.octet != octet => {
            d.report(
                Some(pos),
                ip_path,
                format!(
                    "expected an address inside net `{name}` ({}, set by {} at {}), found {ip}",
                    subnet_text(pin.octet),
                    pin.what,
                    pin.pos
                ),
            );
            return None;
        }
        Some(_) => {}
        None => {
            net.pin = Some(Pin {
                octet,
                pos,
                what: format!("static address {ip}"),
            })
        }
    }
    if let Some((other, other_pos)) = net.ips.get(&ip) {
        d.report(
            Some(pos),
            ip_path,
            format!("expected a unique address on net `{name}`, found {ip}, already used by {other} (at {other_pos})"),
        );
        return None;
    }
    net.ips.insert(ip, (nic_path.to_owned(), pos));
    Some(())
}

fn disk(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
    names: &mut HashMap<String, (String, Pos)>,
    devs: &mut HashMap<String, (String, Pos)>,
) -> Option<DiskSpec> {
    let f = d.map(node, path, "a map of disk settings", DISK_KEYS, DISK_UNSUPPORTED)?;
    let required = |d: &mut Decoder, k: &str, what: &str| -> Option<String> {
        match f.get(k) {
            Some(n) => d.string(n, &child(path, k)),
            None => {
                d.report(
                    Some(node.pos),
                    &child(path, k),
                    format!("expected `{k}` ({what}), found no `{k}` key"),
                );
                None
            }
        }
    };
    let kind = match f.get("type") {
        Some(n) => one_of(d, n, &child(path, "type"), DISK_TYPES),
        None => {
            d.report(
                Some(node.pos),
                &child(path, "type"),
                "expected `type` (`template`, `empty` or `file`), found no `type` key",
            );
            None
        }
    };
    let name = required(d, "name", "the disk's name, unique in the VM");
    if let (Some(n), Some(name)) = (f.get("name"), &name) {
        let p = child(path, "name");
        if !is_simple_name(name, 64) {
            d.report(
                Some(n.pos),
                &p,
                format!("expected a disk name of letters, digits, `-`, `_` or `.`, found {name:?}"),
            );
        } else if let Some((other, pos)) = names.get(name) {
            d.report(
                Some(n.pos),
                &p,
                format!("expected a unique disk name in this VM, found `{name}`, also used by {other} (at {pos})"),
            );
        } else {
            names.insert(name.clone(), (path.to_owned(), n.pos));
        }
    }
    let dev = required(
        d,
        "dev",
        "the guest device: `vdX` virtio-blk, `sdX` virtio-scsi or `hdX` IDE",
    );
    let mut bus = None;
    if let (Some(n), Some(dev)) = (f.get("dev"), &dev) {
        let p = child(path, "dev");
        let (prefix, rest) = dev.split_at(dev.len().min(2));
        let letters_ok = (1..=2).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase());
        bus = match (prefix, letters_ok) {
            ("vd", true) => Some(DiskBus::Virtio),
            ("sd", true) => Some(DiskBus::Scsi),
            ("hd", true) => Some(DiskBus::Ide),
            _ => {
                d.report(
                    Some(n.pos),
                    &p,
                    format!(
                        "expected a device like `vda` (virtio-blk), `sda` (virtio-scsi) or `hdc` (IDE), found {dev:?}"
                    ),
                );
                None
            }
        };
        if bus.is_some() {
            if let Some((other, pos)) = devs.get(dev) {
                d.report(
                    Some(n.pos),
                    &p,
                    format!("expected a unique device in this VM, found `{dev}`, also used by {other} (at {pos})"),
                );
                bus = None;
            } else {
                devs.insert(dev.clone(), (path.to_owned(), n.pos));
            }
        }
    }
    let format = match f.get("format") {
        Some(n) => one_of(d, n, &child(path, "format"), DISK_FORMATS).map(|s| match s.as_str() {
            "raw" => DiskFormat::Raw,
            "iso" => DiskFormat::Iso,
            _ => DiskFormat::Qcow2,
        }),
        None => Some(DiskFormat::Qcow2),
    };
    if let (Some(DiskFormat::Iso), Some(DiskBus::Virtio)) = (format, bus) {
        d.report(
            f.get("dev").map(|n| n.pos),
            &child(path, "dev"),
            "expected `hdX` or `sdX` for an `iso` disk (a CD-ROM), found a virtio-blk `vdX` device",
        );
    }

    let kind = kind?;
    let template_type = match (kind.as_str(), f.get("template_type")) {
        ("template", Some(n)) => one_of(d, n, &child(path, "template_type"), TEMPLATE_TYPES),
        _ => Some("lago".to_owned()),
    };
    // Keys that only make sense for some disk types.
    let allowed: &[&str] = match (kind.as_str(), template_type.as_deref()) {
        ("template", Some("qcow2")) => &["template_type", "path"],
        ("template", _) => &["template_type", "template_name", "template_version"],
        ("empty", _) => &["size"],
        _ => &["path", "make_a_copy"],
    };
    // Every disk key but the four all disks take.
    let type_specific = DISK_KEYS
        .iter()
        .copied()
        .filter(|k| !["type", "name", "dev", "format"].contains(k));
    for k in type_specific {
        if let (false, Some(n)) = (allowed.contains(&k), f.get(k)) {
            let applies = match k {
                "size" => "`type: empty` disks",
                "template_name" | "template_version" => "`type: template` disks with `template_type: lago`",
                "template_type" => "`type: template` disks",
                "path" => "`type: file` disks and `template_type: qcow2` templates",
                _ => "`type: file` disks",
            };
            d.report(
                Some(n.pos),
                &child(path, k),
                format!("`{k}` only applies to {applies}, found it on a `type: {kind}` disk"),
            );
        }
    }
    let path_of = |d: &mut Decoder, what: &str| -> Option<std::path::PathBuf> {
        let Some(n) = f.get("path") else {
            d.report(
                Some(node.pos),
                &child(path, "path"),
                format!("expected `path` ({what}), found no `path` key"),
            );
            return None;
        };
        let p = child(path, "path");
        let raw = d.string(n, &p)?;
        match expand_path(&raw, base_dir, var) {
            Ok(pb) => Some(pb),
            Err(e) => {
                d.report(Some(n.pos), &p, e);
                None
            }
        }
    };

    let source = match kind.as_str() {
        "template" => {
            if let (Some(fmt), Some(n)) = (format, f.get("format"))
                && fmt != DiskFormat::Qcow2
            {
                d.report(
                    Some(n.pos),
                    &child(path, "format"),
                    format!(
                        "expected `qcow2` for a template disk (it is a qcow2 overlay), found `{}`",
                        fmt.as_str()
                    ),
                );
            }
            match template_type?.as_str() {
                "qcow2" => DiskSource::TemplateFile {
                    path: path_of(d, "the qcow2 image to use as backing file")?,
                },
                _ => match f.get("template_name") {
                    None => {
                        d.report(
                            Some(node.pos),
                            &child(path, "template_name"),
                            "expected `template_name` on a `type: template` disk (or `template_type: qcow2` with `path`), found no `template_name` key",
                        );
                        return None;
                    }
                    Some(n) => DiskSource::Template {
                        name: d.string(n, &child(path, "template_name"))?,
                        version: opt(d, &f, "template_version", path, |d, n, p| match &n.kind {
                            Kind::Int(i) => Some(i.to_string()),
                            _ => d.string(n, p),
                        }),
                    },
                },
            }
        }
        "empty" => {
            if format == Some(DiskFormat::Iso) {
                d.report(
                    f.get("format").map(|n| n.pos),
                    &child(path, "format"),
                    "expected `qcow2` or `raw` for an empty disk, found `iso`",
                );
            }
            let Some(n) = f.get("size") else {
                d.report(
                    Some(node.pos),
                    &child(path, "size"),
                    "expected `size` (e.g. `10G`) on a `type: empty` disk, found no `size` key",
                );
                return None;
            };
            let p = child(path, "size");
            let parsed = match &n.kind {
                Kind::Int(i) if *i > 0 => Ok(*i as u64),
                Kind::Str(s) => parse_size(s),
                _ => Err(format!(
                    "expected a size like `10G`, `512M` or a number of bytes, found {}",
                    n.describe()
                )),
            };
            match parsed {
                Ok(size_bytes) => DiskSource::Empty { size_bytes },
                Err(e) => {
                    d.report(Some(n.pos), &p, e);
                    return None;
                }
            }
        }
        _ => DiskSource::File {
            path: path_of(d, "the image file")?,
            make_a_copy: opt(d, &f, "make_a_copy", path, |d, n, p| d.boolean(n, p)).unwrap_or(false),
        },
    };
    Some(DiskSpec {
        name: name?,
        dev: dev?,
        bus: bus?,
        format: format?,
        source,
    })
}
