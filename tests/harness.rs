//! The harness as a user meets it when things go wrong: a failing and a
//! panicking test (failure artifacts, JUnit), SIGINT mid-run and SIGKILL —
//! each run in a child process (`tests/child.rs`), after which nothing of its
//! environment may be left: no domain, network, lease or workdir.
//!
//! These boot VMs: ignored in a plain `cargo test`, run by `scripts/test`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{assert_nothing_left, booted, child, env_id_of, lago_in, reaper_of, spawn_until_ready};
use lago::backend::Backend;
use lago::lease::LeaseStore;

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn failing_and_panicking_tests_leave_artifacts_junit_and_nothing_else() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("junit.xml");
    let out = child("mixed", &tmp.path().join("artifacts"))
        .args(["--test-threads", "1", "--junit"])
        .arg(&junit)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(101), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let result_of = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("test ") && l.contains(&format!(" {name} ")))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    };
    assert_eq!(result_of("tiny1::passes").as_deref(), Some("ok"), "{stdout}");
    assert_eq!(result_of("tiny1::fails").as_deref(), Some("FAILED"), "{stdout}");
    assert_eq!(result_of("tiny1::panics").as_deref(), Some("FAILED"), "{stdout}");
    assert!(
        stdout.contains("deliberate panic\nlago: failure artifacts in "),
        "{stdout}"
    );
    assert!(stdout.contains("test result: FAILED. 1 passed; 2 failed"), "{stdout}");

    // JUnit parses and says the same.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suites = doc.root_element();
    assert_eq!(suites.tag_name().name(), "testsuites");
    assert_eq!(suites.attribute("tests"), Some("3"));
    assert_eq!(suites.attribute("failures"), Some("2"));
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 3);
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .map(|c| c.attribute("name").unwrap())
        .collect();
    assert_eq!(failed, ["tiny1::fails", "tiny1::panics"]);

    // Artifacts of the failing test: console, transcript, the init file's artifacts, the log.
    let dir = tmp.path().join("artifacts/tiny1::fails");
    let transcript = std::fs::read_to_string(dir.join("transcript.txt")).unwrap();
    assert!(transcript.contains("echo checking the agent"), "{transcript}");
    assert!(transcript.contains("exit 3"), "{transcript}");
    assert!(transcript.contains("agent missing"), "{transcript}");
    assert!(
        !transcript.contains("about to panic"),
        "only this test's commands: {transcript}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("vm01/etc_hostname")).unwrap().trim(),
        "vm01"
    );
    let summary = std::fs::read_to_string(dir.join("summary.txt")).unwrap();
    assert!(summary.contains("vm01:/var/log/does-not-exist: missing"), "{summary}");
    assert!(summary.contains("deliberate failure"), "{summary}");
    assert!(dir.join("vm01.console.log").is_file());
    let log = std::fs::read_to_string(dir.join("lago.log")).unwrap();
    assert!(!log.is_empty());
    // The env's log (debug level) does not hold command lines: they may carry secrets.
    assert!(!log.contains("checking the agent"), "{log}");
    // Artifacts are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    for d in [tmp.path().join("artifacts"), dir.clone(), dir.join("vm01")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
    let panicked = tmp.path().join("artifacts/tiny1::panics/transcript.txt");
    assert!(
        std::fs::read_to_string(panicked)
            .unwrap()
            .contains("echo 'about to panic'")
    );
    assert!(
        !tmp.path().join("artifacts/tiny1::passes").exists(),
        "no artifacts for a passing test"
    );

    let (id, workdir) = booted(&stderr);
    assert_nothing_left(&id, &workdir, Duration::from_secs(30));
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn nothing_is_left_when_the_test_binary_exits() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    // The way #[lago_env] and fixture tests use an environment: torn down by
    // the exit hook before the process is gone, whether it passed or failed.
    for mode in ["fixture", "fixture-fail"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = child(mode, tmp.path()).output().unwrap();
        let exited = std::time::SystemTime::now();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(if mode == "fixture" { 0 } else { 101 }),
            "{stdout}\n{stderr}"
        );
        assert!(stdout.contains("child: hostname vm01"), "{stdout}\n{stderr}");
        let (id, workdir) = booted(&stderr);
        // At once: no waiting for a watchdog.
        assert_nothing_left(&id, &workdir, Duration::ZERO);
        let done: u128 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("child: done at "))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        let exited = exited.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
        eprintln!(
            "{mode}: teardown after the last use took {:.2} s (until the process exited)",
            (exited.saturating_sub(done)) as f64 / 1e6
        );
    }
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn sigint_mid_run_tears_down() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    use rustix::process::{Pid, Signal, kill_process};
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, stderr, _pipe) = spawn_until_ready(tmp.path());
    let (id, workdir) = booted(&stderr);
    assert!(workdir.exists());
    let pid = Pid::from_raw(c.id() as i32).unwrap();
    kill_process(pid, Signal::INT).unwrap();
    let status = c.wait().unwrap();
    assert_eq!(status.code(), Some(130), "the binary exits with 128 + SIGINT");
    // Torn down before the binary exited: nothing left at once.
    assert_nothing_left(&id, &workdir, Duration::from_millis(1));
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn sigkill_leaks_nothing_either() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    use rustix::process::{Pid, Signal, kill_process};
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, stderr, _pipe) = spawn_until_ready(tmp.path());
    let (id, workdir) = booted(&stderr);
    kill_process(Pid::from_raw(c.id() as i32).unwrap(), Signal::KILL).unwrap();
    let _ = c.wait();
    // The watchdog notices and cleans up.
    assert_nothing_left(&id, &workdir, Duration::from_secs(30));
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn lago_keep_on_failure_keeps_the_env_and_says_how_to_get_in() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = child("mixed", tmp.path())
        .env("LAGO_KEEP", "on-failure")
        .args(["--test-threads", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (id, workdir) = booted(&stderr);
    let hint = format!("lago -w {} shell vm01", workdir.display());
    assert!(stderr.contains(&hint), "{stderr}");
    // Still there after the binary (and its watchdog) are done.
    std::thread::sleep(Duration::from_secs(3));
    let env = lago::Env::load(&workdir).unwrap();
    assert_eq!(env.vm("vm01").unwrap().ssh(["hostname"]).unwrap().out.trim(), "vm01");
    drop(env);
    // And gone with the command it printed.
    common::destroy_with_cli(&workdir);
    assert_nothing_left(&id, &workdir, Duration::from_secs(1));
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn a_boot_failure_fails_every_test_with_the_same_error_without_retrying() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let blank = tmp.path().join("blank.raw");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let out = child("broken", tmp.path())
        .env("LAGO_TEST_BLANK_DISK", &blank)
        .args(["--test-threads", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(101), "{stdout}");
    assert!(stdout.contains("test result: FAILED. 0 passed; 2 failed"), "{stdout}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.contains("failed to boot")).collect();
    assert_eq!(failures.len(), 2, "{stdout}");
    // One boot, one error: the same text, down to the measured wait.
    assert_eq!(failures[0], failures[1]);
    assert!(failures[0].contains("stalled at stage"), "{}", failures[0]);
    assert!(failures[0].contains("`lago doctor`"), "{}", failures[0]);
    // Torn down at once: nothing of it is left.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("failed to boot and was torn down"))
        .expect("teardown line");
    let rest = line.strip_prefix("lago: env ").unwrap();
    let (id, rest) = rest.split_once(" (").unwrap();
    let workdir = PathBuf::from(rest.split_once(')').unwrap().0);
    assert_eq!(
        stderr.matches("failed to boot and was torn down").count(),
        1,
        "booted once: {stderr}"
    );
    assert_nothing_left(id, &workdir, Duration::from_secs(1));
}

/// Every child test binary sweeps environments of crashed runs before its
/// first boot; the test that leaves one for `lago gc` to find holds this
/// exclusively, the tests that run children share it.
static SWEEPS: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn a_run_killed_with_its_reaper_is_swept_by_gc_and_a_live_env_is_left_alone() {
    // The env this test leaves for gc is one any child's pre-boot sweep would take: none runs meanwhile.
    let _sweeps = SWEEPS.write().unwrap_or_else(|p| p.into_inner());
    use rustix::process::{Pid, Signal, kill_process};
    // A running environment whose owner (this test process) is alive.
    let live_tmp = tempfile::tempdir().unwrap();
    let live = lago::Env::init(
        common::envs("tiny1.yaml"),
        lago::InitOptions {
            workdir: Some(live_tmp.path().join("env")),
            owner: lago::owner::Owner::this_process(),
            ..Default::default()
        },
    )
    .unwrap();
    let outcome = std::panic::catch_unwind(|| {
        live.start(&[]).unwrap();
        // A test binary killed together with its reaper (an OOM kill, a CI job killed).
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, stderr, _pipe) = spawn_until_ready(tmp.path());
        let (id, workdir) = booted(&stderr);
        let reaper = reaper_of(&workdir).expect("the child's reaper runs");
        kill_process(Pid::from_raw(reaper).unwrap(), Signal::KILL).unwrap();
        kill_process(Pid::from_raw(c.id() as i32).unwrap(), Signal::KILL).unwrap();
        let _ = c.wait();
        std::thread::sleep(Duration::from_millis(500));
        let b = Backend::connect(None).unwrap();
        let prefix = format!("lago-{id}-");
        // Its network is left (session mode has none: the VMs' sockets were the net).
        assert_eq!(
            b.networks_with_prefix(&prefix).unwrap().is_empty(),
            b.uri() == lago::backend::SESSION_URI,
            "{}",
            b.uri()
        );
        assert!(workdir.exists(), "its workdir is left");
        // libvirt's auto-destroy took its domain down with the process.
        assert!(b.domains_with_prefix(&prefix).unwrap().is_empty(), "autodestroy");

        let gc = |args: &[&str]| {
            let out = common::lago_cmd().args(args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let dry = gc(&["gc", "--dry-run"]);
        let line = dry
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{dry}"));
        assert!(
            line.contains("gone: would be removed") && line.contains("owner is gone"),
            "{dry}"
        );
        assert!(workdir.exists(), "a dry run removes nothing");
        let live_line = dry
            .lines()
            .find(|l| l.starts_with(live.id().as_str()))
            .unwrap_or_else(|| panic!("{dry}"));
        assert!(live_line.contains("live: left alone"), "{dry}");

        let done = gc(&["gc"]);
        assert!(
            done.lines().any(|l| l.starts_with(&id) && l.contains("removed")),
            "{done}"
        );
        assert_nothing_left(&id, &workdir, Duration::ZERO);

        // The next test run sweeps too, before it boots.
        let (mut c, stderr, _pipe) = spawn_until_ready(tmp.path());
        let (id2, workdir2) = booted(&stderr);
        kill_process(Pid::from_raw(reaper_of(&workdir2).unwrap()).unwrap(), Signal::KILL).unwrap();
        kill_process(Pid::from_raw(c.id() as i32).unwrap(), Signal::KILL).unwrap();
        let _ = c.wait();
        let next = child("fixture", tmp.path()).output().unwrap();
        let next_err = String::from_utf8_lossy(&next.stderr);
        assert!(next.status.success(), "{next_err}");
        assert!(
            next_err.contains(&format!("lago: swept env {id2} that a crashed run left")),
            "{next_err}"
        );
        assert_nothing_left(&id2, &workdir2, Duration::ZERO);
        // The live environment is untouched.
        assert_eq!(live.vm("vm01").unwrap().ssh(["hostname"]).unwrap().out.trim(), "vm01");
        assert!(live.status().unwrap().nets.iter().all(|n| n.up));
    });
    live.destroy().unwrap();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Runs the child twice in a row under one `sh`, with `NEXTEST_RUN_ID` set:
/// the way nextest runs test processes (`sh` stands in for the runner).
/// Runs the child twice in a row with `NEXTEST_RUN_ID` set, the way nextest
/// runs test processes: under a runner (a shell named `cargo-nextest`
/// stands in for it), each through a wrapper process of its own (as a
/// `--wrapper-script` or a target runner puts one between them), which ends
/// when its test process does.
fn like_nextest(mode: &str, run_id: &str, tmp: &Path) -> std::process::Output {
    let blank = tmp.join("blank.raw");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let runner = tmp.join("cargo-nextest");
    if !runner.exists() {
        std::fs::copy("/bin/sh", &runner).unwrap();
    }
    let c = child(mode, &tmp.join("artifacts"));
    Command::new(&runner)
        .env("LAGO_TEST_BLANK_DISK", &blank)
        .envs(c.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
        .env("NEXTEST_RUN_ID", run_id)
        .env("CHILD", c.get_program())
        .args([
            "-c",
            "sh -c '\"$CHILD\"; exit $?'; echo \"first exited $?\"; sh -c '\"$CHILD\"; exit $?'; echo \"second exited $?\"",
        ])
        .output()
        .unwrap()
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn test_processes_of_one_nextest_run_share_one_boot() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let run_id = format!("lago-test-{}", lago::EnvId::random());
    let out = like_nextest("fixture", &run_id, tmp.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("first exited 0") && stdout.contains("second exited 0"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("child: hostname vm01").count(), 2, "{stdout}");
    assert_eq!(
        stderr.lines().filter(|l| common::is_boot_line(l)).count(),
        1,
        "one boot for the run:\n{stderr}"
    );
    assert_eq!(stderr.matches("lago: attached to").count(), 1, "{stderr}");
    let (id, workdir) = booted(&stderr);
    assert!(
        stderr.contains(&format!("(env {id} in {}", workdir.display())),
        "the same env: {stderr}"
    );
    // The run (here: the stand-in runner) is over: its reaper tears the environment down.
    assert_nothing_left(&id, &workdir, Duration::from_secs(30));
    assert!(!std::env::temp_dir().join(format!("lago-nextest-{run_id}")).exists());

    // A boot failure is recorded once and given to the next process without a new boot.
    let run_id = format!("lago-test-{}", lago::EnvId::random());
    let out = like_nextest("broken", &run_id, tmp.path());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("first exited 101") && stdout.contains("second exited 101"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        stderr.matches("failed to boot and was torn down").count(),
        1,
        "{stderr}"
    );
    assert!(
        stdout.contains("failed to boot in another test process of this nextest run (not retried)"),
        "{stdout}"
    );
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn registered_tests_run_in_the_runner_and_a_timeout_fails_only_its_test() {
    let _sweeps = SWEEPS.read().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = child("nightly", &tmp.path().join("artifacts"))
        .args(["--test-threads", "2"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(101), "{stdout}\n{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("test ") && l.contains(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("child::passes").ends_with("ok"), "{stdout}");
    assert!(line("child::hangs").ends_with("FAILED"), "{stdout}");
    assert!(stdout.contains("timed out after 3s"), "{stdout}");
    // Its artifacts, and no wait for the 60 s the hung body asked for (a bound, not a speed target).
    assert!(tmp.path().join("artifacts/tiny1::child::hangs/summary.txt").is_file());
    assert!(took < Duration::from_secs(45), "{took:?}");
    let (id, workdir) = booted(&stderr);
    assert_nothing_left(&id, &workdir, Duration::ZERO);
}

/// Two environments this host's sweep cannot prove dead: a `lago init` one
/// whose workdir was moved (`mv a b`), and one made in a private `/tmp` of
/// another mount namespace (a job in a container sharing this libvirtd:
/// remote mode, files through libvirt's storage API). Neither `lago gc` nor
/// a test binary's sweep touches them; `lago gc --orphans ID` removes one
/// by name.
#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn gc_and_the_sweep_leave_a_moved_or_hidden_environment_alone() {
    let _sweeps = SWEEPS.write().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let init_file = common::envs("tiny1.yaml");
    let init_file = init_file.to_str().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for args in [
        &["-w", a.to_str().unwrap(), "init", init_file][..],
        &["-w", a.to_str().unwrap(), "start"],
    ] {
        let out = lago_in(None, args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let moved = env_id_of(&a, None);
    std::fs::rename(&a, &b).unwrap();
    let private = tmp.path().join("private");
    let pw = private.join("w");
    let pws = pw.to_str().unwrap();
    let mut hidden_ns = hidden_env(&private, &pw, init_file).unwrap_or_else(|why| {
        let _ = lago_in(None, &["-w", b.to_str().unwrap(), "destroy", "--yes"]);
        panic!("the private-/tmp env did not start: {why}");
    });
    let ns = Some(hidden_ns.id());
    let outcome = std::panic::catch_unwind(|| {
        let hidden = env_id_of(&pw, ns);
        assert!(
            !pw.join("env-id").exists(),
            "its folder is private to the other mount namespace"
        );
        gc_and_the_sweep_leave(&[&moved, &hidden], tmp.path());
        // Both still run and answer.
        let here = lago_in(None, &["-w", b.to_str().unwrap(), "shell", "vm01", "--", "hostname"]);
        assert_eq!(String::from_utf8_lossy(&here.stdout).trim(), "vm01");
        let there = lago_in(ns, &["-w", pws, "shell", "vm01", "--", "hostname"]);
        assert_eq!(String::from_utf8_lossy(&there.stdout).trim(), "vm01", "{there:?}");
        a_named_orphan_goes(&moved, &b);
        let out = lago_in(ns, &["-w", pws, "destroy", "--yes"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let backend = Backend::connect(None).unwrap();
        assert!(
            backend
                .domains_with_prefix(&format!("lago-{hidden}-"))
                .unwrap()
                .is_empty()
        );
    });
    let _ = lago_in(ns, &["-w", pws, "destroy", "--yes"]);
    let _ = hidden_ns.kill();
    let _ = hidden_ns.wait();
    let _ = lago_in(None, &["-w", b.to_str().unwrap(), "destroy", "--yes"]);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

/// Starts a remote-mode environment at `pw`, inside a private tmpfs (as a
/// container's own /tmp) over `private`, a folder that stays empty here; a
/// sleeper keeps that mount namespace alive. (Not over /tmp itself: the
/// checkout and its binaries may be under /tmp.) Its stderr when it fails.
fn hidden_env(private: &Path, pw: &Path, init_file: &str) -> Result<std::process::Child, String> {
    std::fs::create_dir(private).unwrap();
    let script = format!(
        "mount -t tmpfs lago-private-tmp {p} && {exe} -w {w} init --remote {init_file} && {exe} -w {w} start && echo ready && exec sleep 600",
        p = private.display(),
        w = pw.display(),
        exe = common::lago_exe().display()
    );
    let mut hidden_ns = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = BufReader::new(hidden_ns.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok);
    if ready.as_deref() == Some("ready") {
        return Ok(hidden_ns);
    }
    let _ = lago_in(Some(hidden_ns.id()), &["-w", pw.to_str().unwrap(), "destroy", "--yes"]);
    let _ = hidden_ns.kill();
    let out = hidden_ns.wait_with_output().unwrap();
    Err(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `lago gc` lists the environments `ids` as orphans it leaves alone, and a
/// test binary's sweep (run in `tmp`) leaves them too.
fn gc_and_the_sweep_leave(ids: &[&str], tmp: &Path) {
    let gc = lago_in(None, &["gc"]);
    let text = String::from_utf8_lossy(&gc.stdout).into_owned();
    assert!(gc.status.success(), "{text}{}", String::from_utf8_lossy(&gc.stderr));
    for id in ids {
        let line = text
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{text}"));
        assert!(
            line.contains("orphaned: left alone") && line.contains("not visible") && line.contains("--orphans"),
            "{line}"
        );
    }
    // A test binary sweeps before it boots: it leaves them too.
    let sweeper = child("fixture", tmp).output().unwrap();
    let said = String::from_utf8_lossy(&sweeper.stderr);
    assert!(sweeper.status.success(), "{said}");
    assert!(ids.iter().all(|id| !said.contains(id)), "{said}");
}

/// Named, an orphan goes (libvirt objects, leases); the user's moved folder
/// `b` is not gc's. An unknown id is an error, not silence.
fn a_named_orphan_goes(moved: &str, b: &Path) {
    let named = lago_in(None, &["gc", "--orphans", moved]);
    let named_text = String::from_utf8_lossy(&named.stdout);
    assert!(named.status.success() && named_text.contains("removed"), "{named_text}");
    let backend = Backend::connect(None).unwrap();
    let prefix = format!("lago-{moved}-");
    assert!(backend.domains_with_prefix(&prefix).unwrap().is_empty());
    assert!(backend.networks_with_prefix(&prefix).unwrap().is_empty());
    assert!(
        LeaseStore::from_env()
            .list()
            .unwrap()
            .iter()
            .all(|l| l.env_id.as_str() != moved)
    );
    assert!(b.join("env-id").exists());
    let unknown = lago_in(None, &["gc", "--orphans", "0000dead"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("0000dead: no such environment"));
}
