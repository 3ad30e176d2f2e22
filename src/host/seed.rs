//! The cloud-init NoCloud seed of a VM: `meta-data`, `user-data`
//! (`#cloud-config`) and `network-config` (version 2, NICs matched by MAC) on
//! a small FAT12 disk labelled `CIDATA`, written here without any tool.
//!
//! Any cloud-init image (Debian, Ubuntu, Fedora cloud images) reads it; the
//! built-in `tiny` template reads the same files.

use std::fmt::Write as _;

use crate::plan::VmPlan;
use lago_config::VmSpec;

/// SSH material handed to the guest.
#[derive(Debug, Clone)]
pub struct SeedKeys {
    /// Public keys allowed to log in as the SSH user (OpenSSH format).
    pub authorized: Vec<String>,
    /// The guest's ed25519 host key, private (OpenSSH PEM).
    pub host_private: String,
    /// The guest's ed25519 host key, public (OpenSSH format).
    pub host_public: String,
    /// The same private key in dropbear's format, for the `tiny` guest
    /// (an extra file on the seed; cloud-init ignores it).
    pub host_private_dropbear: Option<Vec<u8>>,
    /// `root-password`, hashed (SHA-512 crypt): set for console logins;
    /// SSH stays key-only.
    pub root_password_hash: Option<String>,
}

/// The files of a VM's cloud-init NoCloud seed, and the extras lago's `tiny` guest reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// `meta-data`: the instance id and local hostname.
    pub meta_data: String,
    /// `user-data`: the `#cloud-config` with users, SSH keys and the pinned host key.
    pub user_data: String,
    /// `network-config` (v2): each NIC matched by MAC, named `ethN`, on DHCP.
    pub network_config: String,
    /// `lago-dropbear-host-key`, when given.
    pub dropbear_host_key: Option<Vec<u8>>,
    /// The root password's hash, as a file for the `tiny` guest too.
    pub root_password_hash: Option<String>,
    /// Lines for the guest's `/etc/hosts` (session mode, where no DNS
    /// server knows the other VMs): `lago-hosts`.
    pub hosts: Option<String>,
}

fn yaml_str(s: &str) -> String {
    format!("{s:?}")
}

/// The seed files for one VM, its SSH keys and password hash taken from `keys`.
pub fn seed_files(spec: &VmSpec, plan: &VmPlan, instance_id: &str, keys: &SeedKeys) -> SeedFiles {
    let meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        yaml_str(instance_id),
        plan.hostname
    );
    let mut u = String::from("#cloud-config\n");
    let _ = writeln!(u, "hostname: {}", plan.hostname);
    let _ = writeln!(u, "fqdn: {}", plan.fqdn);
    u.push_str("prefer_fqdn_over_hostname: false\nmanage_etc_hosts: true\nssh_pwauth: false\n");
    if spec.ssh_user == "root" {
        u.push_str("disable_root: false\n");
    } else {
        u.push_str("users:\n");
        let _ = writeln!(u, "  - name: {}", spec.ssh_user);
        u.push_str("    lock_passwd: true\n    shell: /bin/sh\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
        u.push_str("    ssh_authorized_keys:\n");
        for k in &keys.authorized {
            let _ = writeln!(u, "      - {k}");
        }
    }
    u.push_str("ssh_authorized_keys:\n");
    for k in &keys.authorized {
        let _ = writeln!(u, "  - {k}");
    }
    u.push_str("ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n");
    for line in keys.host_private.lines() {
        let _ = writeln!(u, "    {line}");
    }
    let _ = writeln!(u, "  ed25519_public: {}", keys.host_public.trim());
    if let Some(hash) = &keys.root_password_hash {
        // A hash (cloud-init sees the `$6$`); `list` is read by old and new cloud-init.
        let _ = writeln!(u, "chpasswd:\n  expire: false\n  list: |\n    root:{hash}");
    }

    let mut n = String::from("version: 2\nethernets:\n");
    for nic in &plan.nics {
        let _ = writeln!(n, "  {}:", nic.name);
        let _ = writeln!(n, "    match:\n      macaddress: \"{}\"", nic.mac);
        let _ = writeln!(n, "    set-name: {}", nic.name);
        n.push_str("    dhcp4: true\n");
        if nic.net == plan.mgmt_net {
            // The lab's domain is searched (systemd-networkd ignores it by default).
            n.push_str("    dhcp4-overrides:\n      use-domains: true\n");
        } else {
            n.push_str("    dhcp4-overrides:\n      use-routes: false\n      use-dns: false\n");
        }
    }
    SeedFiles {
        meta_data,
        user_data: u,
        network_config: n,
        dropbear_host_key: keys.host_private_dropbear.clone(),
        root_password_hash: keys.root_password_hash.clone(),
        hosts: None,
    }
}

impl SeedFiles {
    /// The seed of a VM in session mode, where the nets have no DHCP or
    /// DNS server: each NIC of the plan gets its address statically, the
    /// user-mode NIC (MAC `user_mac`, the last, named after the others) is
    /// the one on DHCP (QEMU's own: the default route and resolver), and
    /// `hosts` (every VM's names) is appended to `/etc/hosts`, which
    /// cloud-init then leaves alone; `tiny` reads `hosts` from `lago-hosts`.
    pub fn for_session(mut self, plan: &VmPlan, user_mac: &str, hosts: String) -> Self {
        let mut n = String::from("version: 2\nethernets:\n");
        for nic in &plan.nics {
            let _ = writeln!(n, "  {}:", nic.name);
            let _ = writeln!(n, "    match:\n      macaddress: \"{}\"", nic.mac);
            let _ = writeln!(n, "    set-name: {}", nic.name);
            match nic.ip {
                Some(ip) => {
                    let _ = writeln!(n, "    dhcp4: false\n    addresses: [\"{ip}/24\"]");
                }
                None => n.push_str("    dhcp4: false\n"),
            }
        }
        let user = format!("eth{}", plan.nics.len());
        let _ = writeln!(n, "  {user}:\n    match:\n      macaddress: \"{user_mac}\"");
        let _ = writeln!(n, "    set-name: {user}\n    dhcp4: true");
        self.network_config = n;
        self.user_data = self
            .user_data
            .replace("manage_etc_hosts: true\n", "manage_etc_hosts: false\n");
        self.user_data
            .push_str("write_files:\n  - path: /etc/hosts\n    append: true\n    content: |\n");
        for line in hosts.lines() {
            let _ = writeln!(self.user_data, "      {line}");
        }
        self.hosts = Some(hosts);
        self
    }

    /// The seed disk image (FAT12, label `CIDATA`).
    pub fn image(&self) -> Vec<u8> {
        let mut files: Vec<(&str, &[u8])> = vec![
            ("meta-data", self.meta_data.as_bytes()),
            ("user-data", self.user_data.as_bytes()),
            ("network-config", self.network_config.as_bytes()),
        ];
        if let Some(k) = &self.dropbear_host_key {
            files.push(("lago-dropbear-host-key", k));
        }
        if let Some(h) = &self.root_password_hash {
            files.push(("lago-root-password-hash", h.as_bytes()));
        }
        if let Some(h) = &self.hosts {
            files.push(("lago-hosts", h.as_bytes()));
        }
        fat12_image("CIDATA", &files)
    }
}

/// `/etc/hosts` lines naming every VM of `plan` as its nets' DNS would:
/// `<ip> <fqdn> <vm>` for each management address, `<ip> <name>` for the
/// names of each NIC (`<vm>-eth1`, `<vm>-<net>`).
pub fn hosts_lines(plan: &crate::plan::EnvPlan) -> String {
    let mut out = String::new();
    for vm in plan.vms.iter().filter(|v| v.ip != std::net::Ipv4Addr::UNSPECIFIED) {
        let _ = writeln!(out, "{} {} {}", vm.ip, vm.fqdn, vm.hostname);
    }
    let records = plan.nets.iter().map(|n| &n.dns_records).max_by_key(|r| r.len());
    for r in records.into_iter().flatten() {
        if !plan.vms.iter().any(|v| v.hostname == r.name) {
            let _ = writeln!(out, "{} {}", r.ip, r.name);
        }
    }
    out
}

const SECTOR: usize = 512;
const TOTAL_SECTORS: usize = 2048; // 1 MiB
const ROOT_ENTRIES: usize = 64;
const RESERVED: usize = 1;
const FATS: usize = 2;

fn short_name(i: usize, long: &str) -> [u8; 11] {
    let mut base: Vec<u8> = long
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(|b| b.to_ascii_uppercase())
        .take(6)
        .collect();
    base.extend(format!("~{}", i + 1).bytes());
    let mut name = [b' '; 11];
    name[..base.len().min(8)].copy_from_slice(&base[..base.len().min(8)]);
    name
}

fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| (sum >> 1).wrapping_add((sum & 1) << 7).wrapping_add(b))
}

/// A FAT12 image of 1 MiB holding `files` in its root directory, with long
/// file names (VFAT). Files must fit (the seed is a few KiB).
pub fn fat12_image(label: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let clusters_guess = TOTAL_SECTORS;
    let fat_sectors = (clusters_guess * 3 / 2).div_ceil(SECTOR);
    let root_sectors = ROOT_ENTRIES * 32 / SECTOR;
    let data_start = RESERVED + FATS * fat_sectors + root_sectors;
    let mut img = vec![0u8; TOTAL_SECTORS * SECTOR];

    // Boot sector / BPB.
    let b = &mut img[..SECTOR];
    b[..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    b[3..11].copy_from_slice(b"LAGO    ");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = 1; // sectors per cluster
    b[14..16].copy_from_slice(&(RESERVED as u16).to_le_bytes());
    b[16] = FATS as u8;
    b[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
    b[19..21].copy_from_slice(&(TOTAL_SECTORS as u16).to_le_bytes());
    b[21] = 0xF8;
    b[22..24].copy_from_slice(&(fat_sectors as u16).to_le_bytes());
    b[24..26].copy_from_slice(&32u16.to_le_bytes());
    b[26..28].copy_from_slice(&64u16.to_le_bytes());
    b[36] = 0x80;
    b[38] = 0x29;
    b[39..43].copy_from_slice(&0x1a90_5eedu32.to_le_bytes());
    let mut lab = [b' '; 11];
    for (d, s) in lab.iter_mut().zip(label.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    b[43..54].copy_from_slice(&lab);
    b[54..62].copy_from_slice(b"FAT12   ");
    b[510] = 0x55;
    b[511] = 0xAA;

    // Files: contiguous clusters from 2.
    let mut fat: Vec<u16> = vec![0xFF8, 0xFFF];
    let mut dir: Vec<[u8; 32]> = Vec::new();
    let mut label_entry = [0u8; 32];
    label_entry[..11].copy_from_slice(&lab);
    label_entry[11] = 0x08;
    dir.push(label_entry);
    for (i, (name, data)) in files.iter().enumerate() {
        let first = fat.len() as u16;
        let n = data.len().div_ceil(SECTOR).max(1);
        for c in 0..n {
            fat.push(if c + 1 == n { 0xFFF } else { first + c as u16 + 1 });
        }
        let off = (data_start + (first as usize - 2)) * SECTOR;
        img[off..off + data.len()].copy_from_slice(data);

        let short = short_name(i, name);
        let sum = lfn_checksum(&short);
        let mut units: Vec<u16> = name.encode_utf16().collect();
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
        let parts: Vec<&[u16]> = units.chunks(13).collect();
        for (k, chunk) in parts.iter().enumerate().rev() {
            let mut e = [0u8; 32];
            e[0] = (k as u8 + 1) | if k + 1 == parts.len() { 0x40 } else { 0 };
            let put = |e: &mut [u8; 32], at: usize, cs: &[u16]| {
                for (j, c) in cs.iter().enumerate() {
                    e[at + 2 * j..at + 2 * j + 2].copy_from_slice(&c.to_le_bytes());
                }
            };
            put(&mut e, 1, &chunk[..5]);
            e[11] = 0x0F;
            e[13] = sum;
            put(&mut e, 14, &chunk[5..11]);
            put(&mut e, 28, &chunk[11..13]);
            dir.push(e);
        }
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(&short);
        e[11] = 0x20;
        e[16..18].copy_from_slice(&0x5b21u16.to_le_bytes()); // 2025-09-01
        e[24..26].copy_from_slice(&0x5b21u16.to_le_bytes());
        e[26..28].copy_from_slice(&first.to_le_bytes());
        e[28..32].copy_from_slice(&(data.len() as u32).to_le_bytes());
        dir.push(e);
    }
    // FAT12 packing, both copies.
    let mut packed = vec![0u8; fat_sectors * SECTOR];
    for (i, &v) in fat.iter().enumerate() {
        let at = i * 3 / 2;
        if i % 2 == 0 {
            packed[at] = (v & 0xFF) as u8;
            packed[at + 1] = (packed[at + 1] & 0xF0) | ((v >> 8) & 0x0F) as u8;
        } else {
            packed[at] = (packed[at] & 0x0F) | ((v & 0x0F) << 4) as u8;
            packed[at + 1] = (v >> 4) as u8;
        }
    }
    for f in 0..FATS {
        let off = (RESERVED + f * fat_sectors) * SECTOR;
        img[off..off + packed.len()].copy_from_slice(&packed);
    }
    let root_off = (RESERVED + FATS * fat_sectors) * SECTOR;
    for (i, e) in dir.iter().enumerate() {
        img[root_off + i * 32..root_off + i * 32 + 32].copy_from_slice(e);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a file back by long name, following the FAT12 chain: a self-check of the layout.
    fn read_back(img: &[u8], want: &str) -> Option<Vec<u8>> {
        let bps = u16::from_le_bytes([img[11], img[12]]) as usize;
        let reserved = u16::from_le_bytes([img[14], img[15]]) as usize;
        let fats = img[16] as usize;
        let roots = u16::from_le_bytes([img[17], img[18]]) as usize;
        let fat_sectors = u16::from_le_bytes([img[22], img[23]]) as usize;
        let root_off = (reserved + fats * fat_sectors) * bps;
        let data_start = root_off + roots * 32;
        let fat = &img[reserved * bps..];
        let mut long = Vec::<u16>::new();
        for i in 0..roots {
            let e = &img[root_off + i * 32..root_off + i * 32 + 32];
            if e[0] == 0 {
                break;
            }
            if e[11] == 0x0F {
                let mut part = Vec::new();
                for r in [1..11, 14..26, 28..32] {
                    part.extend(e[r].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
                }
                if e[0] & 0x40 != 0 {
                    long.clear();
                }
                let mut merged = part;
                merged.extend(&long);
                long = merged;
                continue;
            }
            if e[11] & 0x08 != 0 {
                continue;
            }
            let name: String =
                String::from_utf16_lossy(&long.iter().copied().take_while(|&c| c != 0).collect::<Vec<_>>());
            long.clear();
            if name != want {
                continue;
            }
            let mut cluster = u16::from_le_bytes([e[26], e[27]]) as usize;
            let size = u32::from_le_bytes([e[28], e[29], e[30], e[31]]) as usize;
            let mut out = Vec::new();
            while cluster < 0xFF8 {
                let off = data_start + (cluster - 2) * bps;
                out.extend_from_slice(&img[off..off + bps]);
                let at = cluster * 3 / 2;
                let raw = u16::from_le_bytes([fat[at], fat[at + 1]]);
                cluster = if cluster.is_multiple_of(2) {
                    (raw & 0x0FFF) as usize
                } else {
                    (raw >> 4) as usize
                };
            }
            out.truncate(size);
            return Some(out);
        }
        None
    }

    #[test]
    fn fat_image_round_trips_long_names_and_multi_cluster_files() {
        let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let img = fat12_image(
            "cidata",
            &[
                ("meta-data", b"instance-id: x\n"),
                ("network-config", &big),
                ("user-data", b""),
            ],
        );
        assert_eq!(img.len(), 1 << 20);
        assert_eq!(&img[510..512], &[0x55, 0xAA]);
        assert_eq!(&img[43..54], b"CIDATA     ");
        assert_eq!(read_back(&img, "meta-data").as_deref(), Some(&b"instance-id: x\n"[..]));
        assert_eq!(read_back(&img, "network-config"), Some(big));
        assert_eq!(read_back(&img, "user-data"), Some(Vec::new()));
        assert_eq!(read_back(&img, "vendor-data"), None);
    }

    #[test]
    fn short_names_are_numbered_and_padded() {
        assert_eq!(short_name(0, "meta-data"), *b"METADA~1   ");
        assert_eq!(short_name(2, "network-config"), *b"NETWOR~3   ");
        // The checksum is the rotate-right-and-add of the 11 bytes.
        assert_eq!(lfn_checksum(b"           "), 0xf7);
    }
}

#[cfg(test)]
mod content_tests {
    use super::*;
    use crate::plan::{self, EnvId, Subnet};
    use lago_config as config;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn fixture(text: &str) -> (config::EnvSpec, plan::EnvPlan) {
        let spec = config::from_str(text, "/e/init.yaml").unwrap();
        let subnets: BTreeMap<_, _> = plan::subnet_requests(&spec)
            .into_iter()
            .zip(Subnet::pool())
            .map(|(r, s)| (r.net, s))
            .collect();
        let p = plan::plan(&spec, &EnvId::new("e1").unwrap(), &subnets, Path::new("/w")).unwrap();
        (spec, p)
    }

    fn keys() -> SeedKeys {
        SeedKeys {
            authorized: vec!["ssh-ed25519 AAAAclient lago-e1".into()],
            host_private: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            host_public: "ssh-ed25519 AAAAhost vm01@lago-e1".into(),
            host_private_dropbear: Some(vec![1, 2, 3]),
            root_password_hash: None,
        }
    }

    #[test]
    fn a_root_password_is_set_as_a_hash_and_ssh_stays_key_only() {
        let (spec, p) = fixture(
            "domains:\n  vm_01:\n    root-password: 123456\n    nics: [{net: a}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  a: {}\n",
        );
        let mut k = keys();
        k.root_password_hash = Some("$6$salt$hash".into());
        let f = seed_files(&spec.vms[0], &p.vms[0], "lago-e1-vm_01", &k);
        assert!(
            f.user_data
                .contains("chpasswd:\n  expire: false\n  list: |\n    root:$6$salt$hash\n"),
            "{}",
            f.user_data
        );
        assert!(f.user_data.contains("ssh_pwauth: false"));
        assert!(!f.user_data.contains("123456"), "never the plain password");
        // The hostname takes `-` for `_`.
        assert!(f.meta_data.contains("local-hostname: vm-01\n"), "{}", f.meta_data);
        assert!(
            f.user_data.contains("hostname: vm-01\nfqdn: vm-01.lago.local\n"),
            "{}",
            f.user_data
        );
        let img = f.image();
        assert!(
            img.windows(12).any(|w| w == b"$6$salt$hash"),
            "the file tiny reads is on the seed"
        );
    }

    #[test]
    fn root_user_seed_has_names_keys_and_nics_by_mac() {
        let (spec, p) = fixture(
            "domains:\n  vm01:\n    nics: [{net: a}, {net: b}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  a: {}\n  b: {type: isolated}\n",
        );
        let f = seed_files(&spec.vms[0], &p.vms[0], "lago-e1-vm01", &keys());
        assert_eq!(f.meta_data, "instance-id: \"lago-e1-vm01\"\nlocal-hostname: vm01\n");
        assert!(f.user_data.starts_with("#cloud-config\n"));
        assert!(f.user_data.contains("\nhostname: vm01\nfqdn: vm01.lago.local\n"));
        assert!(f.user_data.contains("disable_root: false\n"));
        assert!(
            f.user_data
                .contains("ssh_authorized_keys:\n  - ssh-ed25519 AAAAclient lago-e1\n")
        );
        assert!(
            f.user_data
                .contains("ssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    abc\n")
        );
        assert!(
            f.user_data
                .contains("  ed25519_public: ssh-ed25519 AAAAhost vm01@lago-e1\n")
        );
        assert!(!f.user_data.contains("password"), "no password is ever set");
        assert!(
            f.network_config.contains(
                "  eth0:\n    match:\n      macaddress: \"54:52:c0:a8:c8:02\"\n    set-name: eth0\n    dhcp4: true\n"
            ),
            "{}",
            f.network_config
        );
        assert!(
            f.network_config
                .contains("  eth1:\n    match:\n      macaddress: \"54:52:c0:a8:c9:02\""),
            "{}",
            f.network_config
        );
        // Only the management NIC provides routes and DNS.
        assert!(
            f.network_config
                .contains("    dhcp4-overrides:\n      use-routes: false\n      use-dns: false\n")
        );
        assert_eq!(f.network_config.matches("use-routes: false").count(), 1);
        // ... and its lab domain is searched.
        assert!(
            f.network_config
                .contains("    set-name: eth0\n    dhcp4: true\n    dhcp4-overrides:\n      use-domains: true\n")
        );
        assert_eq!(f.network_config.matches("use-domains").count(), 1);
    }

    #[test]
    fn a_session_seed_has_static_addresses_dhcp_on_the_user_nic_and_every_name() {
        let (spec, p) = fixture(
            "domains:\n  vm01:\n    nics: [{net: a}, {net: b}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\n  vm02:\n    nics: [{net: a}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  a: {}\n  b: {type: isolated}\n",
        );
        let hosts = hosts_lines(&p);
        assert!(hosts.contains("192.168.200.3 vm02.lago.local vm02\n"), "{hosts}");
        let f = seed_files(&spec.vms[0], &p.vms[0], "i", &keys()).for_session(
            &p.vms[0],
            "52:54:00:01:02:03",
            hosts.clone(),
        );
        let n = &f.network_config;
        assert!(
            n.contains("  eth0:\n    match:\n      macaddress: \"54:52:c0:a8:c8:02\"\n    set-name: eth0\n    dhcp4: false\n    addresses: [\"192.168.200.2/24\"]\n"),
            "{n}"
        );
        assert!(
            n.contains("    set-name: eth1\n    dhcp4: false\n    addresses: [\"192.168.201.2/24\"]\n"),
            "{n}"
        );
        assert!(
            n.ends_with(
                "  eth2:\n    match:\n      macaddress: \"52:54:00:01:02:03\"\n    set-name: eth2\n    dhcp4: true\n"
            ),
            "only the user-mode NIC is on DHCP: {n}"
        );
        assert_eq!(n.matches("dhcp4: true").count(), 1);
        assert!(!n.contains("overrides"), "{n}");
        let u = &f.user_data;
        assert!(
            u.contains("manage_etc_hosts: false\n") && !u.contains("manage_etc_hosts: true"),
            "{u}"
        );
        assert!(
            u.ends_with(
                "write_files:\n  - path: /etc/hosts\n    append: true\n    content: |\n      192.168.200.2 vm01.lago.local vm01\n      192.168.200.3 vm02.lago.local vm02\n      192.168.200.2 vm01-eth0\n      192.168.200.2 vm01-a\n      192.168.201.2 vm01-eth1\n      192.168.201.2 vm01-b\n      192.168.200.3 vm02-eth0\n      192.168.200.3 vm02-a\n"
            ),
            "{u}"
        );
        assert_eq!(f.hosts.as_deref(), Some(hosts.as_str()));
        // Still a cloud-config cloud-init reads: its keys unchanged.
        assert!(u.starts_with("#cloud-config\n") && u.contains("ssh_authorized_keys:\n"));
    }

    #[test]
    fn other_users_get_a_users_entry_with_the_keys() {
        let (spec, p) = fixture(
            "domains:\n  vm01:\n    ssh-user: tester\n    nics: [{net: a}]\n    disks: [{type: empty, name: r, dev: vda, size: 1G}]\nnets:\n  a: {}\n",
        );
        let f = seed_files(&spec.vms[0], &p.vms[0], "i", &keys());
        assert!(
            f.user_data
                .contains("users:\n  - name: tester\n    lock_passwd: true\n")
        );
        assert!(
            f.user_data
                .contains("    ssh_authorized_keys:\n      - ssh-ed25519 AAAAclient lago-e1\n")
        );
        assert!(!f.user_data.contains("disable_root"));
        let img = f.image();
        assert_eq!(img.len(), 1 << 20);
        assert!(img.windows(f.user_data.len()).any(|w| w == f.user_data.as_bytes()));
    }
}
