//! The cross-field rules, in one place: which nets are management nets, that
//! each VM has NICs on exactly one of them, and that managed nets use
//! distinct /24s. (Values unique within a scope: [`super::unique`].)

use std::collections::BTreeMap;

use super::net::{NetDraft, Nets};
use super::subnet_text;
use crate::decode::{Decoder, child};
use crate::error::Pos;
use crate::spec::*;

/// Lago's rule: nets flagged `management: true` are management nets; when none
/// is flagged, the first NAT/isolated net by sorted name (not flagged `false`) is.
pub(super) fn pick_management(nets: &mut [NetDraft]) {
    let any_explicit = nets.iter().any(|n| n.explicit_mgmt == Some(true));
    if any_explicit {
        for n in nets.iter_mut() {
            n.spec.management = n.explicit_mgmt == Some(true);
        }
    } else if let Some(first) = nets
        .iter_mut()
        // Not a host bridge (lago knows no addresses there); external nets may be.
        .filter(|n| !matches!(n.spec.kind, NetKind::Bridge { .. }) && n.explicit_mgmt != Some(false))
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

/// A VM's NICs must be on exactly one management net: returns its name, or
/// reports the problem at `pos` (the VM's `nics` key) and returns `""`.
pub(super) fn one_management_net(
    d: &mut Decoder,
    nets: &Nets,
    nics: &[NicSpec],
    pos: Option<Pos>,
    nics_path: &str,
) -> String {
    // The management nets this VM's NICs are on, in NIC order.
    let mut mgmt_nets: Vec<String> = Vec::new();
    for n in nics {
        if nets.get(&n.net).is_some_and(|x| x.spec.management) && !mgmt_nets.contains(&n.net) {
            mgmt_nets.push(n.net.clone());
        }
    }
    let mut mgmt_net = String::new();
    match mgmt_nets.len() {
        0 => d.report_hint(
            pos,
            nics_path,
            format!(
                "expected a NIC on a management net ({}), found none",
                if nets.mgmt_shown.is_empty() {
                    "there is none"
                } else {
                    &nets.mgmt_shown
                }
            ),
            "set `management: true` on one of this VM's nets",
        ),
        1 => mgmt_net = mgmt_nets.remove(0),
        _ => d.report_hint(
            pos,
            nics_path,
            format!(
                "expected NICs on exactly one management net, found {}: {}",
                mgmt_nets.len(),
                mgmt_nets.join(", ")
            ),
            "set `management: false` on all but one of them",
        ),
    }
    mgmt_net
}

/// Managed nets pinned to a /24 (by `gw` or a static address) must each use
/// their own; reports every net pinned to a /24 an earlier net already uses.
pub(super) fn check_pins_distinct(d: &mut Decoder, nets: &[NetDraft]) {
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
