//! The test-writing API against real guests, written the way a test of a
//! daemon reads: a service that starts late, a port that opens after a
//! delay, a link cut between two VMs and restored, a reboot and a crash, and
//! the console watchdog failing the tests that were running.
//!
//! One environment (`tests/envs/multinic.yaml`: two `tiny` VMs on a NAT
//! management net and an isolated back-end net; vm02's management NIC is its
//! second) is booted once for the binary. These boot VMs: a plain
//! `cargo test` lists them as ignored; `scripts/test` runs them inside the
//! test network namespace.

use std::time::Duration;

use lago::harness::TestOptions;
use lago::harness::runner::{Runner, Suite};
use lago::{Env, Error, Vm, lago_env};

const S: Duration = Duration::from_secs(1);

/// vm02's address on the back-end net (its first NIC).
fn back_ip(vm: &Vm) -> String {
    vm.plan().nics[0]
        .ip
        .expect("an address on the back-end net")
        .to_string()
}

#[lago_env("tests/envs/multinic.yaml", fail_on_console = "lago-never-printed")]
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn a_two_vm_lab_reads_like_a_nixos_test(env: &Env, vm01: &Vm, vm02: &Vm) -> lago::Result<()> {
    // succeed / fail, and what their errors carry.
    assert_eq!(vm01.succeed(["hostname"])?, "vm01\n");
    assert_eq!(vm01.fail(["test", "-e", "/nonexistent"])?.code, 1);
    let e = vm01
        .succeed(["sh", "-c", "echo out; echo err >&2; exit 3"])
        .unwrap_err();
    assert!(
        matches!(&e, Error::CommandFailed { status, .. } if status.code == 3),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("vm01: `sh -c 'echo out; echo err >&2; exit 3'` exited with code 3 after ")
            && msg.contains("stdout: out")
            && msg.contains("stderr: err"),
        "{msg}"
    );
    assert!(matches!(vm01.fail(["true"]), Err(Error::CommandSucceeded { .. })));
    // Every command is bounded: a hung one fails at its timeout, naming it.
    let t = std::time::Instant::now();
    let e = vm01.succeed_within(["sleep", "30"], 2 * S).unwrap_err();
    assert!(
        matches!(&e, Error::Ssh(lago::ssh::SshError::Timeout { command, .. }) if command == "sleep 30"),
        "{e:?}"
    );
    assert!(t.elapsed() < 10 * S, "{:?}", t.elapsed());
    assert_eq!(vm01.fail_within(["false"], 5 * S)?.code, 1);

    // A service that starts late: its file, then its port, seen from the host.
    vm01.succeed([
        "sh",
        "-c",
        "(sleep 2; echo ready > /run/svc.ready; exec busybox httpd -f -p 8080 -h /tmp) </dev/null >/dev/null 2>&1 &",
    ])?;
    vm01.fail(["test", "-e", "/run/svc.ready"])?;
    vm01.wait_for_file("/run/svc.ready", 30 * S)?;
    assert_eq!(vm01.wait_until_succeeds(["cat", "/run/svc.ready"], 5 * S)?, "ready\n");
    vm01.wait_for_port(8080, 30 * S)?;
    // A port nobody opens: the timeout names it and what the last attempt saw.
    let e = vm01.wait_for_port(8081, 2 * S).unwrap_err();
    assert!(
        matches!(&e, Error::WaitTimeout { what, last, .. } if what.contains("TCP port 8081") && last.contains("connect")),
        "{e}"
    );
    let e = vm01.wait_until_succeeds(["false"], S).unwrap_err();
    assert!(
        e.to_string()
            .contains("waiting for `false` to succeed; last attempt: exit code 1"),
        "{e}"
    );
    // A service that stops: wait until its check fails.
    vm01.succeed(["sh", "-c", "(sleep 1; rm /run/svc.ready) </dev/null >/dev/null 2>&1 &"])?;
    assert_eq!(vm01.wait_until_fails(["test", "-e", "/run/svc.ready"], 20 * S)?.code, 1);
    // tiny has no systemd: a clear error, not a timeout.
    let e = vm01.wait_for_unit("sshd.service", 5 * S).unwrap_err();
    assert!(
        matches!(&e, Error::NoSystemd { unit, .. } if unit == "sshd.service"),
        "{e}"
    );

    // The serial console: a line is found once, then consumed.
    vm01.succeed(["sh", "-c", "echo lago-marker-17 > /dev/ttyS0"])?;
    let line = vm01.wait_for_console_text(r"lago-marker-\d+", 20 * S)?;
    assert!(line.contains("lago-marker-17"), "{line:?}");
    assert!(matches!(
        vm01.wait_for_console_text(r"lago-marker-\d+", S),
        Err(Error::WaitTimeout { .. })
    ));
    assert!(matches!(
        vm01.wait_for_console_text("(", S),
        Err(Error::BadPattern { .. })
    ));

    // Every VM at once.
    let all = env.ssh_all(["hostname"]);
    assert_eq!(all.len(), 2);
    for (name, r) in &all {
        assert_eq!(r.as_ref().unwrap().out.trim(), name);
    }

    // A link cut between the two VMs and restored: isolate vm02 (every NIC but
    // its management one, which is its second), and lago still gets in.
    let ping = ["ping", "-c1", "-W1", &back_ip(vm02)];
    vm01.wait_until_succeeds(ping, 20 * S)?;
    assert_eq!(vm02.non_management_nics(), [0]);
    env.isolate("vm02")?;
    vm01.wait_until_fails(ping, 10 * S)?;
    assert_eq!(vm02.succeed(["hostname"])?, "vm02\n");
    env.rejoin("vm02")?;
    vm01.wait_until_succeeds(ping, 20 * S)?;
    // One NIC by index: vm01's back-end NIC.
    vm01.link_down(1)?;
    vm01.wait_until_fails(ping, 10 * S)?;
    vm01.link_up(1)?;
    vm01.wait_until_succeeds(ping, 20 * S)?;
    assert!(matches!(
        vm01.link_down(5),
        Err(Error::NoSuchNic { nic: 5, count: 2, .. })
    ));

    // Reboot and crash: each a new boot, SSH answering when they return.
    let boot_id = |vm: &Vm| vm.succeed(["cat", "/proc/sys/kernel/random/boot_id"]);
    let first = boot_id(vm01)?;
    vm01.succeed(["touch", "/run/before-reboot"])?;
    vm01.reboot()?;
    let second = boot_id(vm01)?;
    assert_ne!(first, second);
    vm01.fail(["test", "-e", "/run/before-reboot"])?;
    assert_eq!(vm01.succeed(["hostname"])?, "vm01\n", "the seed is applied again");
    vm01.crash()?;
    assert_ne!(boot_id(vm01)?, second);
    // The back-end net works after both.
    vm01.wait_until_succeeds(ping, 20 * S)?;
    Ok(())
}

/// A console pattern fails the test that was running: a fixture's when the
/// fixture is dropped; the runner's (`Suite::fail_on_console`) at once under
/// a timeout (the body is still asleep), at the next attempt of a wait, and
/// at the end for a test that returned `Ok`.
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn the_console_watchdog_fails_the_running_test() {
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("junit.xml");
    // Plain `ssh` (no watchdog check of its own), so each way of failing is exercised.
    let print = |env: &Env, n: u32| -> lago::Result<()> {
        let st = env
            .vm("vm01")?
            .ssh(["sh", "-c", &format!("echo 'app[9]: lago-segv-{n} at 0' > /dev/ttyS0")])?;
        assert!(st.success(), "{st:?}");
        Ok(())
    };
    // The line is in the console log (QEMU's log is written a moment after
    // the guest's write returns), read directly, not through lago's helpers.
    let logged = |env: &Env, n: u32| {
        let log = env.vm("vm01").unwrap().console_log().to_path_buf();
        // A complete line (the tty writes \r\n).
        let want = format!("lago-segv-{n} at 0\r\n");
        for _ in 0..300 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(&want) || text.contains(want.replace('\r', "").as_str()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{want:?} never reached {}", log.display());
    };
    // A fixture: its test fails when the fixture is dropped.
    let fixture = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let env = lago::fixtures::env("tests/envs/tiny1.yaml").fail_on_console(r"lago-segv-\d+");
        print(&env, 4).unwrap();
        logged(&env, 4);
    }));
    let msg = *fixture.unwrap_err().downcast::<String>().unwrap();
    assert!(
        msg.contains("vm01: the serial console shows pattern `lago-segv-\\d+`: \"app[9]: lago-segv-4 at 0\""),
        "{msg}"
    );
    // The runner tears its suites down when its trials are done (and only
    // its own: the other test of this binary goes on with multinic's).
    let suite = Suite::new("tests/envs/tiny1.yaml")
        .fail_on_console(r"lago-segv-\d+")
        .test_with(
            "under_a_timeout",
            TestOptions::default().timeout(Duration::from_secs(120)),
            move |env| {
                print(env, 1)?;
                std::thread::sleep(Duration::from_secs(90));
                Ok(())
            },
        )
        .test("at_the_end", move |env| {
            print(env, 2)?;
            logged(env, 2);
            Ok(())
        })
        .test("in_a_wait", move |env| {
            print(env, 3)?;
            env.vm("vm01")?.wait_for_file("/never", Duration::from_secs(90))?;
            Ok(())
        })
        .test("in_a_command", move |env| {
            // The line appears while `succeed` still waits for its command.
            let t = std::time::Instant::now();
            let r = env
                .vm("vm01")?
                .succeed(["sh", "-c", "echo 'app[9]: lago-segv-5 at 0' > /dev/ttyS0; sleep 60"]);
            assert!(t.elapsed() < Duration::from_secs(30), "waited {:?}", t.elapsed());
            r?;
            Ok(())
        });
    // Its report goes to a file: this test's output has no failing "test result" line.
    let logfile = tmp.path().join("runner.log");
    let c = Runner::new().suite(suite).run_with_args(
        [
            "watchdog",
            "--test-threads",
            "1",
            "--junit",
            junit.to_str().unwrap(),
            "--logfile",
            logfile.to_str().unwrap(),
        ]
        .map(String::from),
    );
    assert_eq!(c.num_failed, 4, "{c:?}");
    let report = std::fs::read_to_string(&junit).unwrap();
    for (n, name) in [
        (1, "under_a_timeout"),
        (2, "at_the_end"),
        (3, "in_a_wait"),
        (5, "in_a_command"),
    ] {
        let case = report
            .split("<testcase ")
            .find(|c| c.contains(&format!("tiny1::{name}\"")))
            .unwrap_or_else(|| panic!("{name} not in {report}"));
        assert!(
            case.contains("vm01: the serial console shows pattern `lago-segv-\\d+`")
                && case.contains(&format!("lago-segv-{n} at 0"))
                && !case.contains("also panicked"),
            "{name}: {case}"
        );
    }
    // Under a timeout the harness ended it while the body still slept (not
    // at the end of the body's 90 s, when the message has no such note).
    let case = report
        .split("<testcase ")
        .find(|c| c.contains("under_a_timeout"))
        .unwrap();
    assert!(case.contains("its body keeps running in the background"), "{case}");
}
