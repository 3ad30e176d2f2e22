//! A test binary run by `tests/harness.rs` as a child process, to watch what
//! happens to environments when a test fails, panics, or the binary is
//! interrupted. Run by cargo directly, it has nothing to do (0 tests).

use lago::harness::runner::{Runner, Suite};
use lago::{Vm, lago_env};

// Run by `LAGO_CHILD=nightly` (through `lago::harness::run_registered`, what
// `lago::harness::main!()` expands to); registered, unused, in other modes.
#[lago_env("tests/envs/tiny1.yaml", timeout = "3s")]
fn hangs(vm01: &Vm) {
    let _ = vm01.ssh(["sleep", "60"]);
}

#[lago_env("tests/envs/tiny1.yaml")]
fn passes(vm01: &Vm) {
    assert_eq!(vm01.ssh(["hostname"]).unwrap().out.trim(), "vm01");
}

const ENV: &str = "tests/envs/tiny1.yaml";

/// Takes three subnets for an owner workdir and prints them (for `tests/lease.rs`).
fn lease() {
    use lago::lease::{LeaseOwner, LeaseStore, OWNER_ID_FILE};
    use lago::plan::{EnvId, SubnetRequest};
    let dir = std::env::var("LAGO_TEST_LEASE_DIR").expect("LAGO_TEST_LEASE_DIR");
    let workdir = std::path::PathBuf::from(std::env::var("LAGO_TEST_LEASE_OWNER").expect("LAGO_TEST_LEASE_OWNER"));
    let id = workdir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("owner name")
        .to_owned();
    std::fs::create_dir_all(&workdir).expect("owner workdir");
    std::fs::write(workdir.join(OWNER_ID_FILE), &id).expect("env-id");
    let owner = LeaseOwner {
        workdir,
        env_id: EnvId::new(id).expect("env id"),
    };
    let requests: Vec<SubnetRequest> = ["a", "b", "c"]
        .iter()
        .map(|n| SubnetRequest {
            net: n.to_string(),
            pinned: None,
        })
        .collect();
    let store = LeaseStore::new(dir).with_lock_timeout(std::time::Duration::from_secs(30));
    let got = store.acquire(&owner, &requests).expect("lease");
    let list: Vec<String> = got.values().map(|s| s.third_octet().to_string()).collect();
    println!("SUBNETS {}", list.join(","));
}

/// Uses the environment the way `#[lago_env]` and fixture tests do (no
/// runner, whose end tears down by itself), then ends: normally, or with
/// exit code 101 as libtest does when a test failed. Prints when it is done,
/// in microseconds since the epoch, so that the parent can time the teardown.
fn fixture_user(fail: bool) {
    let env = lago::fixtures::env(ENV);
    let st = env.vm("vm01").ssh(["hostname"]).expect("ssh");
    println!("child: hostname {}", st.out.trim());
    drop(env);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    println!("child: done at {now}");
    if fail {
        std::process::exit(101);
    }
}

fn main() {
    match std::env::var("LAGO_CHILD").as_deref() {
        Ok("lease") => return lease(),
        Ok("fixture") => return fixture_user(false),
        Ok("fixture-fail") => return fixture_user(true),
        Ok("nightly") => lago::harness::run_registered(),
        _ => {}
    }
    let suite = match std::env::var("LAGO_CHILD").as_deref() {
        // A passing test, a failing one and a panicking one.
        Ok("mixed") => Suite::new(ENV)
            .test("passes", |env| {
                env.vm("vm01")?.ssh(["true"])?;
                Ok(())
            })
            .test("fails", |env| {
                let vm = env.vm("vm01")?;
                let st = vm.ssh(["sh", "-c", "echo checking the agent; echo agent missing >&2; exit 3"]);
                Err(format!("deliberate failure after {st:?}").into())
            })
            .test("panics", |env| {
                let vm = env.vm("vm01").expect("vm01");
                vm.ssh(["echo", "about to panic"]).expect("ssh");
                panic!("deliberate panic")
            }),
        // A test that runs until the binary is interrupted.
        Ok("sleep") => Suite::new(ENV).test("sleeps", |env| {
            let _ = env.vm("vm01")?.ssh(["true"]);
            eprintln!("child: ready to be interrupted");
            std::thread::sleep(std::time::Duration::from_secs(300));
            Ok(())
        }),
        // A test that leaves a file and a process in the guest, then fails
        // (run with LAGO_BUNDLE=on-failure: its failure bundle keeps them).
        Ok("bundle") => Suite::new(ENV).test("fails_with_state", |env| {
            let vm = env.vm("vm01")?;
            let st = vm.ssh([
                "sh",
                "-c",
                "echo bundled > /root/marker; setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > /root/pid",
            ])?;
            Err(format!("deliberate failure with state in the guest ({st:?})").into())
        }),
        // A test that fails naming its VM (run with LAGO_DEBUG=shell).
        Ok("debug-shell") => Suite::new(ENV).test("fails_on_vm01", |env| {
            env.vm("vm01")?.ssh(["true"])?;
            Err("vm01: deliberate failure".into())
        }),
        // An environment that cannot boot, needed by two tests.
        Ok("broken") => Suite::new("tests/envs/broken.yaml")
            .test("first", |_| Ok(()))
            .test("second", |_| Ok(())),
        _ => Suite::new(ENV),
    };
    Runner::new().suite(suite).run()
}
