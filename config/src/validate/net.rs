//! A net (`nets.<name>`): its keys, its types, and its decoder, which reads
//! one entry into a [`NetDraft`] (the [`NetSpec`] plus what the cross-field
//! rules need later: the `management` flag as written, the /24 the net is
//! pinned to, and the static addresses handed out on it).

use std::net::Ipv4Addr;

use super::unique::Unique;
use super::{POOL_FIRST, POOL_LAST, is_hostname_label, is_simple_name, one_of, pool_octet};
use crate::decode::{Decoder, Fields, Keys, child};
use crate::error::Pos;
use crate::spec::*;
use crate::yaml::Node;

const NET_KEYS: Keys = Keys {
    known: &["type", "dhcp", "management", "dns_domain_name", "gw", "mtu", "bridge"],
    refused: &[],
    ignored: &[(
        "main_dns",
        "every NAT/isolated net serves the environment's DNS records; `management` and `dns_domain_name` choose the VMs' domain",
    )],
};
const NET_TYPES: &[&str] = &["nat", "isolated", "bridge"];
/// Longest net name (Lago's own test suites used names of up to 56).
const MAX_NET_NAME: usize = 64;

/// What pins a managed net to one /24: its `gw` or its first static IP.
#[derive(Clone)]
pub(super) struct Pin {
    pub(super) octet: u8,
    pub(super) pos: Pos,
    pub(super) what: String,
}

/// A net being validated: its spec, and what the cross-field rules need.
pub(super) struct NetDraft {
    pub(super) spec: NetSpec,
    /// `management` as written, if it was.
    pub(super) explicit_mgmt: Option<bool>,
    /// The /24 the net is pinned to, once known.
    pub(super) pin: Option<Pin>,
    /// Static addresses on this net, with the NIC that uses each.
    pub(super) ips: Unique<Ipv4Addr>,
}

/// The nets read so far, looked up by name in constant time (init files
/// may name thousands), with the list of management nets made once.
#[derive(Default)]
pub(super) struct Nets {
    pub(super) list: Vec<NetDraft>,
    by_name: std::collections::HashMap<String, usize>,
    /// The management nets as a message shows them (`` `a`, `b` ``).
    pub(super) mgmt_shown: String,
}

/// Most names an "unknown net" message lists.
const NAMES_SHOWN: usize = 20;

impl Nets {
    pub(super) fn push(&mut self, n: NetDraft) {
        self.by_name.entry(n.spec.name.clone()).or_insert(self.list.len());
        self.list.push(n);
    }

    pub(super) fn get(&self, name: &str) -> Option<&NetDraft> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut NetDraft> {
        self.by_name.get(name).map(|&i| &mut self.list[i])
    }

    /// The names, for "did you mean" (only computed on an unknown net).
    pub(super) fn names(&self) -> Vec<&str> {
        self.list.iter().map(|n| n.spec.name.as_str()).collect()
    }

    /// The names as a message lists them (the first few, then a count).
    pub(super) fn names_shown(&self) -> String {
        let mut s = self
            .list
            .iter()
            .take(NAMES_SHOWN)
            .map(|n| format!("`{}`", n.spec.name))
            .collect::<Vec<_>>()
            .join(", ");
        if self.list.len() > NAMES_SHOWN {
            s += &format!(" and {} more", self.list.len() - NAMES_SHOWN);
        }
        s
    }

    /// Call once management is decided.
    pub(super) fn management_decided(&mut self) {
        self.mgmt_shown = self
            .list
            .iter()
            .filter(|n| n.spec.management)
            .take(NAMES_SHOWN)
            .map(|n| format!("`{}`", n.spec.name))
            .collect::<Vec<_>>()
            .join(", ");
    }
}

impl NetDraft {
    fn new(spec: NetSpec, explicit_mgmt: Option<bool>, pin: Option<Pin>) -> Self {
        Self {
            spec,
            explicit_mgmt,
            pin,
            ips: Unique::default(),
        }
    }

    /// A net with problems is still registered (as NAT), so that NICs naming
    /// it do not add "unknown net" problems on top of the real one.
    fn fallback(name: String) -> Self {
        let spec = NetSpec {
            name,
            kind: NetKind::Nat,
            dhcp: Some(DEFAULT_DHCP),
            management: false,
            dns_domain: None,
            gw: None,
            mtu: DEFAULT_MTU,
            external: false,
        };
        Self::new(spec, None, None)
    }
}

/// Reads the net `key`: `node` (its settings map). A net with problems is
/// still returned, so that NICs on it are checked against it.
pub(super) fn net(d: &mut Decoder, key: &Node, node: &Node) -> Option<NetDraft> {
    let name = key.key_text().unwrap_or_default();
    let path = child("nets", &name);
    if !is_simple_name(&name, MAX_NET_NAME) {
        d.report(
            Some(key.pos),
            &path,
            format!("expected a net name of 1-64 letters, digits, `-`, `_` or `.` starting with a letter or digit, found {name:?}"),
        );
    }
    let Some(f) = d.map(node, &path, "a map of network settings", &NET_KEYS) else {
        return Some(NetDraft::fallback(name));
    };
    let kind = kind(d, &f, key, &path, &name);
    let is_bridge = matches!(kind, NetKind::Bridge { .. });
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
        dns_domain = dns_domain_name(d, n, &child(&path, "dns_domain_name"));
    }

    let mut gw = None;
    let mut pin = None;
    if !bridge_forbids(d, "gw", unmanaged)
        && let Some(n) = f.get("gw")
    {
        (gw, pin) = gateway(d, n, &child(&path, "gw"));
    }

    let mtu = match f.get("mtu") {
        Some(n) => d
            .uint(n, &child(&path, "mtu"), 68, 65535)
            .map(|v| v as u32)
            .unwrap_or(DEFAULT_MTU),
        None => DEFAULT_MTU,
    };

    let spec = NetSpec {
        name,
        kind,
        dhcp,
        management: false,
        dns_domain,
        gw,
        mtu,
        external: false,
    };
    Some(NetDraft::new(spec, explicit_mgmt, pin))
}

/// The kind `type` (default `nat`) makes, with `bridge` read for a bridge
/// net and reported on any other.
fn kind(d: &mut Decoder, f: &Fields<'_>, key: &Node, path: &str, name: &str) -> NetKind {
    let kind_s = match f.get("type") {
        Some(n) => one_of(d, n, &child(path, "type"), NET_TYPES).unwrap_or_else(|| "nat".to_owned()),
        None => "nat".to_owned(),
    };
    let kind = match kind_s.as_str() {
        "isolated" => NetKind::Isolated,
        "bridge" => {
            let bridge = match f.get("bridge") {
                Some(n) => d.string(n, &child(path, "bridge")).unwrap_or_else(|| name.to_owned()),
                None => name.to_owned(),
            };
            if bridge.len() > 15 {
                d.report(
                    f.get("bridge").map(|n| n.pos).or(Some(key.pos)),
                    &child(path, "bridge"),
                    format!("expected a host bridge name of at most 15 characters, found {bridge:?}"),
                );
            }
            NetKind::Bridge { bridge }
        }
        _ => NetKind::Nat,
    };
    if kind_s != "bridge"
        && let Some(n) = f.get("bridge")
    {
        d.report(
            Some(n.pos),
            &child(path, "bridge"),
            format!("`bridge` only applies to `type: bridge` nets, found `type: {kind_s}`"),
        );
    }
    kind
}

/// `dns_domain_name`, if it is a valid DNS domain.
fn dns_domain_name(d: &mut Decoder, n: &Node, p: &str) -> Option<String> {
    let s = d.string(n, p)?;
    if s.split('.').all(is_hostname_label) && s.len() <= 253 {
        Some(s)
    } else {
        d.report(
            Some(n.pos),
            p,
            format!("expected a DNS domain like `lago.local`, found {s:?}"),
        );
        None
    }
}

/// `gw`, if it is a host address in the subnet pool, and the /24 it pins the net to.
fn gateway(d: &mut Decoder, n: &Node, p: &str) -> (Option<Ipv4Addr>, Option<Pin>) {
    let Some(ip) = d.ipv4(n, p) else {
        return (None, None);
    };
    let host = ip.octets()[3];
    match pool_octet(ip) {
        Some(octet) if (1..=254).contains(&host) => (
            Some(ip),
            Some(Pin {
                octet,
                pos: n.pos,
                what: format!("gw {ip}"),
            }),
        ),
        Some(_) => {
            d.report(
                Some(n.pos),
                p,
                format!("expected a gateway address .1-.254, found {ip}"),
            );
            (None, None)
        }
        None => {
            d.report(
                Some(n.pos),
                p,
                format!(
                    "expected an address in the subnet pool 192.168.{POOL_FIRST}.0-192.168.{POOL_LAST}.255, found {ip}"
                ),
            );
            (None, None)
        }
    }
}

fn dhcp(d: &mut Decoder, node: &Node, path: &str) -> Option<DhcpRange> {
    let f = d.map(
        node,
        path,
        "a map with `start` and `end`",
        &Keys::only(&["start", "end"]),
    )?;
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
