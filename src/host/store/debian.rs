//! The built-in template `debian-12`: an ordinary Debian 12 (bookworm) cloud
//! image built from Debian's packages, booted by its own bootloader.
//!
//! `mmdebstrap` installs systemd, udev, OpenSSH, cloud-init (NoCloud,
//! rendering its network config for systemd-networkd), sudo, the cloud kernel
//! and GRUB's BIOS modules into a folder; a hook ([`CUSTOMIZE`]) configures
//! them. lago then assembles the disk without loop devices or mounts: an MBR
//! with one bootable partition at 1 MiB and GRUB's `boot.img`, GRUB's
//! `core.img` in the gap before the partition, and the ext4 filesystem made
//! from the folder by `mkfs.ext4 -d` at the partition's offset; then qcow2.
//!
//! Nothing in lago's boot path knows this template: it boots like any cloud
//! image (`Template::kernel` is `None`), which is what makes it the test that
//! vendor cloud images work. Its version is a digest of the recipe, so the
//! store keeps one build per recipe; building needs root and Debian's mirror.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{BUILD_PREFIX, StoreError, Template, TemplateStore, io, remove_stale_builds};
use crate::util::cmd::{find_program, run, run_streaming};
use crate::util::lock::running_as_root;

/// The template's name.
pub const NAME: &str = "debian-12";

/// Bumped whenever the build changes in a way the inputs below do not show.
const RECIPE: &str = "debian-12-1";

/// The Debian release the image is built from (Debian 12).
const SUITE: &str = "bookworm";

/// The hook run inside mmdebstrap once the packages are installed.
pub const CUSTOMIZE: &str = include_str!("debian/customize");

/// Packages on top of Debian's `minbase` variant.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "systemd-resolved",
    "openssh-server",
    "cloud-init",
    "cloud-guest-utils",
    "sudo",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "grub-pc-bin",
    "e2fsprogs",
    "netbase",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
    "ca-certificates",
];

/// Documentation, manual pages and translations are left out (copyright files stay).
const DPKG_OPTIONS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];

/// Size of the root filesystem (the disk is 1 MiB more); cloud-init grows it
/// to fill a larger disk.
const ROOT_SIZE_MIB: u64 = 4096;

const SECTOR: usize = 512;

/// The partition starts at 1 MiB; `core.img` lives in the sectors before it.
const PART_START: u64 = 2048;

/// Debian's archive, unless `LAGO_DEBIAN_MIRROR` names another.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Debian's security archive, unless `LAGO_DEBIAN_SECURITY_MIRROR` names another.
const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// How long a build may take (`LAGO_TEMPLATE_BUILD_TIMEOUT`, seconds).
const BUILD_LIMIT: Duration = Duration::from_secs(45 * 60);

/// The mirror the packages come from.
pub fn mirror() -> String {
    env_or("LAGO_DEBIAN_MIRROR", DEFAULT_MIRROR)
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The APT sources mmdebstrap is given.
fn sources() -> Vec<String> {
    sources_from(
        &mirror(),
        &env_or("LAGO_DEBIAN_SECURITY_MIRROR", DEFAULT_SECURITY_MIRROR),
    )
}

fn sources_from(main: &str, security: &str) -> Vec<String> {
    vec![
        format!("deb {main} {SUITE} main"),
        format!("deb {main} {SUITE}-updates main"),
        format!("deb {security} {SUITE}-security main"),
    ]
}

/// The version a build of the current recipe gets: a digest of everything
/// that shapes the image (not the mirror, which serves the same packages).
pub fn version() -> String {
    let mut h = Sha256::new();
    for part in [RECIPE, SUITE, CUSTOMIZE]
        .into_iter()
        .chain(PACKAGES.iter().copied())
        .chain(DPKG_OPTIONS.iter().copied())
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(ROOT_SIZE_MIB.to_le_bytes());
    h.update(PART_START.to_le_bytes());
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn build_limit() -> Duration {
    std::env::var("LAGO_TEMPLATE_BUILD_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(BUILD_LIMIT)
}

/// The template of the current recipe, built if needed (unless the store is
/// offline: then an older build is used, with a warning, or the error names
/// the command that builds it).
pub(crate) fn ensure(store: &TemplateStore) -> Result<Template, StoreError> {
    let version = version();
    let dir = store.root().join(NAME).join(&version);
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    if store.offline {
        return older_build(store, "the store is offline (LAGO_OFFLINE)");
    }
    if let Err(reason) = mirror_reachable(&mirror()) {
        return older_build(store, &reason);
    }
    build(store)
}

/// When the current recipe cannot be built: the newest older build, if any.
fn older_build(store: &TemplateStore, reason: &str) -> Result<Template, StoreError> {
    let mut older: Vec<Template> = store.list()?.into_iter().filter(|t| t.name == NAME).collect();
    older.sort_by_key(|t| fs::metadata(&t.disk).and_then(|m| m.modified()).ok());
    match older.pop() {
        Some(t) => {
            tracing::warn!(
                template = NAME,
                version = %t.version,
                wanted = %version(),
                reason,
                "using a build of an older recipe; `lago template build debian-12` updates it"
            );
            Ok(t)
        }
        None => Err(StoreError::NotBuilt {
            name: NAME.to_owned(),
            store: store.root().to_path_buf(),
            reason: reason.to_owned(),
            command: format!("lago template build {NAME}"),
        }),
    }
}

/// Whether the mirror's host answers on its port within a few seconds (a
/// network namespace without a route fails at once, not after apt's retries).
fn mirror_reachable(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        // file:, copy: and other local mirrors need no network.
        return Ok(());
    };
    let default_port = if url.starts_with("https") { 443 } else { 80 };
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h.trim_matches(['[', ']']).to_owned(), p),
            Err(_) => (authority.to_owned(), default_port),
        },
        _ => (authority.to_owned(), default_port),
    };
    let target = (host.clone(), port);
    // Name resolution has no timeout of its own: bound it with a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
    });
    let addrs = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(a)) if !a.is_empty() => a,
        Ok(Ok(_)) => return Err(format!("Debian's mirror {url}: `{host}` has no address")),
        Ok(Err(e)) => {
            return Err(format!(
                "Debian's mirror {url} is unreachable: cannot resolve `{host}`: {e}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "Debian's mirror {url} is unreachable: resolving `{host}` timed out"
            ));
        }
    };
    let mut last = String::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(format!("Debian's mirror {url} is unreachable ({last})"))
}

/// Builds the current recipe into the store (a no-op when it is there).
pub(crate) fn build(store: &TemplateStore) -> Result<Template, StoreError> {
    let version = version();
    let dir = store.root().join(NAME).join(&version);
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    let missing = |tool: &str, package: &str| StoreError::MissingInput {
        template: NAME.to_owned(),
        what: tool.to_owned(),
        hint: format!("install Debian's `{package}` (scripts/test does)"),
    };
    let mmdebstrap = find_program("mmdebstrap").ok_or_else(|| missing("mmdebstrap", "mmdebstrap"))?;
    find_program("mkfs.ext4").ok_or_else(|| missing("mkfs.ext4", "e2fsprogs"))?;
    find_program("qemu-img").ok_or_else(|| missing("qemu-img", "qemu-utils"))?;
    if !running_as_root() {
        return Err(StoreError::NeedsRoot {
            template: NAME.to_owned(),
        });
    }
    mirror_reachable(&mirror()).map_err(|reason| StoreError::Unreachable {
        template: NAME.to_owned(),
        reason,
    })?;
    // Another process may be building: wait as long as a build may take.
    let _lock = store.lock_for(NAME, build_limit() + Duration::from_secs(300))?;
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    let parent = store.root().join(NAME);
    fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    remove_stale_builds(&parent);
    let tmp = parent.join(format!("{BUILD_PREFIX}{version}-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    tracing::info!(%version, mirror = %mirror(), "building template debian-12");
    let start = Instant::now();
    let built = build_in(&mmdebstrap, &tmp, &dir, &version, store.progress, start);
    let t = super::finish_build(&tmp, &dir, built)?;
    tracing::info!(secs = t.build_secs, "template debian-12 built");
    Ok(t)
}

fn progress_bar(show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(4);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "building template debian-12 [{bar:20}] {pos}/{len} {wide_msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

fn build_in(
    mmdebstrap: &Path,
    tmp: &Path,
    final_dir: &Path,
    version: &str,
    show: bool,
    start: Instant,
) -> Result<Template, StoreError> {
    let pb = progress_bar(show);
    let build_err = |source| StoreError::Build {
        template: NAME.into(),
        source,
    };

    // 1. The packages, configured by the hook.
    pb.set_message("packages (mmdebstrap)");
    let hook = tmp.join("customize");
    fs::write(&hook, CUSTOMIZE).map_err(io("write", &hook))?;
    let root = tmp.join("root");
    let mut cmd = Command::new(mmdebstrap);
    cmd.args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", PACKAGES.join(",")));
    for o in DPKG_OPTIONS {
        cmd.arg(format!("--dpkgopt={o}"));
    }
    cmd.arg(format!(
        "--customize-hook=sh {} \"$1\"",
        shell_quote(&hook.to_string_lossy())
    ))
    .arg(SUITE)
    .arg(&root)
    .args(sources())
    // Messages in a fixed language (the host's proxy settings still apply, as for apt).
    .env("LC_ALL", "C.UTF-8");
    run_streaming(&mut cmd, build_limit(), |line| {
        if let Some(step) = line.strip_prefix("I: ") {
            tracing::info!(template = NAME, "{step}");
            pb.set_message(format!("packages: {step}"));
        } else {
            tracing::debug!(template = NAME, "{line}");
        }
    })
    .map_err(build_err)?;
    pb.inc(1);

    // 2. The filesystem, at the partition's offset in the raw disk.
    pb.set_message("ext4 filesystem");
    let grub_dir = root.join("boot/grub/i386-pc");
    let boot_img = fs::read(grub_dir.join("boot.img")).map_err(io("read", &grub_dir.join("boot.img")))?;
    let core_img = fs::read(grub_dir.join("core.img")).map_err(io("read", &grub_dir.join("core.img")))?;
    let raw = tmp.join("disk.raw");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "lago-root", "-E"])
        .arg(format!("offset={},root_owner=0:0", PART_START * SECTOR as u64))
        .arg("-d")
        .arg(&root)
        .arg(&raw)
        .arg(format!("{ROOT_SIZE_MIB}M")))
    .map_err(build_err)?;
    super::remove_build(&root);
    pb.inc(1);

    // 3. The boot sectors.
    pb.set_message("boot sectors");
    let part_sectors = ROOT_SIZE_MIB * (1 << 20) / SECTOR as u64;
    let disk_id = u32::from_str_radix(&version[..8.min(version.len())], 16).unwrap_or(0x1a60_0001);
    let mbr = boot_sector(&boot_img, disk_id, PART_START, part_sectors).map_err(|reason| StoreError::Assemble {
        template: NAME.into(),
        reason,
    })?;
    let core = core_sectors(&core_img, PART_START - 1).map_err(|reason| StoreError::Assemble {
        template: NAME.into(),
        reason,
    })?;
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(&raw)?;
        let len = f.metadata()?.len();
        if len != (PART_START + part_sectors) * SECTOR as u64 {
            return Err(std::io::Error::other(format!(
                "mkfs.ext4 left a disk of {len} bytes, not {}",
                (PART_START + part_sectors) * SECTOR as u64
            )));
        }
        f.write_all(&mbr)?;
        f.seek(SeekFrom::Start(SECTOR as u64))?;
        f.write_all(&core)?;
        f.sync_all()
    };
    write().map_err(io("write the boot sectors of", &raw))?;
    pb.inc(1);

    // 4. qcow2.
    pb.set_message("qcow2");
    let disk = tmp.join("root.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(&raw)
        .arg(&disk))
    .map_err(build_err)?;
    fs::remove_file(&raw).map_err(io("remove", &raw))?;
    fs::remove_file(&hook).map_err(io("remove", &hook))?;
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o444)).map_err(io("chmod", &disk))?;
    pb.inc(1);
    pb.finish_and_clear();
    Ok(Template {
        name: NAME.into(),
        version: version.into(),
        disk: final_dir.join("root.qcow2"),
        kernel: None,
        initrd: None,
        cmdline: None,
        build_secs: start.elapsed().as_secs_f64(),
        source: Some("built-in".into()),
        sha256: Some(super::sha256_file(&disk)?),
        timestamp: None,
        published_sha256: None,
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// GRUB's `boot.img` header fields (grub's include/grub/i386/pc/boot.h).
const BPB_START: usize = 0x3;
const BPB_END: usize = 0x5a;
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
/// Where the MBR's disk signature and partition table begin.
const MBR_CODE_END: usize = 440;
const PART_TABLE: usize = 446;

/// The disk's first sector: GRUB's boot code set up as `grub-install` does
/// for a hard disk (core.img at sector 1, the BIOS's boot drive, no floppy
/// check), a disk signature, and one bootable Linux partition.
pub(crate) fn boot_sector(boot_img: &[u8], disk_id: u32, start: u64, sectors: u64) -> Result<[u8; SECTOR], String> {
    if boot_img.len() != SECTOR || boot_img[510..] != [0x55, 0xaa] {
        return Err(format!(
            "GRUB's boot.img is {} bytes without the boot signature; expected 512 bytes ending 55 aa",
            boot_img.len()
        ));
    }
    let (Ok(start32), Ok(sectors32)) = (u32::try_from(start), u32::try_from(sectors)) else {
        return Err(format!(
            "a partition at sector {start} of {sectors} sectors does not fit an MBR"
        ));
    };
    let mut s = [0u8; SECTOR];
    s[..MBR_CODE_END].copy_from_slice(&boot_img[..MBR_CODE_END]);
    // No BIOS parameter block on a hard disk.
    s[BPB_START..BPB_END].fill(0);
    s[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&1u64.to_le_bytes());
    s[BOOT_DRIVE] = 0xff;
    // Some BIOSes pass a wrong drive number: the jump over the check becomes two NOPs.
    s[DRIVE_CHECK] = 0x90;
    s[DRIVE_CHECK + 1] = 0x90;
    s[MBR_CODE_END..MBR_CODE_END + 4].copy_from_slice(&disk_id.to_le_bytes());
    let e = &mut s[PART_TABLE..PART_TABLE + 16];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&chs(start));
    e[4] = 0x83;
    e[5..8].copy_from_slice(&chs(start + sectors - 1));
    e[8..12].copy_from_slice(&start32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors32.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    Ok(s)
}

/// An LBA as the MBR's CHS triple (255 heads, 63 sectors per track; beyond
/// cylinder 1023 the maximum, as partitioning tools write).
fn chs(lba: u64) -> [u8; 3] {
    let (heads, spt) = (255u64, 63u64);
    let c = lba / (heads * spt);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / spt) % heads;
    let sector = lba % spt + 1;
    [h as u8, (sector as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// `core.img` padded to whole sectors, its first block list pointing at the
/// sectors after its first one (where it is written: sector 1 on). Refused
/// when it does not fit the `gap` sectors before the partition or is not
/// the i386-pc image `grub-mkimage` writes.
pub(crate) fn core_sectors(core: &[u8], gap: u64) -> Result<Vec<u8>, String> {
    const LIST: usize = SECTOR - 12;
    let sectors = core.len().div_ceil(SECTOR);
    if sectors < 2 {
        return Err(format!("GRUB's core.img is {} bytes, too small to be one", core.len()));
    }
    if sectors as u64 > gap {
        return Err(format!(
            "GRUB's core.img needs {sectors} sectors but only {gap} are free before the partition"
        ));
    }
    let segment = u16::from_le_bytes([core[LIST + 10], core[LIST + 11]]);
    if segment != 0x820 {
        return Err(format!(
            "GRUB's core.img does not start with the i386-pc disk loader (block list segment {segment:#x}, expected 0x820)"
        ));
    }
    let len = u16::try_from(sectors - 1).map_err(|_| "GRUB's core.img is too large".to_owned())?;
    let mut out = core.to_vec();
    out.resize(sectors * SECTOR, 0);
    out[LIST..LIST + 8].copy_from_slice(&2u64.to_le_bytes());
    out[LIST + 8..LIST + 10].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_boot_img() -> Vec<u8> {
        let mut b = vec![0xeb; SECTOR];
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn the_boot_sector_points_grub_at_sector_one_and_has_one_bootable_partition() {
        let s = boot_sector(&fake_boot_img(), 0xdead_beef, 2048, 8_388_608).unwrap();
        assert_eq!(&s[..3], &[0xeb; 3], "boot code kept");
        assert!(s[BPB_START..BPB_END].iter().all(|b| *b == 0));
        assert_eq!(u64::from_le_bytes(s[0x5c..0x64].try_into().unwrap()), 1);
        assert_eq!(s[0x64], 0xff);
        assert_eq!(&s[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&s[440..444], &0xdead_beefu32.to_le_bytes());
        let e = &s[446..462];
        assert_eq!(e[0], 0x80, "bootable");
        assert_eq!(e[4], 0x83, "Linux");
        assert_eq!(&e[1..4], &[32, 33, 0], "CHS of sector 2048");
        assert_eq!(
            &e[5..8],
            &[75, 129, 10],
            "CHS of the last sector: cylinder 522, head 75, sector 1"
        );
        assert_eq!(u32::from_le_bytes(e[8..12].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(e[12..16].try_into().unwrap()), 8_388_608);
        assert!(s[462..510].iter().all(|b| *b == 0), "one partition only");
        assert_eq!(&s[510..], &[0x55, 0xaa]);
    }

    #[test]
    fn a_bad_boot_img_or_a_partition_past_2_tib_is_refused() {
        assert!(boot_sector(&[0; 100], 1, 2048, 10).unwrap_err().contains("512 bytes"));
        let mut no_sig = fake_boot_img();
        no_sig[511] = 0;
        assert!(boot_sector(&no_sig, 1, 2048, 10).is_err());
        assert!(
            boot_sector(&fake_boot_img(), 1, 2048, 1 << 33)
                .unwrap_err()
                .contains("MBR")
        );
    }

    fn fake_core(len: usize) -> Vec<u8> {
        let mut c = vec![0x11; len];
        // diskboot.img's default first block list: start 2, len 0, segment 0x820.
        c[500..508].copy_from_slice(&2u64.to_le_bytes());
        c[508..510].copy_from_slice(&0u16.to_le_bytes());
        c[510..512].copy_from_slice(&0x820u16.to_le_bytes());
        c
    }

    #[test]
    fn core_img_is_padded_and_its_block_list_covers_the_rest() {
        let out = core_sectors(&fake_core(27_030), 2047).unwrap();
        assert_eq!(out.len(), 53 * SECTOR);
        assert_eq!(u64::from_le_bytes(out[500..508].try_into().unwrap()), 2);
        assert_eq!(u16::from_le_bytes(out[508..510].try_into().unwrap()), 52);
        assert_eq!(u16::from_le_bytes(out[510..512].try_into().unwrap()), 0x820);
        assert!(out[27_030..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_core_img_too_big_for_the_gap_or_of_another_platform_is_refused() {
        assert!(
            core_sectors(&fake_core(2048 * SECTOR), 2047)
                .unwrap_err()
                .contains("free before")
        );
        let mut other = fake_core(4096);
        other[510] = 0;
        assert!(core_sectors(&other, 2047).unwrap_err().contains("0x820"));
        assert!(core_sectors(&[0; 100], 2047).is_err());
    }

    #[test]
    fn chs_matches_fdisk() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(63), [1, 1, 0]);
        assert_eq!(chs(16_065), [0, 1, 1]);
        assert_eq!(chs(1024 * 16_065), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn the_version_is_a_digest_and_the_hook_is_shell() {
        let v = version();
        assert_eq!(v.len(), 16);
        assert!(
            v.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{v}"
        );
        assert!(CUSTOMIZE.starts_with("#!/bin/sh\n"));
        assert!(CUSTOMIZE.contains("set -eu"));
    }

    #[test]
    fn sources_name_the_release_its_updates_and_security() {
        let s = sources_from("http://m.example/debian", "http://s.example/debian-security");
        assert_eq!(
            s,
            [
                "deb http://m.example/debian bookworm main",
                "deb http://m.example/debian bookworm-updates main",
                "deb http://s.example/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn a_local_mirror_needs_no_network_and_an_unresolvable_one_says_so() {
        assert!(mirror_reachable("file:///srv/mirror").is_ok());
        let err = mirror_reachable("http://lago-mirror.invalid/debian").unwrap_err();
        assert!(err.contains("lago-mirror.invalid"), "{err}");
        // A closed port on loopback: refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let err = mirror_reachable(&format!("http://127.0.0.1:{port}/debian")).unwrap_err();
        assert!(err.contains("unreachable"), "{err}");
    }

    #[test]
    fn hook_paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
