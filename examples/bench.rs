//! Speed figures (a benchmark, not a test). First the boot budget: a
//! yardstick (a bare `qemu-system-x86_64 -accel tcg` boot of the host's
//! Debian cloud kernel with an initramfs whose `/init` prints a line and
//! powers off), then, through the `lago` command, start → first command
//! answered (1 VM and 4), cold (`lago start --cold`) and restored from a
//! boot image (warm start), destroy, stop and the full cycle, each in
//! seconds, as a ratio to the yardstick and beside its target; the boot
//! images' sizes. Then: template build
//! cold and warm, `init`, domain start → SSH, SSH exec round trip, overlay
//! size after boot, snapshot and revert (1 VM and 4).
//!
//! ```sh
//! scripts/netns-run cargo run --release --example bench
//! ```
//!
//! With `--session-as USER` (run as root; USER is an ordinary user, as
//! `scripts/rootless-test` makes `lagotest`), the cold starts are timed again
//! as USER in session mode (`lago init --session`, the user's own libvirt
//! daemon), in the same run, as a ratio to system mode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lago::store::TemplateStore;
use lago::{Env, InitOptions};

/// A `newc` cpio archive of `(path, mode, data)` entries.
fn cpio(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |name: &str, mode: u32, data: &[u8], ino: u32| {
        let hdr = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(hdr.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        put(name, *mode, data, i as u32 + 1);
    }
    put("TRAILER!!!", 0, &[], 0);
    out
}

/// The host's Debian cloud kernel (the newest).
fn cloud_kernel() -> Option<PathBuf> {
    let mut k: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        })
        .collect();
    k.sort();
    k.pop()
}

/// The yardstick: wall time of a bare TCG boot to `/init` and power-off.
fn yardstick(dir: &Path) -> Result<Duration, Box<dyn std::error::Error>> {
    let kernel = cloud_kernel().ok_or("no /boot/vmlinuz-*-cloud-amd64 (scripts/setup-host installs it)")?;
    let busybox = std::fs::read("/bin/busybox")?;
    let init = b"#!/bin/busybox sh\n/bin/busybox echo lago-yardstick: up\n/bin/busybox poweroff -f\n";
    let initrd = dir.join("yardstick.cpio");
    std::fs::write(
        &initrd,
        cpio(&[
            ("bin", 0o040755, b""),
            ("bin/busybox", 0o100755, &busybox),
            ("init", 0o100755, init),
        ]),
    )?;
    let t = Instant::now();
    let out = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
            "-kernel",
        ])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .output()?;
    let took = t.elapsed();
    if !String::from_utf8_lossy(&out.stdout).contains("lago-yardstick: up") {
        return Err(format!(
            "the yardstick guest did not print its line: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(took)
}

/// The `lago` binary beside this example (`target/<profile>/lago`).
fn lago_bin() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("lago"))
        .filter(|p| p.is_file())
        .ok_or("build the lago binary first: cargo build --release --bin lago")?;
    Ok(bin)
}

fn run(bin: &Path, workdir: &Path, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(bin).arg("-w").arg(workdir).args(args).output()?;
    if !out.status.success() {
        return Err(format!("lago {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// Start → first command, destroy, stop and the full cycle through the CLI, against the targets.
fn budget(tmp: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let yard: Vec<Duration> = (0..3).map(|_| yardstick(tmp)).collect::<Result<_, _>>()?;
    let y = median(yard.clone()).as_secs_f64();
    println!(
        "yardstick (bare TCG boot to /init and power-off), 3 runs: {} (median {y:.2}s)",
        yard.iter()
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bin = lago_bin()?;
    let one = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envs/tiny1.yaml");
    let four = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/four.yaml");
    let show = |what: &str, runs: &[Duration], target: f64| {
        let m = median(runs.to_vec()).as_secs_f64();
        println!(
            "{what}: {} -> median {m:.2}s = {:.2} x yardstick (target <= {target} x: {})",
            runs.iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            m / y,
            if m / y <= target { "met" } else { "not yet" }
        );
    };
    let (mut start1, mut start4, mut destroy, mut stop, mut cycle) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..3 {
        let w = tmp.join(format!("budget-{round}"));
        let t0 = Instant::now();
        run(&bin, &w, &["init", one.to_str().unwrap_or_default()])?;
        let t = Instant::now();
        run(&bin, &w, &["start", "--cold"])?;
        run(&bin, &w, &["shell", "vm01", "--", "hostname"])?;
        start1.push(t.elapsed());
        let t = Instant::now();
        run(&bin, &w, &["destroy", "--yes"])?;
        destroy.push(t.elapsed());
        cycle.push(t0.elapsed());
        let w = tmp.join(format!("budget-four-{round}"));
        run(&bin, &w, &["init", four.to_str().unwrap_or_default()])?;
        let t = Instant::now();
        run(&bin, &w, &["start", "--cold"])?;
        for vm in ["vm01", "vm02", "vm03", "vm04"] {
            run(&bin, &w, &["shell", vm, "--", "hostname"])?;
        }
        start4.push(t.elapsed());
        let t = Instant::now();
        run(&bin, &w, &["stop"])?;
        stop.push(t.elapsed());
        run(&bin, &w, &["destroy", "--yes"])?;
    }
    show(
        "cold: start -> first command answered, 1 VM (lago start --cold; lago shell vm01 -- hostname)",
        &start1,
        0.68,
    );
    show("cold: start -> every VM answered a command, 4 VMs", &start4, 1.35);
    show("destroy, running 1-VM env", &destroy, 0.14);
    show("stop, running 4-VM env", &stop, 0.14);
    show("cold: full cycle: init + start + hostname + destroy, 1 VM", &cycle, 1.1);
    if let Some(user) = session_user() {
        session_budget(&bin, &user, &one, &four, (&start1, &start4))?;
    }
    warm_budget(&bin, tmp, &one, &four, &show)
}

/// The user after `--session-as`.
fn session_user() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--session-as")?;
    args.get(at + 1).cloned()
}

/// `lago -w WORKDIR ARGS…` as `user`, with only what session mode needs:
/// the user's home (its template store) and runtime folder (its daemon's socket).
fn run_as(user: &User, bin: &Path, workdir: &Path, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new("runuser")
        .args([
            "-u",
            &user.name,
            "--",
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        .arg(format!("HOME={}", user.home))
        .arg(format!("XDG_RUNTIME_DIR={}", user.run))
        .arg(format!(
            "LAGO_IN_NETNS={}",
            std::env::var("LAGO_IN_NETNS").unwrap_or_default()
        ))
        .arg(bin)
        .arg("-w")
        .arg(workdir)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "lago {args:?} as {}: {}",
            user.name,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// The user session mode is timed as: name, home and a runtime folder of
/// its own for this run (its libvirt daemon's sockets).
struct User {
    name: String,
    home: String,
    run: String,
}

impl User {
    fn new(name: &str) -> Result<User, Box<dyn std::error::Error>> {
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        let home = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name) && f.len() >= 7)
            .map(|f| f[5].to_owned())
            .ok_or_else(|| format!("no user {name} (scripts/rootless-test makes lagotest)"))?;
        let out = Command::new("runuser")
            .args(["-u", name, "--", "mktemp", "-d", "/tmp/lago-bench-run.XXXXXX"])
            .output()?;
        let run = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || run.is_empty() {
            return Err(format!("cannot make a runtime folder for {name}").into());
        }
        Ok(User {
            name: name.to_owned(),
            home,
            run,
        })
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Its daemon goes with the run.
        let _ = Command::new("pkill")
            .args(["-u", &self.name, "-x", "libvirtd"])
            .status();
        let _ = std::fs::remove_dir_all(&self.run);
    }
}

/// The cold starts again as `user` in session mode, against system mode's (`system`: 1 VM, 4 VMs).
fn session_budget(
    bin: &Path,
    name: &str,
    one: &Path,
    four: &Path,
    system: (&[Duration], &[Duration]),
) -> Result<(), Box<dyn std::error::Error>> {
    let user = &User::new(name)?;
    let home = tempfile::Builder::new().prefix("lago-bench-session").tempdir()?;
    Command::new("chown").arg(name).arg(home.path()).status()?;
    let files = [(one, vec!["vm01"]), (four, vec!["vm01", "vm02", "vm03", "vm04"])];
    // Once, untimed: the user's daemon starts and `tiny` is built for the user if missing.
    let w = home.path().join("prime");
    run_as(user, bin, &w, &["init", "--session", one.to_str().unwrap_or_default()])?;
    run_as(user, bin, &w, &["start"])?;
    run_as(user, bin, &w, &["destroy", "--yes"])?;
    let mut runs = [vec![], vec![]];
    for round in 0..3 {
        for (i, (file, vms)) in files.iter().enumerate() {
            let w = home.path().join(format!("session-{i}-{round}"));
            run_as(user, bin, &w, &["init", "--session", file.to_str().unwrap_or_default()])?;
            let t = Instant::now();
            run_as(user, bin, &w, &["start"])?;
            for vm in vms {
                run_as(user, bin, &w, &["shell", vm, "--", "hostname"])?;
            }
            runs[i].push(t.elapsed());
            run_as(user, bin, &w, &["destroy", "--yes"])?;
        }
    }
    for (what, session, system) in [("1 VM", &runs[0], system.0), ("4 VMs", &runs[1], system.1)] {
        let (m, sys) = (
            median(session.clone()).as_secs_f64(),
            median(system.to_vec()).as_secs_f64(),
        );
        println!(
            "session mode as {name}: start -> every VM answered a command, {what}: {} -> median {m:.2}s = {:.2} x system mode's {sys:.2}s (target <= 1.2 x: {})",
            session
                .iter()
                .map(|d| format!("{:.2}s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            m / sys,
            if m / sys <= 1.2 { "met" } else { "not yet" }
        );
    }
    Ok(())
}

/// The same starts restored from boot images (warm start): the first start
/// of each init file saves one (timed: boot + save), the next three restore.
fn warm_budget(
    bin: &Path,
    tmp: &Path,
    one: &Path,
    four: &Path,
    show: &dyn Fn(&str, &[Duration], f64),
) -> Result<(), Box<dyn std::error::Error>> {
    for (file, what) in [(one, "1 VM"), (four, "4 VMs")] {
        let w = tmp.join(format!("prime-{}", what.replace(' ', "")));
        run(bin, &w, &["init", file.to_str().unwrap_or_default()])?;
        let t = Instant::now();
        run(bin, &w, &["start"])?;
        println!(
            "warm: first start ({what}; boots, or restores a boot image an earlier run saved): {:.2}s",
            t.elapsed().as_secs_f64()
        );
        run(bin, &w, &["destroy", "--yes"])?;
    }
    let (mut start1, mut start4, mut cycle) = (vec![], vec![], vec![]);
    for round in 0..3 {
        let w = tmp.join(format!("warm-{round}"));
        let t0 = Instant::now();
        run(bin, &w, &["init", one.to_str().unwrap_or_default()])?;
        let t = Instant::now();
        run(bin, &w, &["start"])?;
        run(bin, &w, &["shell", "vm01", "--", "hostname"])?;
        start1.push(t.elapsed());
        run(bin, &w, &["destroy", "--yes"])?;
        cycle.push(t0.elapsed());
        let w = tmp.join(format!("warm-four-{round}"));
        run(bin, &w, &["init", four.to_str().unwrap_or_default()])?;
        let t = Instant::now();
        run(bin, &w, &["start"])?;
        for vm in ["vm01", "vm02", "vm03", "vm04"] {
            run(bin, &w, &["shell", vm, "--", "hostname"])?;
        }
        start4.push(t.elapsed());
        run(bin, &w, &["destroy", "--yes"])?;
    }
    show("warm: start -> first command answered, 1 VM (restored)", &start1, 0.35);
    show(
        "warm: start -> every VM answered a command, 4 VMs (restored)",
        &start4,
        1.0,
    );
    show("warm: full cycle: init + start + hostname + destroy, 1 VM", &cycle, 1.1);
    for e in lago::store::warm::BootImages::new(&TemplateStore::from_env()).entries() {
        if e.init_file == one || e.init_file == four {
            println!(
                "boot image {} ({}): {:.1} MiB on disk for {} VMs",
                e.key,
                e.init_file.display(),
                e.bytes as f64 / (1u64 << 20) as f64,
                e.vms.len()
            );
        }
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Snapshot, then three reverts (each to a running guest answering SSH, clock set).
fn snapshot_figures(env: &Env, what: &str) -> lago::Result<()> {
    let t = Instant::now();
    env.snapshot("bench")?;
    println!("snapshot (disks + memory), {what}: {:.2?}", t.elapsed());
    let mut reverts = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        env.revert("bench")?;
        reverts.push(t.elapsed());
    }
    println!(
        "revert -> SSH answered, {what}, 3 runs: {}",
        reverts
            .iter()
            .map(|d| format!("{d:.2?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    budget(tmp.path())?;
    if std::env::args().any(|a| a == "--budget-only") {
        return Ok(());
    }

    let cold_store = TemplateStore::new(tmp.path().join("store"));
    let t = Instant::now();
    cold_store.resolve("tiny", None)?;
    let cold = t.elapsed();
    let t = Instant::now();
    cold_store.resolve("tiny", None)?;
    let warm = t.elapsed();
    println!("template tiny build: cold {cold:.2?}, warm (up to date check) {warm:.2?}");

    let opts = |dir: &str| InitOptions {
        workdir: Some(tmp.path().join(dir)),
        store: Some(cold_store.clone()),
        // Boots, as the figures below always measured (warm start is timed above).
        warm: Some(false),
        ..Default::default()
    };

    // One VM.
    let t = Instant::now();
    let env = Env::init("examples/quickstart.yaml", opts("one"))?;
    println!("init (1 VM): {:.2?}", t.elapsed());
    let run_one = || -> lago::Result<()> {
        let t = Instant::now();
        env.start(&[])?;
        println!(
            "start -> first SSH, 1 VM (network + domain + boot): {:.2?}",
            t.elapsed()
        );
        let vm = env.vm("vm01")?;
        let mut boots = Vec::new();
        for _ in 0..3 {
            vm.stop()?;
            let t = Instant::now();
            vm.start()?;
            boots.push(t.elapsed());
        }
        println!(
            "domain start -> SSH authenticated, 1 VM, 3 runs: {}",
            boots.iter().map(|d| format!("{d:.2?}")).collect::<Vec<_>>().join(", ")
        );
        let mut rtts = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let st = vm.ssh(["true"])?;
            rtts.push(t.elapsed());
            assert!(st.success());
        }
        let min = *rtts.iter().min().unwrap_or(&Duration::ZERO);
        println!(
            "ssh exec round trip over 200 calls: median {:.1?} (min {min:.1?})",
            median(rtts)
        );
        let (actual, virtual_size) = lago::image::sizes(&vm.plan().disks[0].path)?;
        println!(
            "root overlay after boot: {} KiB on disk (virtual {} MiB)",
            actual / 1024,
            virtual_size >> 20
        );
        snapshot_figures(&env, "1 VM")
    };
    let r = run_one();
    env.destroy()?;
    r?;

    // Four VMs.
    let t = Instant::now();
    let env = Env::init("examples/four.yaml", opts("four"))?;
    println!("init (4 VMs): {:.2?}", t.elapsed());
    let t = Instant::now();
    let r = env.start(&[]).and_then(|()| {
        println!("start -> all SSH, 4 VMs: {:.2?}", t.elapsed());
        snapshot_figures(&env, "4 VMs")
    });
    let t = Instant::now();
    env.destroy()?;
    println!("destroy (4 VMs): {:.2?}", t.elapsed());
    r?;
    Ok(())
}
