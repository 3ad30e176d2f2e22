//! The libtest-mimic runner on a small system suite (`harness = false`).
//! Its trials boot VMs, so they are ignored unless asked for
//! (`--include-ignored`, as scripts/test does).

use lago::harness::runner::{Runner, Suite, ssh_ok};

fn main() {
    Runner::new()
        .suite(
            Suite::new("tests/envs/tiny1.yaml")
                .ignored_test("hostname", |env| {
                    let out = ssh_ok(env, "vm01", &["hostname", "-f"])?;
                    if out.trim() != "vm01.lago.local" {
                        return Err(format!("got {out:?}").into());
                    }
                    Ok(())
                })
                .ignored_test("boots_once", |_| match lago::harness::boots("tests/envs/tiny1.yaml") {
                    1 => Ok(()),
                    n => Err(format!("booted {n} times").into()),
                })
                .ignored_test("gateway_is_reachable", |env| {
                    let gw = env.get_nets()["lago"].gateway.ok_or("no gateway")?;
                    ssh_ok(env, "vm01", &["ping", "-c1", "-W3", &gw.to_string()])?;
                    Ok(())
                })
                .ignored_test("lago_errors_need_no_map_err", |env| {
                    // `?` on lago::Error in a trial, no map_err.
                    let st = env.vm("vm01")?.ssh(["true"])?;
                    assert_eq!(st.code, 0);
                    match env.vm("nope") {
                        Err(lago::Error::NoSuchVm { known, .. }) if known == ["vm01"] => Ok(()),
                        other => Err(format!("expected NoSuchVm, got {other:?}").into()),
                    }
                }),
        )
        .run()
}
