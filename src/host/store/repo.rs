//! Lago template repositories: the `repo.metadata` format Python Lago reads
//! and `lago template publish` writes, and pulling a template from one into
//! the store.
//!
//! ```json
//! { "name": "my-repo",
//!   "sources": { "web": { "type": "http", "args": { "baseurl": "https://example.com/lago" } },
//!                "nfs": { "type": "file", "args": { "root": "/srv/lago" } } },
//!   "templates": { "debian-12": { "versions": {
//!       "v1": { "source": "web", "handle": "debian-12/v1", "timestamp": 1790000000 } } } } }
//! ```
//!
//! An image is published as `<handle>.xz` (or `<handle>` uncompressed) with a
//! `<handle>.sha256` or Lago's `<handle>.hash` (sha1) of the *uncompressed*
//! image beside it, and optionally `<handle>.metadata`. A relative `baseurl`
//! or `root` is taken from where `repo.metadata` itself is, so a published
//! folder works on any web server or file share as it is.
//!
//! A pull streams the image through the xz decoder and both hashes into a
//! build folder of the store, checks the published hash, converts a raw image
//! to qcow2, and only then renames the folder into place: a truncated or
//! corrupt download leaves nothing visible in the store.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::http::{DownloadSink, Http, HttpError};
use super::{BUILD_PREFIX, StoreError, Template, TemplateStore, io, remove_stale_builds};
use crate::util::cmd::run;

/// The largest `repo.metadata` read.
pub const METADATA_LIMIT: u64 = 8 << 20;
/// The largest hash or metadata sidecar read.
const SIDECAR_LIMIT: u64 = 64 << 10;
/// The most memory the xz decoder may use.
const XZ_MEMLIMIT: u64 = 1 << 30;
/// The largest image (compressed or not), unless `LAGO_TEMPLATE_MAX_BYTES` says.
const IMAGE_LIMIT: u64 = 64 << 30;

/// Why a repository could not be read or a template pulled from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// Fetching over HTTP failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A local repository file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The local repository file (`repo.metadata`, a sidecar or an image).
        path: PathBuf,
        /// The I/O error reading it (or writing what was read into the store).
        #[source]
        source: std::io::Error,
    },
    /// There is no `repo.metadata` where the repository was said to be.
    #[error("no repository at {location}: {what} does not exist")]
    Missing {
        /// The repository location given.
        location: String,
        /// The file that was looked for.
        what: String,
    },
    /// A local file is larger than allowed.
    #[error("{} is larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The local repository file (`repo.metadata`, a sidecar or an image).
        path: PathBuf,
        /// The most bytes read from a file of its kind.
        limit: u64,
    },
    /// `repo.metadata` is not valid JSON of the format.
    #[error(
        "{location}: line {line}, column {column}: {message} (expected Lago's repo.metadata: name, sources, templates.<name>.versions.<version> with source, handle, timestamp)"
    )]
    Metadata {
        /// Where it was read from.
        location: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// serde_json's description of the error.
        message: String,
    },
    /// An entry of the metadata cannot be used (unsafe name or handle, unknown source).
    #[error("{location}: {key}: {reason}")]
    Entry {
        /// Where the metadata was read from.
        location: String,
        /// The key path of the entry.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The repository has the template but not that version.
    #[error("repository `{repo}` has template `{name}` but no version `{version}` (it has: {})", available.join(", "))]
    NoVersion {
        /// The repository's `name` in its `repo.metadata`.
        repo: String,
        /// The template's name.
        name: String,
        /// The version asked for.
        version: String,
        /// The versions it has.
        available: Vec<String>,
    },
    /// The image is published without a hash to check it against.
    #[error(
        "{image}: no hash is published beside it ({image}.sha256 or {image}.hash); an unverified image is not used"
    )]
    NoHash {
        /// Where the image is.
        image: String,
    },
    /// A hash sidecar is not a hex digest.
    #[error("{sidecar}: not a {algorithm} hex digest")]
    BadHash {
        /// Where the hash file is (`<handle>.sha256` or `<handle>.hash`).
        sidecar: String,
        /// sha256 or sha1.
        algorithm: &'static str,
    },
    /// Neither `<handle>.xz` nor `<handle>` exists.
    #[error("template `{name}:{version}`: the image is not in the repository ({image}[.xz] does not exist)")]
    NoImage {
        /// The template's name.
        name: String,
        /// The version whose image is missing.
        version: String,
        /// Where it was looked for.
        image: String,
    },
    /// The image does not have the published hash.
    #[error(
        "template `{template}` from {image}: its {algorithm} is {actual}, the repository publishes {expected}; the download was discarded"
    )]
    HashMismatch {
        /// The template, `name:version`.
        template: String,
        /// The image's URL or local path.
        image: String,
        /// sha256 or sha1.
        algorithm: &'static str,
        /// The published hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// The xz stream is corrupt or ends early.
    #[error("{image}: the xz stream is corrupt or incomplete")]
    Decompress {
        /// The image's URL or local path.
        image: String,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// A qcow2 image refers to other files (a backing file, an external data
    /// file): a guest could read the host's files through it.
    #[error("{image}: a qcow2 image that refers to another file ({reason}) is not used as a template")]
    Unsafe {
        /// The image's URL or local path.
        image: String,
        /// What it refers to.
        reason: String,
    },
    /// The image is larger than allowed once decompressed: larger than the
    /// size its repository declares (`<handle>.metadata`), or than
    /// `LAGO_TEMPLATE_MAX_BYTES`.
    #[error("{image}: larger than {limit} bytes once decompressed ({why}); the download was stopped and discarded")]
    ImageTooLarge {
        /// The image's URL or local path.
        image: String,
        /// The limit in bytes (the declared size, or `LAGO_TEMPLATE_MAX_BYTES`).
        limit: u64,
        /// Where the limit comes from.
        why: String,
    },
    /// A pinned digest does not match.
    #[error("{what}: its sha256 is {actual}, but {pinned_by} pins {pinned}; nothing of it was used")]
    PinMismatch {
        /// What was checked (a repository's metadata, a template's image).
        what: String,
        /// Where the pin is written.
        pinned_by: String,
        /// The pinned digest.
        pinned: String,
        /// The digest found (or published).
        actual: String,
    },
    /// The store's filesystem has not room for a download.
    #[error("{}: {free} bytes free, the download of {image} needs {need}; free some space (lago template prune) or point LAGO_TEMPLATE_STORE elsewhere", dir.display())]
    NoSpace {
        /// The store folder.
        dir: PathBuf,
        /// What is downloaded.
        image: String,
        /// Bytes it needs: its declared size plus 256 MiB for conversion and metadata.
        need: u64,
        /// Bytes free to unprivileged users on the store's filesystem.
        free: u64,
    },
}

/// Where a repository's `repo.metadata` is: a URL or a local path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepoLocation {
    /// `http://…` or `https://…`.
    Http(String),
    /// A local file (or `file://` URL); a folder means its `repo.metadata`.
    File(PathBuf),
}

impl RepoLocation {
    /// A URL (`http(s)://`, `file://`) or a path.
    pub fn parse(s: &str) -> RepoLocation {
        let s = s.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            RepoLocation::Http(s.to_owned())
        } else if let Some(p) = s.strip_prefix("file://") {
            RepoLocation::File(PathBuf::from(p))
        } else {
            RepoLocation::File(PathBuf::from(s))
        }
    }

    /// Every location in a comma-separated list (`LAGO_TEMPLATE_REPO`).
    pub fn parse_list(s: &str) -> Vec<RepoLocation> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(RepoLocation::parse)
            .collect()
    }

    /// The sha256 its `repo.metadata` is pinned to (`…#sha256=<hex>`), if any.
    pub fn pin(&self) -> Option<&str> {
        let s = match self {
            RepoLocation::Http(u) => u.as_str(),
            RepoLocation::File(p) => p.to_str()?,
        };
        s.rsplit_once("#sha256=").map(|(_, d)| d)
    }

    /// The location without its pin.
    fn unpinned(&self) -> RepoLocation {
        match self {
            RepoLocation::Http(u) => {
                RepoLocation::Http(u.split_once("#sha256=").map_or(u.as_str(), |(a, _)| a).to_owned())
            }
            RepoLocation::File(p) => match p.to_str().and_then(|s| s.split_once("#sha256=")) {
                Some((a, _)) => RepoLocation::File(PathBuf::from(a)),
                None => self.clone(),
            },
        }
    }

    fn metadata_file(&self) -> RepoLocation {
        match self.unpinned() {
            RepoLocation::File(p) if p.is_dir() => RepoLocation::File(p.join("repo.metadata")),
            RepoLocation::Http(u) if u.ends_with('/') => RepoLocation::Http(format!("{u}repo.metadata")),
            other => other,
        }
    }

    /// The folder the metadata file is in, where relative sources point.
    fn parent(&self) -> Place {
        match self.metadata_file() {
            RepoLocation::Http(u) => Place::Http(u.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(u)),
            RepoLocation::File(p) => Place::File(p.parent().map(Path::to_path_buf).unwrap_or_default()),
        }
    }
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoLocation::Http(u) => f.write_str(u),
            RepoLocation::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The contents of a repository's `repo.metadata` (Python Lago's format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoMetadata {
    /// The repository's name.
    pub name: String,
    /// Where images are, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Templates by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateVersions>,
    /// Keys lago does not read, kept when `publish` rewrites the file.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A source: `{"type": "http", "args": {"baseurl": URL}}` or `{"type": "file", "args": {"root": DIR}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// `http` or `file`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `baseurl` or `root`.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
}

/// The versions of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateVersions {
    /// Each version's entry, keyed by the version name.
    #[serde(default)]
    pub versions: BTreeMap<String, VersionEntry>,
    /// Keys lago does not read, kept when `publish` rewrites the file.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// The source it is in.
    pub source: String,
    /// Its path in the source (the image is `<handle>.xz` or `<handle>`).
    pub handle: String,
    /// When it was published (seconds since the epoch): the newest is the default.
    #[serde(default)]
    pub timestamp: f64,
    /// Keys lago does not read, kept when `publish` rewrites the file.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A place files are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place {
    Http(String),
    File(PathBuf),
}

impl Place {
    /// The file named like this one plus `.ext`.
    fn with_suffix(&self, ext: &str) -> Place {
        match self {
            Place::Http(u) => Place::Http(format!("{u}.{ext}")),
            Place::File(p) => {
                let mut s = p.clone().into_os_string();
                s.push(format!(".{ext}"));
                Place::File(PathBuf::from(s))
            }
        }
    }

    fn join(&self, rel: &str) -> Place {
        let mut rel = rel;
        while let Some(r) = rel.strip_prefix("./") {
            rel = r;
        }
        if rel.is_empty() || rel == "." {
            return self.clone();
        }
        match self {
            Place::Http(b) => Place::Http(format!("{}/{}", b.trim_end_matches('/'), rel.trim_start_matches('/'))),
            Place::File(d) => Place::File(d.join(rel)),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Http(u) => f.write_str(u),
            Place::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A name or version as a store folder: letters, digits, `.`, `_`, `-`, `+`, `:`, `@`.
pub(crate) fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | ':' | '@'))
}

/// A handle: a relative path without `..`, `.` or empty parts.
fn safe_handle(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 1024
        && !h.starts_with('/')
        && !h.contains('\\')
        && !h.contains('?')
        && !h.contains('#')
        && h.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
        && !h.chars().any(char::is_control)
}

/// A repository whose metadata was read.
#[derive(Debug, Clone)]
pub struct Repository {
    /// Where its `repo.metadata` is.
    pub location: RepoLocation,
    /// Its `repo.metadata`, parsed.
    pub meta: RepoMetadata,
}

/// A template version found in a repository.
#[derive(Debug, Clone)]
pub struct Found {
    /// The repository's name.
    pub repo: String,
    /// The template's name.
    pub name: String,
    /// The version found (the one asked for, or the newest by timestamp).
    pub version: String,
    /// When it was published, in seconds since the epoch (from the metadata).
    pub timestamp: f64,
    /// The image, without `.xz`.
    pub(crate) image: Place,
}

/// Opens a regular file of a local repository (`None`: it does not exist).
/// A FIFO or a device (or a link to one) is refused without blocking on it.
fn open_regular(path: &Path) -> std::io::Result<Option<fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(Some(f))
}

fn read_local(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, RepoError> {
    let f = match open_regular(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(source) => {
            return Err(RepoError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| RepoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(RepoError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(out))
}

fn fetch_small(http: &Http, place: &Place, limit: u64) -> Result<Option<Vec<u8>>, RepoError> {
    match place {
        Place::Http(u) => Ok(http.get_small(u, limit)?),
        Place::File(p) => read_local(p, limit),
    }
}

impl Repository {
    /// Reads the repository's `repo.metadata` and checks every entry.
    pub fn open(location: &RepoLocation, http: &Http) -> Result<Repository, RepoError> {
        let file = location.metadata_file();
        let place = match &file {
            RepoLocation::Http(u) => Place::Http(u.clone()),
            RepoLocation::File(p) => Place::File(p.clone()),
        };
        let bytes = fetch_small(http, &place, METADATA_LIMIT)?.ok_or_else(|| RepoError::Missing {
            location: location.to_string(),
            what: file.to_string(),
        })?;
        if let Some(pinned) = location.pin() {
            let actual = hex(&Sha256::digest(&bytes));
            if !actual.eq_ignore_ascii_case(pinned) {
                return Err(RepoError::PinMismatch {
                    what: file.to_string(),
                    pinned_by: format!("the repository location {location}"),
                    pinned: pinned.to_owned(),
                    actual,
                });
            }
        }
        let meta = Self::parse(&bytes, &file.to_string())?;
        if matches!(location, RepoLocation::Http(_)) {
            // A repository on the web names web places only: never this machine's files.
            for (name, spec) in &meta.sources {
                let base = spec.args.get("baseurl").and_then(|v| v.as_str()).unwrap_or_default();
                if spec.kind == "file" || base.starts_with("file:") {
                    return Err(RepoError::Entry {
                        location: file.to_string(),
                        key: format!("sources.{name}"),
                        reason:
                            "a repository served over HTTP may only have http sources (absolute http(s) or relative)"
                                .to_owned(),
                    });
                }
            }
        }
        Ok(Repository {
            location: location.clone(),
            meta,
        })
    }

    /// Parses and checks `repo.metadata` (`location` names it in errors).
    pub fn parse(bytes: &[u8], location: &str) -> Result<RepoMetadata, RepoError> {
        let meta: RepoMetadata = serde_json::from_slice(bytes).map_err(|e| RepoError::Metadata {
            location: location.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
        })?;
        let bad = |key: String, reason: &str| RepoError::Entry {
            location: location.to_owned(),
            key,
            reason: reason.to_owned(),
        };
        if meta.name.is_empty() || meta.name.len() > 256 || meta.name.chars().any(char::is_control) {
            return Err(bad(
                "name".to_owned(),
                "expected a name of 1 to 256 printable characters",
            ));
        }
        for (name, spec) in &meta.sources {
            if !safe_component(name) {
                return Err(bad(
                    format!("sources.{}", name.escape_debug()),
                    "a source name is letters, digits, `.`, `_`, `-`, `+`, `:`, `@`",
                ));
            }
            let arg = match spec.kind.as_str() {
                "http" => "baseurl",
                "file" => "root",
                _ => return Err(bad(format!("sources.{name}.type"), "expected `http` or `file`")),
            };
            if !spec.args.get(arg).is_some_and(serde_json::Value::is_string) {
                return Err(bad(format!("sources.{name}.args.{arg}"), "expected a string"));
            }
        }
        for (name, t) in &meta.templates {
            if !safe_component(name) {
                return Err(bad(
                    format!("templates.{name}"),
                    "a template name is letters, digits, `.`, `_`, `-`, `+`, `:`, `@` (128 at most), not starting with `.`",
                ));
            }
            for (v, entry) in &t.versions {
                let key = format!("templates.{name}.versions.{v}");
                if !safe_component(v) {
                    return Err(bad(
                        key,
                        "a version is letters, digits, `.`, `_`, `-`, `+`, `:`, `@` (128 at most), not starting with `.`",
                    ));
                }
                if !meta.sources.contains_key(&entry.source) {
                    return Err(bad(
                        format!("{key}.source"),
                        &format!("no source `{}` in `sources`", entry.source),
                    ));
                }
                if !safe_handle(&entry.handle) {
                    return Err(bad(format!("{key}.handle"), "expected a relative path without `..`"));
                }
                if !entry.timestamp.is_finite() {
                    return Err(bad(format!("{key}.timestamp"), "expected a number of seconds"));
                }
            }
        }
        Ok(meta)
    }

    fn source_place(&self, source: &str) -> Place {
        let spec = &self.meta.sources[source];
        let arg = |k: &str| spec.args.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        match spec.kind.as_str() {
            "http" => {
                let base = arg("baseurl");
                if base.starts_with("http://") || base.starts_with("https://") {
                    Place::Http(base)
                } else if let Some(p) = base.strip_prefix("file://") {
                    Place::File(PathBuf::from(p))
                } else {
                    // Relative: beside repo.metadata.
                    self.location.parent().join(&base)
                }
            }
            _ => {
                let root = arg("root");
                let p = Path::new(&root);
                if p.is_absolute() {
                    Place::File(p.to_path_buf())
                } else {
                    self.location.parent().join(&root)
                }
            }
        }
    }

    /// Template `name` at `version` (`None`: the newest by timestamp), if the
    /// repository has the template.
    pub fn find(&self, name: &str, version: Option<&str>) -> Result<Option<Found>, RepoError> {
        let Some(t) = self.meta.templates.get(name) else {
            return Ok(None);
        };
        let picked = match version {
            Some(v) => t.versions.get_key_value(v).ok_or_else(|| RepoError::NoVersion {
                repo: self.meta.name.clone(),
                name: name.to_owned(),
                version: v.to_owned(),
                available: t.versions.keys().cloned().collect(),
            })?,
            None => match t
                .versions
                .iter()
                .max_by(|a, b| a.1.timestamp.total_cmp(&b.1.timestamp).then_with(|| a.0.cmp(b.0)))
            {
                Some(kv) => kv,
                None => return Ok(None),
            },
        };
        Ok(Some(Found {
            repo: self.meta.name.clone(),
            name: name.to_owned(),
            version: picked.0.clone(),
            timestamp: picked.1.timestamp,
            image: self.source_place(&picked.1.source).join(&picked.1.handle),
        }))
    }
}

fn image_limit() -> u64 {
    std::env::var("LAGO_TEMPLATE_MAX_BYTES")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(IMAGE_LIMIT)
}

/// The uncompressed size Lago's `<handle>.metadata` declares (`size`: bytes,
/// or a size such as `6G`), if it declares one.
fn declared_size(meta: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(meta).ok()?;
    match &v["size"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => lago_config::parse_size(s).ok(),
        _ => None,
    }
}

/// How large a download may grow once decompressed, and why: a tenth more
/// than the declared size (an image's file may outgrow its virtual size by
/// its metadata) plus 1 MiB, never more than `LAGO_TEMPLATE_MAX_BYTES`.
fn download_limit(declared: Option<u64>) -> (u64, String) {
    let max = image_limit();
    match declared {
        Some(d) => {
            let bound = d.saturating_add(d / 10).saturating_add(1 << 20);
            if bound < max {
                return (bound, format!("its repository declares {d} bytes"));
            }
            (max, "LAGO_TEMPLATE_MAX_BYTES".into())
        }
        None => (max, "LAGO_TEMPLATE_MAX_BYTES; its repository declares no size".into()),
    }
}

/// Room the store needs beyond the image for a download (conversions, metadata).
const SPACE_MARGIN: u64 = 256 << 20;

/// Fails when the filesystem of `dir` has not room for the declared image.
fn check_space(dir: &Path, declared: Option<u64>, image: &Place) -> Result<(), RepoError> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let need = declared.unwrap_or(0).saturating_add(SPACE_MARGIN);
    if free < need {
        return Err(RepoError::NoSpace {
            dir: dir.to_path_buf(),
            image: image.to_string(),
            need,
            free,
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The published hash: `.sha256` preferred, else Lago's `.hash` (sha1).
fn expected_hash(http: &Http, image: &Place) -> Result<(&'static str, String), RepoError> {
    for (ext, algorithm, len) in [("sha256", "sha256", 64), ("hash", "sha1", 40)] {
        let sidecar = image.with_suffix(ext);
        if let Some(bytes) = fetch_small(http, &sidecar, SIDECAR_LIMIT)? {
            let text = String::from_utf8_lossy(&bytes);
            let digest = text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
            if digest.len() != len || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(RepoError::BadHash {
                    sidecar: sidecar.to_string(),
                    algorithm,
                });
            }
            return Ok((algorithm, digest));
        }
    }
    Err(RepoError::NoHash {
        image: image.to_string(),
    })
}

/// Writes the (decompressed) image to a file, hashing it, within a size limit.
struct Hashing {
    file: fs::File,
    sha1: Sha1,
    sha256: Sha256,
    bytes: u64,
    limit: u64,
}

/// How often (in bytes written) a download looks at the free space left.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "image too large"));
        }
        // A repository that declares no size must not fill the disk either.
        if self.bytes / SPACE_CHECK_EVERY != (self.bytes + buf.len() as u64) / SPACE_CHECK_EVERY
            && let Ok(st) = rustix::fs::fstatvfs(&self.file)
            && st.f_bavail.saturating_mul(st.f_frsize) < SPACE_MARGIN / 2
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "the store's filesystem is nearly full: the download was stopped",
            ));
        }
        self.file.write_all(buf)?;
        self.sha1.update(buf);
        self.sha256.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

enum Decode {
    Xz(liblzma::write::XzDecoder<Hashing>),
    Plain(Hashing),
}

/// The download sink: the xz decoder (or nothing) in front of [`Hashing`].
struct ImageSink {
    path: PathBuf,
    xz: bool,
    limit: u64,
    out: Option<Decode>,
    pb: indicatif::ProgressBar,
    what: String,
    logged: Instant,
}

impl ImageSink {
    fn new(path: &Path, xz: bool, limit: u64, pb: indicatif::ProgressBar, what: String) -> std::io::Result<Self> {
        let mut s = ImageSink {
            path: path.to_path_buf(),
            xz,
            limit,
            out: None,
            pb,
            what,
            logged: Instant::now(),
        };
        s.restart()?;
        Ok(s)
    }

    fn finish(self) -> std::io::Result<Hashing> {
        let h = match self.out {
            Some(Decode::Xz(d)) => d.finish()?,
            Some(Decode::Plain(h)) => h,
            None => return Err(std::io::Error::other("no download")),
        };
        h.file.sync_all()?;
        Ok(h)
    }
}

impl DownloadSink for ImageSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.out {
            Some(Decode::Xz(d)) => d.write_all(bytes),
            Some(Decode::Plain(h)) => h.write_all(bytes),
            None => Err(std::io::Error::other("no download")),
        }
    }

    fn restart(&mut self) -> std::io::Result<()> {
        let h = Hashing {
            file: fs::File::create(&self.path)?,
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            bytes: 0,
            limit: self.limit,
        };
        self.out = Some(if self.xz {
            // Concatenated streams (`xz -T`, `cat a.xz b.xz`), and a bound on the
            // decoder's memory (xz -9 needs 65 MiB): a crafted header cannot ask for more.
            let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, liblzma::stream::CONCATENATED)
                .map_err(std::io::Error::other)?;
            Decode::Xz(liblzma::write::XzDecoder::new_stream(h, stream))
        } else {
            Decode::Plain(h)
        });
        Ok(())
    }

    fn progress(&mut self, done: u64, total: Option<u64>) {
        if let Some(t) = total {
            self.pb.set_length(t);
        }
        self.pb.set_position(done);
        if self.pb.is_hidden() && self.logged.elapsed() >= Duration::from_secs(10) {
            self.logged = Instant::now();
            tracing::info!(image = %self.what, done, total, "downloading");
        }
    }
}

fn progress_bar(show: bool, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "pulling {msg} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Copies a local file into the sink (a `file` source).
fn copy_local(path: &Path, limit: u64, sink: &mut ImageSink) -> Result<Option<u64>, RepoError> {
    let mut f = match open_regular(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        Err(source) => {
            return Err(RepoError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let total = f.metadata().map(|m| m.len()).ok();
    if total.is_some_and(|t| t > limit) {
        return Err(RepoError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|source| RepoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            return Ok(Some(done));
        }
        sink.write(&buf[..n]).map_err(|source| RepoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        done += n as u64;
        sink.progress(done, total);
    }
}

/// The repository an existing store entry came from, as recorded.
pub(crate) fn source_label(found: &Found, location: &RepoLocation) -> String {
    format!("repo {} ({location})", found.repo)
}

/// Pulls `found` into the store (a no-op when it is there).
pub(crate) fn pull(
    store: &TemplateStore,
    location: &RepoLocation,
    found: &Found,
    pin: Option<&str>,
) -> Result<Template, StoreError> {
    let dir = store.root().join(&found.name).join(&found.version);
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        return Ok(t);
    }
    let _lock = store.lock_for(&found.name, Duration::from_secs(3 * 3600))?;
    if let Some(t) = TemplateStore::read_meta(&dir)? {
        // Another process pulled it while we waited.
        return Ok(t);
    }
    let parent = store.root().join(&found.name);
    fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    remove_stale_builds(&parent);
    let tmp = parent.join(format!("{BUILD_PREFIX}{}-{}", found.version, std::process::id()));
    fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    let start = Instant::now();
    let t = super::finish_build(&tmp, &dir, pull_into(store, location, found, pin, &tmp, &dir, start))?;
    tracing::info!(template = %t.name, version = %t.version, secs = t.build_secs, "template pulled");
    Ok(t)
}

fn pull_into(
    store: &TemplateStore,
    location: &RepoLocation,
    found: &Found,
    pin: Option<&str>,
    tmp: &Path,
    final_dir: &Path,
    start: Instant,
) -> Result<Template, StoreError> {
    let http = Http::new(store.http.clone());
    let (algorithm, expected) = expected_hash(&http, &found.image)?;
    let what = format!("{}:{}", found.name, found.version);
    let pinned = |actual: &str| RepoError::PinMismatch {
        what: format!("template `{what}` ({})", found.image),
        pinned_by: "the init file's `template_digest`".into(),
        pinned: pin.unwrap_or_default().to_owned(),
        actual: actual.to_owned(),
    };
    // A pin the repository's own hash contradicts: nothing is downloaded.
    if let Some(p) = pin
        && algorithm == "sha256"
        && !expected.eq_ignore_ascii_case(p)
    {
        return Err(pinned(&expected).into());
    }
    // Lago's sidecar metadata: kept for `template list`, and its `size` bounds the download.
    let lago_meta = fetch_small(&http, &found.image.with_suffix("metadata"), SIDECAR_LIMIT)
        .ok()
        .flatten();
    let declared = lago_meta.as_deref().and_then(declared_size);
    let bound = download_limit(declared);
    check_space(tmp, declared, &found.image)?;
    tracing::info!(template = %what, from = %found.image, "pulling template");
    let download = tmp.join("image");
    let fetch = ImageFetch {
        http: &http,
        download: &download,
        what: &what,
        progress: store.progress,
        limit: bound.0,
        why: bound.1,
    };
    let (place, h) = fetch.fetch(found)?;
    let (sha1, sha256) = (hex(&h.sha1.finalize()), hex(&h.sha256.finalize()));
    let actual = if algorithm == "sha256" { &sha256 } else { &sha1 };
    if *actual != expected {
        return Err(RepoError::HashMismatch {
            template: what,
            image: place.to_string(),
            algorithm,
            expected,
            actual: actual.clone(),
        }
        .into());
    }
    if let Some(p) = pin
        && !sha256.eq_ignore_ascii_case(p)
    {
        return Err(pinned(&sha256).into());
    }
    if let Some(m) = lago_meta {
        let p = tmp.join("lago-metadata.json");
        fs::write(&p, m).map_err(io("write", &p))?;
    }
    let disk = tmp.join("root.qcow2");
    // What `lago template verify` checks: the stored file (a raw download is converted).
    let stored_sha256 = match store_disk(&download, &disk, &place, &found.name)? {
        false => sha256.clone(),
        true => super::sha256_file(&disk)?,
    };
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o444)).map_err(io("chmod", &disk))?;
    Ok(Template {
        name: found.name.clone(),
        version: found.version.clone(),
        disk: final_dir.join("root.qcow2"),
        kernel: None,
        initrd: None,
        cmdline: None,
        build_secs: start.elapsed().as_secs_f64(),
        source: Some(source_label(found, location)),
        sha256: Some(stored_sha256),
        timestamp: Some(found.timestamp),
        published_sha256: Some(sha256),
    })
}

/// One template image on its way from a repository into `download`:
/// `<image>.xz` first, then the plain `<image>`, within `limit` bytes.
struct ImageFetch<'a> {
    http: &'a Http,
    download: &'a Path,
    what: &'a str,
    progress: bool,
    limit: u64,
    /// Where the limit comes from, for the error that names it.
    why: String,
}

impl ImageFetch<'_> {
    /// The place the image came from and the hashes of what it holds.
    fn fetch(&self, found: &Found) -> Result<(Place, Hashing), StoreError> {
        for xz in [true, false] {
            let place = if xz {
                found.image.with_suffix("xz")
            } else {
                found.image.clone()
            };
            if let Some(h) = self.try_place(&place, xz)? {
                return Ok((place, h));
            }
        }
        Err(RepoError::NoImage {
            name: found.name.clone(),
            version: found.version.clone(),
            image: found.image.to_string(),
        }
        .into())
    }

    /// Downloads (or copies) `place`: `None` when it does not exist.
    fn try_place(&self, place: &Place, xz: bool) -> Result<Option<Hashing>, StoreError> {
        let mut sink = ImageSink::new(
            self.download,
            xz,
            self.limit,
            progress_bar(self.progress, self.what),
            self.what.to_owned(),
        )
        .map_err(io("write", self.download))?;
        let too_large = || RepoError::ImageTooLarge {
            image: place.to_string(),
            limit: self.limit,
            why: self.why.clone(),
        };
        let got = match place {
            Place::Http(u) => self
                .http
                .download(u, self.limit, &mut sink)
                .map_err(|e| match e {
                    HttpError::Body { source, .. } if source.kind() == std::io::ErrorKind::FileTooLarge => too_large(),
                    e => RepoError::from(e),
                })?
                .map(|f| f.bytes),
            Place::File(p) => copy_local(p, self.limit, &mut sink).map_err(|e| match e {
                RepoError::Read { source, .. } if source.kind() == std::io::ErrorKind::FileTooLarge => too_large(),
                e => e,
            })?,
        };
        sink.pb.finish_and_clear();
        if got.is_none() {
            return Ok(None);
        }
        let h = sink.finish().map_err(|source| {
            if source.kind() == std::io::ErrorKind::FileTooLarge {
                too_large()
            } else if xz {
                RepoError::Decompress {
                    image: place.to_string(),
                    source,
                }
            } else {
                RepoError::Read {
                    path: self.download.to_path_buf(),
                    source,
                }
            }
        })?;
        Ok(Some(h))
    }
}

/// Makes the downloaded image the template's disk: a qcow2 that stands
/// alone is moved, a raw image converted. True when it was converted.
fn store_disk(download: &Path, disk: &Path, place: &Place, name: &str) -> Result<bool, StoreError> {
    if is_qcow2(download)? {
        if let Err(reason) = standalone_qcow2(download) {
            return Err(RepoError::Unsafe {
                image: place.to_string(),
                reason,
            }
            .into());
        }
        fs::rename(download, disk).map_err(io("rename", disk))?;
        return Ok(false);
    }
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(download)
        .arg(disk))
    .map_err(|source| StoreError::Build {
        template: name.to_owned(),
        source,
    })?;
    fs::remove_file(download).map_err(io("remove", download))?;
    Ok(true)
}

/// Checks that a qcow2 image stands alone: no backing file, no external
/// data file (read with the format given, never probed).
pub(crate) fn standalone_qcow2(path: &Path) -> Result<(), String> {
    let out = run(Command::new("qemu-img")
        .args(["info", "-U", "-f", "qcow2", "--output=json"])
        .arg(path))
    .map_err(|e| format!("qemu-img cannot read it: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("qemu-img info printed no JSON: {e}"))?;
    if let Some(b) = v.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(format!("backing file {b}"));
    }
    if let Some(d) = v.pointer("/format-specific/data/data-file").and_then(|d| d.as_str()) {
        return Err(format!("external data file {d}"));
    }
    Ok(())
}

/// Whether the file starts with qcow2's magic.
pub(crate) fn is_qcow2(path: &Path) -> Result<bool, StoreError> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(io("open", path))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == *b"QFI\xfb")
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{
      "name": "team",
      "sources": {
        "web": {"type": "http", "args": {"baseurl": "http://example.com/lago/"}},
        "here": {"type": "file", "args": {"root": "images"}}
      },
      "templates": {
        "el9": {"versions": {
          "v1": {"source": "web", "handle": "el9/v1", "timestamp": 100},
          "v2": {"source": "web", "handle": "el9/v2", "timestamp": 200.5},
          "old": {"source": "here", "handle": "el9/old", "timestamp": 50}
        }}
      }
    }"#;

    fn repo(location: &str) -> Repository {
        let location = RepoLocation::parse(location);
        Repository {
            meta: Repository::parse(META.as_bytes(), &location.to_string()).unwrap(),
            location,
        }
    }

    #[test]
    fn the_newest_version_by_timestamp_is_the_default() {
        let r = repo("http://example.com/lago/repo.metadata");
        let f = r.find("el9", None).unwrap().unwrap();
        assert_eq!((f.version.as_str(), f.timestamp), ("v2", 200.5));
        assert_eq!(f.image, Place::Http("http://example.com/lago/el9/v2".into()));
        assert_eq!(r.find("el9", Some("v1")).unwrap().unwrap().version, "v1");
        assert!(r.find("fedora", None).unwrap().is_none());
        let err = r.find("el9", Some("v9")).unwrap_err().to_string();
        assert!(err.contains("no version `v9`") && err.contains("old, v1, v2"), "{err}");
    }

    #[test]
    fn relative_sources_are_beside_repo_metadata() {
        let r = repo("/srv/lago/repo.metadata");
        let f = r.find("el9", Some("old")).unwrap().unwrap();
        assert_eq!(f.image, Place::File("/srv/lago/images/el9/old".into()));
        let mut dot = repo("/srv/lago/repo.metadata");
        dot.meta
            .sources
            .get_mut("here")
            .unwrap()
            .args
            .insert("root".into(), ".".into());
        assert_eq!(
            dot.find("el9", Some("old")).unwrap().unwrap().image,
            Place::File("/srv/lago/el9/old".into())
        );
        let r = repo("https://example.org/x/repo.metadata");
        assert_eq!(
            r.find("el9", Some("old")).unwrap().unwrap().image,
            Place::Http("https://example.org/x/images/el9/old".into())
        );
    }

    #[test]
    fn locations_parse_urls_paths_and_lists() {
        assert_eq!(
            RepoLocation::parse("https://a/b/repo.metadata"),
            RepoLocation::Http("https://a/b/repo.metadata".into())
        );
        assert_eq!(
            RepoLocation::parse("file:///srv/r"),
            RepoLocation::File("/srv/r".into())
        );
        assert_eq!(
            RepoLocation::parse("./r/repo.metadata"),
            RepoLocation::File("./r/repo.metadata".into())
        );
        assert_eq!(RepoLocation::parse_list(" http://a/m , /b ,,").len(), 2);
        assert_eq!(
            RepoLocation::Http("http://h/repo/".into()).metadata_file(),
            RepoLocation::Http("http://h/repo/repo.metadata".into())
        );
    }

    #[test]
    fn malformed_metadata_names_the_place_the_line_and_the_format() {
        let err = Repository::parse(
            b"{\n  \"name\": \"x\",\n  \"templates\": [1]\n}",
            "http://h/repo.metadata",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("http://h/repo.metadata: line 3, column"), "{err}");
        assert!(err.contains("expected Lago's repo.metadata"), "{err}");
    }

    #[test]
    fn unsafe_entries_are_refused_with_their_key() {
        let cases = [
            (
                r#"{"name":"r","sources":{"s":{"type":"http","args":{"baseurl":"http://h"}}},"templates":{"../etc":{"versions":{}}}}"#,
                "templates.../etc",
            ),
            (
                r#"{"name":"r","sources":{"s":{"type":"http","args":{"baseurl":"http://h"}}},"templates":{"t":{"versions":{"..":{"source":"s","handle":"a","timestamp":1}}}}}"#,
                "templates.t.versions...",
            ),
            (
                r#"{"name":"r","sources":{"s":{"type":"http","args":{"baseurl":"http://h"}}},"templates":{"t":{"versions":{"v":{"source":"s","handle":"../../etc/shadow","timestamp":1}}}}}"#,
                "templates.t.versions.v.handle",
            ),
            (
                r#"{"name":"r","sources":{"s":{"type":"http","args":{"baseurl":"http://h"}}},"templates":{"t":{"versions":{"v":{"source":"nope","handle":"a","timestamp":1}}}}}"#,
                "templates.t.versions.v.source",
            ),
            (
                r#"{"name":"r","sources":{"s":{"type":"ftp","args":{}}},"templates":{}}"#,
                "sources.s.type",
            ),
            (
                r#"{"name":"r","sources":{"s":{"type":"file","args":{"root":1}}},"templates":{}}"#,
                "sources.s.args.root",
            ),
        ];
        for (text, key) in cases {
            let err = Repository::parse(text.as_bytes(), "m").unwrap_err().to_string();
            assert!(err.starts_with(&format!("m: {key}: ")), "{err}");
        }
    }

    #[test]
    fn handles_and_names_are_checked() {
        for ok in ["a", "el9/v2", "x/y/z.qcow2"] {
            assert!(safe_handle(ok), "{ok}");
        }
        for bad in ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a?x", "a\nb"] {
            assert!(!safe_handle(bad), "{bad:?}");
        }
        assert!(safe_component("debian-12") && safe_component("4.3.1+el9") && safe_component("repo:el:1"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", &"x".repeat(129)] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }
}
