//! A nightly system suite: ordinary `#[lago_env]` tests and one line,
//! `lago::harness::main!()`. In a project, put this in `tests/nightly.rs`
//! with `[[test]] name = "nightly" harness = false` in Cargo.toml; here it
//! is an example:
//!
//! ```sh
//! scripts/netns-run cargo run --example nightly -- --junit target/nightly.xml
//! ```
//!
//! The runner takes libtest's arguments (filters, `--list`, `--exact`,
//! `--test-threads`) and writes JUnit XML; a failing test gets its failure
//! artifacts; a test past its timeout fails instead of hanging the night.

use lago::{Env, Vm, lago_env};

// Shared: runs in parallel with the other shared tests of the environment.
#[lago_env("examples/lab.yaml", timeout = "5m")]
fn engine_reaches_storage_over_the_storage_net(engine: &Vm) -> Result<(), lago::Error> {
    let st = engine.ssh(["ping", "-c1", "-W3", "storage-storage"])?;
    assert!(st.success(), "{st:?}");
    Ok(())
}

// Reset: starts from the state right after boot, with the environment to itself.
#[lago_env("examples/lab.yaml", isolation = "reset", timeout = "5m")]
fn export_disk_starts_empty(storage: &Vm) -> Result<(), lago::Error> {
    let st = storage.ssh(["sh", "-c", "head -c 4096 /dev/sdb | tr -d '\\0' | wc -c"])?;
    assert_eq!(st.out.trim(), "0", "nothing written to the export disk yet");
    // Leave a mark: the next resetting test will not see it.
    storage.ssh(["sh", "-c", "echo mark | dd of=/dev/sdb conv=fsync 2>/dev/null"])?;
    Ok(())
}

// Fresh: an environment of its own, for a test that breaks things.
#[lago_env("examples/quickstart.yaml", isolation = "fresh", timeout = "5m")]
fn survives_losing_its_root_filesystem(env: &Env, vm01: &Vm) -> Result<(), lago::Error> {
    vm01.ssh(["sh", "-c", "rm -rf /usr/bin/* 2>/dev/null; true"])?;
    assert_eq!(env.get_vms().len(), 1);
    Ok(())
}

lago::harness::main!();
