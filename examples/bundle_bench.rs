//! Failure-bundle figures (a benchmark, not a test): for one `tiny` VM and
//! for the two-VM `debian-12` environment of `tests/envs/debian.yaml`, the
//! time to save a bundle of the running environment (every VM paused,
//! saved, resumed), its size, and the time `Env::replay` takes until every
//! VM answers SSH again.
//!
//! ```sh
//! cargo build --release --example bundle_bench
//! scripts/netns-run target/release/examples/bundle_bench [--tiny-only]
//! ```

use std::path::Path;
use std::time::Instant;

use lago::env::bundle::BundleOptions;
use lago::{Env, InitOptions};

/// Boots `file`, writes a file and starts a process in each VM, bundles it,
/// destroys it, replays the bundle and destroys that; prints the figures.
fn round(file: &Path, what: &str, tmp: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let env = Env::init(
        file,
        InitOptions {
            workdir: Some(tmp.join(format!("env-{what}-{n}"))),
            ..Default::default()
        },
    )?;
    let bundle = tmp.join(format!("bundle-{what}-{n}"));
    let made = (|| -> lago::Result<_> {
        env.start(&[])?;
        for vm in env.get_vms().values() {
            vm.succeed([
                "sh",
                "-c",
                "echo state > /tmp/marker; setsid sleep 1000 </dev/null >/dev/null 2>&1 &",
            ])?;
        }
        env.bundle(&bundle, &BundleOptions::default())
    })();
    env.destroy()?;
    let r = made?;
    let t = Instant::now();
    let replayed = Env::replay(
        &bundle,
        InitOptions {
            workdir: Some(tmp.join(format!("replayed-{what}-{n}"))),
            ..Default::default()
        },
    )?;
    let replay = t.elapsed();
    let check = replayed
        .get_vms()
        .values()
        .try_for_each(|vm| vm.succeed(["test", "-f", "/tmp/marker"]).map(|_| ()));
    replayed.destroy()?;
    check?;
    println!(
        "{what}: bundle {:.1} MiB ({} VMs), saved in {:.2} s; replayed -> every VM answered SSH in {:.2} s",
        r.bytes as f64 / (1u64 << 20) as f64,
        r.vms.len(),
        r.secs,
        replay.as_secs_f64()
    );
    std::fs::remove_dir_all(&bundle)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for n in 0..3 {
        round(&root.join("tests/envs/tiny1.yaml"), "tiny, 1 VM", tmp.path(), n)?;
    }
    if !std::env::args().any(|a| a == "--tiny-only") {
        round(&root.join("tests/envs/debian.yaml"), "debian-12, 2 VMs", tmp.path(), 0)?;
    }
    Ok(())
}
