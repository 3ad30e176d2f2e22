//! Lago template repositories served over HTTP on 127.0.0.1 by the test
//! itself (no VM, no network namespace needed): pulls that succeed, and
//! every way a download goes wrong, none of which leaves anything in the store.

#[path = "common/repo_server.rs"]
mod repo_server;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lago::store::http::HttpOptions;
use lago::store::manage::InUse;
use lago::store::repo::RepoLocation;
use lago::store::{StoreError, TemplateStore};
use repo_server::{Entry, Publish, Rule, Server, qcow2_image, sha256_hex, write_repo};

/// Fast failure for tests: 1 s without a byte is a stall; 3 attempts.
fn quick() -> HttpOptions {
    HttpOptions {
        connect: Duration::from_secs(2),
        per_read: Duration::from_secs(1),
        attempts: 3,
        backoff: Duration::from_millis(50),
        ..HttpOptions::default()
    }
}

fn store(dir: &Path, server: &Server) -> TemplateStore {
    TemplateStore::new(dir.join("store"))
        .with_http(quick())
        .with_repos([RepoLocation::parse(&server.url("repo.metadata"))])
}

/// Nothing of `name` is visible or half-written in the store.
fn nothing_stored(dir: &Path, name: &str) {
    let folder = dir.join("store").join(name);
    let left: Vec<String> = fs::read_dir(&folder)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", folder.display());
}

#[test]
fn pulls_the_newest_version_verifies_it_and_downloads_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2, lago_v1) = (
        qcow2_image(tmp.path(), "el9-v1"),
        qcow2_image(tmp.path(), "el9-v2"),
        qcow2_image(tmp.path(), "lago-v1"),
    );
    let root = tmp.path().join("repo");
    write_repo(
        &root,
        "team",
        &[
            Entry {
                name: "el9",
                version: "v1",
                timestamp: 100.0,
                image: &v1,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "el9",
                version: "v2",
                timestamp: 200.0,
                image: &v2,
                publish: Publish::XzSha256,
            },
            // Python Lago's own publishing: xz and a sha1 `.hash`.
            Entry {
                name: "lago-style",
                version: "v1",
                timestamp: 1.0,
                image: &lago_v1,
                publish: Publish::XzSha1,
            },
        ],
    );
    let server = Server::serve(&root);
    let s = store(tmp.path(), &server);

    let t = s.resolve("el9", None).unwrap();
    assert_eq!((t.name.as_str(), t.version.as_str()), ("el9", "v2"));
    assert_eq!(fs::read(&t.disk).unwrap(), v2, "the stored image is the published one");
    assert_eq!(t.sha256.as_deref(), Some(sha256_hex(&v2).as_str()));
    assert_eq!(t.timestamp, Some(200.0));
    assert!(t.source.as_deref().unwrap().contains("team"), "{:?}", t.source);
    assert_eq!(server.hits("el9/v2.xz"), 1);

    // Already there: no download (the metadata is read to find the newest).
    let again = s.resolve("el9", None).unwrap();
    assert_eq!(again.disk, t.disk);
    assert_eq!(server.hits("el9/v2.xz"), 1);
    // A pinned older version.
    let old = s.resolve("el9", Some("v1")).unwrap();
    assert_eq!(fs::read(&old.disk).unwrap(), v1);

    let lago = s.resolve("lago-style", None).unwrap();
    assert_eq!(fs::read(&lago.disk).unwrap(), lago_v1);
    assert!(server.hits("lago-style/v1.hash") >= 1 && server.hits("lago-style/v1.sha256") >= 1);

    // Offline: only the store answers, and says what is missing.
    let offline = TemplateStore::new(tmp.path().join("store")).offline(true);
    assert_eq!(offline.resolve("el9", Some("v2")).unwrap().disk, t.disk);
    let hits = server.hits("repo.metadata");
    let offline = offline.with_repos([RepoLocation::parse(&server.url("repo.metadata"))]);
    let err = offline.resolve("el9", Some("v3")).unwrap_err().to_string();
    assert!(err.contains("el9:v3") && err.contains("offline"), "{err}");
    assert_eq!(server.hits("repo.metadata"), hits, "offline means no request");
}

#[test]
fn a_raw_image_becomes_qcow2_and_a_repository_template_wins_over_a_built_in_name() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = vec![7u8; 1 << 20];
    let root = tmp.path().join("repo");
    write_repo(
        &root,
        "team",
        &[Entry {
            name: "tiny",
            version: "custom",
            timestamp: 1.0,
            image: &raw,
            publish: Publish::PlainSha256,
        }],
    );
    let server = Server::serve(&root);
    let t = store(tmp.path(), &server).resolve("tiny", None).unwrap();
    assert_eq!(t.version, "custom", "the repository's `tiny`, not the built-in one");
    assert_eq!(&fs::read(&t.disk).unwrap()[..4], b"QFI\xfb");
    assert_eq!(t.sha256.as_deref().map(str::len), Some(64));
    assert_ne!(
        t.sha256.as_deref(),
        Some(sha256_hex(&raw).as_str()),
        "the stored file's hash, not the raw one's"
    );
    assert_eq!(server.hits("tiny/custom.xz"), 1, "xz is tried first");
    assert_eq!(server.hits("tiny/custom"), 1);
}

#[test]
fn missing_images_wrong_hashes_truncated_bodies_and_unsafe_images_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = qcow2_image(tmp.path(), "good");
    let root = tmp.path().join("repo");
    write_repo(
        &root,
        "team",
        &[
            Entry {
                name: "gone",
                version: "v1",
                timestamp: 1.0,
                image: &good,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "bad-hash",
                version: "v1",
                timestamp: 1.0,
                image: &good,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "cut",
                version: "v1",
                timestamp: 1.0,
                image: &good,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "nohash",
                version: "v1",
                timestamp: 1.0,
                image: &good,
                publish: Publish::XzSha256,
            },
        ],
    );
    fs::write(root.join("bad-hash/v1.sha256"), sha256_hex(b"something else")).unwrap();
    fs::remove_file(root.join("nohash/v1.sha256")).unwrap();
    let server = Server::serve(&root);
    server.rule("gone/v1.xz", Rule::NotFound);
    server.rule("gone/v1", Rule::NotFound);
    let xz_len = fs::metadata(root.join("cut/v1.xz")).unwrap().len() as usize;
    server.rule("cut/v1.xz", Rule::Truncate(xz_len / 2));
    let s = store(tmp.path(), &server);

    let err = s.resolve("gone", None).unwrap_err().to_string();
    assert!(
        err.contains("gone:v1") && err.contains("not in the repository"),
        "{err}"
    );
    nothing_stored(tmp.path(), "gone");

    let err = s.resolve("bad-hash", None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Repo(_)), "{err:?}");
    assert!(
        text.contains("sha256") && text.contains(&sha256_hex(b"something else")),
        "{text}"
    );
    nothing_stored(tmp.path(), "bad-hash");

    let err = lago::error_chain(&s.resolve("cut", None).unwrap_err());
    assert!(err.contains("cut/v1.xz"), "{err}");
    assert!(err.contains("stopped at") || err.contains("cannot fetch"), "{err}");
    assert_eq!(server.hits("cut/v1.xz"), 3, "retried, then refused: {err}");
    nothing_stored(tmp.path(), "cut");

    let err = s.resolve("nohash", None).unwrap_err().to_string();
    assert!(err.contains("no hash is published"), "{err}");
    nothing_stored(tmp.path(), "nohash");

    // A qcow2 with a backing file (it would show the guest a host file).
    let evil = tmp.path().join("evil.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname"])
        .arg(&evil)
        .status()
        .unwrap();
    assert!(st.success());
    let evil = fs::read(&evil).unwrap();
    let root2 = tmp.path().join("repo2");
    write_repo(
        &root2,
        "evil",
        &[Entry {
            name: "evil",
            version: "v1",
            timestamp: 1.0,
            image: &evil,
            publish: Publish::XzSha256,
        }],
    );
    let server2 = Server::serve(&root2);
    let err = store(tmp.path(), &server2)
        .resolve("evil", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("backing file /etc/hostname"), "{err}");
    nothing_stored(tmp.path(), "evil");
}

#[test]
fn a_stalled_server_is_timed_out_and_retried_and_an_interrupted_download_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        qcow2_image(tmp.path(), "stall-a"),
        qcow2_image(tmp.path(), "stall-b"),
        qcow2_image(tmp.path(), "stall-c"),
    );
    let root = tmp.path().join("repo");
    write_repo(
        &root,
        "team",
        &[
            Entry {
                name: "a",
                version: "v1",
                timestamp: 1.0,
                image: &a,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "b",
                version: "v1",
                timestamp: 1.0,
                image: &b,
                publish: Publish::PlainSha256,
            },
            Entry {
                name: "c",
                version: "v1",
                timestamp: 1.0,
                image: &c,
                publish: Publish::PlainSha256,
            },
        ],
    );
    let server = Server::serve(&root);
    // No answer at all for 3 s, the first time.
    server.rule("a/v1.xz", Rule::StallOnce(Duration::from_secs(3)));
    // Half the body, then silence, the first time: the retry asks for the rest.
    server.rule("b/v1", Rule::StallMidBodyOnce(b.len() / 2, Duration::from_secs(3)));
    // The same, from a server that cannot resume: the retry starts again.
    server.rule("c/v1", Rule::StallMidBodyOnce(c.len() / 2, Duration::from_secs(3)));
    server.rule("c/v1", Rule::NoRanges);
    let s = store(tmp.path(), &server);

    assert_eq!(fs::read(s.resolve("a", None).unwrap().disk).unwrap(), a);
    assert_eq!(server.hits("a/v1.xz"), 2);
    assert_eq!(fs::read(s.resolve("b", None).unwrap().disk).unwrap(), b);
    assert_eq!(server.hits("b/v1"), 2);
    assert_eq!(fs::read(s.resolve("c", None).unwrap().disk).unwrap(), c);
    assert_eq!(server.hits("c/v1"), 2);
}

#[test]
fn two_processes_pulling_the_same_template_download_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let img = qcow2_image(tmp.path(), "shared");
    let root = tmp.path().join("repo");
    write_repo(
        &root,
        "team",
        &[Entry {
            name: "shared",
            version: "v1",
            timestamp: 1.0,
            image: &img,
            publish: Publish::PlainSha256,
        }],
    );
    let server = Server::serve(&root);
    // ~2 s per transfer, so the two pulls overlap.
    server.rule("shared/v1", Rule::Slow(img.len() / 200 + 1));
    let pull = || {
        Command::new(env!("CARGO_BIN_EXE_lago"))
            .args([
                "template",
                "pull",
                "shared",
                "--template-repo",
                &server.url("repo.metadata"),
            ])
            .env("LAGO_TEMPLATE_STORE", tmp.path().join("store"))
            .env_remove("LAGO_TEMPLATE_REPO")
            .env_remove("LAGO_OFFLINE")
            .output()
            .unwrap()
    };
    let (one, two) = std::thread::scope(|sc| {
        let a = sc.spawn(pull);
        std::thread::sleep(Duration::from_millis(200));
        let b = sc.spawn(pull);
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&one, &two] {
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(one.stdout, two.stdout, "both name the same stored image");
    assert_eq!(server.hits("shared/v1"), 1, "one download");
    let stored = String::from_utf8_lossy(&one.stdout);
    let path = stored.split_whitespace().nth(1).unwrap();
    assert_eq!(fs::read(path).unwrap(), img);
}

#[test]
fn unreadable_repositories_are_named_with_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    fs::create_dir_all(&root).unwrap();
    fs::write(
        root.join("repo.metadata"),
        "{\n  \"name\": \"x\",\n  \"templates\": 5\n}\n",
    )
    .unwrap();
    let server = Server::serve(&root);
    let err = store(tmp.path(), &server).resolve("el9", None).unwrap_err().to_string();
    assert!(err.contains("repo.metadata: line 3, column"), "{err}");
    assert!(err.contains("not in the store"), "{err}");

    // A local path works as a repository too; a missing one is named.
    let s = TemplateStore::new(tmp.path().join("store"))
        .with_repos([RepoLocation::parse(tmp.path().join("nowhere").to_str().unwrap())]);
    let err = s.resolve("el9", None).unwrap_err().to_string();
    assert!(err.contains("nowhere") && err.contains("does not exist"), "{err}");

    // Nothing listens: refused at once, named.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/repo.metadata", l.local_addr().unwrap());
    drop(l);
    let s = TemplateStore::new(tmp.path().join("store"))
        .with_http(quick())
        .with_repos([RepoLocation::parse(&url)]);
    let err = s.resolve("el9", None).unwrap_err().to_string();
    assert!(err.contains(&url), "{err}");
}

/// A workdir holding an environment whose state names `templates`.
fn fake_env(dir: &Path, templates: &[&str]) -> std::path::PathBuf {
    fs::create_dir_all(dir).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = templates
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("vm{i}/root"), serde_json::Value::String((*t).to_owned())))
        .collect();
    fs::write(
        dir.join(lago::env::STATE_FILE),
        serde_json::json!({ "templates": map }).to_string(),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn import_publish_and_pull_round_trip_and_verify_notices_a_changed_image() {
    let tmp = tempfile::tempdir().unwrap();
    let a = TemplateStore::new(tmp.path().join("a"));
    let img = tmp.path().join("mine.qcow2");
    fs::write(&img, qcow2_image(tmp.path(), "mine")).unwrap();
    let t = a.import(&img, "mine", Some("1.0")).unwrap();
    assert_eq!(fs::read(&t.disk).unwrap(), fs::read(&img).unwrap());
    assert!(
        t.source.as_deref().unwrap().starts_with("imported from /"),
        "{:?}",
        t.source
    );
    // Again: the same content is a no-op; other content under the same version is refused.
    assert_eq!(a.import(&img, "mine", Some("1.0")).unwrap().disk, t.disk);
    let other = tmp.path().join("other.raw");
    fs::write(&other, vec![1u8; 4096]).unwrap();
    let err = a.import(&other, "mine", Some("1.0")).unwrap_err().to_string();
    assert!(err.contains("already has template `mine:1.0`"), "{err}");
    // A raw image is converted; its default version is its hash's start.
    let raw = a.import(&other, "mine", None).unwrap();
    assert_eq!(raw.version.len(), 12);
    assert_eq!(&fs::read(&raw.disk).unwrap()[..4], b"QFI\xfb");
    let err = a.import(&other, "../x", None).unwrap_err().to_string();
    assert!(err.contains("not a valid template name"), "{err}");

    // Publish (fast xz), serve, pull into another store: the same bytes.
    let repo = tmp.path().join("published");
    let opts = lago::store::manage::PublishOptions {
        xz_level: 0,
        repo_name: Some("ours".into()),
        ..Default::default()
    };
    let done = a.publish(&repo, &["mine:1.0".to_owned()], &opts).unwrap();
    assert_eq!(done.len(), 1);
    assert!(!done[0].unchanged && done[0].xz_bytes > 0);
    for f in [
        "mine/1.0.xz",
        "mine/1.0.sha256",
        "mine/1.0.hash",
        "mine/1.0.metadata",
        "repo.metadata",
    ] {
        assert!(repo.join(f).is_file(), "{f}");
    }
    let again = a.publish(&repo, &["mine:1.0".to_owned()], &opts).unwrap();
    assert!(again[0].unchanged);
    let server = Server::serve(&repo);
    let b = store(&tmp.path().join("b-root"), &server);
    let pulled = b.pull("mine", None).unwrap();
    assert_eq!(pulled.version, "1.0");
    assert_eq!(fs::read(&pulled.disk).unwrap(), fs::read(&t.disk).unwrap());
    assert!(pulled.source.as_deref().unwrap().contains("ours"));
    // Another image already published under that name and version is not overwritten.
    let c = TemplateStore::new(tmp.path().join("c"));
    c.import(&other, "mine", Some("1.0")).unwrap();
    let err = c.publish(&repo, &[], &opts).unwrap_err().to_string();
    assert!(
        err.contains("1.0.xz") && err.contains("not what lago would publish"),
        "{err}"
    );

    // Verify: all good, then a changed image is reported (and the CLI fails).
    assert!(a.verify(&[]).unwrap().iter().all(|(_, r)| matches!(r, Ok(true))));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&t.disk, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&t.disk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&t.disk, bytes).unwrap();
    let report = a.verify(&["mine:1.0".to_owned()]).unwrap();
    assert!(matches!(report[0].1, Ok(false)));
    let cli = Command::new(env!("CARGO_BIN_EXE_lago"))
        .args(["template", "verify", "mine"])
        .env("LAGO_TEMPLATE_STORE", tmp.path().join("a"))
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(1), "{cli:?}");
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("mine:1.0  CHANGED"),
        "{cli:?}"
    );
    assert!(a.verify(&["nope".to_owned()]).is_err());
}

#[test]
fn prune_keeps_what_environments_use_and_the_newest_version() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TemplateStore::new(tmp.path().join("store"));
    let mut made = Vec::new();
    for v in ["1", "2", "3"] {
        let f = tmp.path().join(format!("img{v}.raw"));
        fs::write(&f, vec![v.as_bytes()[0]; 4096]).unwrap();
        made.push(s.import(&f, "app", Some(v)).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
    }
    // An environment uses version 1; another recorded a use, then was destroyed.
    let env = fake_env(&tmp.path().join("env1"), &["app:1"]);
    s.record_use(&made[0], &env, &lago::EnvId::new("e1").unwrap()).unwrap();
    let gone = fake_env(&tmp.path().join("env2"), &["app:2"]);
    s.record_use(&made[1], &gone, &lago::EnvId::new("e2").unwrap()).unwrap();
    fs::remove_dir_all(&gone).unwrap();
    s.forget_env(&lago::EnvId::new("e2").unwrap(), &gone);

    let dry = s.prune(true, false).unwrap();
    assert_eq!(
        dry.removed.iter().map(|r| r.template.as_str()).collect::<Vec<_>>(),
        ["app:2"]
    );
    assert!(made[1].disk.is_file(), "a dry run removes nothing");
    assert_eq!(
        dry.in_use,
        [InUse {
            template: "app:1".to_owned(),
            used_by: vec![env.clone()]
        }]
    );
    assert_eq!(dry.newest, ["app:3"]);

    let listed = s.entries().unwrap();
    let one = listed.iter().find(|e| e.template.version == "1").unwrap();
    assert_eq!(one.used_by, std::slice::from_ref(&env));
    assert!(one.last_used.is_some() && one.size_on_disk > 0);

    let done = s.prune(false, true).unwrap();
    let removed: Vec<&str> = done.removed.iter().map(|r| r.template.as_str()).collect();
    assert_eq!(removed, ["app:2", "app:3"]);
    assert!(made[0].disk.is_file(), "in use: kept even with --all");
    assert!(!made[1].disk.exists() && !made[2].disk.exists());
    let left: Vec<String> = fs::read_dir(tmp.path().join("store/app"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["1"], "nothing half-removed is left");

    // A workdir that cannot be seen from here (moved, another mount
    // namespace's /tmp) proves nothing: its template stays.
    let hidden = tmp.path().join("elsewhere/env3");
    s.record_use(&made[0], &hidden, &lago::EnvId::new("e3").unwrap())
        .unwrap();
    s.forget_env(&lago::EnvId::new("e1").unwrap(), &env);
    let kept = s.prune(false, true).unwrap();
    assert_eq!(
        kept.in_use,
        [InUse {
            template: "app:1".to_owned(),
            used_by: vec![hidden.clone()]
        }]
    );
    assert!(made[0].disk.is_file());
    assert_eq!(
        s.entries().unwrap()[0].used_by,
        [hidden],
        "`template list` drops no record it cannot prove stale"
    );
}

#[test]
fn a_web_repository_cannot_name_local_files_and_later_repositories_are_asked_for_missing_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let img = qcow2_image(tmp.path(), "two");
    // A repository on the web whose source is this machine's /etc.
    let evil = tmp.path().join("evil");
    fs::create_dir_all(&evil).unwrap();
    fs::write(
        evil.join("repo.metadata"),
        r#"{"name": "evil", "sources": {"s": {"type": "file", "args": {"root": "/etc"}}},
            "templates": {"t": {"versions": {"v": {"source": "s", "handle": "hostname", "timestamp": 1}}}}}"#,
    )
    .unwrap();
    let evil_server = Server::serve(&evil);
    let err = store(tmp.path(), &evil_server)
        .resolve("t", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources.s") && err.contains("only have http sources"),
        "{err}"
    );
    nothing_stored(tmp.path(), "t");

    // The first repository has `app` but not version 2; the second has it.
    let first = tmp.path().join("first");
    write_repo(
        &first,
        "first",
        &[Entry {
            name: "app",
            version: "1",
            timestamp: 1.0,
            image: &img,
            publish: Publish::XzSha256,
        }],
    );
    let second = tmp.path().join("second");
    write_repo(
        &second,
        "second",
        &[Entry {
            name: "app",
            version: "2",
            timestamp: 2.0,
            image: &img,
            publish: Publish::XzSha256,
        }],
    );
    let (s1, s2) = (Server::serve(&first), Server::serve(&second));
    let s = TemplateStore::new(tmp.path().join("store"))
        .with_http(quick())
        .with_repos([
            RepoLocation::parse(&s1.url("repo.metadata")),
            RepoLocation::parse(&s2.url("repo.metadata")),
        ]);
    let t = s.resolve("app", Some("2")).unwrap();
    assert!(t.source.as_deref().unwrap().contains("second"), "{:?}", t.source);
    let err = s.resolve("app", Some("3")).unwrap_err().to_string();
    assert!(
        err.contains("no version `3`") && err.contains("(it has: 1)") && err.contains("(it has: 2)"),
        "{err}"
    );
}

#[test]
fn publish_keeps_what_it_does_not_know_in_repo_metadata_and_never_repoints_a_source() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TemplateStore::new(tmp.path().join("store"));
    let f = tmp.path().join("x.raw");
    fs::write(&f, vec![3u8; 4096]).unwrap();
    s.import(&f, "x", Some("1")).unwrap();
    let repo = tmp.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join("repo.metadata"),
        r#"{"name": "theirs", "owner": "qa-team",
            "sources": {"lago": {"type": "http", "args": {"baseurl": "https://cdn.example/lago"}}},
            "templates": {"other": {"versions": {"9": {"source": "lago", "handle": "other/9", "timestamp": 5, "distro": "el9"}}}}}"#,
    )
    .unwrap();
    let opts = lago::store::manage::PublishOptions {
        xz_level: 0,
        ..Default::default()
    };
    let err = s.publish(&repo, &[], &opts).unwrap_err().to_string();
    assert!(err.contains("source `lago` exists and points elsewhere"), "{err}");
    assert!(!repo.join("x").exists(), "nothing written");
    let opts = lago::store::manage::PublishOptions {
        base_url: Some("https://cdn.example/lago".into()),
        ..opts
    };
    s.publish(&repo, &[], &opts).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(repo.join("repo.metadata")).unwrap()).unwrap();
    assert_eq!(meta["owner"], "qa-team");
    assert_eq!(meta["templates"]["other"]["versions"]["9"]["distro"], "el9");
    assert_eq!(meta["templates"]["x"]["versions"]["1"]["handle"], "x/1");
}

/// Digests pinned by the user, and sizes the repository declares, bound what
/// is downloaded: a pin the published hash contradicts downloads nothing, a
/// right pin pulls and matches the stored template, a repository whose
/// `repo.metadata` differs from its pin is not read, and a small xz of zeros
/// that decompresses past its declared size is stopped and leaves nothing.
#[test]
fn pinned_digests_and_declared_sizes_bound_what_is_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let img = qcow2_image(tmp.path(), "pinned");
    let bomb = vec![0u8; 48 << 20];
    let root = tmp.path().join("repo");
    let meta = write_repo(
        &root,
        "pins",
        &[
            Entry {
                name: "app",
                version: "1",
                timestamp: 1.0,
                image: &img,
                publish: Publish::XzSha256,
            },
            Entry {
                name: "bomb",
                version: "1",
                timestamp: 1.0,
                image: &bomb,
                publish: Publish::XzSha256,
            },
        ],
    );
    // The bomb's metadata declares 1 MiB; its xz is small, its content 48 MiB.
    fs::write(root.join("bomb/1.metadata"), r#"{"name": "bomb", "size": 1048576}"#).unwrap();
    assert!(fs::metadata(root.join("bomb/1.xz")).unwrap().len() < 1 << 20);
    let server = Server::serve(&root);
    let s = store(tmp.path(), &server);
    let right = sha256_hex(&img);
    let wrong = "0".repeat(64);

    let err = s.resolve_pinned("app", None, Some(&wrong)).unwrap_err();
    let text = lago::error_chain(&err);
    assert!(
        text.contains(&wrong) && text.contains(&right) && text.contains("template_digest"),
        "{text}"
    );
    assert_eq!(server.hits("app/1.xz"), 0, "a contradicted pin downloads nothing");
    nothing_stored(tmp.path(), "app");

    let t = s.resolve_pinned("app", None, Some(&right.to_uppercase())).unwrap();
    assert_eq!(fs::read(&t.disk).unwrap(), img);
    assert!(t.has_digest(&right));
    // In the store now: the pin is checked against it without a download.
    assert!(matches!(
        s.resolve_pinned("app", None, Some(&wrong)),
        Err(StoreError::Repo(_) | StoreError::Pinned { .. })
    ));
    assert_eq!(server.hits("app/1.xz"), 1);

    let err = s.resolve("bomb", None).unwrap_err();
    let text = lago::error_chain(&err);
    assert!(
        text.contains("once decompressed") && text.contains("declares 1048576 bytes"),
        "{text}"
    );
    nothing_stored(tmp.path(), "bomb");

    // The repository itself pinned: its repo.metadata must have that digest.
    let meta_sha = sha256_hex(&fs::read(&meta).unwrap());
    let pinned_repo = |digest: &str| {
        TemplateStore::new(tmp.path().join("store2"))
            .with_http(quick())
            .with_repos([RepoLocation::parse(&format!(
                "{}#sha256={digest}",
                server.url("repo.metadata")
            ))])
    };
    let err = lago::error_chain(&pinned_repo(&wrong).pull("app", None).unwrap_err());
    assert!(
        err.contains("repo.metadata") && err.contains(&meta_sha) && err.contains(&wrong),
        "{err}"
    );
    assert_eq!(
        fs::read(&pinned_repo(&meta_sha).pull("app", None).unwrap().disk).unwrap(),
        img
    );
}
