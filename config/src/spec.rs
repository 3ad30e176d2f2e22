//! The validated environment: what the rest of lago works from.
//!
//! Every value here has passed validation: names are unique and well formed,
//! references resolve, paths are absolute, defaults are filled in.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default VM memory in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Default number of virtual CPUs.
pub const DEFAULT_VCPU: u32 = 1;
/// SSH user of a VM without `ssh-user`.
pub const DEFAULT_SSH_USER: &str = "root";
/// Default time a VM gets to answer SSH after start, in seconds.
pub const DEFAULT_BOOT_TIME_SEC: u64 = 300;
/// Default DNS domain of a management network.
pub const DEFAULT_DNS_DOMAIN: &str = "lago.local";
/// Default DHCP range (last octets) of a NAT or isolated network.
pub const DEFAULT_DHCP: DhcpRange = DhcpRange { start: 100, end: 254 };
/// MTU in bytes of a net without `mtu`.
pub const DEFAULT_MTU: u32 = 1500;

/// A whole environment: VMs and networks, in the order the init file lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// The init file this came from (absolute).
    pub source: PathBuf,
    /// The VMs (`domains`), in file order.
    pub vms: Vec<VmSpec>,
    /// The networks (`nets`), in file order.
    pub nets: Vec<NetSpec>,
    /// Lago keys the file uses that lago does not act on, each with what
    /// lago does instead (with `strict`, these are errors instead).
    #[serde(skip)]
    pub warnings: Vec<crate::Problem>,
}

impl EnvSpec {
    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&VmSpec> {
        self.vms.iter().find(|v| v.name == name)
    }

    /// The network called `name`.
    pub fn net(&self, name: &str) -> Option<&NetSpec> {
        self.nets.iter().find(|n| n.name == name)
    }
}

/// How a VM comes to exist (`vm-provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// A libvirt domain lago creates (`local-libvirt`, the default).
    #[default]
    Libvirt,
    /// A machine that exists already (`ssh`): lago creates nothing for it and
    /// reaches it over SSH at its NICs' `ip`.
    Ssh,
}

/// One VM (a `domains` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Name: the map key (the libvirt name is made from it).
    pub name: String,
    /// The guest's hostname and DNS name: the name, with `_` as `-`.
    #[serde(default)]
    pub hostname: String,
    /// `vm-provider`.
    #[serde(default)]
    pub provider: Provider,
    /// `root-password`: set in the guest (console login); SSH stays key-only.
    #[serde(default)]
    pub root_password: Option<String>,
    /// `ssh-password`: password authentication when key authentication fails.
    #[serde(default)]
    pub ssh_password: Option<String>,
    /// `ssh-key`: the private key of an `ssh` VM (lago's own key otherwise).
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// Memory in MiB (`memory`).
    pub memory_mib: u64,
    /// Virtual CPUs (`vcpu`).
    pub vcpu: u32,
    /// Exact CPU model (`cpu_model`); `None` lets the accelerator choose.
    pub cpu_model: Option<String>,
    /// NICs in order (`nics`); NIC `i` is `eth<i>` in the guest.
    pub nics: Vec<NicSpec>,
    /// Disks in order (`disks`); the first one is the root disk.
    pub disks: Vec<DiskSpec>,
    /// Free-form metadata (`metadata`).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Free-form group names (`groups`); `lago ansible-hosts` groups VMs by them.
    pub groups: Vec<String>,
    /// Guest paths collected for failed tests (`artifacts`).
    pub artifacts: Vec<String>,
    /// Whether the cloud-init seed is attached (`bootstrap`).
    pub bootstrap: bool,
    /// The user lago logs in as over SSH (`ssh-user`, default `root`).
    pub ssh_user: String,
    /// Seconds the VM gets to answer SSH after start (`boot_time_sec`).
    pub boot_time_sec: u64,
    /// Distribution hint (`distro`).
    pub distro: Option<String>,
    /// The management network: its IP is the VM's address, its DNS domain the VM's.
    pub mgmt_net: String,
    /// A kernel to boot directly (`kernel`, `initrd`, `kernel-args`), instead
    /// of the one the root disk's template brings or the disk's boot loader.
    #[serde(default)]
    pub kernel_boot: Option<KernelBoot>,
    /// Scripts `lago deploy` runs on the VM, in order (`metadata:
    /// deploy-scripts`, or Lago's older `ovirt-scripts`), paths resolved.
    #[serde(default)]
    pub deploy_scripts: Vec<PathBuf>,
    /// `skip-export`: `lago export` leaves the VM out unless it is named.
    #[serde(default)]
    pub skip_export: bool,
}

/// A directly booted kernel (lago's `kernel`, `initrd` and `kernel-args` VM keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelBoot {
    /// `kernel`: the kernel image (absolute).
    pub kernel: PathBuf,
    /// `initrd`: its initramfs (absolute).
    pub initrd: Option<PathBuf>,
    /// `kernel-args`: its command line.
    pub args: Option<String>,
}

/// One entry of a VM's `nics`: the net it is on, and a static address if given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The network it is attached to.
    pub net: String,
    /// A static IPv4 address; `None` = allocated by the plan.
    pub ip: Option<Ipv4Addr>,
}

/// The bus a disk is attached to, decided by the `dev` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    /// `vdX`: virtio-blk.
    Virtio,
    /// `sdX`: virtio-scsi.
    Scsi,
    /// `hdX`: IDE.
    Ide,
}

/// Image format of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// qcow2: QEMU's copy-on-write format (a VM's memory snapshots need it).
    Qcow2,
    /// A raw image: the bytes of the disk, with no header.
    Raw,
    /// An ISO image, attached read-only as a CD-ROM.
    Iso,
}

impl DiskFormat {
    /// File extension and qemu-img format name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
            DiskFormat::Iso => "iso",
        }
    }
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Name, unique in the VM (`name`).
    pub name: String,
    /// Guest device name (`dev`), e.g. `vda`, `sda`, `hdc`.
    pub dev: String,
    /// Bus, from the `dev` prefix.
    pub bus: DiskBus,
    /// Image format (`format`).
    pub format: DiskFormat,
    /// Where the content comes from.
    pub source: DiskSource,
}

impl DiskSpec {
    /// Whether the disk is a CD-ROM (format `iso`).
    pub fn is_cdrom(&self) -> bool {
        self.format == DiskFormat::Iso
    }
}

/// Where a disk's content comes from (`type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DiskSource {
    /// `type: template`, `template_type: lago`: a template of the store, used through a qcow2 overlay.
    Template {
        /// `template_name`.
        name: String,
        /// `template_version`; `None` = the newest.
        version: Option<String>,
        /// `template_digest`: the sha256 (lowercase hex) the template's image
        /// must have, as published or stored; `None` = any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// `type: template`, `template_type: qcow2`: a qcow2 file used as the overlay's backing file.
    TemplateFile {
        /// `path` (absolute).
        path: PathBuf,
    },
    /// `type: empty`: a new blank image.
    Empty {
        /// `size` in bytes.
        size_bytes: u64,
    },
    /// `type: file`: an existing image.
    File {
        /// `path` (absolute).
        path: PathBuf,
        /// `make_a_copy`: copy into the workdir instead of using it in place.
        make_a_copy: bool,
    },
}

/// The kind of network (`type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NetKind {
    /// NAT to the host's uplink, with DHCP and DNS.
    Nat,
    /// Like NAT but with no forwarding: VMs reach each other and the host only.
    Isolated,
    /// An existing host bridge; lago manages no addresses on it.
    Bridge {
        /// The host bridge (`bridge`, default: the net's name).
        bridge: String,
    },
}

/// A DHCP range, as last octets of the net's /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpRange {
    /// First octet handed out.
    pub start: u8,
    /// Last octet handed out.
    pub end: u8,
}

/// One network (a `nets` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// Name (map key).
    pub name: String,
    /// Kind (`type`).
    pub kind: NetKind,
    /// DHCP range (`dhcp`); `None` on bridge nets.
    pub dhcp: Option<DhcpRange>,
    /// Whether this is a management network (`management`, or picked automatically).
    pub management: bool,
    /// DNS domain (`dns_domain_name`; `lago.local` on management nets).
    pub dns_domain: Option<String>,
    /// Gateway (`gw`); pins the net's /24.
    pub gw: Option<Ipv4Addr>,
    /// MTU in bytes (`mtu`, default 1500).
    pub mtu: u32,
    /// Only `ssh` VMs use it: lago creates nothing for it and leases no subnet.
    #[serde(default)]
    pub external: bool,
}

impl NetSpec {
    /// Whether lago manages addresses on this net (NAT and isolated nets,
    /// unless only `ssh` VMs use it).
    pub fn is_managed(&self) -> bool {
        !matches!(self.kind, NetKind::Bridge { .. }) && !self.external
    }

    /// The kind as written in the init file.
    pub fn kind_str(&self) -> &'static str {
        match self.kind {
            NetKind::Nat => "nat",
            NetKind::Isolated => "isolated",
            NetKind::Bridge { .. } => "bridge",
        }
    }
}
