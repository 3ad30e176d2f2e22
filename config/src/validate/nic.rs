//! A NIC (`domains.<vm>.nics[i]`): its keys and its decoder, which checks
//! that the net exists and that a static `ip` fits that net (its /24 and the
//! addresses already handed out on it).

use std::net::Ipv4Addr;

use super::net::{NetDraft, Nets, Pin};
use super::{POOL_FIRST, POOL_LAST, pool_octet, subnet_text};
use crate::decode::{Decoder, Keys, child, suggest};
use crate::error::Pos;
use crate::spec::*;
use crate::yaml::Node;

const NIC_KEYS: Keys = Keys {
    known: &["net", "ip"],
    refused: &[],
    ignored: &[("mtu", "a NIC takes its net's `mtu`")],
};

/// Reads the NIC at `path` of a VM of `provider`; its net must be one of `nets`.
pub(super) fn nic(d: &mut Decoder, node: &Node, path: &str, nets: &mut Nets, provider: Provider) -> Option<NicSpec> {
    let f = d.map(node, path, "a map with `net` (and optionally `ip`)", &NIC_KEYS)?;
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
    if nets.get(&net_name).is_none() {
        let list = nets.names_shown();
        let msg = format!("expected the name of a net in `nets` ({list}), found unknown net `{net_name}`");
        match suggest(&net_name, &nets.names()) {
            Some(h) => d.report_hint(Some(net_node.pos), &net_path, msg, format!("did you mean `{h}`?")),
            None => d.report(Some(net_node.pos), &net_path, msg),
        }
        return None;
    }
    let draft = nets.get_mut(&net_name)?;
    let ip = match f.get("ip") {
        // An existing machine is reached at its address on the management net.
        None if provider == Provider::Ssh && draft.spec.management => {
            d.report(
                Some(node.pos),
                &child(path, "ip"),
                "expected `ip` on the management net: a `vm-provider: ssh` VM exists already and is reached at this address, found no `ip` key",
            );
            return None;
        }
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

/// Checks static address `ip` (at `pos`) of the NIC at `nic_path` against its
/// net, pinning the net to the address's /24 if nothing pinned it yet.
fn static_ip(d: &mut Decoder, ip: Ipv4Addr, pos: Pos, ip_path: &str, nic_path: &str, net: &mut NetDraft) -> Option<()> {
    let name = net.spec.name.clone();
    let unique = |d: &mut Decoder, net: &mut NetDraft| {
        net.ips.claim(d, &ip, nic_path, pos, ip_path, |other, other_pos| {
            format!("expected a unique address on net `{name}`, found {ip}, already used by {other} (at {other_pos})")
        })
    };
    // A net only existing machines use: lago leases nothing there, any address goes.
    if net.spec.external {
        return unique(d, net).then_some(());
    }
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
    unique(d, net).then_some(())
}
