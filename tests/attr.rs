//! `#[lago_env]` and the rstest fixtures against one environment, shared by
//! the whole test binary: every test here checks it booted exactly once.
//!
//! These boot VMs: a plain `cargo test` lists them as ignored; `scripts/test`
//! runs them inside the test network namespace.

use lago::fixtures::{SuiteEnv, SuiteVm};
use lago::{Env, Vm, lago_env};
use rstest::{fixture, rstest};

const PAIR: &str = "tests/envs/pair.yaml";

fn booted_once() {
    assert_eq!(
        lago::harness::boots(PAIR),
        1,
        "the environment boots once per test binary"
    );
}

// The usage, as written (plus the ignore marker).
#[lago_env("tests/envs/pair.yaml")]
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn vm01_knows_its_name(vm01: &Vm) {
    let st = vm01.ssh(["hostname", "-f"]).unwrap();
    assert_eq!(st.code, 0);
    assert_eq!(st.out.trim(), "vm01.lago.local");
    booted_once();
}

#[lago_env("tests/envs/pair.yaml")]
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn sees_both(env: &Env, vm02: &Vm) {
    assert_eq!(env.get_vms().len(), 2);
    assert!(vm02.ssh(["ping", "-c1", "vm01"]).unwrap().success());
    booted_once();
}

// No #[test]: the attribute adds it. Results work as return types.
#[lago_env("tests/envs/pair.yaml")]
#[ignore = "boots VMs: run through scripts/test"]
fn returns_a_result(the_env: &Env) -> Result<(), lago::Error> {
    let st = the_env.vm("vm02")?.ssh(["cat", "/etc/hostname"])?;
    assert_eq!(st.out.trim(), "vm02");
    booted_once();
    Ok(())
}

// With rstest: #[lago_env] goes above #[rstest]. Cases ...
#[lago_env("tests/envs/pair.yaml")]
#[rstest]
#[case("vm02")]
#[case("vm02.lago.local")]
#[case("vm02-eth0")]
#[ignore = "boots VMs: run through scripts/test"]
fn resolves_names(vm01: &Vm, #[case] name: &str) {
    let st = vm01.ssh(["ping", "-c1", "-W3", name]).unwrap();
    assert!(st.success(), "{name}: {st:?}");
    booted_once();
}

// ... values ...
#[lago_env("tests/envs/pair.yaml")]
#[rstest]
#[ignore = "boots VMs: run through scripts/test"]
fn echoes_words(vm02: &Vm, #[values("plain", "two words", "it's")] word: &str) {
    assert_eq!(vm02.ssh(["echo", word]).unwrap().out, format!("{word}\n"));
    booted_once();
}

// ... and fixtures keep working.
#[fixture]
fn greeting() -> String {
    "hello from a fixture".to_owned()
}

#[lago_env("tests/envs/pair.yaml")]
#[rstest]
#[ignore = "boots VMs: run through scripts/test"]
fn fixtures_still_resolve(vm01: &Vm, greeting: String) {
    let st = vm01.ssh_with("cat", Some(greeting.as_bytes()), None).unwrap();
    assert_eq!(st.out, greeting);
    booted_once();
}

// The rstest way: fixtures wrapping lago::fixtures.
#[fixture]
fn pair() -> SuiteEnv {
    lago::fixtures::env(PAIR)
}

#[fixture]
fn second() -> SuiteVm {
    lago::fixtures::vm(PAIR, "vm02")
}

#[rstest]
#[ignore = "boots VMs: run through scripts/test"]
fn fixture_env_is_the_same_env(pair: SuiteEnv) {
    assert_eq!(pair.get_vms().len(), 2);
    assert_eq!(pair.vm("vm01").ssh(["hostname"]).unwrap().out.trim(), "vm01");
    booted_once();
}

#[rstest]
#[ignore = "boots VMs: run through scripts/test"]
fn fixture_vm(second: SuiteVm) {
    assert_eq!(second.name(), "vm02");
    let size = second.ssh(["cat", "/sys/block/vda/size"]).unwrap();
    assert_eq!(size.out.trim().parse::<u64>().unwrap() * 512, 1 << 30);
    booted_once();
}

// Isolation: a resetting test starts from the VMs' state right after boot
// (a memory revert) and has the environment to itself.
fn starts_from_boot(vm01: &Vm, who: &str) {
    let st = vm01.ssh(["test", "-e", "/root/reset-mark"]).unwrap();
    assert!(!st.success(), "{who}: the other resetting test's mark is gone");
    let st = vm01
        .ssh(["sh", "-c", &format!("echo {who} > /root/reset-mark")])
        .unwrap();
    assert!(st.success());
    booted_once();
}

#[lago_env("tests/envs/pair.yaml", isolation = "reset")]
#[ignore = "boots VMs: run through scripts/test"]
fn reset_starts_from_boot_a(vm01: &Vm) {
    starts_from_boot(vm01, "a");
}

#[lago_env("tests/envs/pair.yaml", isolation = "reset", timeout = "120s")]
#[ignore = "boots VMs: run through scripts/test"]
fn reset_starts_from_boot_b(vm01: &Vm) {
    starts_from_boot(vm01, "b");
}

// An environment of its own: booted for this test, destroyed after it.
#[lago_env("tests/envs/tiny1.yaml", isolation = "fresh")]
#[ignore = "boots VMs: run through scripts/test"]
fn fresh_gets_an_environment_of_its_own(env: &Env, vm01: &Vm) {
    assert_eq!(env.get_vms().len(), 1);
    assert_eq!(vm01.ssh(["hostname"]).unwrap().out.trim(), "vm01");
    // Its own workdir, even under nextest (where suite environments are shared by the run).
    // `env` in a folder the harness made (and keeps: its name is never released).
    let w = env.workdir();
    let dir = w.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    assert!(dir.starts_with("lago-test-") && w.ends_with("env"), "{}", w.display());
}
