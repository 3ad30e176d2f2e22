//! The environment plan: every name, address, MAC, DNS record and disk path,
//! decided from an [`EnvSpec`], an [`EnvId`] and one [`Subnet`] per managed net.
//!
//! Pure: nothing here touches the host, so the same inputs give the same plan.
//!
//! Rules (Lago's, where Lago had one):
//! - libvirt domains and networks are named `lago-<env id>-<name>`; NAT and
//!   isolated nets get the bridge `lg-<env id>-<n>` (at most 15 characters);
//! - a NIC without `ip` gets the lowest free host address of its net from .2 up,
//!   VMs and NICs taken in file order (the gateway and static IPs are never handed out);
//! - a NIC's MAC is `54:52:` followed by its IPv4 address in hex (a NIC on a
//!   bridge net, which has no address, gets `54:52:00:` and three bytes derived
//!   from the env id, VM and NIC index);
//! - DHCP reserves every NIC's address for its MAC; DNS serves `<vm>`,
//!   `<vm>-eth<N>` and `<vm>-<net>` on every managed net, under its domain;
//! - disks live in `<workdir>/images/<vm>_<disk>.<format>` (file disks not
//!   copied stay where they are); seeds in `<workdir>/seeds/`, consoles in `<workdir>/logs/`;
//! - nets start first, in file order, then VMs, in file order.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lago_config::{DiskBus, DiskFormat, DiskSource, DiskSpec, EnvSpec, NetKind, NetSpec, VmSpec};

mod address;
mod dns;
mod ids;

pub use ids::{EnvId, Mac, OBJECT_PREFIX, Subnet};

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// An env id must be 1-8 lowercase letters or digits.
    #[error("invalid env id {id:?}: expected 1-8 lowercase letters or digits")]
    InvalidEnvId {
        /// The rejected id.
        id: String,
    },
    /// A managed net was given no subnet.
    #[error("no subnet was given for net `{net}`")]
    MissingSubnet {
        /// The managed net's name in the init file.
        net: String,
    },
    /// A net pinned to a /24 (by `gw` or a static IP) was given another one.
    #[error("net `{net}` needs subnet {expected} (pinned by the init file), but was given {got}")]
    WrongSubnet {
        /// The pinned net's name in the init file.
        net: String,
        /// The pinned subnet.
        expected: Subnet,
        /// The subnet given.
        got: Subnet,
    },
    /// More NICs than free host addresses on one net.
    #[error("net `{net}` has no free address left for {vm} eth{nic} (.2-.254 are all taken)")]
    NetFull {
        /// The full net's name in the init file.
        net: String,
        /// The VM whose NIC found no address.
        vm: String,
        /// The NIC's index in the VM's `nics` (0 for `eth0`).
        nic: usize,
    },
    /// More managed nets than the pool has subnets.
    #[error("the environment needs {needed} subnets but the pool has {available}")]
    PoolExhausted {
        /// How many managed nets need a /24 (pinned ones included).
        needed: usize,
        /// How many /24s the pool has in all.
        available: usize,
    },
}

/// A subnet a managed net needs from the lease store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetRequest {
    /// The managed net's name in the init file.
    pub net: String,
    /// The /24 the init file pins it to (by `gw` or a static IP), if any.
    pub pinned: Option<Subnet>,
}

/// What each managed net (NAT or isolated) needs from the lease store, in file order.
pub fn subnet_requests(spec: &EnvSpec) -> Vec<SubnetRequest> {
    spec.nets
        .iter()
        .filter(|n| n.is_managed())
        .map(|n| {
            let pinned = n.gw.and_then(Subnet::of).or_else(|| {
                spec.vms
                    .iter()
                    .flat_map(|vm| &vm.nics)
                    .filter(|nic| nic.net == n.name)
                    .find_map(|nic| nic.ip.and_then(Subnet::of))
            });
            SubnetRequest {
                net: n.name.clone(),
                pinned,
            }
        })
        .collect()
}

/// Subnets for a preview: pinned ones as pinned, the others the first free of the pool.
/// The same spec always gets the same preview.
pub fn preview_subnets(spec: &EnvSpec) -> Result<BTreeMap<String, Subnet>, PlanError> {
    let requests = subnet_requests(spec);
    let mut taken: HashSet<Subnet> = requests.iter().filter_map(|r| r.pinned).collect();
    let mut free = Subnet::pool()
        .filter(|s| !taken.contains(s))
        .collect::<Vec<_>>()
        .into_iter();
    let mut out = BTreeMap::new();
    for r in &requests {
        let s = match r.pinned {
            Some(s) => s,
            None => free.next().ok_or(PlanError::PoolExhausted {
                needed: requests.len(),
                available: Subnet::pool().count(),
            })?,
        };
        taken.insert(s);
        out.insert(r.net.clone(), s);
    }
    Ok(out)
}

/// Everything decided for one environment: its nets, VMs and start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvPlan {
    /// The environment's id.
    pub env_id: EnvId,
    /// The workdir everything on disk lives under.
    pub workdir: PathBuf,
    /// Networks, in file order.
    pub nets: Vec<NetPlan>,
    /// VMs, in file order.
    pub vms: Vec<VmPlan>,
    /// Start order: nets first, then VMs.
    pub start_order: StartOrder,
}

impl EnvPlan {
    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&VmPlan> {
        self.vms.iter().find(|v| v.name == name)
    }

    /// The net called `name`.
    pub fn net(&self, name: &str) -> Option<&NetPlan> {
        self.nets.iter().find(|n| n.name == name)
    }
}

/// The order objects are started in (and stopped in reverse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOrder {
    /// Nets, started first.
    pub nets: Vec<String>,
    /// VMs, started after all nets.
    pub vms: Vec<String>,
}

/// What is decided for one net of the init file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    /// Name in the init file.
    pub name: String,
    /// `nat`, `isolated` or `bridge`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The libvirt network name (`lago-<env id>-<net>`).
    pub libvirt_name: String,
    /// The host bridge device (`lg-<env id>-<n>`, or the given bridge of a bridge net).
    pub bridge: String,
    /// Whether this is a management net.
    pub management: bool,
    /// The /24 (managed nets).
    pub subnet: Option<Subnet>,
    /// Gateway = the host's address on the net (managed nets).
    pub gateway: Option<Ipv4Addr>,
    /// DHCP range (managed nets).
    pub dhcp: Option<DhcpPlan>,
    /// DHCP reservations: one per NIC on this net.
    pub reservations: Vec<Reservation>,
    /// DNS domain served on this net.
    pub dns_domain: Option<String>,
    /// DNS records served on this net.
    pub dns_records: Vec<DnsRecord>,
    /// MTU in bytes (the net's `mtu`, 1500 unless set).
    pub mtu: u32,
    /// Only existing machines (`vm-provider: ssh`) use it: nothing is created for it.
    #[serde(default)]
    pub external: bool,
}

/// The addresses a managed net's DHCP server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpPlan {
    /// The first address handed out.
    pub start: Ipv4Addr,
    /// The last address handed out (inclusive).
    pub end: Ipv4Addr,
}

/// A DHCP host reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The NIC's MAC.
    pub mac: Mac,
    /// The address reserved for it.
    pub ip: Ipv4Addr,
    /// The host name handed out with it.
    pub name: String,
}

/// A DNS A record every managed net serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Short name (the net's domain is appended by the resolver).
    pub name: String,
    /// The NIC address it resolves to (the management address for a plain `<vm>`).
    pub ip: Ipv4Addr,
}

/// What is decided for one VM of the init file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPlan {
    /// Name in the init file.
    pub name: String,
    /// The guest's hostname and DNS name (the name, `_` as `-`).
    #[serde(default)]
    pub hostname: String,
    /// The libvirt domain name (`lago-<env id>-<vm>`).
    pub libvirt_name: String,
    /// Fully qualified name on the management net (`vm01.lago.local`).
    pub fqdn: String,
    /// Address on the management net (what SSH connects to).
    pub ip: Ipv4Addr,
    /// The init-file name of its management net (the net `ip` is on).
    pub mgmt_net: String,
    /// NICs in order (`eth0`, `eth1`, …).
    pub nics: Vec<NicPlan>,
    /// Disks in order; the first is the root disk.
    pub disks: Vec<DiskPlan>,
    /// The cloud-init seed image, when `bootstrap` is on.
    pub seed: Option<PathBuf>,
    /// The host file the serial console is logged to (`<workdir>/logs/<vm>.console.log`).
    pub console_log: PathBuf,
}

impl VmPlan {
    /// The index of its management NIC: its first NIC on the management net
    /// (the one whose address is [`VmPlan::ip`], SSH's way in, and whose DHCP
    /// lease sets the default route).
    pub fn mgmt_nic(&self) -> Option<usize> {
        self.nics.iter().position(|n| n.net == self.mgmt_net)
    }
}

/// What is decided for one NIC of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlan {
    /// Guest interface name (`eth0`).
    pub name: String,
    /// Net in the init file.
    pub net: String,
    /// libvirt network it attaches to.
    pub libvirt_net: String,
    /// Address (none on bridge nets).
    pub ip: Option<Ipv4Addr>,
    /// Its MAC: `54:52:` and the address in hex (on a bridge net, derived from the env id, VM and NIC).
    pub mac: Mac,
}

/// What is decided for one disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPlan {
    /// Name in the init file.
    pub name: String,
    /// The guest device name from the init file's `dev` (`vda`, `sdb`, …).
    pub dev: String,
    /// The bus, from the device name's prefix (`vd`: virtio-blk, `sd`: virtio-scsi, `hd`: IDE).
    pub bus: DiskBus,
    /// Format of the file at `path`.
    pub format: DiskFormat,
    /// The image the VM uses.
    pub path: PathBuf,
    /// Where its content comes from.
    pub source: DiskSource,
}

/// Plans `spec` for environment `env_id` in `workdir`, with `subnets` holding
/// one [`Subnet`] per NAT/isolated net (see [`subnet_requests`]).
pub fn plan(
    spec: &EnvSpec,
    env_id: &EnvId,
    subnets: &BTreeMap<String, Subnet>,
    workdir: &Path,
) -> Result<EnvPlan, PlanError> {
    let prefix = env_id.object_prefix();
    let gateways = address::gateways(spec, subnets)?;
    let mut hosts = address::Hosts::taken(spec, &gateways);
    let mut vms = Vec::new();
    for vm in &spec.vms {
        let nics = address::nics(vm, env_id, &gateways, &mut hosts)?;
        vms.push(vm_plan(spec, vm, nics, &prefix, workdir));
    }
    let records = dns::records(&vms);
    let nets = spec
        .nets
        .iter()
        .enumerate()
        .map(|(i, n)| net_plan(n, i, env_id, gateways.get(n.name.as_str()).copied(), &vms, &records))
        .collect();
    Ok(EnvPlan {
        env_id: env_id.clone(),
        workdir: workdir.to_path_buf(),
        nets,
        vms,
        start_order: StartOrder {
            nets: spec.nets.iter().map(|n| n.name.clone()).collect(),
            vms: spec.vms.iter().map(|v| v.name.clone()).collect(),
        },
    })
}

/// VM `vm`'s plan: names, its management address and FQDN, its disks,
/// seed and console log in the workdir.
fn vm_plan(spec: &EnvSpec, vm: &VmSpec, nics: Vec<NicPlan>, prefix: &str, workdir: &Path) -> VmPlan {
    let mgmt_ip = nics
        .iter()
        .find(|n| n.net == vm.mgmt_net)
        .and_then(|n| n.ip)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let domain = spec.net(&vm.mgmt_net).and_then(|n| n.dns_domain.clone());
    let host = if vm.hostname.is_empty() { &vm.name } else { &vm.hostname };
    VmPlan {
        name: vm.name.clone(),
        hostname: host.clone(),
        libvirt_name: format!("{prefix}{}", vm.name),
        fqdn: match domain {
            Some(d) => format!("{host}.{d}"),
            None => host.clone(),
        },
        ip: mgmt_ip,
        mgmt_net: vm.mgmt_net.clone(),
        nics,
        disks: vm.disks.iter().map(|d| disk_plan(vm, d, workdir)).collect(),
        seed: vm
            .bootstrap
            .then(|| workdir.join("seeds").join(format!("{}-cidata.img", vm.name))),
        console_log: workdir.join("logs").join(format!("{}.console.log", vm.name)),
    }
}

/// Where disk `d` of `vm` is and in which format: a template's overlay, an
/// empty disk or a copy in the workdir's `images/`; a file used in place
/// where it is.
fn disk_plan(vm: &VmSpec, d: &DiskSpec, workdir: &Path) -> DiskPlan {
    let in_workdir = |fmt: DiskFormat| {
        workdir
            .join("images")
            .join(format!("{}_{}.{}", vm.name, d.name, fmt.as_str()))
    };
    let (path, format) = match &d.source {
        DiskSource::Template { .. } | DiskSource::TemplateFile { .. } => {
            (in_workdir(DiskFormat::Qcow2), DiskFormat::Qcow2)
        }
        DiskSource::Empty { .. } => (in_workdir(d.format), d.format),
        DiskSource::File {
            path,
            make_a_copy: false,
        } => (path.clone(), d.format),
        DiskSource::File { make_a_copy: true, .. } => (in_workdir(d.format), d.format),
    };
    DiskPlan {
        name: d.name.clone(),
        dev: d.dev.clone(),
        bus: d.bus,
        format,
        path,
        source: d.source.clone(),
    }
}

/// Net `n`'s plan (the `i`th of the file): its bridge, and for a managed
/// net (`gateway` given) its subnet, DHCP range, reservations and DNS.
fn net_plan(
    n: &NetSpec,
    i: usize,
    env_id: &EnvId,
    gateway: Option<(Subnet, Ipv4Addr)>,
    vms: &[VmPlan],
    records: &[DnsRecord],
) -> NetPlan {
    NetPlan {
        name: n.name.clone(),
        kind: n.kind_str().to_owned(),
        libvirt_name: format!("{}{}", env_id.object_prefix(), n.name),
        bridge: match &n.kind {
            NetKind::Bridge { bridge } => bridge.clone(),
            _ => format!("lg-{env_id}-{i}"),
        },
        management: n.management,
        subnet: gateway.map(|(s, _)| s),
        gateway: gateway.map(|(_, gw)| gw),
        dhcp: match (gateway, n.dhcp) {
            (Some((s, _)), Some(r)) => Some(DhcpPlan {
                start: s.host(r.start),
                end: s.host(r.end),
            }),
            _ => None,
        },
        reservations: if gateway.is_some() {
            dns::reservations(&n.name, vms)
        } else {
            Vec::new()
        },
        dns_domain: n.dns_domain.clone(),
        dns_records: if gateway.is_some() {
            records.to_vec()
        } else {
            Vec::new()
        },
        mtu: n.mtu,
        external: n.external,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_carry_the_env_id_and_give_it_back() {
        let id = EnvId::new("ab12cd34").unwrap();
        assert_eq!(id.object_prefix(), "lago-ab12cd34-");
        let name = format!("{}vm-01", id.object_prefix());
        assert_eq!(EnvId::from_object_name(&name), Some(id));
        assert_eq!(EnvId::from_object_name("lago-ab12cd34-"), None);
        assert_eq!(EnvId::from_object_name("lago-NOTANID-x"), None);
        assert_eq!(EnvId::from_object_name("default"), None);
    }
    use lago_config as config;

    const TWO_VMS: &str = "
domains:
  vm01:
    nics: [{net: lago}, {net: storage}]
    disks:
      - {type: template, template_name: tiny, name: root, dev: vda}
      - {type: empty, name: data, dev: vdb, size: 1G, format: raw}
  vm02:
    nics: [{net: lago, ip: 192.168.222.3}, {net: lab}]
    disks:
      - {type: file, name: root, dev: sda, path: /images/base.qcow2}
      - {type: file, name: copy, dev: sdb, path: /images/extra.raw, format: raw, make_a_copy: true}
nets:
  lago: {}
  storage: {type: isolated, gw: 192.168.240.254}
  lab: {type: bridge, bridge: br-lab}
";

    fn spec() -> EnvSpec {
        config::from_str(TWO_VMS, "/envs/init.yaml").unwrap()
    }

    fn subnets(pairs: &[(&str, u8)]) -> BTreeMap<String, Subnet> {
        pairs
            .iter()
            .map(|(n, o)| (n.to_string(), Subnet::new(*o).unwrap()))
            .collect()
    }

    fn the_plan() -> EnvPlan {
        let id = EnvId::new("ab12cd34").unwrap();
        plan(
            &spec(),
            &id,
            &subnets(&[("lago", 222), ("storage", 240)]),
            Path::new("/w"),
        )
        .unwrap()
    }

    #[test]
    fn names_carry_the_env_id_and_bridges_fit_in_15_chars() {
        let p = the_plan();
        assert_eq!(p.vms[0].libvirt_name, "lago-ab12cd34-vm01");
        assert_eq!(p.nets[0].libvirt_name, "lago-ab12cd34-lago");
        assert_eq!(p.nets[0].bridge, "lg-ab12cd34-0");
        assert_eq!(p.nets[1].bridge, "lg-ab12cd34-1");
        assert_eq!(p.nets[2].bridge, "br-lab");
        assert!(p.nets.iter().all(|n| n.bridge.len() <= 15));
        assert_eq!(p.vms[0].nics[1].libvirt_net, "lago-ab12cd34-storage");
    }

    #[test]
    fn addresses_static_first_then_lowest_free_and_gateways() {
        let p = the_plan();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // vm02's static .3 is reserved before vm01 is given the lowest free (.2).
        assert_eq!(p.vms[0].nics[0].ip, Some(ip("192.168.222.2")));
        assert_eq!(p.vms[1].nics[0].ip, Some(ip("192.168.222.3")));
        // storage's gw is .254, so .1 is free and handed out.
        assert_eq!(p.net("storage").unwrap().gateway, Some(ip("192.168.240.254")));
        assert_eq!(p.vms[0].nics[1].ip, Some(ip("192.168.240.2")));
        assert_eq!(p.net("lago").unwrap().gateway, Some(ip("192.168.222.1")));
        assert_eq!(p.vms[1].nics[1].ip, None);
        assert_eq!(p.vms[0].ip, ip("192.168.222.2"));
        assert_eq!(p.vms[1].ip, ip("192.168.222.3"));
    }

    #[test]
    fn macs_encode_the_address_as_lago_does() {
        let p = the_plan();
        assert_eq!(p.vms[0].nics[0].mac.to_string(), "54:52:c0:a8:de:02");
        assert_eq!(
            Mac::for_ip("192.168.201.2".parse().unwrap()).to_string(),
            "54:52:c0:a8:c9:02"
        );
        // A bridge NIC has no address: a stable MAC outside the address-derived range.
        let bridge_mac = p.vms[1].nics[1].mac;
        assert_eq!(&bridge_mac.0[..3], &[0x54, 0x52, 0x00]);
        assert_eq!(the_plan().vms[1].nics[1].mac, bridge_mac);
        let other = plan(
            &spec(),
            &EnvId::new("ffff0000").unwrap(),
            &subnets(&[("lago", 222), ("storage", 240)]),
            Path::new("/w"),
        )
        .unwrap();
        assert_ne!(other.vms[1].nics[1].mac, bridge_mac);
    }

    #[test]
    fn dhcp_reserves_every_nic_and_dns_serves_every_name() {
        let p = the_plan();
        let lago = p.net("lago").unwrap();
        assert_eq!(
            lago.dhcp,
            Some(DhcpPlan {
                start: "192.168.222.100".parse().unwrap(),
                end: "192.168.222.254".parse().unwrap()
            })
        );
        let res: Vec<_> = lago
            .reservations
            .iter()
            .map(|r| (r.mac.to_string(), r.ip.to_string(), r.name.as_str()))
            .collect();
        assert_eq!(
            res,
            [
                ("54:52:c0:a8:de:02".to_string(), "192.168.222.2".to_string(), "vm01"),
                ("54:52:c0:a8:de:03".to_string(), "192.168.222.3".to_string(), "vm02"),
            ]
        );
        let storage = p.net("storage").unwrap();
        assert_eq!(storage.reservations.len(), 1);
        assert_eq!(storage.reservations[0].name, "vm01-eth1");
        let names: Vec<_> = lago
            .dns_records
            .iter()
            .map(|r| format!("{}={}", r.name, r.ip))
            .collect();
        assert_eq!(
            names,
            [
                "vm01=192.168.222.2",
                "vm01-eth0=192.168.222.2",
                "vm01-lago=192.168.222.2",
                "vm01-eth1=192.168.240.2",
                "vm01-storage=192.168.240.2",
                "vm02=192.168.222.3",
                "vm02-eth0=192.168.222.3",
                "vm02-lago=192.168.222.3",
            ]
        );
        assert_eq!(lago.dns_domain.as_deref(), Some("lago.local"));
        assert_eq!(storage.dns_records, lago.dns_records);
        assert!(p.net("lab").unwrap().dns_records.is_empty());
        assert_eq!(p.vms[0].fqdn, "vm01.lago.local");
    }

    #[test]
    fn disk_paths_live_in_the_workdir_unless_used_in_place() {
        let p = the_plan();
        let paths: Vec<_> = p
            .vms
            .iter()
            .flat_map(|v| &v.disks)
            .map(|d| (d.path.clone(), d.format))
            .collect();
        assert_eq!(
            paths,
            [
                (PathBuf::from("/w/images/vm01_root.qcow2"), DiskFormat::Qcow2),
                (PathBuf::from("/w/images/vm01_data.raw"), DiskFormat::Raw),
                (PathBuf::from("/images/base.qcow2"), DiskFormat::Qcow2),
                (PathBuf::from("/w/images/vm02_copy.raw"), DiskFormat::Raw),
            ]
        );
        assert_eq!(p.vms[0].seed, Some(PathBuf::from("/w/seeds/vm01-cidata.img")));
        assert_eq!(p.vms[0].console_log, PathBuf::from("/w/logs/vm01.console.log"));
    }

    #[test]
    fn start_order_is_nets_then_vms_in_file_order() {
        let p = the_plan();
        assert_eq!(p.start_order.nets, ["lago", "storage", "lab"]);
        assert_eq!(p.start_order.vms, ["vm01", "vm02"]);
    }

    #[test]
    fn the_same_inputs_give_the_same_plan() {
        assert_eq!(the_plan(), the_plan());
        let s = spec();
        assert_eq!(preview_subnets(&s).unwrap(), preview_subnets(&s).unwrap());
        let json = serde_json::to_string(&the_plan()).unwrap();
        let back: EnvPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, the_plan());
    }

    #[test]
    fn pinned_subnets_are_honoured_and_checked() {
        let s = spec();
        let req = subnet_requests(&s);
        assert_eq!(
            req,
            [
                SubnetRequest {
                    net: "lago".into(),
                    pinned: Subnet::new(222)
                },
                SubnetRequest {
                    net: "storage".into(),
                    pinned: Subnet::new(240)
                },
            ]
        );
        let preview = preview_subnets(&s).unwrap();
        assert_eq!(preview, subnets(&[("lago", 222), ("storage", 240)]));
        let id = EnvId::new("x1").unwrap();
        let wrong = plan(&s, &id, &subnets(&[("lago", 200), ("storage", 240)]), Path::new("/w"));
        assert_eq!(
            wrong,
            Err(PlanError::WrongSubnet {
                net: "lago".into(),
                expected: Subnet::new(222).unwrap(),
                got: Subnet::new(200).unwrap()
            })
        );
        let missing = plan(&s, &id, &subnets(&[("lago", 222)]), Path::new("/w"));
        assert_eq!(missing, Err(PlanError::MissingSubnet { net: "storage".into() }));
    }

    #[test]
    fn unpinned_nets_preview_the_first_free_subnets() {
        let s = config::from_str(
            "domains: {}\nnets:\n  a: {}\n  b: {gw: 192.168.200.1}\n  c: {type: isolated}\n",
            "/x.yaml",
        )
        .unwrap();
        assert_eq!(
            preview_subnets(&s).unwrap(),
            subnets(&[("a", 201), ("b", 200), ("c", 202)])
        );
    }

    #[test]
    fn a_full_net_is_an_error_not_a_wraparound() {
        let mut text = String::from("domains:\n");
        for i in 0..254 {
            text += &format!(
                "  vm{i}:\n    nics: [{{net: n}}]\n    disks: [{{type: empty, name: r, dev: vda, size: 1M}}]\n"
            );
        }
        text += "nets:\n  n: {}\n";
        let s = config::from_str(&text, "/x.yaml").unwrap();
        let err = plan(&s, &EnvId::new("a").unwrap(), &subnets(&[("n", 200)]), Path::new("/w")).unwrap_err();
        assert_eq!(
            err,
            PlanError::NetFull {
                net: "n".into(),
                vm: "vm253".into(),
                nic: 0
            }
        );
    }

    #[test]
    fn env_ids_and_subnets_validate() {
        assert!(EnvId::new("ab12cd34").is_ok());
        assert!(EnvId::new("").is_err());
        assert!(EnvId::new("ABC").is_err());
        assert!(EnvId::new("123456789").is_err());
        let r = EnvId::random();
        assert_eq!(r.as_str().len(), 8);
        assert!(EnvId::new(r.as_str()).is_ok());
        assert_eq!("192.168.201.0/24".parse::<Subnet>(), Ok(Subnet::new(201).unwrap()));
        assert!("192.168.199.0/24".parse::<Subnet>().is_err());
        assert!("10.0.0.0/24".parse::<Subnet>().is_err());
        assert_eq!(Subnet::pool().count(), 56);
        assert_eq!(Subnet::new(201).unwrap().to_string(), "192.168.201.0/24");
    }
}
