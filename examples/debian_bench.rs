//! Figures for the built-in `debian-12` cloud image (a benchmark, not a
//! test): image sizes, then three times start → SSH answered (GRUB, kernel,
//! systemd, cloud-init, OpenSSH), start → `systemctl is-system-running`,
//! and `lago shutdown` (ACPI) of one VM, each on a fresh environment.
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
    for run in 1..=3 {
        let env = Env::init(
            "examples/debian.yaml",
            InitOptions {
                workdir: Some(tmp.path().join(format!("env{run}"))),
                store: Some(store.clone()),
                ..Default::default()
            },
        )?;
        let r = (|| -> lago::Result<()> {
            let t = Instant::now();
            env.start(&[])?;
            let ssh = t.elapsed();
            let vm = env.vm("vm01")?;
            let st = vm.ssh(["systemctl", "is-system-running", "--wait"])?;
            let up = t.elapsed();
            let t = Instant::now();
            env.shutdown(&[], Duration::from_secs(120))?;
            println!(
                "run {run}: start -> SSH answered {ssh:.1?}, -> systemd {} {up:.1?}; shutdown (ACPI) {:.1?}",
                st.out.trim(),
                t.elapsed()
            );
            Ok(())
        })();
        env.destroy()?;
        r?;
    }
    Ok(())
}
