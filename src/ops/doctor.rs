//! `lago doctor`: checks the host and says, for each check, OK, a warning or
//! a failure, with the fix. A failure means lago cannot boot VMs here; a
//! warning means something works less well or one feature is missing.
//!
//! Every check reads its inputs from a [`Host`], so tests can point it at a
//! faked host (a `PATH` without QEMU, a folder nobody can write, a libvirt URI
//! nobody listens on).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::Backend;
use crate::host::lease::LeaseStore;
use crate::host::store::TemplateStore;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It works as lago needs.
    Ok,
    /// Works, less well, or a feature is missing.
    Warn,
    /// lago cannot boot VMs until it is fixed.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked (`libvirt`, `qemu`, …).
    pub name: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found (a version, a path, or the error met).
    pub detail: String,
    /// What to do about it (warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct Host {
    /// The `PATH` programs are looked up in.
    pub path: OsString,
    /// The libvirt URI (`None`: libvirt's default, as `lago init` uses).
    pub libvirt_uri: Option<String>,
    /// The template store.
    pub store: PathBuf,
    /// The lease directory.
    pub lease_dir: PathBuf,
    /// The lease directory of session mode (the user's own).
    pub session_lease_dir: PathBuf,
    /// `/dev/kvm`.
    pub kvm_device: PathBuf,
    /// Present when this KVM is PVM-flavoured (`/sys/module/kvm_pvm`).
    pub pvm_module: PathBuf,
    /// The host's IPv4 routes (`/proc/net/route`).
    pub routes: PathBuf,
    /// The test network namespace this runs in (`LAGO_IN_NETNS`).
    pub netns: Option<String>,
    /// `/proc`: other libvirt daemons and the network namespaces they run in.
    pub proc: PathBuf,
    /// The cargo-nextest run this runs under (`NEXTEST_RUN_ID`).
    pub nextest_run: Option<String>,
    /// `LAGO_WARM` (warm start: `0` turns it off).
    pub warm: Option<String>,
    /// libvirt's QEMU driver configuration (`/etc/libvirt/qemu.conf`): its
    /// `save_image_format` must leave save images raw for warm start.
    pub qemu_conf: PathBuf,
    /// Whether lago runs as root here.
    pub root: bool,
}

impl Host {
    /// This host, as `lago init` would see it (`libvirt_uri`: `-c`/`LIBVIRT_DEFAULT_URI`).
    pub fn current(libvirt_uri: Option<&str>) -> Self {
        Host {
            path: std::env::var_os("PATH").unwrap_or_default(),
            libvirt_uri: libvirt_uri.map(str::to_owned),
            store: TemplateStore::from_env().root().to_path_buf(),
            lease_dir: LeaseStore::from_env().dir().to_path_buf(),
            session_lease_dir: LeaseStore::for_session().dir().to_path_buf(),
            kvm_device: PathBuf::from("/dev/kvm"),
            pvm_module: PathBuf::from("/sys/module/kvm_pvm"),
            routes: PathBuf::from("/proc/net/route"),
            netns: std::env::var("LAGO_IN_NETNS").ok().filter(|s| !s.is_empty()),
            proc: PathBuf::from("/proc"),
            nextest_run: std::env::var("NEXTEST_RUN_ID").ok().filter(|s| !s.is_empty()),
            warm: std::env::var("LAGO_WARM").ok(),
            qemu_conf: PathBuf::from("/etc/libvirt/qemu.conf"),
            root: rustix::process::geteuid().is_root(),
        }
    }

    /// `program` on this host's `PATH` (or in /usr/sbin and /sbin, where Debian puts daemons).
    fn find(&self, program: &str) -> Option<PathBuf> {
        crate::util::cmd::find_program_in(&self.path, program)
    }
}

/// Runs every check.
pub fn run(host: &Host) -> Vec<Check> {
    let (libvirt, reached) = libvirt(host);
    let session = reached.as_deref().is_some_and(crate::backend::uri::is_session);
    vec![
        libvirt,
        mode(host, reached.as_deref()),
        qemu(host),
        kvm(host),
        program(
            host,
            "dnsmasq",
            "dnsmasq",
            "dnsmasq-base",
            "libvirt's DHCP and DNS for guest networks",
            !session,
        ),
        netns(host, session),
        subnets(host),
        other_libvirtd(host),
        store(host),
        warm(host, session),
        tiny(host),
        leases(host, session),
        program(
            host,
            "mmdebstrap",
            "mmdebstrap",
            "mmdebstrap",
            "builds the `debian-12` template",
            false,
        ),
        nextest(host),
    ]
}

/// Whether every check passed or only warned.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The table `lago doctor` prints.
pub fn table(checks: &[Check]) -> String {
    let mut out = String::new();
    let w = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{mark}  {:<w$} {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<w$} fix: {fix}\n", ""));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&match (fails, warns) {
        (0, 0) => "everything lago needs is here\n".to_owned(),
        (0, w) => format!(
            "lago can boot VMs here ({w} warning{})\n",
            if w == 1 { "" } else { "s" }
        ),
        (f, _) => format!(
            "lago cannot boot VMs here until {f} failure{} fixed\n",
            if f == 1 { " is" } else { "s are" }
        ),
    });
    out
}

/// Whether libvirt is reachable, and at which URI.
fn libvirt(host: &Host) -> (Check, Option<String>) {
    let uri = host.libvirt_uri.as_deref().unwrap_or("libvirt's default URI");
    let check = match Backend::connect(host.libvirt_uri.as_deref()) {
        Ok(b) => {
            return (
                Check::ok("libvirt", format!("reachable at {}", b.uri())),
                Some(b.uri().to_owned()),
            );
        }
        Err(e) => {
            let text = crate::env::error::error_chain(&e);
            let fix = if text.contains("Permission denied") {
                "let this user reach libvirtd: `sudo usermod -aG libvirt $USER`, then log in again (or run as root)"
            } else if text.contains("No such file")
                || text.contains("Connection refused")
                || text.contains("Failed to connect")
            {
                "start libvirtd: `scripts/netns-run --ensure` starts one inside lago's test network namespace (for tests); on a desktop, `sudo systemctl start libvirtd`"
            } else {
                "check the URI (`-c`, LIBVIRT_DEFAULT_URI) and that libvirtd runs"
            };
            Check::fail("libvirt", format!("cannot connect to {uri}: {text}"), fix)
        }
    };
    (check, None)
}

/// Which mode lago works in here (`reached`: the URI the libvirt check
/// reached), why, and what the other mode would need.
fn mode(host: &Host, reached: Option<&str>) -> Check {
    const NAME: &str = "mode";
    const SYSTEM_NEEDS: &str = "system mode (bridges, DHCP, warm start) needs root, or this user in the libvirt group with libvirtd running (scripts/setup-host)";
    let Some(uri) = reached else {
        return Check::ok(NAME, "not known until libvirt is reachable");
    };
    if crate::backend::uri::is_remote(uri) {
        return Check::ok(NAME, format!("a remote hypervisor, {uri}: VMs and nets are made there"));
    }
    if !crate::backend::uri::is_session(uri) {
        let who = if host.root { "root" } else { "this user reaches it" };
        return Check::ok(
            NAME,
            format!(
                "system mode ({uri}, {who}): libvirt networks with bridges, DHCP and DNS; session mode, with no root, is `lago init --session` (LIBVIRT_DEFAULT_URI=qemu:///session)"
            ),
        );
    }
    let why = match Backend::uri_defaulted(host.libvirt_uri.as_deref()) {
        true => "this user cannot reach qemu:///system",
        false => "asked for",
    };
    Check::warn(
        NAME,
        format!(
            "session mode ({uri}, {why}): no root, bridge or tap; nets are QEMU sockets on 127.0.0.1, SSH goes through a forwarded port"
        ),
        SYSTEM_NEEDS,
    )
}

fn qemu(host: &Host) -> Check {
    let Some(bin) = host.find("qemu-system-x86_64") else {
        return Check::fail(
            "qemu",
            "qemu-system-x86_64 is not installed",
            "`sudo apt-get install qemu-system-x86` (scripts/setup-host installs everything)",
        );
    };
    let mut first = None;
    let out = crate::util::cmd::run_streaming(
        std::process::Command::new(&bin).arg("--version"),
        std::time::Duration::from_secs(10),
        |line| {
            first.get_or_insert_with(|| line.to_owned());
        },
    );
    match out {
        Ok(()) => Check::ok("qemu", first.unwrap_or_else(|| bin.display().to_string())),
        Err(e) => Check::fail(
            "qemu",
            format!("{} does not run: {}", bin.display(), crate::env::error::error_chain(&e)),
            "reinstall it: `sudo apt-get install --reinstall qemu-system-x86`",
        ),
    }
}

fn kvm(host: &Host) -> Check {
    match crate::backend::kvm_unusable_reason(&host.kvm_device, &host.pvm_module) {
        None => Check::ok(
            "kvm",
            format!("{} is usable: VMs run with KVM", host.kvm_device.display()),
        ),
        Some(why) => {
            let fix = if why.contains("does not exist") {
                "load KVM (`sudo modprobe kvm_intel` or `kvm_amd`; on a cloud VM, enable nested virtualization); until then TCG works, slower"
            } else if why.contains("cannot be opened") {
                "`sudo usermod -aG kvm $USER`, then log in again; until then TCG works, slower"
            } else {
                "nothing to do: TCG works here (slower); KVM needs a host that virtualizes stock guests"
            };
            Check::warn("kvm", format!("VMs run with TCG (software emulation): {why}"), fix)
        }
    }
}

fn program(host: &Host, name: &'static str, bin: &str, package: &str, role: &str, needed: bool) -> Check {
    match host.find(bin) {
        Some(p) => Check::ok(name, format!("{} ({role})", p.display())),
        None if needed => Check::fail(
            name,
            format!("{bin} is not installed ({role})"),
            format!("`sudo apt-get install {package}`"),
        ),
        None => Check::warn(
            name,
            format!("{bin} is not installed: only needed when lago {role}"),
            format!("`sudo apt-get install {package}` when you need it"),
        ),
    }
}

fn netns(host: &Host, session: bool) -> Check {
    match &host.netns {
        Some(ns) => Check::ok("netns", format!("inside lago's test network namespace {ns}")),
        None if session => Check::ok(
            "netns",
            "not inside a test network namespace: session mode makes no network here, only ports on 127.0.0.1 (scripts/netns-run --user runs commands in a namespace of their own, without root)",
        ),
        None => Check::warn(
            "netns",
            "not inside a test network namespace: guest networks would be made in this one",
            "run VM tests through `scripts/netns-run` (or `scripts/test`); for your own VMs this is fine",
        ),
    }
}

/// Routes of the host that cover part of lago's subnet pool (192.168.200.0-192.168.255.255),
/// other than the bridges of lago's own networks.
fn subnets(host: &Host) -> Check {
    let Ok(text) = std::fs::read_to_string(&host.routes) else {
        return Check::ok(
            "subnets",
            format!("{} not readable: not checked", host.routes.display()),
        );
    };
    let clashes = route_clashes(&text, true);
    if clashes.is_empty() {
        Check::ok(
            "subnets",
            "no route of this host overlaps lago's pool 192.168.200.0-192.168.255.0/24",
        )
    } else {
        Check::warn(
            "subnets",
            format!("routes overlap lago's subnet pool: {}", clashes.join(", ")),
            "lago skips subnets it cannot lease, but a net on such a subnet can shadow the host's; free them or run inside `scripts/netns-run`",
        )
    }
}

/// A libvirt daemon running in another network namespace than this one (the
/// host's own, when this runs in the test namespace) whose namespace routes
/// part of the pool: its networks hold subnets lago's leases know nothing of,
/// and its `lg-` bridges are environments a crashed run left there.
fn other_libvirtd(host: &Host) -> Check {
    const NAME: &str = "other-libvirtd";
    let Ok(own) = std::fs::read_link(host.proc.join("self/ns/net")) else {
        return Check::ok(NAME, format!("{} not readable: not checked", host.proc.display()));
    };
    let Ok(entries) = std::fs::read_dir(&host.proc) else {
        return Check::ok(NAME, format!("{} not readable: not checked", host.proc.display()));
    };
    let mut others = Vec::new();
    let mut clashes = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let dir = e.path();
        let is_libvirtd = std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim_end() == "libvirtd");
        let Ok(ns) = std::fs::read_link(dir.join("ns/net")) else {
            continue;
        };
        if !is_libvirtd || ns == own {
            continue;
        }
        others.push(pid.to_owned());
        if let Ok(text) = std::fs::read_to_string(dir.join("net/route")) {
            clashes.extend(
                route_clashes(&text, false)
                    .into_iter()
                    .map(|c| format!("{c} (libvirtd {pid})")),
            );
        }
    }
    if others.is_empty() {
        return Check::ok(NAME, "no libvirtd runs in another network namespace");
    }
    if clashes.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "libvirtd {} runs in another network namespace and holds none of the pool's subnets",
                others.join(", ")
            ),
        );
    }
    Check::warn(
        NAME,
        format!(
            "a libvirtd in another network namespace routes pool subnets: {}",
            clashes.join(", ")
        ),
        "its networks on 192.168.200-255 (and `lg-` bridges a crashed run left) are outside lago's leases: \
         `virsh net-destroy` them there, or stop that libvirtd (`systemctl stop libvirtd`)",
    )
}

/// Under `cargo nextest run`: the processes of one run share one environment
/// per init file, and `cargo-nextest` must be on `PATH` for `scripts/test`.
fn nextest(host: &Host) -> Check {
    const NAME: &str = "nextest";
    let Some(run) = &host.nextest_run else {
        return Check::ok(NAME, "not under cargo-nextest (`cargo test` works as well)");
    };
    match host.find("cargo-nextest") {
        Some(p) => Check::ok(
            NAME,
            format!(
                "under cargo-nextest run {run} ({}): its tests share one environment per init file",
                p.display()
            ),
        ),
        None => Check::warn(
            NAME,
            format!("NEXTEST_RUN_ID is {run}, but no cargo-nextest on PATH"),
            "`cargo install cargo-nextest --locked` (`scripts/test` does), or unset NEXTEST_RUN_ID",
        ),
    }
}

/// `iface dest/prefix` of each route in `/proc/net/route` text that overlaps
/// 192.168.200.0/21..192.168.255.255, but for lago's own bridges (`lg-…`)
/// when `skip_lago`.
fn route_clashes(text: &str, skip_lago: bool) -> Vec<String> {
    crate::host::lease::pool_routes(text)
        .into_iter()
        .filter(|r| !(skip_lago && r.iface.starts_with("lg-")))
        .map(|r| format!("{} {}/{}", r.iface, r.net, r.prefix))
        .collect()
}

/// The folder `dir`, or the nearest one above it that exists (lago creates
/// the rest), when a file can be written there; else check `name`'s failure,
/// naming `what` and `fix`.
fn writable<'a>(name: &'static str, what: &str, dir: &'a Path, fix: &str) -> Result<&'a Path, Check> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match tempfile::tempfile_in(existing) {
        Ok(_) => Ok(existing),
        Err(e) => Err(Check::fail(
            name,
            format!("{what} {}: cannot write in {} ({e})", dir.display(), existing.display()),
            fix,
        )),
    }
}

/// Warm start: on or off here and why, and the boot images it keeps.
fn warm(host: &Host, session: bool) -> Check {
    if host.warm.as_deref().is_some_and(|v| v.trim() == "0") {
        return Check::ok("warm", "warm start off (LAGO_WARM=0): every start boots");
    }
    if session {
        return Check::warn(
            "warm",
            "warm start off: session mode does not keep boot images yet (every start boots)",
            "use system mode for warm start (see the mode check)",
        );
    }
    let uri = crate::backend::Backend::resolve_uri(host.libvirt_uri.as_deref());
    if !host.root && uri.starts_with("qemu:///system") {
        return Check::warn(
            "warm",
            "warm start off: a user other than root on qemu:///system (libvirtd would write boot images into your store as root)",
            "run as root for warm start (every start boots meanwhile)",
        );
    }
    let raw = std::fs::read_to_string(&host.qemu_conf).map_or(true, |conf| {
        conf.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("save_image_format"))
            .all(|l| l.contains("\"raw\""))
    });
    if !raw {
        return Check::warn(
            "warm",
            format!(
                "{} compresses save images (save_image_format): boot images are refused, every start boots and saves again",
                host.qemu_conf.display()
            ),
            "set save_image_format = \"raw\" (or remove it) and restart libvirtd",
        );
    }
    let images = crate::host::store::warm::BootImages::new(&TemplateStore::new(&host.store)).entries();
    let bytes: u64 = images.iter().map(|e| e.bytes).sum();
    Check::ok(
        "warm",
        format!(
            "warm start on: {} boot images, {} in {} (bound {}, LAGO_WARM_MAX)",
            images.len(),
            lago_config::approx_size(bytes),
            host.store.join(crate::host::store::warm::DIR).display(),
            lago_config::approx_size(crate::host::store::warm::max_bytes())
        ),
    )
}

fn store(host: &Host) -> Check {
    let root = &host.store;
    let existing = match writable(
        "store",
        "template store",
        root,
        "point LAGO_TEMPLATE_STORE at a folder you can write, or run as root for /var/lib/lago/store",
    ) {
        Ok(p) => p,
        Err(fail) => return fail,
    };
    match rustix::fs::statvfs(existing) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let detail = format!(
                "template store {} ({} free)",
                root.display(),
                lago_config::approx_size(free)
            );
            if free < 2 << 30 {
                Check::warn(
                    "store",
                    detail,
                    "free some space: `debian-12` needs about 1 GiB, each VM's overlays grow as it writes",
                )
            } else {
                Check::ok("store", detail)
            }
        }
        Err(e) => Check::ok(
            "store",
            format!("template store {} (free space unknown: {e})", root.display()),
        ),
    }
}

fn tiny(host: &Host) -> Check {
    match crate::host::store::tiny::inputs_report(&TemplateStore::new(&host.store)) {
        Ok((kernel, true)) => Check::ok(
            "tiny",
            format!("build inputs present; boots its own kernel {}", kernel.display()),
        ),
        Ok((kernel, false)) => Check::warn(
            "tiny",
            format!(
                "build inputs present; boots the distribution's kernel {}",
                kernel.display()
            ),
            "`lago template build tiny --kernel` builds tiny's own kernel once (about 5 minutes; boots in about half the time)",
        ),
        Err(e) => Check::fail(
            "tiny",
            format!("cannot build tiny: {}", crate::env::error::error_chain(&e)),
            "`scripts/setup-host` installs its inputs (linux-image-cloud-amd64, busybox-static, dropbear-bin)",
        ),
    }
}

/// The lease folder the mode uses: writable, its free subnets, stale leases.
fn leases(host: &Host, session: bool) -> Check {
    let dir = if session {
        &host.session_lease_dir
    } else {
        &host.lease_dir
    };
    let store = LeaseStore::new(dir);
    if let Err(fail) = writable(
        "leases",
        "lease folder",
        dir,
        "point LAGO_LEASE_DIR at a folder you can write, or run as root for /var/lib/lago/subnets",
    ) {
        return fail;
    }
    match store.list() {
        Ok(l) => {
            let stale = l.iter().filter(|l| !l.workdir.exists()).count();
            if stale == 0 {
                Check::ok(
                    "leases",
                    format!(
                        "{}: {} of the pool's 56 subnets leased, {} free",
                        dir.display(),
                        l.len(),
                        56usize.saturating_sub(l.len())
                    ),
                )
            } else {
                Check::warn(
                    "leases",
                    format!(
                        "{}: {stale} of {} leases belong to workdirs that are gone",
                        dir.display(),
                        l.len()
                    ),
                    "`lago gc` releases them (and whatever those envs left in libvirt)",
                )
            }
        }
        Err(e) => Check::fail(
            "leases",
            format!(
                "cannot read the leases in {}: {}",
                dir.display(),
                crate::env::error::error_chain(&e)
            ),
            "fix the folder's permissions, or point LAGO_LEASE_DIR elsewhere",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faked(tmp: &Path) -> Host {
        let bin = tmp.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        Host {
            path: bin.into_os_string(),
            libvirt_uri: Some("test:///default".into()),
            store: tmp.join("store"),
            lease_dir: tmp.join("leases"),
            session_lease_dir: tmp.join("session-leases"),
            kvm_device: tmp.join("no-kvm"),
            pvm_module: tmp.join("no-pvm"),
            routes: tmp.join("route"),
            netns: None,
            proc: tmp.join("proc"),
            nextest_run: None,
            warm: None,
            qemu_conf: tmp.join("qemu.conf"),
            root: true,
        }
    }

    #[test]
    fn warm_start_says_whether_it_is_on_and_why_not() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = faked(tmp.path());
        let c = warm(&host, false);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("warm start on: 0 boot images"), "{c:?}");
        std::fs::write(
            &host.qemu_conf,
            "# save_image_format = \"raw\"\nsave_image_format = \"xz\"\n",
        )
        .unwrap();
        let c = warm(&host, false);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.fix.as_deref().unwrap().contains("save_image_format = \"raw\""),
            "{c:?}"
        );
        host.root = false;
        host.libvirt_uri = Some("qemu:///system".into());
        assert!(warm(&host, false).detail.contains("a user other than root"));
        host.warm = Some("0".into());
        assert!(warm(&host, false).detail.contains("LAGO_WARM=0"));
    }

    #[test]
    fn the_mode_says_which_why_and_what_the_other_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = faked(tmp.path());
        let c = mode(&host, Some("qemu:///system"));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.detail.contains("system mode (qemu:///system, root)") && c.detail.contains("lago init --session"),
            "{c:?}"
        );
        host.libvirt_uri = Some("qemu:///session".into());
        host.root = false;
        let c = mode(&host, Some("qemu:///session"));
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.detail.starts_with("session mode (qemu:///session, asked for)"),
            "{c:?}"
        );
        assert!(c.fix.as_deref().unwrap().contains("libvirt group"), "{c:?}");
        let c = mode(&host, Some("qemu+ssh://lab@hv1/system"));
        assert!(
            c.detail.contains("a remote hypervisor, qemu+ssh://lab@hv1/system"),
            "{c:?}"
        );
        assert!(mode(&host, None).detail.contains("not known"));
        // Session mode's leases are the user's own folder.
        let c = leases(&host, true);
        assert!(c.detail.contains("session-leases"), "{c:?}");
        assert!(
            leases(&host, false).detail.contains(&*host.lease_dir.to_string_lossy()),
            "{:?}",
            leases(&host, false)
        );
        // Session mode keeps no boot images yet.
        let c = warm(&host, true);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.detail.contains("session mode"), "{c:?}");
    }

    fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_faked_host_gets_each_failure_and_warning_with_its_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = faked(tmp.path());
        // A libvirt URI nobody listens on.
        host.libvirt_uri = Some(format!(
            "qemu+unix:///system?socket={}",
            tmp.path().join("none.sock").display()
        ));
        let checks = run(&host);
        let c = by_name(&checks, "libvirt");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("start libvirtd"), "{c:?}");
        // No /dev/kvm: TCG, a warning that says how to load KVM.
        let c = by_name(&checks, "kvm");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.detail.contains("TCG") && c.fix.as_deref().unwrap().contains("modprobe"),
            "{c:?}"
        );
        // Not in a namespace: a warning.
        assert_eq!(by_name(&checks, "netns").status, Status::Warn);
        assert!(!healthy(&checks));
        let printed = table(&checks);
        assert!(
            printed.contains("FAIL  libvirt") && printed.contains("fix: start libvirtd"),
            "{printed}"
        );
        assert!(printed.contains("cannot boot VMs here"), "{printed}");
    }

    #[test]
    fn missing_programs_fail_or_warn_by_need() {
        let tmp = tempfile::tempdir().unwrap();
        let host = faked(tmp.path());
        // dnsmasq is needed, mmdebstrap only for debian-12 (their names are looked up on the faked
        // PATH first, then in /usr/sbin and /sbin, so a host with them installed passes).
        let c = program(&host, "x", "lago-no-such-program", "pkg", "does a thing", true);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.as_deref(), Some("`sudo apt-get install pkg`"));
        let c = program(&host, "x", "lago-no-such-program", "pkg", "does a thing", false);
        assert_eq!(c.status, Status::Warn);
        std::fs::write(tmp.path().join("bin/lago-fake"), "").unwrap();
        assert_eq!(program(&host, "x", "lago-fake", "pkg", "r", true).status, Status::Ok);
    }

    #[test]
    fn unwritable_store_and_lease_folders_fail() {
        if rustix::process::geteuid().is_root() {
            // root writes anywhere: a file in the way makes the folder unusable instead.
            let tmp = tempfile::tempdir().unwrap();
            let file = tmp.path().join("file");
            std::fs::write(&file, "").unwrap();
            let mut host = faked(tmp.path());
            host.store = file.join("store");
            host.lease_dir = file.join("leases");
            // The nearest existing ancestor is a file: nothing can be made under it.
            assert_eq!(store(&host).status, Status::Fail, "{:?}", store(&host));
            assert_eq!(leases(&host, false).status, Status::Fail, "{:?}", leases(&host, false));
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let locked = tmp.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
        let mut host = faked(tmp.path());
        host.store = locked.join("store");
        host.lease_dir = locked.join("leases");
        assert_eq!(store(&host).status, Status::Fail);
        assert_eq!(leases(&host, false).status, Status::Fail);
    }

    #[test]
    fn routes_into_the_pool_are_named_and_lago_bridges_are_not() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                    lg-1a2b3c4d-0\t00C8A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        // 192.168.0.0/16 on eth0 covers the pool; the default route and lago's own bridge do not count.
        assert_eq!(route_clashes(text, true), ["eth0 192.168.0.0/16"]);
        assert!(route_clashes("Iface\tDestination\n", true).is_empty());
        // In another namespace a lago bridge is a leak, and counts.
        assert_eq!(route_clashes(text, false).len(), 2);
    }

    /// A faked /proc: `self` and processes `(pid, comm, net ns, routes)`.
    fn fake_proc(root: &Path, procs: &[(&str, &str, &str, &str)]) {
        use std::os::unix::fs::symlink;
        if !root.join("self").exists() {
            std::fs::create_dir_all(root.join("self/ns")).unwrap();
            symlink("net:[4026531840]", root.join("self/ns/net")).unwrap();
        }
        for (pid, comm, ns, routes) in procs {
            let dir = root.join(pid);
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::create_dir_all(dir.join("net")).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            symlink(ns, dir.join("ns/net")).unwrap();
            std::fs::write(dir.join("net/route"), routes).unwrap();
        }
    }

    #[test]
    fn a_libvirtd_elsewhere_holding_pool_subnets_is_named() {
        let head = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let pool = format!("{head}virbr1\t00C9A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        let other = format!("{head}virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        let tmp = tempfile::tempdir().unwrap();
        let mut host = faked(tmp.path());
        // No /proc at all: not checked, not a failure.
        assert_eq!(other_libvirtd(&host).status, Status::Ok);
        fake_proc(
            &host.proc,
            &[
                // Ours (same namespace) routes the pool: that is lago's own business.
                ("10", "libvirtd", "net:[4026531840]", &pool),
                // Not a libvirtd.
                ("11", "dnsmasq", "net:[1]", &pool),
                // Another namespace, 192.168.122.0/24 only.
                ("12", "libvirtd", "net:[2]", &other),
            ],
        );
        let c = other_libvirtd(&host);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("libvirtd 12") && c.detail.contains("none"), "{c:?}");
        fake_proc(&host.proc, &[("13", "libvirtd", "net:[3]", &pool)]);
        let c = other_libvirtd(&host);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.detail.contains("virbr1 192.168.201.0/24 (libvirtd 13)")
                && c.fix.as_deref().unwrap().contains("net-destroy"),
            "{c:?}"
        );
        host.proc = tmp.path().join("nowhere");
        assert!(other_libvirtd(&host).detail.contains("not checked"));
    }

    #[test]
    fn nextest_is_looked_for_only_under_a_nextest_run() {
        let tmp = tempfile::tempdir().unwrap();
        let mut host = faked(tmp.path());
        assert_eq!(nextest(&host).status, Status::Ok);
        host.nextest_run = Some("0d2c".into());
        // `find` also looks in /usr/sbin and /sbin, where no cargo-nextest is.
        let c = nextest(&host);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.fix.as_deref().unwrap().contains("cargo install cargo-nextest"),
            "{c:?}"
        );
        std::fs::write(tmp.path().join("bin/cargo-nextest"), "").unwrap();
        let c = nextest(&host);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("0d2c"), "{c:?}");
    }

    #[test]
    fn a_healthy_list_says_so() {
        let checks = vec![Check::ok("a", "fine"), Check::warn("b", "meh", "do this")];
        assert!(healthy(&checks));
        let t = table(&checks);
        assert!(
            t.contains("warn  b") && t.contains("fix: do this") && t.contains("1 warning)"),
            "{t}"
        );
        let json = serde_json::to_value(&checks).unwrap();
        assert_eq!(json[0]["status"], "ok");
        assert!(json[0].get("fix").is_none());
        assert_eq!(json[1]["fix"], "do this");
    }
}
