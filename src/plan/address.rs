//! Addresses: each managed net's subnet and gateway, every NIC's address
//! (static ones first, then the lowest free host from .2 up, in file order)
//! and its MAC (`54:52:` and the address in hex).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use super::ids::fnv1a;
use super::{EnvId, Mac, NicPlan, PlanError, Subnet, subnet_requests};
use lago_config::{EnvSpec, Provider, VmSpec};

/// Each managed net's subnet (as leased; a pinned net must have its own)
/// and gateway (its `gw`, else `.1`).
pub(super) fn gateways<'a>(
    spec: &'a EnvSpec,
    subnets: &BTreeMap<String, Subnet>,
) -> Result<BTreeMap<&'a str, (Subnet, Ipv4Addr)>, PlanError> {
    let mut out = BTreeMap::new();
    for req in subnet_requests(spec) {
        let got = *subnets
            .get(&req.net)
            .ok_or_else(|| PlanError::MissingSubnet { net: req.net.clone() })?;
        if let Some(expected) = req.pinned
            && expected != got
        {
            return Err(PlanError::WrongSubnet {
                net: req.net,
                expected,
                got,
            });
        }
        let net = spec
            .net(&req.net)
            .ok_or_else(|| PlanError::MissingSubnet { net: req.net.clone() })?;
        out.insert(net.name.as_str(), (got, net.gw.unwrap_or_else(|| got.host(1))));
    }
    Ok(out)
}

/// The host numbers taken on each net: gateways and static addresses.
pub(super) struct Hosts<'a>(BTreeMap<&'a str, HashSet<u8>>);

impl<'a> Hosts<'a> {
    pub(super) fn taken(spec: &'a EnvSpec, gateways: &BTreeMap<&'a str, (Subnet, Ipv4Addr)>) -> Self {
        let mut used: BTreeMap<&str, HashSet<u8>> = BTreeMap::new();
        for (name, (_, gw)) in gateways {
            used.entry(name).or_default().insert(gw.octets()[3]);
        }
        for nic in spec.vms.iter().flat_map(|v| &v.nics) {
            if let Some(ip) = nic.ip {
                used.entry(nic.net.as_str()).or_default().insert(ip.octets()[3]);
            }
        }
        Hosts(used)
    }

    /// The lowest free host number of `net` from 2 up, now taken.
    fn next(&mut self, net: &'a str) -> Option<u8> {
        let taken = self.0.entry(net).or_default();
        let host = (2..=254u8).find(|h| !taken.contains(h))?;
        taken.insert(host);
        Some(host)
    }
}

/// VM `vm`'s NICs: names, libvirt nets, addresses and MACs.
pub(super) fn nics<'a>(
    vm: &'a VmSpec,
    env_id: &EnvId,
    gateways: &BTreeMap<&str, (Subnet, Ipv4Addr)>,
    hosts: &mut Hosts<'a>,
) -> Result<Vec<NicPlan>, PlanError> {
    let mut nics = Vec::new();
    for (i, nic) in vm.nics.iter().enumerate() {
        let ip = match (nic.ip, gateways.get(nic.net.as_str())) {
            (Some(ip), _) => Some(ip),
            // An existing machine's other NICs: their addresses are its own business.
            (None, Some(_)) if vm.provider == Provider::Ssh => None,
            (None, Some((subnet, _))) => {
                let host = hosts.next(nic.net.as_str()).ok_or_else(|| PlanError::NetFull {
                    net: nic.net.clone(),
                    vm: vm.name.clone(),
                    nic: i,
                })?;
                Some(subnet.host(host))
            }
            (None, None) => None,
        };
        let mac = match ip {
            Some(ip) => Mac::for_ip(ip),
            // A NIC without an address (a bridge net): a MAC from the env, the VM and the NIC.
            None => {
                let h = fnv1a(format!("{env_id}/{}/{i}", vm.name).as_bytes()).to_be_bytes();
                Mac([0x54, 0x52, 0x00, h[0], h[1], h[2]])
            }
        };
        nics.push(NicPlan {
            name: format!("eth{i}"),
            net: nic.net.clone(),
            libvirt_net: format!("{}{}", env_id.object_prefix(), nic.net),
            ip,
            mac,
        });
    }
    Ok(nics)
}
