//! The template store: base images VMs' root disks are layered on.
//!
//! Templates live under the store directory (`LAGO_TEMPLATE_STORE`, else
//! `/var/lib/lago/store` for root, else `$XDG_CACHE_HOME/lago/store`), one
//! folder per version, each written to a temporary folder and renamed into
//! place under a lock, so concurrent processes never see half a template.
//! A template is never written after it is built: VMs use qcow2 overlays.
//!
//! Two templates are built in. `tiny` is built on first use from the host's
//! Debian packages (cloud kernel, busybox-static, dropbear) and rebuilt only
//! when one of its inputs changes (see [`tiny`]). `debian-12` is a Debian 12
//! cloud image built from Debian's mirror with mmdebstrap (see [`debian`]).

pub mod debian;
pub mod http;
pub mod manage;
pub mod repo;
pub mod tiny;
pub mod warm;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::util::cmd::CommandError;
use crate::util::lock::{LockFailure, lock_exclusive, running_as_root};

/// Why a template could not be found or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No template of that name.
    #[error("unknown template `{name}`; built in: tiny, debian-12{}", if available.is_empty() { String::new() } else { format!("; in the store: {}", available.join(", ")) })]
    Unknown {
        /// The name asked for.
        name: String,
        /// Templates the store knows.
        available: Vec<String>,
    },
    /// No such version of a template.
    #[error("template `{name}` has no version `{version}`")]
    UnknownVersion {
        /// The template's name, without a version.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// A host file or tool a built-in template is made with is missing.
    #[error("cannot build template `{template}`: {what} not found ({hint})")]
    MissingInput {
        /// The built-in template being built (`tiny` or `debian-12`).
        template: String,
        /// What is missing.
        what: String,
        /// How to get it (the Debian package to install).
        hint: String,
    },
    /// A store file could not be read or written.
    #[error("template store: cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The store file or folder the action was on.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the store lock too long.
    #[error("timed out after {waited:?} waiting for the template lock {} (another lago process is building)", path.display())]
    LockTimeout {
        /// The template's lock file (`<store>/.locks/<name>.lock`).
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A build tool failed.
    #[error("building template `{template}` failed")]
    Build {
        /// The name of the template being built.
        template: String,
        /// The failing command.
        #[source]
        source: CommandError,
    },
    /// A built-in template is not in the store and cannot be built here.
    #[error("template `{name}` is not in the store {} and cannot be built here: {reason}; build it where Debian's mirror is reachable: `{command}`", store.display())]
    NotBuilt {
        /// The built-in template's name.
        name: String,
        /// The store folder searched.
        store: PathBuf,
        /// Why it cannot be built now.
        reason: String,
        /// The command that builds it.
        command: String,
    },
    /// Building the template needs root (mmdebstrap installs packages as root).
    #[error(
        "building template `{template}` needs root (mmdebstrap --mode=root): run `sudo lago template build {template}`, or point LAGO_TEMPLATE_STORE at a store where root built it"
    )]
    NeedsRoot {
        /// The template whose build needs root.
        template: String,
    },
    /// The package mirror a build needs cannot be reached.
    #[error("cannot build template `{template}`: {reason} (LAGO_DEBIAN_MIRROR names another mirror)")]
    Unreachable {
        /// The template whose build needs the mirror.
        template: String,
        /// What failed in reaching the mirror.
        reason: String,
    },
    /// The boot sectors of a disk image could not be assembled.
    #[error("cannot assemble the disk of template `{template}`: {reason}")]
    Assemble {
        /// The template whose disk was being assembled.
        template: String,
        /// What was wrong with GRUB's boot or core image.
        reason: String,
    },
    /// A template is neither in a repository nor in the store.
    #[error("template `{name}{}` is not in the store {}: {why}; `lago template pull {name}{}` with a --template-repo fetches it", version.as_ref().map(|v| format!(":{v}")).unwrap_or_default(), store.display(), version.as_ref().map(|v| format!(":{v}")).unwrap_or_default())]
    NotInStore {
        /// The template's name, without a version.
        name: String,
        /// The version asked for (`None`: the newest).
        version: Option<String>,
        /// The store folder searched.
        store: PathBuf,
        /// Why it could not be fetched.
        why: String,
    },
    /// Importing, publishing, verifying or pruning failed.
    #[error(transparent)]
    Manage(#[from] manage::ManageError),
    /// A template repository could not be read or pulled from.
    #[error(transparent)]
    Repo(Box<repo::RepoError>),
    /// The template found is not the image the init file pins.
    #[error("template `{name}:{version}` has sha256 {}, but the init file pins {pinned} (`template_digest`)", actual.as_deref().unwrap_or("(not recorded)"))]
    Pinned {
        /// The name of the template found.
        name: String,
        /// The version found in the store.
        version: String,
        /// The sha256 the init file pins (`template_digest`).
        pinned: String,
        /// The sha256 recorded for the found image (`None`: none recorded).
        actual: Option<String>,
    },
    /// A template's metadata file is not valid.
    #[error("template metadata {} is malformed", path.display())]
    Metadata {
        /// The version folder's `template.json`.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<repo::RepoError> for StoreError {
    fn from(e: repo::RepoError) -> Self {
        StoreError::Repo(Box::new(e))
    }
}

pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// A template ready to be layered on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Name (`tiny`).
    pub name: String,
    /// Version (for `tiny`: a digest of its inputs).
    pub version: String,
    /// The root disk image (qcow2), never written.
    pub disk: PathBuf,
    /// Kernel for direct kernel boot, when the template carries one.
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk for direct kernel boot.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (lago adds `lago.root=` and `lago.seed=`).
    pub cmdline: Option<String>,
    /// Seconds the build (or the download) took.
    pub build_secs: f64,
    /// Where it came from: `built-in`, `repo NAME (LOCATION)`, `imported from PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// sha256 of the image as published or imported (for `lago template verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When its repository says it was published (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// sha256 of the image as its repository published it (uncompressed),
    /// when it was pulled: what a `template_digest` pin names (a raw image
    /// is stored converted, with another digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_sha256: Option<String>,
}

impl Template {
    /// Whether `pin` (a sha256) names this template's image, as stored or as published.
    pub fn has_digest(&self, pin: &str) -> bool {
        [&self.sha256, &self.published_sha256]
            .into_iter()
            .flatten()
            .any(|d| d.eq_ignore_ascii_case(pin))
    }
}

const META: &str = "template.json";

/// A template store: its folder, and how it finds templates it lacks (repositories, HTTP, offline).
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
    progress: bool,
    offline: bool,
    repos: Vec<repo::RepoLocation>,
    pub(crate) http: http::HttpOptions,
}

impl TemplateStore {
    /// A store rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TemplateStore {
            root: root.into(),
            progress: false,
            offline: false,
            repos: Vec::new(),
            http: http::HttpOptions::default(),
        }
    }

    /// The store at `LAGO_TEMPLATE_STORE`, else the default directory;
    /// offline when `LAGO_OFFLINE` is set (and not `0`); the repositories of
    /// `LAGO_TEMPLATE_REPO` (comma-separated URLs or paths of `repo.metadata`);
    /// download timeouts from `LAGO_DOWNLOAD_READ_TIMEOUT` and `LAGO_DOWNLOAD_ATTEMPTS`.
    pub fn from_env() -> Self {
        let mut store = match std::env::var_os("LAGO_TEMPLATE_STORE") {
            Some(d) if !d.is_empty() => TemplateStore::new(d),
            _ => TemplateStore::new(Self::default_dir()),
        };
        store.http = http::HttpOptions::from_env();
        if let Ok(list) = std::env::var("LAGO_TEMPLATE_REPO") {
            store.repos = repo::RepoLocation::parse_list(&list);
        }
        store.offline(offline_from_env())
    }

    /// Adds repositories (searched in order, after those already set, before
    /// the built-in templates).
    #[must_use]
    pub fn with_repos(mut self, repos: impl IntoIterator<Item = repo::RepoLocation>) -> Self {
        for r in repos {
            if !self.repos.contains(&r) {
                self.repos.push(r);
            }
        }
        self
    }

    /// The repositories searched, in order.
    pub fn repos(&self) -> &[repo::RepoLocation] {
        &self.repos
    }

    /// Timeouts and retries of downloads.
    #[must_use]
    pub fn with_http(mut self, opts: http::HttpOptions) -> Self {
        self.http = opts;
        self
    }

    /// `/var/lib/lago/store` for root, else `$XDG_CACHE_HOME/lago/store`.
    pub fn default_dir() -> PathBuf {
        if running_as_root() {
            return PathBuf::from("/var/lib/lago/store");
        }
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("lago/store")
    }

    /// Shows a progress bar on stderr (when it is a terminal) while building.
    #[must_use]
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Uses only what is in the store: nothing is downloaded or built from
    /// a mirror (`tiny`, made of the host's own files, is still built).
    #[must_use]
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Whether the store is offline.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Builds the kernel `tiny` boots from Debian's `linux-source` (minutes,
    /// once per source and recipe): everything the guest needs built in, no
    /// modules. `tiny` uses it from then on; until it exists, the
    /// distribution's kernel. Returns its path.
    pub fn build_tiny_kernel(&self) -> Result<PathBuf, StoreError> {
        tiny::build_kernel(self)
    }

    /// Builds the built-in template `name` (`tiny` or `debian-12`) for the
    /// current recipe and inputs, or finds it already built.
    pub fn build(&self, name: &str) -> Result<Template, StoreError> {
        match name {
            tiny::NAME => tiny::ensure(self),
            debian::NAME => debian::build(self),
            _ => Err(StoreError::Unknown {
                name: name.to_owned(),
                available: Vec::new(),
            }),
        }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self, name: &str) -> Result<fs::File, StoreError> {
        self.lock_for(name, Duration::from_secs(600))
    }

    /// The template's lock, waited for at most `timeout`.
    pub(crate) fn lock_for(&self, name: &str, timeout: Duration) -> Result<fs::File, StoreError> {
        // In a folder of their own: a template named `x.lock` must not meet `x`'s lock.
        let dir = self.root.join(".locks");
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let path = dir.join(format!("{name}.lock"));
        lock_exclusive(&path, timeout).map_err(|e| match e {
            LockFailure::Io(source) => StoreError::Io {
                action: "lock",
                path,
                source,
            },
            LockFailure::Timeout(waited) => StoreError::LockTimeout { path, waited },
        })
    }

    fn read_meta(dir: &Path) -> Result<Option<Template>, StoreError> {
        let path = dir.join(META);
        match fs::read_to_string(&path) {
            // At the folder's own paths (a store copied elsewhere still names its old place).
            Ok(text) => serde_json::from_str::<Template>(&text)
                .map(|t| {
                    Some(Template {
                        disk: dir.join("root.qcow2"),
                        kernel: t.kernel.as_ref().map(|_| dir.join("vmlinuz")),
                        initrd: t.initrd.as_ref().map(|_| dir.join("initrd.img")),
                        ..t
                    })
                })
                .map_err(|source| StoreError::Metadata { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Every template version in the store.
    pub fn list(&self) -> Result<Vec<Template>, StoreError> {
        let mut out = Vec::new();
        let Ok(names) = fs::read_dir(&self.root) else {
            return Ok(out);
        };
        let visible = |e: &fs::DirEntry| {
            e.file_name().to_str().is_some_and(|n| !n.starts_with('.')) && e.file_type().is_ok_and(|t| t.is_dir())
        };
        for name in names.flatten().filter(visible) {
            for version in fs::read_dir(name.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter(visible)
            {
                let dir = version.path();
                match Self::read_meta(&dir) {
                    Ok(Some(t)) => {
                        // Only what the folder says it is.
                        if name.file_name().to_str() != Some(t.name.as_str())
                            || version.file_name().to_str() != Some(t.version.as_str())
                        {
                            tracing::warn!(dir = %dir.display(), "template folder holds metadata of another template; ignored");
                            continue;
                        }
                        out.push(t);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %crate::util::text::error_chain(&e), "unreadable template metadata; ignored")
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    /// Fetches template `name` at `version` (`None`: the newest) from the
    /// first repository that has it into the store (nothing is fetched when
    /// it is there). Unlike [`TemplateStore::resolve`], neither built-in
    /// templates nor the store alone answer.
    pub fn pull(&self, name: &str, version: Option<&str>) -> Result<Template, StoreError> {
        if self.offline {
            return Err(StoreError::NotInStore {
                name: name.to_owned(),
                version: version.map(str::to_owned),
                store: self.root.clone(),
                why: "the store is offline (--offline or LAGO_OFFLINE): nothing is downloaded".to_owned(),
            });
        }
        let mut notes = Vec::new();
        if let Some(found) = self.ask_repos(name, version, None, &mut notes) {
            return found;
        }
        Err(StoreError::NotInStore {
            name: name.to_owned(),
            version: version.map(str::to_owned),
            store: self.root.clone(),
            why: self.why_not_in_repos(&notes),
        })
    }

    /// Asks the repositories in order: the pull from the first that has the
    /// template (at that version), or `None` with what each said in `notes`.
    fn ask_repos(
        &self,
        name: &str,
        version: Option<&str>,
        pin: Option<&str>,
        notes: &mut Vec<String>,
    ) -> Option<Result<Template, StoreError>> {
        let client = http::Http::new(self.http.clone());
        for loc in &self.repos {
            match repo::Repository::open(loc, &client) {
                Ok(r) => match r.find(name, version) {
                    Ok(Some(found)) => return Some(repo::pull(self, loc, &found, pin)),
                    Ok(None) => {}
                    // It has the template, not that version: a later one may.
                    Err(e) => notes.push(format!("{loc}: {e}")),
                },
                Err(e) => {
                    tracing::warn!(repo = %loc, error = %crate::util::text::error_chain(&e), "template repository unavailable");
                    notes.push(format!("{loc}: {}", crate::util::text::error_chain(&e)));
                }
            }
        }
        None
    }

    fn why_not_in_repos(&self, notes: &[String]) -> String {
        if notes.is_empty() {
            format!(
                "no repository has it ({})",
                self.repos
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("not found in the repositories: {}", notes.join("; "))
        }
    }

    /// The template `name` at `version` (`None`: the newest).
    ///
    /// Repositories are asked first, in order (unless the store is offline):
    /// the first that has the template gives it, pulled into the store if it
    /// is not there. Then the built-in templates (`tiny` is built from the
    /// host's files when needed, `debian-12` from Debian's mirror), then what
    /// the store holds.
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<Template, StoreError> {
        self.resolve_pinned(name, version, None)
    }

    /// Like [`TemplateStore::resolve`], and the template's image must have
    /// sha256 `pin` (as stored or as published), when given: checked
    /// against the repository's published hash before a download, against
    /// the download, and against what the store or a build gives.
    pub fn resolve_pinned(&self, name: &str, version: Option<&str>, pin: Option<&str>) -> Result<Template, StoreError> {
        let t = self.resolve_from(name, version, pin)?;
        match pin {
            Some(p) if !t.has_digest(p) => Err(StoreError::Pinned {
                name: t.name,
                version: t.version,
                pinned: p.to_owned(),
                actual: t.sha256,
            }),
            _ => Ok(t),
        }
    }

    fn resolve_from(&self, name: &str, version: Option<&str>, pin: Option<&str>) -> Result<Template, StoreError> {
        let mut repo_errors = Vec::new();
        if !self.offline
            && let Some(found) = self.ask_repos(name, version, pin, &mut repo_errors)
        {
            return found;
        }
        match (name, version) {
            (tiny::NAME, None) => return tiny::ensure(self),
            (debian::NAME, None) => return debian::ensure(self),
            _ => {}
        }
        let mut found: Vec<Template> = self.list()?.into_iter().filter(|t| t.name == name).collect();
        if let Some(v) = version {
            found.retain(|t| t.version == v);
        }
        found.sort_by(|a, b| {
            let key = |t: &Template| {
                (
                    t.timestamp.unwrap_or(0.0),
                    fs::metadata(&t.disk).and_then(|m| m.modified()).ok(),
                )
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
        });
        if let Some(t) = found.pop() {
            if !repo_errors.is_empty() {
                tracing::warn!(template = %t.name, version = %t.version, "using the store's copy: no repository could be asked");
            }
            return Ok(t);
        }
        if self.offline || !repo_errors.is_empty() || !self.repos.is_empty() {
            return Err(StoreError::NotInStore {
                name: name.to_owned(),
                version: version.map(str::to_owned),
                store: self.root.clone(),
                why: if self.offline {
                    "the store is offline (--offline or LAGO_OFFLINE): nothing is downloaded".to_owned()
                } else {
                    self.why_not_in_repos(&repo_errors)
                },
            });
        }
        let mut available: Vec<String> = self.list()?.into_iter().map(|t| t.name).collect();
        available.dedup();
        match version {
            Some(v) if available.iter().any(|a| a == name) => Err(StoreError::UnknownVersion {
                name: name.to_owned(),
                version: v.to_owned(),
            }),
            _ => Err(StoreError::Unknown {
                name: name.to_owned(),
                available,
            }),
        }
    }
}

fn offline_from_env() -> bool {
    std::env::var("LAGO_OFFLINE").is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

/// Folders of builds in progress start with this.
pub(crate) const BUILD_PREFIX: &str = ".build-";

/// Removes the build folders in `parent` (call with the template's lock held:
/// no build runs, so any left is from one that was killed).
pub(crate) fn remove_stale_builds(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let is_build = e.file_name().to_str().is_some_and(|n| n.starts_with(BUILD_PREFIX));
        if is_build && e.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::info!(path = %e.path().display(), "removing the folder of a template build that was killed");
            remove_build(&e.path());
        }
    }
}

/// Ends a template build in `tmp`: on success its metadata is written there
/// and `tmp` becomes `dir` (one rename, so a template is never seen half
/// made); on failure `tmp` is removed. Returns the build's result.
pub(crate) fn finish_build(
    tmp: &Path,
    dir: &Path,
    built: Result<Template, StoreError>,
) -> Result<Template, StoreError> {
    let done = built.and_then(|t| {
        let meta_path = tmp.join(META);
        let meta = serde_json::to_string_pretty(&t).map_err(|e| StoreError::Io {
            action: "write",
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        })?;
        fs::write(&meta_path, meta).map_err(io("write", &meta_path))?;
        fs::rename(tmp, dir).map_err(io("rename into", dir))?;
        Ok(t)
    });
    if done.is_err() {
        remove_build(tmp);
    }
    done
}

/// Removes a build folder without ever leaving it: a build killed halfway
/// may have left the host's /proc, /sys or /dev mounted inside (mmdebstrap
/// mounts them in its chroot), so mount points are unmounted first and the
/// removal does not cross into another filesystem.
pub(crate) fn remove_build(path: &Path) {
    // Without the mount table, a bind mount of the same filesystem could not be told apart.
    let Some(mounts) = mounts_under(path) else {
        tracing::warn!(path = %path.display(), "cannot read /proc/self/mountinfo; the build folder is left in place");
        return;
    };
    for m in mounts {
        tracing::warn!(mount = %m.display(), "unmounting what a killed template build left mounted");
        if let Err(e) = crate::util::cmd::run(std::process::Command::new("umount").arg("--lazy").arg(&m)) {
            tracing::warn!(mount = %m.display(), error = %e, "cannot unmount; the build folder is left in place");
            return;
        }
    }
    if let Err(e) = remove_same_fs(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a template build folder");
    }
}

/// Mount points at or below `path`, deepest first (from /proc/self/mountinfo).
fn mounts_under(path: &Path) -> Option<Vec<PathBuf>> {
    let Ok(base) = fs::canonicalize(path) else {
        return Some(Vec::new());
    };
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(&base))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    Some(found)
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `remove_dir_all` that refuses to descend into another filesystem.
fn remove_same_fs(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let top = fs::symlink_metadata(path)?;
    fn walk(p: &Path, dev: u64) -> std::io::Result<()> {
        for e in fs::read_dir(p)? {
            let e = e?;
            let md = fs::symlink_metadata(e.path())?;
            if md.is_dir() {
                if md.dev() != dev {
                    return Err(std::io::Error::other(format!(
                        "{} is another filesystem (still mounted?)",
                        e.path().display()
                    )));
                }
                walk(&e.path(), dev)?;
                fs::remove_dir(e.path())?;
            } else {
                fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
    if !top.is_dir() {
        return fs::remove_file(path);
    }
    walk(path, top.dev())?;
    fs::remove_dir(path)
}

/// sha256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String, StoreError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(io("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c\011d"), "/a b/c\td");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/odd\"), r"/odd\");
    }

    #[test]
    fn build_folders_are_removed_but_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let build = tmp.path().join(format!("{BUILD_PREFIX}abc-1"));
        fs::create_dir_all(build.join("root/etc")).unwrap();
        fs::write(build.join("root/etc/x"), "x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("sentinel"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), build.join("root/host-dir")).unwrap();
        fs::create_dir_all(tmp.path().join("0123")).unwrap();
        remove_stale_builds(tmp.path());
        assert!(!build.exists());
        assert!(tmp.path().join("0123").is_dir());
        assert!(
            outside.path().join("sentinel").is_file(),
            "a link is removed, not followed"
        );
    }

    #[test]
    fn the_store_is_offline_when_asked() {
        let s = TemplateStore::new("/nonexistent").offline(true);
        assert!(s.is_offline());
        assert!(!TemplateStore::new("/nonexistent").is_offline());
    }
}
