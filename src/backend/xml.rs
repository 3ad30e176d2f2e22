//! libvirt XML for networks and domains: pure functions of the plan.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{DiskBus, DiskFormat, VmSpec};
use crate::plan::{NetPlan, VmPlan};

/// XML namespace of lago's domain `<metadata>`.
pub const METADATA_NS: &str = "https://github.com/lago-project/lago-rs";

/// The accelerator a domain runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization (`<domain type='kvm'>`).
    Kvm,
    /// Software emulation (`<domain type='qemu'>`).
    Tcg,
}

/// How a domain boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Direct kernel boot.
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Initial ramdisk.
        initrd: Option<PathBuf>,
        /// Command line.
        cmdline: String,
    },
    /// The root disk's own bootloader.
    Disk,
}

/// Everything a domain definition needs besides the spec and the plan.
#[derive(Debug, Clone)]
pub struct DomainParams<'a> {
    /// The VM's spec.
    pub spec: &'a VmSpec,
    /// The VM's plan.
    pub plan: &'a VmPlan,
    /// Env id (metadata).
    pub env_id: &'a str,
    /// Workdir (metadata).
    pub workdir: &'a Path,
    /// Accelerator.
    pub accel: Accel,
    /// Boot method.
    pub boot: Boot,
    /// The seed disk's target device (`vdX`), when there is a seed.
    pub seed_dev: Option<String>,
    /// uid:gid the QEMU process runs as (so it can open the workdir).
    pub run_as: (u32, u32),
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn p(path: &Path) -> String {
    esc(&path.to_string_lossy())
}

/// The first `vdX` name not used by the VM's disks (for the seed).
pub fn free_virtio_dev(plan: &VmPlan) -> String {
    let used: Vec<&str> = plan.disks.iter().map(|d| d.dev.as_str()).collect();
    for c in b'a'..=b'z' {
        let dev = format!("vd{}", c as char);
        if !used.contains(&dev.as_str()) {
            return dev;
        }
    }
    "vdzz".into()
}

/// A network's XML.
pub fn network_xml(net: &NetPlan) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<network>");
    let _ = writeln!(x, "  <name>{}</name>", esc(&net.libvirt_name));
    match (net.subnet, net.gateway) {
        (Some(_), Some(gw)) => {
            let _ = writeln!(x, "  <bridge name='{}' stp='off' delay='0'/>", esc(&net.bridge));
            if net.kind == "nat" {
                let _ = writeln!(x, "  <forward mode='nat'/>");
            }
            let _ = writeln!(x, "  <mtu size='{}'/>", net.mtu);
            if let Some(d) = &net.dns_domain {
                let _ = writeln!(x, "  <domain name='{}' localOnly='yes'/>", esc(d));
            }
            let _ = writeln!(x, "  <dns>");
            let mut ips: Vec<std::net::Ipv4Addr> = Vec::new();
            for r in &net.dns_records {
                if !ips.contains(&r.ip) {
                    ips.push(r.ip);
                }
            }
            for ip in ips {
                let _ = writeln!(x, "    <host ip='{ip}'>");
                for r in net.dns_records.iter().filter(|r| r.ip == ip) {
                    let _ = writeln!(x, "      <hostname>{}</hostname>", esc(&r.name));
                }
                let _ = writeln!(x, "    </host>");
            }
            let _ = writeln!(x, "  </dns>");
            let _ = writeln!(x, "  <ip address='{gw}' netmask='255.255.255.0'>");
            if let Some(d) = &net.dhcp {
                let _ = writeln!(x, "    <dhcp>");
                let _ = writeln!(x, "      <range start='{}' end='{}'/>", d.start, d.end);
                for r in &net.reservations {
                    let _ = writeln!(x, "      <host mac='{}' ip='{}' name='{}'/>", r.mac, r.ip, esc(&r.name));
                }
                let _ = writeln!(x, "    </dhcp>");
            }
            let _ = writeln!(x, "  </ip>");
        }
        _ => {
            let _ = writeln!(x, "  <forward mode='bridge'/>");
            let _ = writeln!(x, "  <bridge name='{}'/>", esc(&net.bridge));
        }
    }
    let _ = writeln!(x, "</network>");
    x
}

/// A domain's XML.
pub fn domain_xml(d: &DomainParams<'_>) -> String {
    let (spec, plan) = (d.spec, d.plan);
    let mut x = String::new();
    let kind = match d.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let _ = writeln!(x, "<domain type='{kind}'>");
    let _ = writeln!(x, "  <name>{}</name>", esc(&plan.libvirt_name));
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <lago:env xmlns:lago='{METADATA_NS}'><lago:id>{}</lago:id><lago:workdir>{}</lago:workdir><lago:vm>{}</lago:vm></lago:env>",
        esc(d.env_id),
        p(d.workdir),
        esc(&plan.name)
    );
    let _ = writeln!(x, "  </metadata>");
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", spec.vcpu);
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
    match &d.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            let _ = writeln!(x, "    <kernel>{}</kernel>", p(kernel));
            if let Some(i) = initrd {
                let _ = writeln!(x, "    <initrd>{}</initrd>", p(i));
            }
            let _ = writeln!(x, "    <cmdline>{}</cmdline>", esc(cmdline));
        }
        Boot::Disk => {
            let _ = writeln!(x, "    <boot dev='hd'/>");
            let _ = writeln!(x, "    <boot dev='cdrom'/>");
        }
    }
    let _ = writeln!(x, "    <bootmenu enable='no'/>");
    // Firmware messages ("No bootable device") go to the serial console too.
    let _ = writeln!(x, "    <bios useserial='yes'/>");
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    match (&spec.cpu_model, d.accel) {
        (Some(m), _) => {
            let _ = writeln!(
                x,
                "  <cpu mode='custom' match='exact'><model fallback='forbid'>{}</model></cpu>",
                esc(m)
            );
        }
        (None, Accel::Kvm) => {
            let _ = writeln!(x, "  <cpu mode='host-passthrough'/>");
        }
        (None, Accel::Tcg) => {}
    }
    let _ = writeln!(x, "  <clock offset='utc'/>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(
        x,
        "  <seclabel type='static' model='dac' relabel='no'><label>+{}:+{}</label></seclabel>",
        d.run_as.0, d.run_as.1
    );
    let _ = writeln!(x, "  <devices>");
    if plan.disks.iter().any(|disk| disk.bus == DiskBus::Scsi) {
        let _ = writeln!(x, "    <controller type='scsi' index='0' model='virtio-scsi'/>");
    }
    let _ = writeln!(x, "    <controller type='usb' model='none'/>");
    for disk in &plan.disks {
        let bus = match disk.bus {
            DiskBus::Virtio => "virtio",
            DiskBus::Scsi => "scsi",
            DiskBus::Ide => "ide",
        };
        let cdrom = disk.format == DiskFormat::Iso;
        let fmt = if cdrom { "raw" } else { disk.format.as_str() };
        let _ = writeln!(
            x,
            "    <disk type='file' device='{}'>",
            if cdrom { "cdrom" } else { "disk" }
        );
        let _ = writeln!(
            x,
            "      <driver name='qemu' type='{fmt}' cache='unsafe'{}/>",
            if cdrom { "" } else { " discard='unmap'" }
        );
        let _ = writeln!(x, "      <source file='{}'/>", p(&disk.path));
        let _ = writeln!(x, "      <target dev='{}' bus='{bus}'/>", esc(&disk.dev));
        if cdrom {
            let _ = writeln!(x, "      <readonly/>");
        }
        let _ = writeln!(x, "    </disk>");
    }
    if let (Some(seed), Some(dev)) = (&plan.seed, &d.seed_dev) {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
        let _ = writeln!(x, "      <source file='{}'/>", p(seed));
        let _ = writeln!(x, "      <target dev='{}' bus='virtio'/>", esc(dev));
        let _ = writeln!(x, "      <readonly/>");
        let _ = writeln!(x, "    </disk>");
    }
    for nic in &plan.nics {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <source network='{}'/>", esc(&nic.libvirt_net));
        let _ = writeln!(x, "      <mac address='{}'/>", nic.mac);
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "      <rom bar='off'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(x, "    <serial type='pty'>");
    let _ = writeln!(x, "      <log file='{}' append='on'/>", p(&plan.console_log));
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    let _ = writeln!(x, "    <console type='pty'><target type='serial' port='0'/></console>");
    let _ = writeln!(
        x,
        "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
    );
    let _ = writeln!(x, "    <memballoon model='none'/>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}
