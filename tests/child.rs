//! A test binary run by `tests/harness.rs` as a child process, to watch what
//! happens to environments when a test fails, panics, or the binary is
//! interrupted. Run by cargo directly, it has nothing to do (0 tests).

use lago::harness::runner::{Runner, Suite};

const ENV: &str = "tests/envs/tiny1.yaml";

fn main() {
    let suite = match std::env::var("LAGO_CHILD").as_deref() {
        // A passing test, a failing one and a panicking one.
        Ok("mixed") => Suite::new(ENV)
            .test("passes", |env| {
                let vm = env.vm("vm01").map_err(|e| e.to_string())?;
                vm.ssh(["true"]).map_err(|e| e.to_string()).map(|_| ())
            })
            .test("fails", |env| {
                let vm = env.vm("vm01").map_err(|e| e.to_string())?;
                let st = vm.ssh(["sh", "-c", "echo checking the agent; echo agent missing >&2; exit 3"]);
                Err(format!("deliberate failure after {st:?}"))
            })
            .test("panics", |env| {
                let vm = env.vm("vm01").expect("vm01");
                vm.ssh(["echo", "about to panic"]).expect("ssh");
                panic!("deliberate panic")
            }),
        // A test that runs until the binary is interrupted.
        Ok("sleep") => Suite::new(ENV).test("sleeps", |env| {
            let _ = env.vm("vm01").map_err(|e| e.to_string())?.ssh(["true"]);
            eprintln!("child: ready to be interrupted");
            std::thread::sleep(std::time::Duration::from_secs(300));
            Ok(())
        }),
        _ => Suite::new(ENV),
    };
    Runner::new().suite(suite).run()
}
