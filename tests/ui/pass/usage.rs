// trybuild compiles these in <target>/tests/trybuild/lago, so init files are
// reached from there (paths stay relative to the crate being compiled).
// The usage of the issue, exactly; and #[lago_env] above #[rstest].
use lago::{lago_env, Env, Vm};
use rstest::rstest;

#[lago_env("../../../../tests/envs/pair.yaml")]
#[test]
fn vm01_knows_its_name(vm01: &Vm) {
    let st = vm01.ssh(["hostname", "-f"]).unwrap();
    assert_eq!(st.code, 0);
    assert_eq!(st.out.trim(), "vm01.lago.local");
}

#[lago_env("../../../../tests/envs/pair.yaml")]
#[test]
fn sees_both(env: &Env, vm02: &Vm) {
    assert_eq!(env.get_vms().len(), 2);
    assert!(vm02.ssh(["ping", "-c1", "vm01"]).unwrap().success());
}

#[lago_env("../../../../tests/envs/pair.yaml")]
#[rstest]
#[case("a b")]
fn with_rstest(vm01: &Vm, #[case] text: &str, #[values(1, 2)] n: u32) {
    let _ = (vm01, text, n);
}

fn main() {}
