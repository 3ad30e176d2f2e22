//! Figures for the built-in `debian-12` cloud image (a benchmark, not a
//! test): image sizes, then three times start → SSH answered (GRUB, kernel,
//! systemd, cloud-init, OpenSSH; or restored from the boot image the first
//! run saved), start → `systemctl is-system-running`, and `lago shutdown`
//! (ACPI) of one VM, each on a fresh environment; the boot image's size.
//!
//! Build the image first (it needs Debian's mirror), then run inside the
//! test network namespace:
//!
//! ```sh
//! cargo run --release --bin lago -- template build debian-12
//! scripts/netns-run cargo run --release --example debian_bench
//! ```

use std::time::{Duration, Instant};

use lago::store::TemplateStore;
use lago::{Env, InitOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = TemplateStore::from_env().offline(true);
    let t = store.resolve("debian-12", None)?;
    let (on_disk, virtual_size) = lago::image::sizes(&t.disk)?;
    println!(
        "debian-12 {}: virtual {:.1} GiB, on disk {:.1} MiB, built in {:.0} s",
        t.version,
        virtual_size as f64 / (1u64 << 30) as f64,
        on_disk as f64 / (1u64 << 20) as f64,
        t.build_secs
    );
    let tmp = tempfile::tempdir()?;
    // Run 1 boots and saves a boot image (unless an earlier run saved one);
    // runs 2 and 3 restore from it. `--cold` boots every time.
    let cold = std::env::args().any(|a| a == "--cold");
    for run in 1..=3 {
        let env = Env::init(
            "examples/debian.yaml",
            InitOptions {
                workdir: Some(tmp.path().join(format!("env{run}"))),
                store: Some(store.clone()),
                warm: cold.then_some(false),
                ..Default::default()
            },
        )?;
        let r = (|| -> lago::Result<()> {
            let t = Instant::now();
            env.start(&[])?;
            let ssh = t.elapsed();
            let how = env.came_up().get("vm01").cloned().unwrap_or_default();
            let vm = env.vm("vm01")?;
            let st = vm.ssh(["systemctl", "is-system-running", "--wait"])?;
            let up = t.elapsed();
            let t = Instant::now();
            env.shutdown(&[], Duration::from_secs(120))?;
            println!(
                "run {run} ({how}): start -> SSH answered {ssh:.1?} (target when restored: <= 3 s), -> systemd {} {up:.1?}; shutdown (ACPI) {:.1?}",
                st.out.trim(),
                t.elapsed()
            );
            Ok(())
        })();
        env.destroy()?;
        r?;
    }
    let file = std::path::absolute("examples/debian.yaml")?;
    for e in lago::store::warm::BootImages::new(&store).entries() {
        if e.init_file == file {
            println!(
                "boot image {}: {:.1} MiB on disk for {} VM(s)",
                e.key,
                e.bytes as f64 / (1u64 << 20) as f64,
                e.vms.len()
            );
        }
    }
    Ok(())
}
