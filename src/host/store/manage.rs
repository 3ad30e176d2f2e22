//! Managing the store: what is in it and who uses it, importing a local
//! image, publishing entries as a Lago repository, verifying and pruning.
//!
//! An environment that layers its disks on a template records itself in the
//! template's `users/` folder (`<env id>.json`: its id and workdir) before
//! its overlays are made; `init` fails when it cannot. A record goes when
//! its environment is destroyed (or removed by `lago gc`), never because its
//! workdir cannot be seen from here (moved, another mount namespace's,
//! unmounted): `prune` keeps every template that has a record, so it never
//! removes what an existing environment's overlays need.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::repo::{
    RepoMetadata, SourceSpec, TemplateVersions, VersionEntry, is_qcow2, safe_component, standalone_qcow2,
};
use super::{BUILD_PREFIX, META, StoreError, Template, TemplateStore, io, remove_build, remove_stale_builds};
use crate::util::cmd::run;

/// Why a store operation failed (beyond reading and writing the store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// A template name or version is not a safe folder name.
    #[error(
        "`{value}` is not a valid template {what}: letters, digits, `.`, `_`, `-`, `+`, `:`, `@` (128 at most), not starting with `.`"
    )]
    BadName {
        /// `name` or `version`.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The file to import is not a disk image lago can use.
    #[error("cannot import {}: {reason}", path.display())]
    Import {
        /// The image file given to import.
        path: PathBuf,
        /// Why it was refused (not a regular file, changed while copied, a qcow2 backing file, …).
        reason: String,
    },
    /// The store already has that name and version with other content.
    #[error("the store already has template `{name}:{version}` with other content; import it under another --version")]
    Exists {
        /// The template's name given to import.
        name: String,
        /// The version it would be stored under, already taken.
        version: String,
    },
    /// The publishing folder holds a file lago would have to overwrite.
    #[error("{}: exists and is not what lago would publish there; publish into another folder or remove it", path.display())]
    WouldOverwrite {
        /// The file in the publishing folder that lago would replace.
        path: PathBuf,
    },
    /// The repository's `repo.metadata` already has a source of lago's name, pointing elsewhere.
    #[error("{}: source `{name}` exists and points elsewhere; publish with the same --base-url, or into another folder", path.display())]
    SourceTaken {
        /// The metadata file.
        path: PathBuf,
        /// The source's name.
        name: String,
    },
    /// Nothing in the store matches.
    #[error("no template in the store matches `{0}`")]
    NoMatch(String),
}

/// A template in the store and how it is used.
#[derive(Debug, Clone, Serialize)]
pub struct StoreEntry {
    /// The template's metadata (name, version, image paths, digests).
    pub template: Template,
    /// Bytes its folder takes on disk.
    pub size_on_disk: u64,
    /// The image's virtual size in bytes (0 when qemu-img cannot tell).
    pub virtual_size: u64,
    /// When an environment last used it (None: never recorded).
    pub last_used: Option<SystemTime>,
    /// Workdirs of the existing environments that use it.
    pub used_by: Vec<PathBuf>,
}

/// A template version `prune` removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// `name:version`.
    pub template: String,
    /// What it took on disk.
    pub bytes: u64,
}

/// A template version `prune` kept because environments use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InUse {
    /// `name:version`.
    pub template: String,
    /// The workdirs of the environments that use it.
    pub used_by: Vec<PathBuf>,
}

/// What `prune` did (or would do, for a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Removed (or to remove).
    pub removed: Vec<Pruned>,
    /// Kept because an existing environment uses them.
    pub in_use: Vec<InUse>,
    /// Kept as the newest version of their template (prune --all removes them).
    pub newest: Vec<String>,
}

/// How `publish` writes.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The repository's name (default: the folder's name).
    pub repo_name: Option<String>,
    /// The `baseurl` written (default `.`: the images are beside `repo.metadata`).
    pub base_url: Option<String>,
    /// xz preset, 0–9 (default 6).
    pub xz_level: u32,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            repo_name: None,
            base_url: None,
            xz_level: 6,
        }
    }
}

/// One template published.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// `name:version`.
    pub template: String,
    /// The compressed image written in the publishing folder (`<handle>.xz`).
    pub file: PathBuf,
    /// The compressed image's size in bytes.
    pub xz_bytes: u64,
    /// The size of the image it holds.
    pub image_bytes: u64,
    /// Whether it was already there (same hash) and left alone.
    pub unchanged: bool,
}

/// A template checked by [`TemplateStore::verify`]: whether its image still
/// has the recorded sha256 (or why it could not be read).
pub type Verified = (Template, Result<bool, StoreError>);

/// A `name` or `name:version` filter.
fn matches(t: &Template, filter: &str) -> bool {
    match filter.split_once(':') {
        Some((n, v)) => t.name == n && t.version == v,
        None => t.name == filter,
    }
}

const USERS: &str = "users";
const LAST_USED: &str = "last-used";

fn version_dir(t: &Template) -> Option<&Path> {
    t.disk.parent()
}

/// A use record: `users/<env id>.json` in the template's version folder.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct UseRecord {
    pub(crate) env_id: crate::plan::EnvId,
    pub(crate) workdir: PathBuf,
}

/// The workdir a use record names: a new record (`<env id>.json`), or one
/// an older lago wrote (file named by a hash of the workdir, holding its path).
fn record_workdir(path: &Path) -> Option<PathBuf> {
    let bytes = fs::read(path).ok()?;
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_slice::<UseRecord>(&bytes).ok().map(|r| r.workdir);
    }
    Some(PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// How long `record_use` waits for a template that a `prune` moved away
/// while the record was written (the prune then finds the record and moves
/// the template back).
const PRUNE_RACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The workdirs the use records in folder `users` name.
pub(crate) fn users_in(users: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(users)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| record_workdir(&e.path()))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn workdir_key(workdir: &Path) -> String {
    let d = Sha256::digest(workdir.as_os_str().as_encoded_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn xz_error(e: liblzma::stream::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl TemplateStore {
    /// Records that environment `env_id` in `workdir` layers disks on `t`
    /// (and when). It never waits for the template's lock (a pull holds it
    /// for as long as a download takes): the record goes into the
    /// template's folder, which `prune` moves out of sight before it looks
    /// at the records a last time (and moves back when it finds one). So
    /// either `prune` sees the record, or the record cannot be written and
    /// this fails.
    pub fn record_use(&self, t: &Template, workdir: &Path, env_id: &crate::plan::EnvId) -> Result<(), StoreError> {
        let dir = version_dir(t)
            .ok_or_else(|| io("record the use of", &t.disk)(std::io::Error::other("the template has no folder")))?;
        let users = dir.join(USERS);
        // Not create_dir_all: a folder `prune` moved away must not come back empty.
        match fs::create_dir(&users) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("record the use of the template in", &users)(e)),
        }
        let record = users.join(format!("{env_id}.json"));
        let text = serde_json::to_vec(&UseRecord {
            env_id: env_id.clone(),
            workdir: workdir.to_path_buf(),
        })
        .map_err(|e| io("record the use of the template in", &record)(std::io::Error::other(e)))?;
        fs::write(&record, text).map_err(io("record the use of the template in", &record))?;
        let stamp = format!(
            "{}\n",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        if let Err(e) = fs::write(dir.join(LAST_USED), stamp) {
            tracing::debug!(template = %t.name, error = %e, "cannot note when the template was last used");
        }
        // A prune that moved the folder away after the record was written sees it and moves it back.
        let start = Instant::now();
        while !t.disk.is_file() {
            if start.elapsed() > PRUNE_RACE {
                let _ = fs::remove_file(&record);
                return Err(io("use", &t.disk)(std::io::Error::other(
                    "the template was removed (pruned) while this environment was being created",
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// Drops the use records of environment `env_id` (in `workdir`), in
    /// every template of the store: the environment is destroyed.
    pub fn forget_env(&self, env_id: &crate::plan::EnvId, workdir: &Path) {
        let versions = fs::read_dir(self.root())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|name| fs::read_dir(name.path()).into_iter().flatten().flatten());
        for version in versions {
            let users = version.path().join(USERS);
            for name in [format!("{env_id}.json"), workdir_key(workdir)] {
                match fs::remove_file(users.join(&name)) {
                    Ok(()) => tracing::debug!(record = %users.join(&name).display(), "use record dropped"),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) => {}
                    Err(e) => {
                        tracing::warn!(record = %users.join(&name).display(), error = %e, "cannot drop a use record")
                    }
                }
            }
        }
    }

    /// Workdirs of the environments that use `t`: every record, also those
    /// whose workdir cannot be seen from here (nothing proves them gone).
    pub fn users_of(&self, t: &Template) -> Vec<PathBuf> {
        let Some(dir) = version_dir(t) else { return Vec::new() };
        users_in(&dir.join(USERS))
    }

    /// Every template in the store, with sizes and users.
    pub fn entries(&self) -> Result<Vec<StoreEntry>, StoreError> {
        let mut out = Vec::new();
        for t in self.list()? {
            let dir = version_dir(&t).map(Path::to_path_buf).unwrap_or_default();
            let size_on_disk = du(&dir);
            let virtual_size = crate::host::image::sizes(&t.disk).map(|s| s.1).unwrap_or(0);
            let last_used = fs::metadata(dir.join(LAST_USED)).and_then(|m| m.modified()).ok();
            let used_by = self.users_of(&t);
            out.push(StoreEntry {
                template: t,
                size_on_disk,
                virtual_size,
                last_used,
                used_by,
            });
        }
        Ok(out)
    }

    /// Copies the qcow2 or raw image `file` into the store as `name:version`
    /// (default version: the first 12 hex digits of its sha256). Importing
    /// the same content again is a no-op.
    pub fn import(&self, file: &Path, name: &str, version: Option<&str>) -> Result<Template, StoreError> {
        check_import(file, name, version)?;
        let qcow2 = is_qcow2(file)?;
        let start = Instant::now();
        let parent = self.root().join(name);
        fs::create_dir_all(&parent).map_err(io("create", &parent))?;
        let _lock = self.lock(name)?;
        remove_stale_builds(&parent);
        let tmp = parent.join(format!("{BUILD_PREFIX}import-{}", std::process::id()));
        fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        let staged = (|| {
            let disk = tmp.join("root.qcow2");
            copy_image(file, &disk, qcow2, name)?;
            let sha256 = super::sha256_file(&disk)?;
            let version = version.map_or_else(|| sha256[..12].to_owned(), str::to_owned);
            let dir = parent.join(&version);
            if let Some(existing) = TemplateStore::read_meta(&dir)? {
                if existing.sha256.as_deref() == Some(sha256.as_str()) {
                    return Ok((existing, None));
                }
                return Err(ManageError::Exists {
                    name: name.to_owned(),
                    version,
                }
                .into());
            }
            fs::set_permissions(&disk, fs::Permissions::from_mode(0o444)).map_err(io("chmod", &disk))?;
            let t = imported_template(file, name, version, &dir, sha256, start);
            write_meta(&tmp, &t)?;
            Ok((t, Some(dir)))
        })();
        settle_import(&tmp, staged)
    }

    /// Re-hashes the images (all, or those matching `name` / `name:version`)
    /// against the sha256 recorded when they entered the store: `Ok(true)`
    /// matches, `Ok(false)` differs; templates without a record are hashed
    /// now and the record written.
    pub fn verify(&self, filter: &[String]) -> Result<Vec<Verified>, StoreError> {
        let mut out = Vec::new();
        for f in filter {
            if !self.list()?.iter().any(|t| matches(t, f)) {
                return Err(ManageError::NoMatch(f.clone()).into());
            }
        }
        for t in self.list()? {
            if !filter.is_empty() && !filter.iter().any(|f| matches(&t, f)) {
                continue;
            }
            let result = super::sha256_file(&t.disk).and_then(|actual| match &t.sha256 {
                Some(want) => Ok(*want == actual),
                None => {
                    let mut t2 = t.clone();
                    t2.sha256 = Some(actual);
                    if let Some(dir) = version_dir(&t) {
                        write_meta(dir, &t2)?;
                    }
                    Ok(true)
                }
            });
            out.push((t, result));
        }
        Ok(out)
    }

    /// Removes templates no existing environment uses. The newest version of
    /// each template stays unless `all`; with `dry_run`, nothing is removed.
    pub fn prune(&self, dry_run: bool, all: bool) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport::default();
        let mut by_name: BTreeMap<String, Vec<Template>> = BTreeMap::new();
        for t in self.list()? {
            by_name.entry(t.name.clone()).or_default().push(t);
        }
        for (name, mut versions) in by_name {
            versions.sort_by(|a, b| {
                let key = |t: &Template| {
                    (
                        t.timestamp.unwrap_or(0.0),
                        fs::metadata(&t.disk).and_then(|m| m.modified()).ok(),
                    )
                };
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
            });
            let newest = versions.last().map(|t| t.version.clone());
            let _lock = if dry_run { None } else { Some(self.lock(&name)?) };
            for t in versions {
                let id = format!("{}:{}", t.name, t.version);
                let users = self.users_of(&t);
                if !users.is_empty() {
                    report.in_use.push(InUse {
                        template: id,
                        used_by: users,
                    });
                    continue;
                }
                if !all && newest.as_deref() == Some(t.version.as_str()) {
                    report.newest.push(id);
                    continue;
                }
                let Some(dir) = version_dir(&t).map(Path::to_path_buf) else {
                    continue;
                };
                let size = du(&dir);
                if !dry_run {
                    // Out of sight first (a rename is atomic); a use recorded
                    // meanwhile went with it: then it comes back.
                    let doomed =
                        dir.with_file_name(format!("{BUILD_PREFIX}prune-{}-{}", t.version, std::process::id()));
                    fs::rename(&dir, &doomed).map_err(io("move out of the store", &dir))?;
                    let late = users_in(&doomed.join(USERS));
                    if !late.is_empty() {
                        fs::rename(&doomed, &dir).map_err(io("move back into the store", &dir))?;
                        report.in_use.push(InUse {
                            template: id,
                            used_by: late,
                        });
                        continue;
                    }
                    remove_build(&doomed);
                    tracing::info!(template = %id, bytes = size, "pruned");
                }
                report.removed.push(Pruned {
                    template: id,
                    bytes: size,
                });
            }
        }
        Ok(report)
    }

    /// Writes store entries (all, or those matching the filters) to `dir` as
    /// a Lago repository: `<name>/<version>.xz` with `.sha256`, Lago's `.hash`
    /// (sha1) and `.metadata` beside it, and `repo.metadata` (merged with the
    /// one there, if any). Host `dir` on any web server (or share it as a
    /// folder) and point `--template-repo` at its `repo.metadata`.
    pub fn publish(&self, dir: &Path, filter: &[String], opts: &PublishOptions) -> Result<Vec<Published>, StoreError> {
        let mut chosen: Vec<Template> = Vec::new();
        for t in self.list()? {
            if filter.is_empty() || filter.iter().any(|f| matches(&t, f)) {
                chosen.push(t);
            }
        }
        for f in filter {
            if !chosen.iter().any(|t| matches(t, f)) {
                return Err(ManageError::NoMatch(f.clone()).into());
            }
        }
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let meta_path = dir.join("repo.metadata");
        let mut meta = match fs::read(&meta_path) {
            Ok(bytes) => super::repo::Repository::parse(&bytes, &meta_path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RepoMetadata {
                name: opts.repo_name.clone().unwrap_or_else(|| {
                    fs::canonicalize(dir)
                        .ok()
                        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .unwrap_or_else(|| "lago".to_owned())
                }),
                sources: BTreeMap::new(),
                templates: BTreeMap::new(),
                other: BTreeMap::new(),
            },
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path: meta_path,
                    source,
                });
            }
        };
        if let Some(n) = &opts.repo_name {
            meta.name = n.clone();
        }
        let source = "lago";
        let ours = SourceSpec {
            kind: "http".to_owned(),
            args: [(
                "baseurl".to_owned(),
                serde_json::Value::String(opts.base_url.clone().unwrap_or_else(|| ".".to_owned())),
            )]
            .into_iter()
            .collect(),
        };
        // A source of that name that is not ours (or another base URL) is not replaced.
        if meta.sources.get(source).is_some_and(|s| *s != ours) {
            return Err(ManageError::SourceTaken {
                path: meta_path,
                name: source.to_owned(),
            }
            .into());
        }
        meta.sources.insert(source.to_owned(), ours);
        let mut out = Vec::new();
        for t in chosen {
            let handle = format!("{}/{}", t.name, t.version);
            let image = dir.join(&handle);
            let published = publish_one(&t, &image, opts.xz_level)?;
            meta.templates
                .entry(t.name.clone())
                .or_insert_with(|| TemplateVersions {
                    versions: BTreeMap::new(),
                    other: BTreeMap::new(),
                })
                .versions
                .insert(
                    t.version.clone(),
                    VersionEntry {
                        other: BTreeMap::new(),
                        source: source.to_owned(),
                        handle,
                        timestamp: t.timestamp.unwrap_or_else(|| {
                            fs::metadata(&t.disk)
                                .and_then(|m| m.modified())
                                .ok()
                                .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                                .map(|d| d.as_secs() as f64)
                                .unwrap_or(0.0)
                        }),
                    },
                );
            out.push(published);
        }
        let text = serde_json::to_vec_pretty(&meta).map_err(|e| StoreError::Io {
            action: "write",
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&meta_path, &text)?;
        Ok(out)
    }
}

fn write_meta(dir: &Path, t: &Template) -> Result<(), StoreError> {
    let path = dir.join(META);
    let text = serde_json::to_string_pretty(t).map_err(|e| StoreError::Io {
        action: "write",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&path, text.as_bytes())
}

/// Writes `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    fs::write(&tmp, bytes).map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into", path))
}

/// Bytes the files under `dir` take on disk.
pub(crate) fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(md) = e.path().symlink_metadata() else { continue };
        if md.is_dir() {
            total += du(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `<image>.xz` and its sidecars for `t`, unless the same image is
/// already published there.
fn publish_one(t: &Template, image: &Path, level: u32) -> Result<Published, StoreError> {
    let files = PublishedFiles::of(image);
    if let Some(parent) = image.parent() {
        fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let image_bytes = fs::metadata(&t.disk).map_err(io("read", &t.disk))?.len();
    if files.already_there(t)? {
        return Ok(files.published(t, image_bytes, true));
    }
    let tmp = files.with(&format!("xz.tmp-{}", std::process::id()));
    let (sha1, sha256) = compress(&t.disk, &tmp, level).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        StoreError::Io {
            action: "compress into",
            path: tmp.clone(),
            source,
        }
    })?;
    if t.sha256.as_deref().is_some_and(|h| h != sha256) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io {
            action: "publish",
            path: t.disk.clone(),
            source: std::io::Error::other(format!(
                "the image's sha256 is {sha256}, not the {} recorded when it entered the store (run `lago template verify`)",
                t.sha256.as_deref().unwrap_or_default()
            )),
        });
    }
    let lago_meta = serde_json::json!({
        "name": t.name,
        "version": t.version,
        "format": "qcow2",
        "size": image_bytes,
        "sha1": sha1,
        "sha256": sha256,
        "timestamp": t.timestamp,
        "source": t.source,
    });
    files.write(
        &tmp,
        &format!("{sha256}  {}\n", t.version),
        &sha1,
        &lago_meta.to_string(),
    )?;
    Ok(files.published(t, image_bytes, false))
}

/// The files one published image is: `<image>.xz` and its sidecars
/// `.sha256`, `.hash` (sha1, as Python Lago reads it) and `.metadata`.
struct PublishedFiles {
    image: PathBuf,
    xz: PathBuf,
    sha256: PathBuf,
    hash: PathBuf,
    meta: PathBuf,
}

impl PublishedFiles {
    fn of(image: &Path) -> Self {
        let mut files = PublishedFiles {
            image: image.to_path_buf(),
            xz: PathBuf::new(),
            sha256: PathBuf::new(),
            hash: PathBuf::new(),
            meta: PathBuf::new(),
        };
        files.xz = files.with("xz");
        files.sha256 = files.with("sha256");
        files.hash = files.with("hash");
        files.meta = files.with("metadata");
        files
    }

    fn with(&self, ext: &str) -> PathBuf {
        let mut s = self.image.as_os_str().to_owned();
        s.push(format!(".{ext}"));
        PathBuf::from(s)
    }

    /// True when `t` is published here with the same content (left alone);
    /// an error when any of its files exists with other content.
    fn already_there(&self, t: &Template) -> Result<bool, StoreError> {
        if self.xz.is_file() {
            let sidecar = fs::read_to_string(&self.sha256).unwrap_or_default();
            let published = sidecar.split_whitespace().next().unwrap_or_default();
            if t.sha256.as_deref().is_some_and(|h| h == published) {
                return Ok(true);
            }
            return Err(ManageError::WouldOverwrite { path: self.xz.clone() }.into());
        }
        for p in [&self.sha256, &self.hash, &self.meta] {
            if p.exists() {
                return Err(ManageError::WouldOverwrite { path: p.clone() }.into());
            }
        }
        Ok(false)
    }

    /// Moves the compressed image `tmp` into place, then writes its
    /// sidecars; a failure removes what this call wrote.
    fn write(&self, tmp: &Path, sha256: &str, sha1: &str, meta: &str) -> Result<(), StoreError> {
        let mut written: Vec<&Path> = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            fs::rename(tmp, &self.xz).map_err(io("rename into", &self.xz))?;
            written.push(&self.xz);
            for (path, text) in [(&self.sha256, sha256), (&self.hash, sha1), (&self.meta, meta)] {
                write_atomic(path, text.as_bytes())?;
                written.push(path);
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
            for p in written {
                let _ = fs::remove_file(p);
            }
        }
        result
    }

    fn published(&self, t: &Template, image_bytes: u64, unchanged: bool) -> Published {
        Published {
            template: format!("{}:{}", t.name, t.version),
            xz_bytes: fs::metadata(&self.xz).map(|m| m.len()).unwrap_or(0),
            file: self.xz.clone(),
            image_bytes,
            unchanged,
        }
    }
}

/// Compresses `disk` into `out` with xz at `level`, hashing as it reads:
/// its (sha1, sha256).
fn compress(disk: &Path, out: &Path, level: u32) -> std::io::Result<(String, String)> {
    // At most 4 threads: each needs up to ~700 MiB at -9.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .min(4);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .preset(level.min(9))
        .threads(threads)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(xz_error)?;
    let file = fs::File::create(out)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(std::io::BufWriter::new(file), stream);
    let mut f = fs::File::open(disk)?;
    let (mut s1, mut s256) = (Sha1::new(), Sha256::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
        enc.write_all(&buf[..n])?;
    }
    let mut w = enc.finish()?;
    w.flush()?;
    w.get_ref().sync_all()?;
    Ok((hex(&s1.finalize()), hex(&s256.finalize())))
}

/// Refuses an import whose name or version is not one path component, or
/// whose file is not a regular file.
fn check_import(file: &Path, name: &str, version: Option<&str>) -> Result<(), StoreError> {
    if !safe_component(name) {
        return Err(ManageError::BadName {
            what: "name",
            value: name.to_owned(),
        }
        .into());
    }
    let md = fs::metadata(file).map_err(|e| import_refused(file, e.to_string()))?;
    if !md.is_file() {
        return Err(import_refused(file, "not a regular file".into()));
    }
    if let Some(v) = version.filter(|v| !safe_component(v)) {
        return Err(ManageError::BadName {
            what: "version",
            value: v.to_owned(),
        }
        .into());
    }
    Ok(())
}

fn import_refused(file: &Path, reason: String) -> StoreError {
    ManageError::Import {
        path: file.to_path_buf(),
        reason,
    }
    .into()
}

/// Puts `file` at `disk` as qcow2: a qcow2 is copied and the copy checked
/// (not the original, which may change meanwhile) to stand alone; a raw
/// image is converted.
fn copy_image(file: &Path, disk: &Path, qcow2: bool, name: &str) -> Result<(), StoreError> {
    if !qcow2 {
        return run(Command::new("qemu-img")
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(file)
            .arg(disk))
        .map(drop)
        .map_err(|source| StoreError::Build {
            template: name.to_owned(),
            source,
        });
    }
    fs::copy(file, disk).map_err(io("copy into the store", disk))?;
    if !is_qcow2(disk)? {
        return Err(import_refused(file, "it changed while it was copied".into()));
    }
    standalone_qcow2(disk).map_err(|r| import_refused(file, format!("it refers to another file ({r})")))
}

/// The record of an image imported from `file` into `dir`.
fn imported_template(file: &Path, name: &str, version: String, dir: &Path, sha256: String, start: Instant) -> Template {
    let abs = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Template {
        name: name.to_owned(),
        version,
        disk: dir.join("root.qcow2"),
        kernel: None,
        initrd: None,
        cmdline: None,
        build_secs: start.elapsed().as_secs_f64(),
        source: Some(format!("imported from {}", abs.display())),
        sha256: Some(sha256),
        timestamp: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as f64),
        published_sha256: None,
    }
}

/// Moves a staged import into its version folder (`Some(dir)`), or drops
/// it: when the same content was already there (`None`) or staging failed.
fn settle_import(tmp: &Path, staged: Result<(Template, Option<PathBuf>), StoreError>) -> Result<Template, StoreError> {
    match staged {
        Ok((t, Some(dir))) => match fs::rename(tmp, &dir) {
            Ok(()) => Ok(t),
            Err(e) => {
                remove_build(tmp);
                Err(io("rename into", &dir)(e))
            }
        },
        Ok((t, None)) => {
            remove_build(tmp);
            Ok(t)
        }
        Err(e) => {
            remove_build(tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Template {
        Template {
            name: "app".into(),
            version: "1".into(),
            disk: PathBuf::from("/nonexistent/app/1/root.qcow2"),
            kernel: None,
            initrd: None,
            cmdline: None,
            build_secs: 0.0,
            source: None,
            sha256: None,
            timestamp: None,
            published_sha256: None,
        }
    }

    #[test]
    fn records_are_read_in_both_formats_and_never_judged_by_a_missing_workdir() {
        let tmp = tempfile::tempdir().unwrap();
        let users = tmp.path().join("users");
        fs::create_dir(&users).unwrap();
        let id = crate::plan::EnvId::new("ab12").unwrap();
        let new = UseRecord {
            env_id: id,
            workdir: tmp.path().join("moved-away"),
        };
        fs::write(users.join("ab12.json"), serde_json::to_vec(&new).unwrap()).unwrap();
        // An older lago's record: a file named by a hash, holding the workdir.
        fs::write(users.join(workdir_key(Path::new("/old/wd"))), "/old/wd").unwrap();
        fs::write(users.join("broken.json"), "{").unwrap();
        assert_eq!(
            users_in(&users),
            [PathBuf::from("/old/wd"), tmp.path().join("moved-away")]
        );
        assert_eq!(fs::read_dir(&users).unwrap().count(), 3, "listing drops nothing");
    }

    #[test]
    fn a_use_is_recorded_without_the_build_lock_and_fails_when_the_template_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TemplateStore::new(tmp.path().join("store"));
        let dir = tmp.path().join("store/app/1");
        fs::create_dir_all(&dir).unwrap();
        let t = Template {
            disk: dir.join("root.qcow2"),
            ..template()
        };
        fs::write(&t.disk, "img").unwrap();
        let id = crate::plan::EnvId::new("cd34").unwrap();
        // A pull holds the template's lock for as long as it downloads: no wait.
        let _held = store.lock("app").unwrap();
        let start = Instant::now();
        store.record_use(&t, Path::new("/w"), &id).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(store.users_of(&t), [PathBuf::from("/w")]);
        store.forget_env(&id, Path::new("/w"));
        assert!(store.users_of(&t).is_empty());
        // Pruned (moved away) before the record: it is not written, and says why.
        let away = tmp.path().join("store/app/.away");
        fs::rename(&dir, &away).unwrap();
        let err = store.record_use(&t, Path::new("/w"), &id).unwrap_err();
        assert!(
            crate::util::text::error_chain(&err).contains("record the use"),
            "{}",
            crate::util::text::error_chain(&err)
        );
        assert!(!dir.exists(), "the folder did not come back empty");
    }

    #[test]
    fn filters_take_a_name_or_a_name_and_version() {
        let t = template();
        assert!(matches(&t, "app") && matches(&t, "app:1"));
        assert!(!matches(&t, "app:2") && !matches(&t, "ap"));
    }
}
