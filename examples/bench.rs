//! Speed figures (a benchmark, not a test): template build cold and warm,
//! `init`, start → first SSH (1 VM), start → all SSH (4 VMs), SSH exec round
//! trip, overlay size after boot, snapshot and revert (1 VM and 4).
//!
//! ```sh
//! scripts/netns-run cargo run --release --example bench
//! ```

use std::time::{Duration, Instant};

use lago::store::TemplateStore;
use lago::{Env, InitOptions};

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
