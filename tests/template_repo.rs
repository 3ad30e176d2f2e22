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
