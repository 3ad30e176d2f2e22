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
                    (out.trim() == "vm01.lago.local")
                        .then_some(())
                        .ok_or(format!("got {out:?}"))
                })
                .ignored_test("boots_once", |_| match lago::harness::boots("tests/envs/tiny1.yaml") {
                    1 => Ok(()),
                    n => Err(format!("booted {n} times")),
                })
                .ignored_test("gateway_is_reachable", |env| {
                    let gw = env.get_nets()["lago"].gateway.ok_or("no gateway")?;
                    ssh_ok(env, "vm01", &["ping", "-c1", "-W3", &gw.to_string()]).map(|_| ())
                }),
        )
        .run()
}
