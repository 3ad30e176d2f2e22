//! libvirt XML for networks and domains: pure functions of the plan.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plan::{NetPlan, VmPlan};
use lago_config::{DiskBus, DiskFormat, VmSpec};

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
        /// The kernel image's path on the hypervisor (the init file's or the template's).
        kernel: PathBuf,
        /// The initial ramdisk's path on the hypervisor, if the kernel comes with one.
        initrd: Option<PathBuf>,
        /// The whole kernel command line, lago's `lago.*` arguments included.
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
    /// The accelerator, already chosen (the domain's `type`).
    pub accel: Accel,
    /// Direct kernel boot or the root disk's bootloader.
    pub boot: Boot,
    /// The seed disk's target device (`vdX`), when there is a seed.
    pub seed_dev: Option<String>,
    /// uid:gid the QEMU process runs as (so it can open the workdir).
    pub run_as: Option<(u32, u32)>,
    /// The process that owns the environment's lifetime, if any (metadata, for `lago gc`).
    pub owner: Option<&'a crate::host::owner::Owner>,
    /// Session mode (`qemu:///session`, no root): the NICs are QEMU's own
    /// sockets instead of libvirt networks, plus a user-mode NIC for SSH.
    pub session: Option<SessionNics>,
    /// The environment's nets, in init-file order (session mode numbers
    /// their multicast groups by it).
    pub nets: Vec<String>,
}

/// How a VM of an environment in session mode reaches its nets and is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionNics {
    /// The environment's multicast groups are `239.<g0>.<g1>.<net index + 1>`
    /// on port `port`, on 127.0.0.1 only (a private L2 per net).
    pub group: [u8; 2],
    /// The UDP port of the groups.
    pub port: u16,
    /// The port on 127.0.0.1 forwarded to the guest's SSH port.
    pub ssh_port: u16,
    /// The user-mode NIC reaches out (the init file has a `nat` net); else
    /// it carries SSH only.
    pub egress: bool,
    /// The user-mode NIC's MAC.
    pub user_mac: crate::plan::Mac,
}

/// The PCI slot of the first NIC lago adds in session mode (libvirt's own
/// devices take the slots below).
const SESSION_SLOT: usize = 0x10;

/// The QEMU id of the NIC with MAC `mac` in session mode (`set_link` takes it).
pub fn session_nic_id(mac: &str) -> String {
    format!("nic{}", mac.replace(':', ""))
}

/// The multicast group and UDP port of net number `index` (init-file order,
/// from 0) of an environment in session mode: `239.<g0>.<g1>.<index + 1>:<port>`.
pub fn session_group(group: [u8; 2], port: u16, index: usize) -> String {
    let [g0, g1] = group;
    format!("239.{g0}.{g1}.{}:{port}", index + 1)
}

/// `<qemu:commandline>` for the NICs of a VM in session mode: one socket
/// netdev per NIC on its net's multicast group (bound to 127.0.0.1), then
/// the user-mode NIC with the SSH port forward.
fn session_nics(x: &mut String, plan: &VmPlan, nets: &[String], s: &SessionNics) {
    let arg = |x: &mut String, v: &str| {
        let _ = writeln!(x, "    <qemu:arg value='{}'/>", esc(v));
    };
    let _ = writeln!(x, "  <qemu:commandline>");
    for (i, nic) in plan.nics.iter().enumerate() {
        let n = nets.iter().position(|n| *n == nic.net).unwrap_or(0);
        let group = session_group(s.group, s.port, n);
        arg(x, "-netdev");
        arg(x, &format!("socket,id=net{i},mcast={group},localaddr=127.0.0.1"));
        arg(x, "-device");
        let id = session_nic_id(&nic.mac.to_string());
        arg(
            x,
            &format!(
                "virtio-net-pci,netdev=net{i},id={id},mac={},bus=pci.0,addr={:#x},romfile=",
                nic.mac,
                SESSION_SLOT + i
            ),
        );
    }
    let restrict = if s.egress { "off" } else { "on" };
    arg(x, "-netdev");
    arg(
        x,
        &format!(
            "user,id=user,restrict={restrict},hostfwd=tcp:127.0.0.1:{}-:22",
            s.ssh_port
        ),
    );
    arg(x, "-device");
    arg(
        x,
        &format!(
            "virtio-net-pci,netdev=user,id=nicuser,mac={},bus=pci.0,addr={:#x},romfile=",
            s.user_mac,
            SESSION_SLOT + plan.nics.len()
        ),
    );
    let _ = writeln!(x, "  </qemu:commandline>");
}

pub(crate) use crate::util::text::xml_escape as esc;

fn p(path: &Path) -> String {
    esc(&path.to_string_lossy())
}

/// The seed disk's serial number: `tiny` finds its seed by it in sysfs
/// (`/sys/block/vdX/serial`) without scanning every disk for the `CIDATA` label.
pub const SEED_SERIAL: &str = "lago-seed";

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
            // The bridge's MAC follows from its address, as the guests' do:
            // a guest restored from a boot image still has it in its ARP cache.
            let [_, b, c, d] = gw.octets();
            let _ = writeln!(x, "  <mac address='52:54:00:{b:02x}:{c:02x}:{d:02x}'/>");
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
    let kind = match d.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let mut x = String::new();
    match d.session {
        Some(_) => {
            let _ = writeln!(x, "<domain type='{kind}' xmlns:qemu='{QEMU_NS}'>");
        }
        None => {
            let _ = writeln!(x, "<domain type='{kind}'>");
        }
    }
    let _ = writeln!(x, "  <name>{}</name>", esc(&d.plan.libvirt_name));
    // A VM generation id (a new one on every restore): the guest kernel
    // reseeds its RNG when it changes.
    let _ = writeln!(x, "  <genid/>");
    metadata(&mut x, d);
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", d.spec.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", d.spec.vcpu);
    os(&mut x, &d.boot);
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    cpu(&mut x, d.spec.cpu_model.as_deref(), d.accel);
    let _ = writeln!(x, "  <clock offset='utc'/>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    // Locally QEMU runs as the user who made the files; on a remote
    // hypervisor its daemon's own user and labelling apply.
    if let Some((uid, gid)) = d.run_as {
        let _ = writeln!(
            x,
            "  <seclabel type='static' model='dac' relabel='no'><label>+{uid}:+{gid}</label></seclabel>"
        );
    }
    let _ = writeln!(x, "  <devices>");
    disks(&mut x, d.plan, d.seed_dev.as_deref());
    for nic in d.plan.nics.iter().filter(|_| d.session.is_none()) {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <source network='{}'/>", esc(&nic.libvirt_net));
        let _ = writeln!(x, "      <mac address='{}'/>", nic.mac);
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "      <rom enabled='no'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(x, "    <serial type='pty'>");
    let _ = writeln!(x, "      <log file='{}' append='on'/>", p(&d.plan.console_log));
    let _ = writeln!(x, "      <target port='0'/>");
    let _ = writeln!(x, "    </serial>");
    let _ = writeln!(x, "    <console type='pty'><target type='serial' port='0'/></console>");
    let _ = writeln!(
        x,
        "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
    );
    let _ = writeln!(x, "    <memballoon model='none'/>");
    let _ = writeln!(x, "  </devices>");
    if let Some(s) = &d.session {
        session_nics(&mut x, d.plan, &d.nets, s);
    }
    let _ = writeln!(x, "</domain>");
    x
}

/// The namespace of libvirt's `<qemu:commandline>`.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// lago's `<metadata>`: the env id, workdir, VM name and owner (what `lago gc` reads).
fn metadata(x: &mut String, d: &DomainParams<'_>) {
    let owner = d
        .owner
        .map(|o| {
            format!(
                "<lago:owner pid='{}' start='{}' boot='{}' host='{}' machine='{}'/>",
                o.pid,
                o.start_ticks,
                esc(&o.boot_id),
                esc(&o.host_id),
                esc(&o.machine_id)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(x, "  <metadata>");
    let _ = writeln!(
        x,
        "    <lago:env xmlns:lago='{METADATA_NS}'><lago:id>{}</lago:id><lago:workdir>{}</lago:workdir><lago:vm>{}</lago:vm>{owner}</lago:env>",
        esc(d.env_id),
        p(d.workdir),
        esc(&d.plan.name),
    );
    let _ = writeln!(x, "  </metadata>");
}

/// `<os>`: a kernel booted directly, or the disk (then a CD-ROM).
fn os(x: &mut String, boot: &Boot) {
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='pc'>hvm</type>");
    match boot {
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
}

/// `<cpu>`: the init file's model, else the host's under KVM (TCG's default otherwise).
fn cpu(x: &mut String, model: Option<&str>, accel: Accel) {
    match (model, accel) {
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
}

/// The controllers and every disk, then the seed (read-only, with its serial).
fn disks(x: &mut String, plan: &VmPlan, seed_dev: Option<&str>) {
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
    if let (Some(seed), Some(dev)) = (&plan.seed, seed_dev) {
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='raw'/>");
        let _ = writeln!(x, "      <source file='{}'/>", p(seed));
        let _ = writeln!(x, "      <target dev='{}' bus='virtio'/>", esc(dev));
        let _ = writeln!(x, "      <serial>{SEED_SERIAL}</serial>");
        let _ = writeln!(x, "      <readonly/>");
        let _ = writeln!(x, "    </disk>");
    }
}

/// `domain_xml` (a live domain's description) with the link of the
/// interface whose MAC is `mac` set up or down: the interface's own XML,
/// for libvirt's device update (which matches it by MAC and refuses any other
/// change). `None` when no interface has that MAC.
pub fn interface_with_link(domain_xml: &str, mac: &str, up: bool) -> Option<String> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let iface = doc.descendants().find(|n| {
        n.has_tag_name("interface")
            && n.parent().is_some_and(|p| p.has_tag_name("devices"))
            && n.children()
                .any(|c| c.has_tag_name("mac") && c.attribute("address").is_some_and(|a| a.eq_ignore_ascii_case(mac)))
    })?;
    let text = &domain_xml[iface.range()];
    // Without the old <link/>, then with the new one before the end tag.
    let mut out = match iface.children().find(|c| c.has_tag_name("link")) {
        Some(link) => {
            let r = link.range();
            let (s, e) = (r.start - iface.range().start, r.end - iface.range().start);
            format!("{}{}", &text[..s], &text[e..])
        }
        None => text.to_owned(),
    };
    let end = out.rfind("</interface>")?;
    out.insert_str(end, &format!("<link state='{}'/>", if up { "up" } else { "down" }));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, EnvId, Subnet};
    use lago_config as config;
    use std::collections::BTreeMap;

    const ENV: &str = "
domains:
  vm01:
    memory: 300
    vcpu: 2
    nics: [{net: lago}, {net: lab}]
    disks:
      - {type: template, template_name: tiny, name: root, dev: sda}
      - {type: empty, name: data, dev: vdb, size: 1G, format: raw}
      - {type: file, name: cd, dev: hdc, format: iso, path: /isos/tools.iso}
  vm02:
    cpu_model: Skylake-Client
    nics: [{net: lago}]
    disks: [{type: template, template_name: tiny, name: root, dev: vda}]
nets:
  lago: {mtu: 1400}
  lab: {type: bridge, bridge: br0}
";

    fn fixture() -> (config::EnvSpec, plan::EnvPlan) {
        let spec = config::from_str(ENV, "/e/init.yaml").unwrap();
        let subnets: BTreeMap<_, _> = [("lago".to_string(), Subnet::new(210).unwrap())].into();
        let p = plan::plan(&spec, &EnvId::new("abcd1234").unwrap(), &subnets, Path::new("/w")).unwrap();
        (spec, p)
    }

    fn params<'a>(
        spec: &'a config::EnvSpec,
        p: &'a plan::EnvPlan,
        i: usize,
        accel: Accel,
        boot: Boot,
    ) -> DomainParams<'a> {
        DomainParams {
            spec: &spec.vms[i],
            plan: &p.vms[i],
            env_id: "abcd1234",
            workdir: Path::new("/w"),
            accel,
            boot,
            seed_dev: Some(free_virtio_dev(&p.vms[i])),
            run_as: Some((1000, 1000)),
            owner: None,
            session: None,
            nets: spec.nets.iter().map(|n| n.name.clone()).collect(),
        }
    }

    #[test]
    fn a_session_domain_has_socket_nics_and_a_user_nic_for_ssh() {
        let (spec, p) = fixture();
        let mut d = params(&spec, &p, 0, Accel::Tcg, Boot::Disk);
        d.run_as = None;
        d.session = Some(SessionNics {
            group: [0xab, 0xcd],
            port: 41234,
            ssh_port: 22022,
            egress: false,
            user_mac: plan::Mac([0x52, 0x54, 0, 1, 2, 3]),
        });
        let x = domain_xml(&d);
        assert!(
            x.starts_with(&format!("<domain type='qemu' xmlns:qemu='{QEMU_NS}'>")),
            "{x}"
        );
        assert!(!x.contains("<interface"), "no libvirt network: {x}");
        assert!(!x.contains("<seclabel"), "{x}");
        assert!(
            x.contains("socket,id=net0,mcast=239.171.205.1:41234,localaddr=127.0.0.1"),
            "{x}"
        );
        let mac = p.vms[0].nics[0].mac.to_string();
        assert!(
            x.contains(&format!("id={},mac={mac},bus=pci.0,addr=0x10", session_nic_id(&mac))),
            "{x}"
        );
        assert!(
            x.contains("user,id=user,restrict=on,hostfwd=tcp:127.0.0.1:22022-:22"),
            "{x}"
        );
        assert!(x.contains("mac=52:54:00:01:02:03,bus=pci.0,addr="), "{x}");
        assert!(x.trim_end().ends_with("</qemu:commandline>\n</domain>"), "{x}");
    }

    #[test]
    fn nat_network_has_dhcp_reservations_dns_and_mtu() {
        let (_, p) = fixture();
        let x = network_xml(&p.nets[0]);
        assert!(x.contains("<name>lago-abcd1234-lago</name>"), "{x}");
        assert!(x.contains("<bridge name='lg-abcd1234-0' stp='off' delay='0'/>"), "{x}");
        assert!(x.contains("<forward mode='nat'/>"), "{x}");
        assert!(x.contains("<mtu size='1400'/>"), "{x}");
        assert!(x.contains("<domain name='lago.local' localOnly='yes'/>"), "{x}");
        assert!(
            x.contains("<ip address='192.168.210.1' netmask='255.255.255.0'>"),
            "{x}"
        );
        assert!(
            x.contains("<range start='192.168.210.100' end='192.168.210.254'/>"),
            "{x}"
        );
        assert!(
            x.contains("<host mac='54:52:c0:a8:d2:02' ip='192.168.210.2' name='vm01'/>"),
            "{x}"
        );
        assert!(
            x.contains("<host ip='192.168.210.3'>\n      <hostname>vm02</hostname>"),
            "{x}"
        );
    }

    #[test]
    fn isolated_networks_do_not_forward_and_bridges_attach_to_the_host_bridge() {
        let spec = config::from_str(
            "domains: {}\nnets:\n  a: {type: isolated}\n  b: {type: bridge, bridge: br9}\n",
            "/x.yaml",
        )
        .unwrap();
        let subnets: BTreeMap<_, _> = [("a".to_string(), Subnet::new(220).unwrap())].into();
        let p = plan::plan(&spec, &EnvId::new("e1").unwrap(), &subnets, Path::new("/w")).unwrap();
        let iso = network_xml(&p.nets[0]);
        assert!(!iso.contains("<forward"), "{iso}");
        assert!(iso.contains("<ip address='192.168.220.1'"), "{iso}");
        let br = network_xml(&p.nets[1]);
        assert!(
            br.contains("<forward mode='bridge'/>") && br.contains("<bridge name='br9'/>"),
            "{br}"
        );
        assert!(!br.contains("<ip"), "{br}");
    }

    #[test]
    fn the_owner_is_recorded_in_the_metadata() {
        let (spec, p) = fixture();
        assert!(!domain_xml(&params(&spec, &p, 1, Accel::Tcg, Boot::Disk)).contains("lago:owner"));
        let owner = crate::host::owner::Owner {
            pid: 4242,
            start_ticks: 99,
            boot_id: "b-1".into(),
            host_id: "h-1".into(),
            machine_id: "m<1>".into(),
        };
        let mut d = params(&spec, &p, 1, Accel::Tcg, Boot::Disk);
        d.owner = Some(&owner);
        let x = domain_xml(&d);
        assert!(
            x.contains("<lago:owner pid='4242' start='99' boot='b-1' host='h-1' machine='m&lt;1&gt;'/></lago:env>"),
            "{x}"
        );
    }

    #[test]
    fn every_nic_turns_its_option_rom_off_without_a_rom_bar_clash() {
        // `<rom bar='off'/>` on two virtio NICs made QEMU refuse to start
        // (duplicate fw_cfg file genroms/efi-virtio.rom).
        let (spec, p) = fixture();
        let x = domain_xml(&params(&spec, &p, 0, Accel::Tcg, Boot::Disk));
        assert_eq!(x.matches("<interface type='network'>").count(), 2, "{x}");
        assert_eq!(x.matches("<rom enabled='no'/>").count(), 2, "{x}");
        assert!(!x.contains("bar="), "{x}");
    }

    #[test]
    fn domain_has_disks_by_dev_seed_nics_console_and_metadata() {
        let (spec, p) = fixture();
        let boot = Boot::Kernel {
            kernel: "/s/vmlinuz".into(),
            initrd: Some("/s/initrd.img".into()),
            cmdline: "console=ttyS0 lago.root=/dev/sda".into(),
        };
        let x = domain_xml(&params(&spec, &p, 0, Accel::Tcg, boot));
        assert!(x.starts_with("<domain type='qemu'>"), "{x}");
        assert!(x.contains("<name>lago-abcd1234-vm01</name>"));
        assert!(x.contains("<lago:id>abcd1234</lago:id><lago:workdir>/w</lago:workdir><lago:vm>vm01</lago:vm>"));
        assert!(x.contains("<memory unit='MiB'>300</memory>") && x.contains("<vcpu>2</vcpu>"));
        assert!(x.contains("<kernel>/s/vmlinuz</kernel>") && x.contains("<initrd>/s/initrd.img</initrd>"));
        assert!(x.contains("<cmdline>console=ttyS0 lago.root=/dev/sda</cmdline>"));
        assert!(x.contains("<controller type='scsi' index='0' model='virtio-scsi'/>"));
        assert!(
            x.contains("<source file='/w/images/vm01_root.qcow2'/>\n      <target dev='sda' bus='scsi'/>"),
            "{x}"
        );
        assert!(x.contains("<driver name='qemu' type='raw' cache='unsafe' discard='unmap'/>\n      <source file='/w/images/vm01_data.raw'/>\n      <target dev='vdb' bus='virtio'/>"), "{x}");
        assert!(x.contains("<disk type='file' device='cdrom'>"), "{x}");
        assert!(x.contains("<target dev='hdc' bus='ide'/>\n      <readonly/>"), "{x}");
        // The seed takes the first free virtio name.
        assert!(
            x.contains(
                "<source file='/w/seeds/vm01-cidata.img'/>\n      <target dev='vda' bus='virtio'/>\n      <serial>lago-seed</serial>\n      <readonly/>"
            ),
            "{x}"
        );
        assert!(
            x.contains("<source network='lago-abcd1234-lago'/>\n      <mac address='54:52:c0:a8:d2:02'/>"),
            "{x}"
        );
        assert!(x.contains("<source network='lago-abcd1234-lab'/>"), "{x}");
        assert!(x.contains("<log file='/w/logs/vm01.console.log' append='on'/>"), "{x}");
        assert!(x.contains("<rng model='virtio'>"));
        assert!(x.contains("<label>+1000:+1000</label>"));
        assert!(!x.contains("<cpu"), "TCG without cpu_model leaves the CPU to QEMU: {x}");
    }

    #[test]
    fn accelerator_and_cpu_model_and_disk_boot() {
        let (spec, p) = fixture();
        let kvm = domain_xml(&params(&spec, &p, 0, Accel::Kvm, Boot::Disk));
        assert!(kvm.starts_with("<domain type='kvm'>"));
        assert!(kvm.contains("<cpu mode='host-passthrough'/>"));
        assert!(kvm.contains("<boot dev='hd'/>") && !kvm.contains("<kernel>"));
        assert!(kvm.contains("<bios useserial='yes'/>"));
        let model = domain_xml(&params(&spec, &p, 1, Accel::Tcg, Boot::Disk));
        assert!(
            model.contains("<model fallback='forbid'>Skylake-Client</model>"),
            "{model}"
        );
        assert!(!model.contains("virtio-scsi"), "no SCSI controller without sd disks");
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(esc("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }

    #[test]
    fn a_link_is_set_on_the_interface_with_that_mac_only() {
        let live = "<domain type='qemu'><devices>\
            <interface type='network'><mac address='54:52:c0:a8:c8:02'/><source network='a'/><model type='virtio'/><alias name='net0'/></interface>\
            <interface type='network'><mac address='54:52:c0:a8:c9:02'/><source network='b'/><link state='up'/><model type='virtio'/></interface>\
            </devices></domain>";
        let down = interface_with_link(live, "54:52:C0:A8:C8:02", false).unwrap();
        assert_eq!(
            down,
            "<interface type='network'><mac address='54:52:c0:a8:c8:02'/><source network='a'/><model type='virtio'/><alias name='net0'/><link state='down'/></interface>"
        );
        // An existing <link/> is replaced, not doubled.
        let second = interface_with_link(live, "54:52:c0:a8:c9:02", false).unwrap();
        assert_eq!(second.matches("<link ").count(), 1, "{second}");
        assert!(
            second.contains("<link state='down'/>") && second.contains("network='b'"),
            "{second}"
        );
        assert!(
            interface_with_link(live, "54:52:c0:a8:c9:02", true)
                .unwrap()
                .contains("<link state='up'/>")
        );
        assert_eq!(interface_with_link(live, "54:52:00:00:00:00", true), None);
        assert_eq!(interface_with_link("not xml", "54:52:c0:a8:c8:02", true), None);
    }
}
