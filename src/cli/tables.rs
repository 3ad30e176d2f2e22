//! The tables commands print for people: `status`, `validate`, `gc`,
//! `template list`, snapshots and the reports of copy, collect, deploy and
//! export.

use std::fmt::Write as _;
use std::path::Path;

use crate::env::Status;
use crate::host::store::manage::StoreEntry;
use crate::ops::gc::GcReport;
use crate::plan::EnvPlan;
use lago_config::{self as config, DiskBus, DiskSource, EnvSpec, approx_size, format_size};

/// `lago status` as a table.
pub fn status_table(st: &Status) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "env {}  workdir {}  ({})",
        st.env_id,
        st.workdir.display(),
        st.init_file.display()
    );
    let _ = writeln!(s, "nets:");
    for n in &st.nets {
        let via = match &n.socket {
            Some(group) => format!("sockets {group}"),
            None => format!("gateway {}", n.gateway.as_deref().unwrap_or("-")),
        };
        let _ = writeln!(
            s,
            "  {:<12} {:<5} {:<18} {via}{}",
            n.name,
            if n.up { "up" } else { "down" },
            n.subnet.as_deref().unwrap_or("-"),
            if n.management { "  (management)" } else { "" }
        );
    }
    let _ = writeln!(s, "vms:");
    for v in &st.vms {
        let came_up = v.came_up.as_deref().map(|c| format!("  ({c})")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  {:<12} {:<8} {:<15} {}{came_up}",
            v.name,
            v.state.to_string(),
            v.ip,
            v.fqdn
        );
        for nic in &v.nics {
            let _ = writeln!(
                s,
                "    {:<6} net {:<10} {:<15} {}",
                nic.name,
                nic.net,
                nic.ip.as_deref().unwrap_or("-"),
                nic.mac
            );
        }
    }
    s
}

/// `lago replay --list` as a table: what a failure bundle holds.
pub fn bundle_table(b: &crate::env::bundle::BundleInfo) -> String {
    let m = &b.bundle;
    let mut s = format!(
        "failure bundle {}
",
        b.dir.display()
    );
    let _ = writeln!(s, "  test:      {}", m.test.as_deref().unwrap_or("-"));
    let failure = m.failure.as_deref().unwrap_or("-");
    let _ = writeln!(s, "  failure:   {}", failure.lines().next().unwrap_or("-"));
    let _ = writeln!(s, "  env:       {} ({})", m.env_id, m.init_file.display());
    let _ = writeln!(
        s,
        "  size:      {} (saved in {:.1}s)",
        approx_size(m.bytes),
        m.save_secs
    );
    for (net, subnet) in &b.subnets {
        let _ = writeln!(s, "  net {net:<10} {subnet}");
    }
    for (vm, (memory, disks)) in &b.vms {
        let _ = writeln!(
            s,
            "  vm {vm:<11} memory {}, disks {}",
            approx_size(*memory),
            disks.join(", ")
        );
    }
    for (at, t) in &m.templates {
        let _ = writeln!(
            s,
            "  {at:<14} on template {}:{} (sha256 {})",
            t.name,
            t.version,
            t.sha256.as_deref().unwrap_or("unknown")
        );
    }
    s
}

/// `lago warm list`: the boot images, most recently used first.
pub fn boot_images_table(root: &Path, list: &[crate::host::store::warm::BootImageEntry]) -> String {
    let mut s = format!("boot images: {}\n", root.display());
    if list.is_empty() {
        s.push_str("  (none: an environment's first start saves one)\n");
        return s;
    }
    let _ = writeln!(
        s,
        "  {:<32} {:>8}  {:<20} {:<16} INIT FILE",
        "KEY", "SIZE", "LAST USED", "VMS"
    );
    for e in list {
        let last = last_used(e.last_used);
        let _ = writeln!(
            s,
            "  {:<32} {:>8}  {:<20} {:<16} {}",
            e.key,
            approx_size(e.bytes),
            last,
            e.vms.join(","),
            e.init_file.display()
        );
        for u in &e.users {
            let _ = writeln!(s, "      used by {}", u.display());
        }
    }
    let total: u64 = list.iter().map(|e| e.bytes).sum();
    let _ = writeln!(s, "  {} boot images, {}", list.len(), approx_size(total));
    s
}

/// `lago warm clear` and `lago template prune`: the boot images removed
/// (or, with `dry_run`, that would be) and those kept because in use.
pub fn boot_images_removed(
    removed: &[crate::host::store::warm::BootImageEntry],
    kept: &[crate::host::store::warm::BootImageEntry],
    dry_run: bool,
) -> String {
    let mut s = String::new();
    let verb = if dry_run { "would remove" } else { "removed" };
    for e in removed {
        let _ = writeln!(s, "{verb} boot image {} ({})", e.key, approx_size(e.bytes));
    }
    for e in kept {
        let users: Vec<String> = e.users.iter().map(|u| u.display().to_string()).collect();
        let _ = writeln!(s, "kept boot image {}: used by {}", e.key, users.join(", "));
    }
    let freed: u64 = removed.iter().map(|e| e.bytes).sum();
    let _ = writeln!(s, "{verb} {} boot images, {}", removed.len(), approx_size(freed));
    s
}

/// `lago validate`: the plan as text.
pub fn plan_table(spec: &EnvSpec, plan: &EnvPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: valid (subnets are a preview; `lago init` leases real ones)",
        spec.source.display()
    );
    let _ = writeln!(s, "\nnets:");
    for n in &plan.nets {
        let _ = write!(s, "  {:<12} {:<8}", n.name, n.kind);
        match (n.subnet, n.gateway) {
            (Some(sub), Some(gw)) => {
                let _ = write!(s, " {sub}  gateway {gw}");
            }
            _ => {
                let _ = write!(s, " bridge {}", n.bridge);
            }
        }
        if let Some(d) = &n.dhcp {
            let _ = write!(s, "  dhcp .{}-.{}", d.start.octets()[3], d.end.octets()[3]);
        }
        if let Some(d) = &n.dns_domain {
            let _ = write!(s, "  dns {d}");
        }
        if n.mtu != config::DEFAULT_MTU {
            let _ = write!(s, "  mtu {}", n.mtu);
        }
        if n.management {
            let _ = write!(s, "  (management)");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nvms:");
    for (vm, vs) in plan.vms.iter().zip(&spec.vms) {
        if vs.provider == config::Provider::Ssh {
            let _ = writeln!(
                s,
                "  {:<12} an existing machine (vm-provider: ssh), ssh {}@{} ({})",
                vm.name, vs.ssh_user, vm.ip, vm.fqdn
            );
            for nic in &vm.nics {
                let ip = nic.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(s, "    {:<6} net {:<10} {}", nic.name, nic.net, ip);
            }
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<12} {} MiB, {} vcpu, ssh {}@{} ({}){}",
            vm.name,
            vs.memory_mib,
            vs.vcpu,
            vs.ssh_user,
            vm.ip,
            vm.fqdn,
            if vs.bootstrap { "" } else { ", no bootstrap" }
        );
        for nic in &vm.nics {
            let ip = nic.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(s, "    {:<6} net {:<10} {:<15} {}", nic.name, nic.net, ip, nic.mac);
        }
        for d in &vm.disks {
            let bus = match d.bus {
                DiskBus::Virtio => "virtio-blk",
                DiskBus::Scsi => "virtio-scsi",
                DiskBus::Ide => "ide",
            };
            let src = match &d.source {
                DiskSource::Template { name, version, .. } => match version {
                    Some(v) => format!("template {name}:{v}"),
                    None => format!("template {name}"),
                },
                DiskSource::TemplateFile { path } => format!("overlay on {}", path.display()),
                DiskSource::Empty { size_bytes } => format!("empty {}", format_size(*size_bytes)),
                DiskSource::File {
                    path,
                    make_a_copy: true,
                } => format!("copy of {}", path.display()),
                DiskSource::File { .. } => "file, used in place".to_owned(),
            };
            let _ = writeln!(
                s,
                "    {:<6} disk {:<9} {:<11} {:<5} {}  -> {}",
                d.dev,
                d.name,
                bus,
                d.format.as_str(),
                src,
                d.path.display()
            );
        }
    }
    s
}

/// `lago gc` as text.
pub fn gc_table(r: &GcReport, dry_run: bool) -> String {
    use crate::ops::gc::Verdict;
    let mut s = String::new();
    for u in &r.unreachable {
        let _ = writeln!(s, "{}: not reachable ({})", u.uri, u.error);
    }
    for id in &r.not_found {
        let _ = writeln!(s, "{id}: no such environment found");
    }
    if r.envs.is_empty() {
        s.push_str("no lago environments found\n");
    }
    for f in &r.envs {
        let (state, why) = match &f.verdict {
            Verdict::Live(why) => ("live", why.as_str()),
            Verdict::Kept => ("kept", "LAGO_KEEP kept it"),
            Verdict::Orphaned(why) => ("orphaned", why.as_str()),
            Verdict::Elsewhere(why) => ("elsewhere", why.as_str()),
            Verdict::Gone(why) => ("gone", why.as_str()),
        };
        let action = match (&f.verdict, f.removed, &f.error) {
            (_, _, Some(e)) => format!("NOT removed: {e}"),
            (_, true, _) => "removed".to_owned(),
            (Verdict::Gone(_), false, None) if dry_run => "would be removed".to_owned(),
            (Verdict::Gone(_), false, None) => "not removed (out of time)".to_owned(),
            (v, false, None) if v.needs_naming() => format!("left alone (`lago gc --orphans {}` removes it)", f.env_id),
            _ => "left alone".to_owned(),
        };
        let _ = writeln!(
            s,
            "{} {state}: {action} ({} domains, {} networks, {} leases; {}) - {why}",
            f.env_id,
            f.domains.len(),
            f.networks.len(),
            f.subnets.len(),
            f.workdir
                .as_ref()
                .map_or_else(|| "no workdir".to_owned(), |w| w.display().to_string()),
        );
    }
    s
}

/// `lago template list` as a table.
pub fn templates_table(root: &Path, list: &[StoreEntry]) -> String {
    let mut s = format!("store: {}\n", root.display());
    if list.is_empty() {
        s.push_str("  (empty: templates are built or pulled on first use)\n");
        return s;
    }
    let _ = writeln!(
        s,
        "  {:<24} {:<18} {:>8} {:>8}  {:<20} SOURCE",
        "NAME", "VERSION", "DISK", "VIRTUAL", "LAST USED"
    );
    for e in list {
        let t = &e.template;
        let last = last_used(e.last_used);
        let _ = writeln!(
            s,
            "  {:<24} {:<18} {:>8} {:>8}  {:<20} {}",
            t.name,
            t.version,
            approx_size(e.size_on_disk),
            approx_size(e.virtual_size),
            last,
            t.source.as_deref().unwrap_or("-")
        );
        for u in &e.used_by {
            let _ = writeln!(s, "      used by {}", u.display());
        }
    }
    s
}

/// How long ago, for people.
/// When something was last used, as a table shows it (`never` for no record).
fn last_used(at: Option<std::time::SystemTime>) -> String {
    at.and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map(|d| ago(d.as_secs()))
        .unwrap_or_else(|| "never".to_owned())
}

fn ago(secs: u64) -> String {
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// `lago snapshot --list` as text.
pub fn snapshots_table(snaps: &[crate::env::snapshot::SnapshotInfo]) -> String {
    let mut s = String::new();
    if snaps.is_empty() {
        s.push_str("no snapshots\n");
    }
    for snap in snaps {
        let kinds: Vec<String> = snap
            .vms
            .iter()
            .map(|(vm, k)| format!("{vm}: {k:?}").to_lowercase())
            .collect();
        let _ = writeln!(
            s,
            "{}  (taken at {} s since the epoch; {})",
            snap.name,
            snap.taken_unix,
            kinds.join(", ")
        );
    }
    s
}

/// `lago template publish` as text.
pub fn published_table(dir: &Path, done: &[crate::host::store::manage::Published]) -> String {
    let mut s = String::new();
    for p in done {
        let _ = writeln!(
            s,
            "{}  {}  {} -> {} xz{}",
            p.template,
            p.file.display(),
            approx_size(p.image_bytes),
            approx_size(p.xz_bytes),
            if p.unchanged { " (already published)" } else { "" }
        );
    }
    let _ = writeln!(s, "repository: {}", dir.join("repo.metadata").display());
    s
}

/// `lago template verify` as text, and whether every template is intact.
pub fn verified_table(results: &[crate::host::store::manage::Verified]) -> (String, bool) {
    let mut s = String::new();
    let mut ok = true;
    for (t, r) in results {
        let verdict = match r {
            Ok(true) => "ok".to_owned(),
            Ok(false) => {
                ok = false;
                "CHANGED (its sha256 is not the one recorded)".to_owned()
            }
            Err(e) => {
                ok = false;
                format!("error: {}", crate::util::text::error_chain(e))
            }
        };
        let _ = writeln!(s, "{}:{}  {verdict}", t.name, t.version);
    }
    (s, ok)
}

/// `lago template prune` as text.
pub fn pruned_table(r: &crate::host::store::manage::PruneReport, dry_run: bool) -> String {
    let mut s = String::new();
    let verb = if dry_run { "would remove" } else { "removed" };
    for p in &r.removed {
        let _ = writeln!(s, "{verb} {} ({})", p.template, approx_size(p.bytes));
    }
    for u in &r.in_use {
        let users: Vec<String> = u.used_by.iter().map(|u| u.display().to_string()).collect();
        let _ = writeln!(s, "kept {}: used by {}", u.template, users.join(", "));
    }
    for id in &r.newest {
        let _ = writeln!(s, "kept {id}: newest version (--all removes it)");
    }
    let freed: u64 = r.removed.iter().map(|p| p.bytes).sum();
    let _ = writeln!(s, "{verb} {} templates, {}", r.removed.len(), approx_size(freed));
    s
}

/// Where a copy went and what it skipped (the CLI prints it on stderr, so
/// that stdout stays clean).
pub fn copy_summary(vm: &str, report: &crate::guest::ssh::CopyReport) -> String {
    let place = if report.destination.is_empty() {
        "?"
    } else {
        &report.destination
    };
    let mut s = format!("copied to {place} ({} bytes)\n", report.bytes);
    for k in &report.skipped {
        let _ = writeln!(
            s,
            "skipped {} on {vm}: a {}; only regular files and folders are copied",
            k.path, k.kind
        );
    }
    s
}

/// `lago collect` as text.
pub fn collect_table(r: &crate::env::collect::CollectReport) -> String {
    let mut s = format!("collected into {}\n", r.dir.display());
    let rel = |p: &Path| p.strip_prefix(&r.dir).unwrap_or(p).display().to_string();
    if let Some(log) = &r.env_log {
        let _ = writeln!(s, "  {:<28} the environment's log", rel(log));
    }
    for v in &r.vms {
        for f in &v.files {
            let skipped = if f.skipped > 0 {
                format!(
                    ", {} entries skipped (only regular files and folders are copied)",
                    f.skipped
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {:<28} {}:{} ({}{skipped})",
                rel(&f.path),
                v.vm,
                f.source,
                approx_size(f.bytes)
            );
        }
        for m in &v.missing {
            let _ = writeln!(s, "  {:<28} {}:{} missing: {}", "-", v.vm, m.source, m.why);
        }
    }
    s
}

/// `lago deploy` as text (the scripts' output went by as they ran).
pub fn deploy_table(r: &crate::env::deploy::DeployReport) -> String {
    let mut s = String::new();
    for v in &r.vms {
        if v.scripts.is_empty() {
            let _ = writeln!(s, "{}: no deploy scripts", v.vm);
        }
        for run in &v.scripts {
            let _ = writeln!(s, "{}: {} ok ({:.1} s)", v.vm, run.script.display(), run.secs);
        }
    }
    s
}

/// `lago export` as text.
pub fn export_table(r: &crate::env::export::ExportReport) -> String {
    let mut s = format!(
        "exported {} ({}) into {}\n",
        r.vms.join(", "),
        if r.layered { "layered" } else { "standalone disks" },
        r.dir.display()
    );
    for f in &r.files {
        let _ = writeln!(
            s,
            "  {:<32} {}",
            f.path.strip_prefix(&r.dir).unwrap_or(&f.path).display(),
            approx_size(f.bytes)
        );
    }
    let _ = writeln!(
        s,
        "start it with: lago -w <new workdir> init {} && lago -w <new workdir> start",
        r.init_file.display()
    );
    s
}
