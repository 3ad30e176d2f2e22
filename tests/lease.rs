//! The host-wide subnet lease store, within one process and across real processes.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use lago::lease::{LeaseError, LeaseOwner, LeaseStore, OWNER_ID_FILE};
use lago::plan::{EnvId, Subnet, SubnetRequest};

fn owner(dir: &Path, id: &str) -> LeaseOwner {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(OWNER_ID_FILE), id).unwrap();
    LeaseOwner {
        workdir: dir.to_path_buf(),
        env_id: EnvId::new(id).unwrap(),
    }
}

fn any(nets: &[&str]) -> Vec<SubnetRequest> {
    nets.iter()
        .map(|n| SubnetRequest {
            net: n.to_string(),
            pinned: None,
        })
        .collect()
}

#[test]
fn owners_get_distinct_subnets_and_release_them() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let b = owner(&tmp.path().join("b"), "bbbb");
    let got_a = store.acquire(&a, &any(&["x", "y"])).unwrap();
    let got_b = store.acquire(&b, &any(&["x"])).unwrap();
    assert_eq!(got_a["x"], Subnet::new(200).unwrap());
    assert_eq!(got_a["y"], Subnet::new(201).unwrap());
    assert_eq!(got_b["x"], Subnet::new(202).unwrap());
    assert_eq!(store.list().unwrap().len(), 3);
    assert!(tmp.path().join("leases/200.lease").is_file());

    let freed = store.release(&a).unwrap();
    assert_eq!(freed, [Subnet::new(200).unwrap(), Subnet::new(201).unwrap()]);
    assert_eq!(store.list().unwrap().len(), 1);
    // Released subnets are handed out again, lowest first.
    let c = owner(&tmp.path().join("c"), "cccc");
    assert_eq!(store.acquire(&c, &any(&["x"])).unwrap()["x"], Subnet::new(200).unwrap());
    // Releasing twice is fine.
    assert!(store.release(&a).unwrap().is_empty());
}

#[test]
fn an_owner_asking_again_keeps_its_subnets() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let first = store.acquire(&a, &any(&["x"])).unwrap();
    let again = store.acquire(&a, &any(&["x"])).unwrap();
    assert_eq!(first, again);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn pinned_subnets_are_given_or_refused_with_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let b = owner(&tmp.path().join("b"), "bbbb");
    let pinned = vec![
        SubnetRequest {
            net: "p".into(),
            pinned: Subnet::new(230),
        },
        SubnetRequest {
            net: "q".into(),
            pinned: None,
        },
    ];
    let got = store.acquire(&a, &pinned).unwrap();
    assert_eq!(got["p"], Subnet::new(230).unwrap());
    assert_eq!(got["q"], Subnet::new(200).unwrap());
    match store.acquire(&b, &pinned) {
        Err(LeaseError::Taken { subnet, net, owner }) => {
            assert_eq!(subnet, Subnet::new(230).unwrap());
            assert_eq!(net, "p");
            assert_eq!(owner, a.workdir);
        }
        other => panic!("expected Taken, got {other:?}"),
    }
    // All or nothing: b's unpinned request took nothing.
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn stale_leases_are_reclaimed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let gone = owner(&tmp.path().join("gone"), "dead");
    let reused = owner(&tmp.path().join("reused"), "old1");
    store.acquire(&gone, &any(&["x"])).unwrap();
    store.acquire(&reused, &any(&["x"])).unwrap();
    fs::remove_dir_all(&gone.workdir).unwrap();
    fs::write(reused.workdir.join(OWNER_ID_FILE), "new2").unwrap();
    fs::write(tmp.path().join("leases/250.lease"), "{ not json").unwrap();
    let fresh = owner(&tmp.path().join("fresh"), "f00d");
    let got = store.acquire(&fresh, &any(&["x", "y"])).unwrap();
    assert_eq!(got["x"], Subnet::new(200).unwrap());
    assert_eq!(got["y"], Subnet::new(201).unwrap());
    let leases = store.list().unwrap();
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().all(|l| l.env_id.as_str() == "f00d"));
}

#[test]
fn the_pool_runs_out_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let names: Vec<String> = (0..56).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(store.acquire(&a, &any(&refs)).unwrap().len(), 56);
    let b = owner(&tmp.path().join("b"), "bbbb");
    let err = store.acquire(&b, &any(&["x"])).unwrap_err();
    assert!(
        matches!(err, LeaseError::Exhausted { needed: 1, free: 0, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no free subnet"), "{err}");
}

#[test]
fn a_held_lock_times_out_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leases");
    fs::create_dir_all(&dir).unwrap();
    let held = fs::File::create(dir.join("subnet-lease.lock")).unwrap();
    held.lock().unwrap();
    let store = LeaseStore::new(&dir).with_lock_timeout(Duration::from_millis(200));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let err = store.acquire(&a, &any(&["x"])).unwrap_err();
    assert!(matches!(err, LeaseError::LockTimeout { .. }), "{err:?}");
    held.unlock().unwrap();
    assert!(store.acquire(&a, &any(&["x"])).is_ok());
}

#[test]
fn concurrent_processes_never_share_a_subnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leases");
    let exe = common::child_exe();
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(&exe)
                .env("LAGO_CHILD", "lease")
                .env("LAGO_TEST_LEASE_DIR", &dir)
                .env("LAGO_TEST_LEASE_OWNER", tmp.path().join(format!("owner{i}")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split("SUBNETS ").nth(1))
            .expect("child printed its subnets");
        all.extend(line.split(',').map(|s| s.parse::<u8>().unwrap()));
    }
    assert_eq!(all.len(), 24);
    let distinct: BTreeSet<u8> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 24, "a subnet was handed out twice: {all:?}");
    assert_eq!(distinct, (200..224).collect());
    assert_eq!(LeaseStore::new(&dir).list().unwrap().len(), 24);
}

#[test]
fn subnets_in_use_on_the_host_are_skipped_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let a = owner(&tmp.path().join("a"), "aaaa");
    let in_use: std::collections::HashSet<Subnet> = [Subnet::new(200).unwrap(), Subnet::new(201).unwrap()].into();
    let got = store.acquire_avoiding(&a, &any(&["x"]), &in_use).unwrap();
    assert_eq!(got["x"], Subnet::new(202).unwrap());
    let pinned = vec![SubnetRequest {
        net: "p".into(),
        pinned: Subnet::new(201),
    }];
    let b = owner(&tmp.path().join("b"), "bbbb");
    let err = store.acquire_avoiding(&b, &pinned, &in_use).unwrap_err();
    assert!(matches!(err, LeaseError::InUse { net, .. } if net == "p"));
}

#[test]
fn a_damaged_lease_directory_does_not_block_later_acquires() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leases");
    fs::create_dir_all(dir.join("200.lease")).unwrap(); // a folder named like a lease
    fs::write(dir.join("201.lease"), b"\xff\xfe not utf-8").unwrap();
    fs::write(dir.join("202.lease"), "{ truncated").unwrap();
    let store = LeaseStore::new(&dir);
    let a = owner(&tmp.path().join("a"), "aaaa");
    let got = store.acquire(&a, &any(&["x", "y"])).unwrap();
    // The folder's subnet is left alone; the invalid files are reclaimed.
    assert_eq!(got["x"], Subnet::new(201).unwrap());
    assert_eq!(got["y"], Subnet::new(202).unwrap());
    assert!(dir.join("200.lease").is_dir(), "not lago's to delete");
    assert_eq!(store.list().unwrap().len(), 2);
    // A pinned request for the blocked subnet says so instead of clobbering it.
    let b = owner(&tmp.path().join("b"), "bbbb");
    let pinned = [SubnetRequest {
        net: "p".into(),
        pinned: Subnet::new(200),
    }];
    assert!(matches!(store.acquire(&b, &pinned), Err(LeaseError::InUse { .. })));
}

#[test]
fn reclaiming_deletes_the_file_it_read_and_never_another_envs_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leases");
    let store = LeaseStore::new(&dir);
    let live = owner(&tmp.path().join("live"), "live");
    assert_eq!(
        store.acquire(&live, &any(&["x"])).unwrap()["x"],
        Subnet::new(200).unwrap()
    );
    let live_lease = fs::read_to_string(dir.join("200.lease")).unwrap();
    // A stale lease stored under another name than its subnet (copied by hand, say):
    // reclaiming it must delete 203.lease, not 200.lease.
    let stale = live_lease
        .replace(&live.workdir.display().to_string(), "/gone/workdir")
        .replace("\"live\"", "\"dead\"");
    fs::write(dir.join("203.lease"), &stale).unwrap();
    let other = owner(&tmp.path().join("other"), "othr");
    let got = store.acquire(&other, &any(&["x"])).unwrap();
    assert_eq!(got["x"], Subnet::new(201).unwrap());
    assert_eq!(
        fs::read_to_string(dir.join("200.lease")).unwrap(),
        live_lease,
        "the live lease is intact"
    );
    assert!(!dir.join("203.lease").exists(), "the bad file was reclaimed");
    // An ordinary stale lease: its own file goes.
    fs::remove_dir_all(tmp.path().join("other")).unwrap();
    let third = owner(&tmp.path().join("third"), "thrd");
    assert_eq!(
        store.acquire(&third, &any(&["x"])).unwrap()["x"],
        Subnet::new(201).unwrap()
    );
    let subnets: Vec<u8> = store.list().unwrap().iter().map(|l| l.subnet.third_octet()).collect();
    assert_eq!(subnets, [200, 201]);
}

#[test]
fn files_that_are_not_pool_leases_are_never_touched_and_a_planted_lock_symlink_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leases");
    fs::create_dir_all(&dir).unwrap();
    for name in ["foo.lease", "7.lease", "0200.lease", "notes.txt"] {
        fs::write(dir.join(name), "not ours").unwrap();
    }
    let store = LeaseStore::new(&dir);
    let a = owner(&tmp.path().join("a"), "aaaa");
    store.acquire(&a, &any(&["x"])).unwrap();
    for name in ["foo.lease", "7.lease", "0200.lease", "notes.txt"] {
        assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), "not ours", "{name}");
    }
    // Another user of a shared lease directory plants the lock as a symlink to our file.
    use std::os::unix::fs::PermissionsExt;
    let dir2 = tmp.path().join("shared");
    fs::create_dir_all(&dir2).unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, dir2.join("subnet-lease.lock")).unwrap();
    let err = LeaseStore::new(&dir2).acquire(&a, &any(&["x"])).unwrap_err();
    assert!(matches!(err, LeaseError::Lock { .. }), "{err}");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(fs::metadata(&victim).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn preferred_subnets_are_taken_when_all_of_them_are_free() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path().join("leases"));
    let s = |t| Subnet::new(t).unwrap();
    let want = |pairs: &[(&str, u8)]| -> std::collections::BTreeMap<String, Subnet> {
        pairs.iter().map(|(n, t)| (n.to_string(), s(*t))).collect()
    };
    let none = Default::default();
    // b holds 210: a's first wish (x on 210, y on 211) cannot be had whole, its second can.
    let b = owner(&tmp.path().join("b"), "bbbb");
    store
        .acquire_preferring(&b, &any(&["x"]), &none, &[want(&[("x", 210)])])
        .unwrap();
    let a = owner(&tmp.path().join("a"), "aaaa");
    let wishes = [want(&[("x", 210), ("y", 211)]), want(&[("x", 220), ("y", 221)])];
    let got = store.acquire_preferring(&a, &any(&["x", "y"]), &none, &wishes).unwrap();
    assert_eq!((got["x"], got["y"]), (s(220), s(221)));
    // A wish on a subnet the host uses, or naming other nets, is passed over.
    let c = owner(&tmp.path().join("c"), "cccc");
    let in_use = [s(230)].into_iter().collect();
    let got = store
        .acquire_preferring(&c, &any(&["x"]), &in_use, &[want(&[("x", 230)]), want(&[("z", 240)])])
        .unwrap();
    assert_eq!(got["x"], s(200), "the lowest free subnet");
}
