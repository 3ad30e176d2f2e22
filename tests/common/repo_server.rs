//! A template repository served over HTTP on 127.0.0.1 for tests (tiny_http),
//! with misbehaviours on demand: 404, a stall, a truncated or interrupted body.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liblzma::write::XzEncoder;
use sha2::{Digest, Sha256};

/// How the server answers one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 404.
    NotFound,
    /// The first request waits this long before answering.
    StallOnce(Duration),
    /// Every answer announces the whole length but stops at this offset of the file, then closes.
    Truncate(usize),
    /// The first answer sends this many bytes, then stops sending for the duration.
    StallMidBodyOnce(usize, Duration),
    /// Bytes are sent at this rate (bytes per 10 ms), so transfers overlap.
    Slow(usize),
    /// `Range` requests are answered with the whole file (200).
    NoRanges,
}

pub struct Server {
    pub base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    rules: Arc<Mutex<HashMap<String, Vec<Rule>>>>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

struct Throttled {
    inner: Cursor<Vec<u8>>,
    per_tick: usize,
    stall_at: Option<(usize, Duration)>,
    sent: usize,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut max = buf.len().min(self.per_tick);
        if let Some((at, pause)) = self.stall_at {
            if self.sent >= at {
                std::thread::sleep(pause);
                self.stall_at = None;
            } else {
                max = max.min(at - self.sent);
            }
        }
        if self.per_tick < usize::MAX {
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.sent += n;
        Ok(n)
    }
}

impl Server {
    /// Serves the files under `root`.
    pub fn serve(root: &Path) -> Server {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let rules: Arc<Mutex<HashMap<String, Vec<Rule>>>> = Arc::default();
        let (s, h, r, root) = (server.clone(), hits.clone(), rules.clone(), root.to_path_buf());
        std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let (h, r, root) = (h.clone(), r.clone(), root.clone());
                std::thread::spawn(move || answer(req, &root, &h, &r));
            }
        });
        Server {
            base: format!("http://127.0.0.1:{port}"),
            hits,
            rules,
            server,
        }
    }

    pub fn rule(&self, path: &str, rule: Rule) {
        self.rules
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .push(rule);
    }

    /// GET requests made for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }
}

fn answer(
    req: tiny_http::Request,
    root: &Path,
    hits: &Mutex<HashMap<String, usize>>,
    rules: &Mutex<HashMap<String, Vec<Rule>>>,
) {
    let path = req.url().trim_start_matches('/').to_owned();
    let n = {
        let mut h = hits.lock().unwrap();
        let e = h.entry(path.clone()).or_default();
        *e += 1;
        *e
    };
    let mine = rules.lock().unwrap().get(&path).cloned().unwrap_or_default();
    let file = root.join(&path);
    if mine.contains(&Rule::NotFound) || path.contains("..") || !file.is_file() {
        let _ = req.respond(tiny_http::Response::empty(404));
        return;
    }
    let body = std::fs::read(&file).unwrap();
    let total = body.len();
    let mut start = 0;
    if !mine.contains(&Rule::NoRanges)
        && let Some(h) = req.headers().iter().find(|h| h.field.equiv("Range"))
        && let Some(from) = h
            .value
            .as_str()
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
    {
        start = from.parse().unwrap_or(0).min(total);
    }
    let mut per_tick = usize::MAX;
    let mut stall_at = None;
    let mut send = body[start..].to_vec();
    let mut close = false;
    for rule in &mine {
        match *rule {
            Rule::StallOnce(d) if n == 1 => std::thread::sleep(d),
            Rule::Truncate(k) => {
                send.truncate(k.saturating_sub(start));
                close = true;
            }
            Rule::StallMidBodyOnce(k, d) if n == 1 => stall_at = Some((k, d)),
            Rule::Slow(k) => per_tick = k,
            _ => {}
        }
    }
    let mut headers = vec![tiny_http::Header::from_bytes("Accept-Ranges", "bytes").unwrap()];
    let status = if start > 0 {
        headers.push(
            tiny_http::Header::from_bytes("Content-Range", format!("bytes {start}-{}/{total}", total - 1)).unwrap(),
        );
        206
    } else {
        200
    };
    if close {
        headers.push(tiny_http::Header::from_bytes("Connection", "close").unwrap());
    }
    let reader = Throttled {
        inner: Cursor::new(send),
        per_tick,
        stall_at,
        sent: 0,
    };
    let resp = tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        reader,
        Some(total - start),
        None,
    );
    let _ = req.respond(resp);
}

/// How an image is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// `<handle>.xz` and `<handle>.sha256`.
    XzSha256,
    /// `<handle>.xz` and Lago's `<handle>.hash` (sha1).
    XzSha1,
    /// `<handle>` uncompressed and `<handle>.sha256`.
    PlainSha256,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Sha1;
    Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn xz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = XzEncoder::new(Vec::new(), 1);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A small qcow2 image made by qemu-img, with `marker` written at its start
/// (inside its data, so each image differs).
pub fn qcow2_image(dir: &Path, marker: &str) -> Vec<u8> {
    let raw = dir.join(format!("{marker}.raw"));
    let mut data = vec![0u8; 1 << 20];
    data[..marker.len()].copy_from_slice(marker.as_bytes());
    std::fs::write(&raw, &data).unwrap();
    let q = dir.join(format!("{marker}.qcow2"));
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .expect("qemu-img (scripts/setup-host installs it)");
    assert!(st.success());
    std::fs::read(&q).unwrap()
}

/// An entry of a test repository.
pub struct Entry<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub timestamp: f64,
    pub image: &'a [u8],
    pub publish: Publish,
}

/// Writes `repo.metadata` (source `web`, relative base URL `.`) and the images under `root`.
pub fn write_repo(root: &Path, name: &str, entries: &[Entry<'_>]) -> PathBuf {
    let mut templates = serde_json::Map::new();
    for e in entries {
        let handle = format!("{}/{}", e.name, e.version);
        let file = root.join(&handle);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        match e.publish {
            Publish::XzSha256 => {
                std::fs::write(format!("{}.xz", file.display()), xz(e.image)).unwrap();
                std::fs::write(
                    format!("{}.sha256", file.display()),
                    format!("{}  {}\n", sha256_hex(e.image), e.version),
                )
                .unwrap();
            }
            Publish::XzSha1 => {
                std::fs::write(format!("{}.xz", file.display()), xz(e.image)).unwrap();
                std::fs::write(format!("{}.hash", file.display()), sha1_hex(e.image)).unwrap();
            }
            Publish::PlainSha256 => {
                std::fs::write(&file, e.image).unwrap();
                std::fs::write(format!("{}.sha256", file.display()), sha256_hex(e.image)).unwrap();
            }
        }
        let t = templates
            .entry(e.name.to_owned())
            .or_insert_with(|| serde_json::json!({"versions": {}}));
        t["versions"][e.version] = serde_json::json!({"source": "web", "handle": handle, "timestamp": e.timestamp});
    }
    let meta = serde_json::json!({
        "name": name,
        "sources": {"web": {"type": "http", "args": {"baseurl": "."}}},
        "templates": templates,
    });
    let path = root.join("repo.metadata");
    std::fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    path
}
