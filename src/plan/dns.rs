//! Names on the nets: the DNS records every managed net serves, and the
//! DHCP reservations of one net.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::{DnsRecord, Reservation, VmPlan};

/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// Every VM's names: `<vm>` (its management address), `<vm>-eth<N>` and
/// `<vm>-<net>` for each addressed NIC; names longer than a DNS label are
/// left out. Every managed net serves all of them.
pub(super) fn records(vms: &[VmPlan]) -> Vec<DnsRecord> {
    let mut records = Vec::new();
    for vm in vms {
        let mut seen_nets = HashSet::new();
        let mut add = |name: String, ip| {
            if name.len() <= MAX_LABEL {
                records.push(DnsRecord { name, ip });
            }
        };
        if vm.ip != Ipv4Addr::UNSPECIFIED {
            add(vm.hostname.clone(), vm.ip);
        }
        for nic in &vm.nics {
            let Some(ip) = nic.ip else { continue };
            add(format!("{}-{}", vm.hostname, nic.name), ip);
            if seen_nets.insert(nic.net.clone()) {
                add(format!("{}-{}", vm.hostname, nic.net.replace('_', "-")), ip);
            }
        }
    }
    records
}

/// Net `net`'s DHCP reservations: every NIC on it with its address and
/// MAC, named after its VM (the management NIC) or `<vm>-eth<N>`.
pub(super) fn reservations(net: &str, vms: &[VmPlan]) -> Vec<Reservation> {
    vms.iter()
        .flat_map(|vm| {
            vm.nics.iter().filter(|nic| nic.net == net).filter_map(move |nic| {
                let ip = nic.ip?;
                let name = if nic.net == vm.mgmt_net && ip == vm.ip {
                    vm.hostname.clone()
                } else {
                    format!("{}-{}", vm.hostname, nic.name)
                };
                Some(Reservation { mac: nic.mac, ip, name })
            })
        })
        .collect()
}
