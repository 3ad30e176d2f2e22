//! The built-in template `tiny`: Debian's cloud kernel, a busybox initramfs
//! that loads the drivers it needs, and an ext4 root disk with busybox and
//! dropbear that applies the cloud-init NoCloud seed, configures every NIC
//! with DHCP, starts SSH, logs to the serial console and powers off on the
//! ACPI power button.
//!
//! Built from the host's files (installed by `scripts/setup-host`:
//! `linux-image-cloud-amd64`, `busybox-static`, `dropbear-bin`) without
//! mounting anything: the initramfs is a cpio archive written here, the root
//! disk is made by `mkfs.ext4 -d`. The version is a digest of every input, so
//! a rebuild happens only when one changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{BUILD_PREFIX, StoreError, Template, TemplateStore, io, remove_stale_builds};
use crate::util::cmd::run;

/// How long `make vmlinux` may run.
const KERNEL_BUILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// The template's name.
pub const NAME: &str = "tiny";

/// Bumped whenever the build recipe changes.
const RECIPE: &str = "tiny-2";

const INIT: &str = include_str!("tiny/init");
const RCS: &str = include_str!("tiny/rcS");
const SEED: &str = include_str!("tiny/seed");
const DHCP: &str = include_str!("tiny/dhcp");
const INITTAB: &str = include_str!("tiny/inittab");
const CONSOLE: &str = include_str!("tiny/console");
const SHUTDOWN: &str = include_str!("tiny/shutdown");
const FSTAB: &str = include_str!("tiny/fstab");
/// The configuration of the kernel built for `tiny` (on top of `make tinyconfig`).
const KERNEL_CONFIG: &str = include_str!("tiny/kernel.config");
/// Bumped whenever the kernel's build recipe changes.
const KERNEL_RECIPE: &str = "tiny-kernel-4";
/// Edits to the kernel source before the build: (file, text, replacement).
///
/// x86 poisons the kernel's init memory (0xcc) when it frees it after boot.
/// Under TCG every store into a page that still holds translated code takes
/// QEMU's slow path until the page's last translation block is invalidated,
/// so poisoning the ~780 KiB of init code, all of it run once, took 0.2 s of
/// a 0.8 s boot. Unpoisoned, the pages are freed all the same (the poison only
/// helps catch a use after free of init code while debugging the kernel).
const KERNEL_PATCHES: &[(&str, &str, &str)] = &[(
    "arch/x86/mm/init.c",
    "free_reserved_area((void *)begin, (void *)end,\n\t\t\t\t   POISON_FREE_INITMEM, what);",
    "free_reserved_area((void *)begin, (void *)end,\n\t\t\t\t   -1, what);",
)];
/// Where built kernels live in the store.
const KERNEL_DIR: &str = "tiny-kernel";

/// Kernel command line of the template (lago appends `lago.root=` and `lago.seed=`).
///
/// Besides the console and quiet logging, it skips work that costs time
/// under TCG and that these guests do not need: ACPI PCI interrupt routing
/// (`pci=noacpi`, ~0.5 s: each link device runs AML), the PS/2 controller
/// probe, timer and TSC checks, crypto self-tests, the watchdog.
pub const CMDLINE: &str = "console=ttyS0,115200 quiet loglevel=3 panic=-1 rdinit=/init pci=noacpi \
                           i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable no_timer_check cryptomgr.notests nowatchdog";

/// Kernel command line of the template when it boots the kernel built for
/// it: no initramfs (every driver is built in), the kernel mounts the root
/// disk itself (lago appends `root=/dev/<root dev>` to a kernel booted
/// without an initrd) and starts busybox init. Two more skip what costs
/// time under TCG: `noapictimer` (no 0.1 s LAPIC timer calibration; the HPET
/// drives the tick) and `noreplace-smp` (a one-vCPU guest keeps its `lock`
/// prefixes instead of rewriting every one in the kernel's text: rewriting
/// code is slow under TCG). No `rootwait`: the kernel waits for the disks'
/// probes before it mounts the root, and a root device that is not there is
/// a panic on the console (which lago's boot error shows), not a silent wait.
pub const CMDLINE_OWN_KERNEL: &str = "console=ttyS0,115200 quiet loglevel=3 panic=-1 rootfstype=ext4 rw \
                                      init=/sbin/init noapictimer noreplace-smp pci=noacpi i8042.noaux i8042.nokbd i8042.nopnp tsc=reliable \
                                      no_timer_check cryptomgr.notests nowatchdog";

/// Drivers loaded by the initramfs, in order (their dependencies are added first).
const EARLY_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "virtio_net",
    "virtio-rng",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

/// Drivers loaded after SSH is up: CD-ROMs, the power button.
const LATE_MODULES: &[&str] = &["ata_piix", "sr_mod", "isofs", "button", "evdev"];

const ROOT_SIZE: &str = "256M";

struct Inputs {
    kernel: PathBuf,
    /// `kernel` is the one built for tiny: no initramfs.
    own_kernel: bool,
    early: Vec<PathBuf>,
    late: Vec<PathBuf>,
    busybox: PathBuf,
    dropbear: PathBuf,
    dropbearconvert: PathBuf,
    libs: Vec<PathBuf>,
}

fn missing(what: &str, package: &str) -> StoreError {
    StoreError::MissingInput {
        template: NAME.to_owned(),
        what: what.to_owned(),
        hint: format!("install Debian's `{package}`, e.g. with scripts/setup-host"),
    }
}

/// The newest installed Debian cloud kernel: (vmlinuz, /lib/modules/<version>).
fn find_kernel() -> Result<(PathBuf, PathBuf), StoreError> {
    let mut versions: Vec<String> = fs::read_dir("/boot")
        .map_err(|_| missing("/boot", "linux-image-cloud-amd64"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_owned))
        .filter(|v| v.ends_with("-cloud-amd64") && Path::new("/lib/modules").join(v).is_dir())
        .collect();
    versions.sort_by_key(|a| version_key(a));
    let v = versions.pop().ok_or_else(|| {
        missing(
            "a Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64)",
            "linux-image-cloud-amd64",
        )
    })?;
    Ok((
        Path::new("/boot").join(format!("vmlinuz-{v}")),
        Path::new("/lib/modules").join(v),
    ))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Modules named in `wanted` plus their dependencies, dependencies first,
/// as paths; modules already in `skip` are left out.
fn module_order(modules_dir: &Path, wanted: &[&str], skip: &BTreeSet<PathBuf>) -> Result<Vec<PathBuf>, StoreError> {
    let dep_file = modules_dir.join("modules.dep");
    let text = fs::read_to_string(&dep_file).map_err(io("read", &dep_file))?;
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let name = Path::new(module)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
            .unwrap_or(module)
            .to_owned();
        by_name.insert(name, module.to_owned());
        deps.insert(module.to_owned(), rest.split_whitespace().map(str::to_owned).collect());
    }
    fn visit(m: &str, deps: &BTreeMap<String, Vec<String>>, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(m.to_owned()) {
            return;
        }
        for d in deps.get(m).into_iter().flatten().rev() {
            visit(d, deps, seen, out);
        }
        out.push(m.to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for w in wanted {
        let m = by_name.get(*w).ok_or_else(|| {
            missing(
                &format!("kernel module `{w}` in {}", modules_dir.display()),
                "linux-image-cloud-amd64",
            )
        })?;
        visit(m, &deps, &mut seen, &mut order);
    }
    Ok(order
        .into_iter()
        .map(|m| modules_dir.join(m))
        .filter(|p| !skip.contains(p))
        .collect())
}

/// Shared libraries `bin` needs (from `ldd`), the dynamic loader included.
fn libs_of(bin: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let out = run(Command::new("ldd").arg(bin)).map_err(|source| StoreError::Build {
        template: NAME.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// The newest Debian kernel source tarball (`linux-source-*`).
fn kernel_source() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir("/usr/src")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    found.sort_by_key(|p| version_key(&p.to_string_lossy()));
    found.pop()
}

/// Where the kernel built from `source` with this recipe is (or would be).
fn kernel_dir(store: &TemplateStore, source: &Path) -> Result<PathBuf, StoreError> {
    let meta = fs::metadata(source).map_err(io("read", source))?;
    let mut h = Sha256::new();
    h.update(KERNEL_RECIPE);
    h.update(KERNEL_CONFIG);
    for (file, from, to) in KERNEL_PATCHES {
        for s in [file, from, to] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s);
        }
    }
    // The tarball by name, size and time: hashing 140 MB on every check would cost a second.
    h.update(source.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    h.update(mtime.to_le_bytes());
    let d: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(store.root().join(KERNEL_DIR).join(d))
}

/// The kernel built for `tiny`, when it has been built from the installed source.
fn built_kernel(store: &TemplateStore) -> Option<PathBuf> {
    let source = kernel_source()?;
    let k = kernel_dir(store, &source).ok()?.join("vmlinux");
    k.is_file().then_some(k)
}

/// Builds the kernel for `tiny` from Debian's `linux-source` (minutes; once
/// per source and recipe) and returns its path. `tiny` boots it from then
/// on (its version changes with it); until it exists, the distribution's.
pub(crate) fn build_kernel(store: &TemplateStore) -> Result<PathBuf, StoreError> {
    let source = kernel_source()
        .ok_or_else(|| missing("the kernel source (/usr/src/linux-source-*.tar.xz)", "linux-source-6.1"))?;
    let dir = kernel_dir(store, &source)?;
    let kernel = dir.join("vmlinux");
    if kernel.is_file() {
        return Ok(kernel);
    }
    let _lock = store.lock(KERNEL_DIR)?;
    if kernel.is_file() {
        return Ok(kernel);
    }
    let parent = store.root().join(KERNEL_DIR);
    fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    remove_stale_builds(&parent);
    let tmp = parent.join(format!("{BUILD_PREFIX}{}", std::process::id()));
    let start = Instant::now();
    tracing::info!(source = %source.display(), "building the kernel for tiny");
    let result = (|| -> Result<(), StoreError> {
        let build_err = |source| StoreError::Build {
            template: "tiny (kernel)".into(),
            source,
        };
        // A step that ran but whose result lago refuses.
        let refused = |command: String, why: String| {
            build_err(crate::util::cmd::CommandError {
                command,
                failure: crate::util::cmd::CommandFailure::Exit {
                    code: None,
                    stderr: why,
                },
            })
        };
        fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(&source)
            .arg("-C")
            .arg(&tmp)
            .arg("--strip-components=1"))
        .map_err(build_err)?;
        for (file, from, to) in KERNEL_PATCHES {
            let path = tmp.join(file);
            let text = fs::read_to_string(&path).map_err(io("read", &path))?;
            if text.matches(from).count() != 1 {
                return Err(refused(
                    format!("patch {file}"),
                    format!("the kernel source does not have this exactly once: {from:?}"),
                ));
            }
            fs::write(&path, text.replacen(from, to, 1)).map_err(io("write", &path))?;
        }
        let frag = tmp.join("lago-tiny.config");
        fs::write(&frag, KERNEL_CONFIG).map_err(io("write", &frag))?;
        run(Command::new("make").current_dir(&tmp).args(["-s", "tinyconfig"])).map_err(build_err)?;
        run(Command::new("./scripts/kconfig/merge_config.sh")
            .current_dir(&tmp)
            .args(["-m", ".config", "lago-tiny.config"]))
        .map_err(build_err)?;
        run(Command::new("make").current_dir(&tmp).args(["-s", "olddefconfig"])).map_err(build_err)?;
        // Every option asked for must be in the result (a dependency Kconfig dropped is an error, not a surprise at boot).
        let config = fs::read_to_string(tmp.join(".config")).map_err(io("read", &tmp.join(".config")))?;
        let dropped: Vec<String> = unkept_options(KERNEL_CONFIG, &config);
        if !dropped.is_empty() {
            return Err(refused(
                "make olddefconfig".into(),
                format!("options the configuration did not keep: {}", dropped.join(" ")),
            ));
        }
        let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        // The uncompressed ELF, not bzImage: QEMU starts it at its PVH entry
        // (CONFIG_PVH), with no real-mode setup and no decompression (~60 ms under TCG).
        // The one long tool: a kernel build takes minutes, on a slow machine an hour.
        crate::util::cmd::run_within(
            Command::new("make")
                .current_dir(&tmp)
                .args(["-s", &format!("-j{jobs}"), "vmlinux"]),
            KERNEL_BUILD_LIMIT,
        )
        .map_err(build_err)?;
        let out = dir.with_extension("new");
        fs::create_dir_all(&out).map_err(io("create", &out))?;
        run(Command::new("objcopy")
            .arg("--strip-all")
            .arg(tmp.join("vmlinux"))
            .arg(out.join("vmlinux")))
        .map_err(build_err)?;
        fs::write(out.join("config"), &config).map_err(io("write", &out.join("config")))?;
        fs::rename(&out, &dir).map_err(io("rename into", &dir))?;
        Ok(())
    })();
    super::remove_build(&tmp);
    result?;
    tracing::info!(secs = start.elapsed().as_secs_f64(), "kernel for tiny built");
    Ok(kernel)
}

/// The options of `wanted` (a Kconfig fragment: `CONFIG_X=y` and `# CONFIG_X
/// is not set` lines) that the resulting `config` did not keep.
fn unkept_options(wanted: &str, config: &str) -> Vec<String> {
    wanted
        .lines()
        .filter_map(|l| {
            if l.starts_with("CONFIG_") && l.ends_with("=y") {
                (!config.lines().any(|c| c == l)).then(|| l.to_owned())
            } else {
                let name = l.strip_prefix("# ")?.strip_suffix(" is not set")?;
                let on = [format!("{name}=y"), format!("{name}=m")];
                config
                    .lines()
                    .any(|c| on.iter().any(|o| o == c))
                    .then(|| format!("{name} off"))
            }
        })
        .collect()
}

/// The kernel `tiny` would boot and whether it is the one built for it, if
/// every input of a build is on this host (else the error naming what is missing).
pub(crate) fn inputs_report(store: &TemplateStore) -> Result<(PathBuf, bool), StoreError> {
    let i = find_inputs(store)?;
    Ok((i.kernel, i.own_kernel))
}

fn find_inputs(store: &TemplateStore) -> Result<Inputs, StoreError> {
    // The kernel built for tiny has everything built in: no modules to load.
    let (kernel, early, late, own_kernel) = match built_kernel(store) {
        Some(k) => (k, Vec::new(), Vec::new(), true),
        None => {
            let (kernel, modules_dir) = find_kernel()?;
            let early = module_order(&modules_dir, EARLY_MODULES, &BTreeSet::new())?;
            let late = module_order(&modules_dir, LATE_MODULES, &early.iter().cloned().collect())?;
            (kernel, early, late, false)
        }
    };
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| missing("busybox", "busybox-static"))?;
    let dropbear = PathBuf::from("/usr/sbin/dropbear");
    if !dropbear.is_file() {
        return Err(missing("/usr/sbin/dropbear", "dropbear-bin"));
    }
    let dropbearconvert = ["/usr/lib/dropbear/dropbearconvert", "/usr/bin/dropbearconvert"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| missing("dropbearconvert", "dropbear-bin"))?;
    let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
    libs.extend(libs_of(&dropbear)?);
    libs.extend(libs_of(&dropbearconvert)?);
    // Name resolution for the static busybox (hostname -f, ping NAME).
    for nss in ["libnss_files.so.2", "libnss_dns.so.2"] {
        for dir in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"] {
            let p = Path::new(dir).join(nss);
            if p.is_file() {
                libs.insert(p);
                break;
            }
        }
    }
    Ok(Inputs {
        kernel,
        own_kernel,
        early,
        late,
        busybox,
        dropbear,
        dropbearconvert,
        libs: libs.into_iter().collect(),
    })
}

fn digest(inputs: &Inputs) -> Result<String, StoreError> {
    let mut h = Sha256::new();
    h.update(RECIPE);
    let cmdline = if inputs.own_kernel { CMDLINE_OWN_KERNEL } else { CMDLINE };
    for s in [
        INIT, RCS, SEED, DHCP, INITTAB, CONSOLE, SHUTDOWN, FSTAB, cmdline, ROOT_SIZE,
    ] {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    }
    let files = [
        &inputs.kernel,
        &inputs.busybox,
        &inputs.dropbear,
        &inputs.dropbearconvert,
    ]
    .into_iter()
    .chain(&inputs.early)
    .chain(&inputs.late)
    .chain(&inputs.libs);
    for f in files {
        let bytes = fs::read(f).map_err(io("read", f))?;
        h.update(f.as_os_str().as_encoded_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let d = h.finalize();
    Ok(d.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The `tiny` template for the host's current inputs, built if needed.
pub(crate) fn ensure(store: &TemplateStore) -> Result<Template, StoreError> {
    let inputs = find_inputs(store)?;
    let version = digest(&inputs)?;
    let dir = store.root().join(NAME).join(&version);
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    let _lock = store.lock(NAME)?;
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    tracing::info!(%version, "building template tiny");
    let start = Instant::now();
    let parent = store.root().join(NAME);
    fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    // Under the lock no build runs: any build folder left is from one that was killed.
    remove_stale_builds(&parent);
    let tmp = parent.join(format!("{BUILD_PREFIX}{version}-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    let t = super::finish_build(&tmp, &dir, build(&inputs, &tmp, &dir, &version, store.progress, start))?;
    tracing::info!(secs = t.build_secs, "template tiny built");
    Ok(t)
}

fn progress_bar(show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(5);
    pb.set_style(
        indicatif::ProgressStyle::with_template("building template tiny [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn build(
    inputs: &Inputs,
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

    pb.set_message("kernel");
    let kernel = tmp.join("vmlinuz");
    fs::copy(&inputs.kernel, &kernel).map_err(io("copy the kernel to", &kernel))?;
    pb.inc(1);

    // The kernel built for tiny mounts the root disk itself: no initramfs stage.
    pb.set_message("initramfs");
    let initrd = (!inputs.own_kernel).then(|| tmp.join("initrd.img"));
    if let Some(initrd) = &initrd {
        write_initramfs(inputs, initrd)?;
    }
    pb.inc(1);

    pb.set_message("root filesystem");
    let rootfs = tmp.join("rootfs");
    write_rootfs(inputs, &rootfs)?;
    pb.inc(1);

    pb.set_message("mkfs.ext4");
    let raw = tmp.join("root.raw");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "lago-root", "-E", "root_owner=0:0", "-d"])
        .arg(&rootfs)
        .arg(&raw)
        .arg(ROOT_SIZE))
    .map_err(build_err)?;
    if !crate::util::lock::running_as_root() {
        own_by_root(&rootfs, &raw, &tmp.join("owners.debugfs"))?;
    }
    fs::remove_dir_all(&rootfs).map_err(io("remove", &rootfs))?;
    pb.inc(1);

    pb.set_message("qcow2");
    let disk = tmp.join("root.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(&raw)
        .arg(&disk))
    .map_err(build_err)?;
    fs::remove_file(&raw).map_err(io("remove", &raw))?;
    for f in [&disk, &kernel].into_iter().chain(&initrd) {
        fs::set_permissions(f, fs::Permissions::from_mode(0o444)).map_err(io("chmod", f))?;
    }
    pb.inc(1);
    pb.finish_and_clear();
    Ok(Template {
        name: NAME.into(),
        version: version.into(),
        disk: final_dir.join("root.qcow2"),
        kernel: Some(final_dir.join("vmlinuz")),
        initrd: initrd.map(|_| final_dir.join("initrd.img")),
        cmdline: Some(if inputs.own_kernel { CMDLINE_OWN_KERNEL } else { CMDLINE }.into()),
        build_secs: start.elapsed().as_secs_f64(),
        source: Some("built-in".into()),
        sha256: Some(super::sha256_file(&disk)?),
        timestamp: None,
        published_sha256: None,
    })
}

/// Makes every file of the ext4 image `image`, which mkfs filled from
/// `tree` (a tree of this user's), root's, as in any system: built by a user
/// other than root, they would be that user's, and the guest's SSH server
/// refuses keys in a home it does not own.
fn own_by_root(tree: &Path, image: &Path, script: &Path) -> Result<(), StoreError> {
    fn walk(tree: &Path, dir: &Path, out: &mut String) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(tree).unwrap_or(&path);
            for field in ["uid", "gid", "uid_high", "gid_high"] {
                out.push_str(&format!("sif \"/{}\" {field} 0\n", rel.display()));
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(tree, &path, out);
            }
        }
    }
    let mut text = String::new();
    walk(tree, tree, &mut text);
    fs::write(script, text).map_err(io("write", script))?;
    let debugfs = ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or(Path::new("debugfs"));
    run(Command::new(debugfs).arg("-w").arg("-f").arg(script).arg(image))
        .map(|_| ())
        .map_err(|source| StoreError::Build {
            template: NAME.into(),
            source,
        })
}

/// A minimal `newc` cpio writer (the initramfs format), so no root or tools are needed.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> Cpio<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) -> std::io::Result<()> {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        let pad = |n: usize| (4 - n % 4) % 4;
        self.out.write_all(&[0; 3][..pad(110 + name.len() + 1)])?;
        self.out.write_all(data)?;
        self.out.write_all(&[0; 3][..pad(data.len())])
    }
    fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, 0o040755, &[], (0, 0))
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, 0o100000 | mode, data, (0, 0))
    }
    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0))
    }
    fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        Ok(self.out)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_initramfs(inputs: &Inputs, path: &Path) -> Result<(), StoreError> {
    let write = || -> std::io::Result<()> {
        let f = std::io::BufWriter::new(fs::File::create(path)?);
        let mut c = Cpio { out: f, ino: 0 };
        for d in ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys"] {
            c.dir(d)?;
        }
        c.entry("dev/console", 0o020600, &[], (5, 1))?;
        c.file("init", 0o755, INIT.as_bytes())?;
        c.file("bin/busybox", 0o755, &fs::read(&inputs.busybox)?)?;
        for applet in [
            "sh",
            "mount",
            "umount",
            "insmod",
            "cat",
            "usleep",
            "switch_root",
            "ls",
            "tr",
            "echo",
        ] {
            c.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        let mut list = String::new();
        for m in &inputs.early {
            let name = file_name(m);
            c.file(&format!("lib/modules/{name}"), 0o644, &fs::read(m)?)?;
            list.push_str(&name);
            list.push('\n');
        }
        c.file("etc/modules", 0o644, list.as_bytes())?;
        c.finish()?.flush()
    };
    write().map_err(io("write the initramfs", path))
}

fn write_rootfs(inputs: &Inputs, root: &Path) -> Result<(), StoreError> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let mk = |p: &Path| fs::create_dir_all(p).map_err(io("create", p));
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/lago",
        "etc/dropbear",
        "lib/modules",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
        "home",
        "var/log",
        "root",
        "root/.ssh",
    ] {
        mk(&at(d))?;
    }
    let perm = |p: &Path, mode: u32| fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io("chmod", p));
    perm(&at("tmp"), 0o1777)?;
    perm(&at("root"), 0o700)?;
    perm(&at("root/.ssh"), 0o700)?;
    let copy = |from: &Path, to: &Path| -> Result<(), StoreError> {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        fs::copy(from, to).map_err(io("copy into the root filesystem", to))?;
        Ok(())
    };
    copy(&inputs.busybox, &at("bin/busybox"))?;
    // Every applet, where busybox says it belongs.
    let out = run(Command::new(&inputs.busybox).arg("--list-full")).map_err(|source| StoreError::Build {
        template: NAME.into(),
        source,
    })?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = at(applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            mk(parent)?;
        }
        symlink("/bin/busybox", &link).map_err(io("link", &link))?;
    }
    let _ = fs::remove_file(at("sbin/init"));
    symlink("/bin/busybox", at("sbin/init")).map_err(io("link", &at("sbin/init")))?;
    copy(&inputs.dropbear, &at("usr/sbin/dropbear"))?;
    copy(&inputs.dropbearconvert, &at("usr/bin/dropbearconvert"))?;
    for lib in &inputs.libs {
        copy(lib, &at(&lib.to_string_lossy()))?;
    }
    // The loader at its canonical path too.
    if let Some(ld) = inputs.libs.iter().find(|l| file_name(l).starts_with("ld-linux")) {
        let canonical = at("lib64/ld-linux-x86-64.so.2");
        if !canonical.exists() {
            copy(ld, &canonical)?;
        }
    }
    let mut late = String::new();
    for m in &inputs.late {
        let name = file_name(m);
        copy(m, &at(&format!("lib/modules/{name}")))?;
        late.push_str(&name);
        late.push('\n');
    }
    let files: [(&str, &str, u32); 14] = [
        ("etc/fstab", FSTAB, 0o644),
        ("etc/lago/rcS", RCS, 0o755),
        ("etc/lago/console", CONSOLE, 0o755),
        ("etc/lago/seed", SEED, 0o755),
        ("etc/lago/dhcp", DHCP, 0o755),
        ("etc/lago/shutdown", SHUTDOWN, 0o755),
        ("etc/lago/late-modules", &late, 0o644),
        ("etc/inittab", INITTAB, 0o644),
        ("etc/passwd", "root:*:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\ntty:x:5:\n", 0o644),
        ("etc/shells", "/bin/sh\n/bin/ash\n", 0o644),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
            0o644,
        ),
        ("etc/hosts", "127.0.0.1 localhost\n", 0o644),
        ("etc/profile", "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\n", 0o644),
    ];
    for (p, text, mode) in files {
        let path = at(p);
        fs::write(&path, text).map_err(io("write", &path))?;
        perm(&path, mode)?;
    }
    symlink("/run/resolv.conf", at("etc/resolv.conf")).map_err(io("link", &at("etc/resolv.conf")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let mut c = Cpio {
            out: Vec::new(),
            ino: 0,
        };
        c.dir("bin").unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        let out = c.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0"));
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // mode of the file entry: regular, 0755
        let at = text.find("init\0").unwrap() - 110;
        assert_eq!(&text[at + 14..at + 22], "000081ed");
    }

    #[test]
    #[ignore = "builds tiny from the host's packages (scripts/setup-host installs them; scripts/test runs this)"]
    fn a_killed_build_leaves_no_folder_for_ever() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TemplateStore::new(tmp.path());
        let parent = tmp.path().join(NAME);
        let stale = parent.join(format!("{BUILD_PREFIX}0123456789abcdef-4242"));
        fs::create_dir_all(stale.join("half")).unwrap();
        fs::write(stale.join("half/root.img.part"), "x").unwrap();
        // Not a build folder: left alone.
        fs::create_dir_all(parent.join("notes")).unwrap();
        let t = ensure(&store).unwrap();
        assert!(t.disk.is_file());
        let left: Vec<String> = fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.iter().any(|n| n.starts_with(BUILD_PREFIX)), "{left:?}");
        assert!(
            left.contains(&"notes".to_owned()) && left.contains(&t.version),
            "{left:?}"
        );
    }

    #[test]
    fn options_the_config_dropped_or_kept_on_are_named() {
        let wanted = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n# CONFIG_D is not set\n";
        assert_eq!(unkept_options(wanted, config), ["CONFIG_B=y", "CONFIG_C off"]);
        assert!(unkept_options(wanted, "CONFIG_A=y\nCONFIG_B=y\n").is_empty());
        // The fragment shipped with lago parses to options only.
        assert!(unkept_options(KERNEL_CONFIG, KERNEL_CONFIG).is_empty());
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = ["6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-10-cloud-amd64"];
        v.sort_by_key(|a| version_key(a));
        assert_eq!(v.last(), Some(&"6.1.0-56-cloud-amd64"));
    }
}
