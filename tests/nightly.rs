//! A nightly suite the way a user writes one: ordinary `#[lago_env]` tests
//! and one line, `lago::harness::main!()`, in a `harness = false` target.
//! The runner runs them (filters, `--list`, `--junit`, failure artifacts).
//! They boot VMs, so they are ignored unless asked for (`--include-ignored`,
//! as scripts/test does).

use lago::{Env, Vm, lago_env};

#[lago_env("tests/envs/tiny1.yaml")]
#[ignore = "boots VMs: run through scripts/test"]
fn knows_its_name(vm01: &Vm) {
    assert_eq!(vm01.ssh(["hostname", "-f"]).unwrap().out.trim(), "vm01.lago.local");
}

// Starts from the state right after boot, whatever the other tests did.
#[lago_env("tests/envs/tiny1.yaml", isolation = "reset", timeout = "120s")]
#[ignore = "boots VMs: run through scripts/test"]
fn starts_clean(env: &Env, vm01: &Vm) -> Result<(), lago::Error> {
    let st = vm01.ssh(["test", "-e", "/root/dirty"])?;
    assert!(!st.success(), "a resetting test never sees another test's changes");
    vm01.ssh(["touch", "/root/dirty"])?;
    assert_eq!(env.snapshots()?.len(), 1, "the post-boot snapshot");
    Ok(())
}

#[lago_env("tests/envs/tiny1.yaml")]
#[ignore = "boots VMs: run through scripts/test"]
fn may_leave_a_mess(vm01: &Vm) {
    assert!(vm01.ssh(["touch", "/root/dirty"]).unwrap().success());
}

lago::harness::main!();
