//! Failure bundles: a test that fails (in a child process, with
//! `LAGO_BUNDLE=on-failure`) leaves the failing instant of its environment
//! in its artifacts; `lago replay` brings it back, running, in a new workdir:
//! the file the test wrote is there, the process it started runs with the
//! same pid, the clock is the host's. A bundle over its bound is skipped
//! with a warning; a bundle whose template is not here names it.
//!
//! These boot VMs: ignored in a plain `cargo test`, run by `scripts/test`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{assert_nothing_left, child, in_test_namespace, lago_cmd, out};

/// Held by each test here: both boot `tiny1.yaml`, whose environments
/// prefer one subnet (their boot image's), and a replay needs its bundle's
/// subnet free, so one test's environment must not take it from the other's replay.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the child whose test fails with state in the guest; returns its stderr.
fn failing_child(artifacts: &Path, max: Option<&str>) -> String {
    let mut c = child("bundle", artifacts);
    c.env("LAGO_BUNDLE", "on-failure");
    if let Some(m) = max {
        c.env("LAGO_BUNDLE_MAX", m);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "the test fails on purpose: {err}");
    err
}

/// The bundle folder the child's failing test left.
fn bundle_of(artifacts: &Path) -> PathBuf {
    let test = std::fs::read_dir(artifacts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("fails_with_state"))
        .unwrap_or_else(|| panic!("no artifacts of the failing test in {}", artifacts.display()));
    test.join("bundle")
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn a_failing_test_leaves_a_bundle_that_replays_the_failing_instant() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = tmp.path().join("artifacts");
    let err = failing_child(&artifacts, None);
    assert!(err.contains("bundle/: the failing instant of every VM"), "{err}");
    for line in err.lines().filter(|l| l.contains("bundle/")) {
        eprintln!("child: {line}");
    }
    let bundle = bundle_of(&artifacts);
    let summary = std::fs::read_to_string(bundle.parent().unwrap().join("summary.txt")).unwrap();
    assert!(summary.contains("lago replay"), "{summary}");

    // What it holds.
    let list = lago_cmd().args(["replay", "--list"]).arg(&bundle).output().unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert!(
        listed.contains("fails_with_state") && listed.contains("vm vm01") && listed.contains("on template tiny:"),
        "{listed}"
    );

    // Replayed in a new workdir: running at the failing instant.
    let w = tmp.path().join("replayed");
    let o = lago_cmd()
        .arg("-w")
        .arg(&w)
        .arg("replay")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprint!("replay: {}", String::from_utf8_lossy(&o.stderr));
    let env = lago::Env::load(&w).unwrap();
    let id = env.id().to_string();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let vm = env.vm("vm01").unwrap();
        assert_eq!(out(vm, &["cat", "/root/marker"]).trim(), "bundled");
        let pid = out(vm, &["cat", "/root/pid"]).trim().to_owned();
        let cmdline = out(vm, &["cat", &format!("/proc/{pid}/cmdline")]);
        assert!(cmdline.starts_with("sleep"), "process {pid} runs on: {cmdline:?}");
        common::clock_is_the_hosts(vm);
        assert_eq!(common::came_up(&env), ["restored"]);
    }));
    env.destroy().unwrap();
    assert_nothing_left(&id, &w, Duration::ZERO);
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }

    replays_against_another_store(&bundle, tmp.path());
    a_missing_template_is_named(&bundle, tmp.path());

    // Over its bound: skipped with a warning, nothing written.
    let small = tmp.path().join("small");
    let err = failing_child(&small, Some("1M"));
    assert!(err.contains("warning") && err.contains("over its bound"), "{err}");
    assert!(!bundle_of(&small).exists());
}

/// Replayed against another store holding the same template (as on another
/// machine of the same kind): the bundle's disks are pointed at its copy.
fn replays_against_another_store(bundle: &Path, tmp: &Path) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("bundle.json")).unwrap()).unwrap();
    let version = meta["templates"]["vm01/root"]["version"].as_str().unwrap().to_owned();
    let here = lago::store::TemplateStore::from_env()
        .resolve("tiny", Some(&version))
        .unwrap();
    let other = tmp.join("other-store");
    std::fs::create_dir_all(other.join("tiny")).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(here.disk.parent().unwrap())
        .arg(other.join("tiny"))
        .status()
        .unwrap();
    assert!(copied.success());
    let env = lago::Env::replay(
        bundle,
        lago::InitOptions {
            workdir: Some(tmp.join("elsewhere")),
            store: Some(lago::store::TemplateStore::new(&other)),
            ..Default::default()
        },
    )
    .unwrap();
    let (id, w) = (env.id().to_string(), env.workdir().to_path_buf());
    let disk = bundle.join(
        std::fs::read_dir(bundle)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(".qcow2"))
            .unwrap(),
    );
    let backing = lago::image::backing_file(&disk).unwrap().unwrap();
    let marker = env.vm("vm01").unwrap().ssh(["cat", "/root/marker"]).unwrap();
    env.destroy().unwrap();
    assert!(backing.starts_with(&other), "{}", backing.display());
    assert_eq!(marker.out.trim(), "bundled", "{marker:?}");
    assert_nothing_left(&id, &w, Duration::ZERO);
}

/// A bundle whose template is not here: the replay names it and makes nothing.
fn a_missing_template_is_named(bundle: &Path, tmp: &Path) {
    let meta = bundle.join("bundle.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["templates"]["vm01/root"]["version"] = "0000000000000000".into();
    std::fs::write(&meta, serde_json::to_vec(&v).unwrap()).unwrap();
    let w2 = tmp.join("missing");
    let o = lago_cmd()
        .arg("-w")
        .arg(&w2)
        .arg("replay")
        .arg(bundle)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("vm01/root is layered on template tiny:0000000000000000") && e.contains("--template-repo"),
        "{e}"
    );
    assert!(!w2.exists(), "nothing made");
}

/// Output of a process, read as it comes (a terminal's output has no lines to wait for).
fn collect_output(mut from: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let into = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

fn wait_for(seen: &std::sync::Mutex<String>, what: &str, within: Duration) {
    let start = std::time::Instant::now();
    while !seen.lock().unwrap().contains(what) {
        assert!(
            start.elapsed() < within,
            "no {what:?} within {within:?}; the terminal showed:\n{}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "boots VMs: run through scripts/test"]
fn lago_debug_shell_opens_a_shell_on_the_failing_vm_through_a_terminal() {
    use std::io::Write;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    // `script` gives the child a terminal (a pty): stdin is one, as at a desk.
    let mut c = std::process::Command::new("script");
    let exe = common::child_exe();
    c.args(["-qefc", &format!("{} --test-threads 1", exe.display()), "/dev/null"])
        .env("LAGO_CHILD", "debug-shell")
        .env("LAGO_DEBUG", "shell")
        .env("LAGO_ARTIFACTS_DIR", tmp.path())
        .env("CARGO_MANIFEST_DIR", common::manifest_dir())
        .env_remove("LAGO_KEEP")
        .env_remove("CI")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut p = c.spawn().unwrap();
    let seen = collect_output(p.stdout.take().unwrap());
    let mut stdin = p.stdin.take().unwrap();
    wait_for(
        &seen,
        "a shell on vm01 at the failing instant",
        Duration::from_secs(120),
    );
    assert!(seen.lock().unwrap().contains("vm01: deliberate failure"));
    // The session is on the failing VM: what it prints is the guest's.
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"echo lago-$((40+2)) on $(hostname)\n").unwrap();
    wait_for(&seen, "lago-42 on vm01", Duration::from_secs(30));
    stdin.write_all(b"exit\n").unwrap();
    wait_for(&seen, "the shell on vm01 exited", Duration::from_secs(30));
    let status = p.wait().unwrap();
    assert!(!status.success(), "the test still fails");
    let text = seen.lock().unwrap().clone();
    let (id, workdir) = common::booted(&text);
    // Held until the shell exited, then torn down as usual.
    assert_nothing_left(&id, &workdir, Duration::from_secs(30));

    // Without a terminal: the environment is kept, with how to get in.
    let o = child("debug-shell", tmp.path())
        .env("LAGO_DEBUG", "shell")
        .args(["--test-threads", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let (id, workdir) = common::booted(&err);
    assert!(
        err.contains("LAGO_DEBUG=shell with no terminal")
            && err.contains(&format!("lago -w {} shell vm01", workdir.display())),
        "{err}"
    );
    common::destroy_with_cli(&workdir);
    assert_nothing_left(&id, &workdir, Duration::from_secs(1));
}
