//! The libtest-mimic runner on a small system suite (`harness = false`).
//! Its trials boot VMs, so they are ignored unless asked for
//! (`--include-ignored`, as scripts/test does).

use lago::harness::runner::{Runner, Suite};

fn ssh_out(env: &lago::Env, vm: &str, cmd: &[&str]) -> Result<String, String> {
    let st = env
        .vm(vm)
        .map_err(|e| e.to_string())?
        .ssh(cmd)
        .map_err(|e| e.to_string())?;
    if st.success() {
        Ok(st.out)
    } else {
        Err(format!("{cmd:?} on {vm}: {st:?}"))
    }
}

fn main() {
    Runner::new()
        .suite(
            Suite::new("tests/envs/tiny1.yaml")
                .ignored_test("hostname", |env| {
                    let out = ssh_out(env, "vm01", &["hostname", "-f"])?;
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
                    ssh_out(env, "vm01", &["ping", "-c1", "-W3", &gw.to_string()]).map(|_| ())
                }),
        )
        .run()
}
