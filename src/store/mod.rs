//! The template store: base images VMs' root disks are layered on.
//!
//! Templates live under the store directory (`LAGO_TEMPLATE_STORE`, else
//! `/var/lib/lago/store` for root, else `$XDG_CACHE_HOME/lago/store`), one
//! folder per version, each written to a temporary folder and renamed into
//! place under a lock, so concurrent processes never see half a template.
//! A template is never written after it is built: VMs use qcow2 overlays.
//!
//! The built-in template `tiny` is built on first use from the host's Debian
//! packages (cloud kernel, busybox-static, dropbear) and rebuilt only when
//! one of its inputs changes (see [`tiny`]).

pub mod tiny;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cmd::CommandError;
use crate::lock::{LockFailure, lock_exclusive, running_as_root};

/// Why a template could not be found or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No template of that name.
    #[error("unknown template `{name}`; available: {}", if available.is_empty() { "tiny (built on first use)".to_owned() } else { available.join(", ") })]
    Unknown {
        /// The name asked for.
        name: String,
        /// Templates the store knows.
        available: Vec<String>,
    },
    /// No such version of a template.
    #[error("template `{name}` has no version `{version}`")]
    UnknownVersion {
        /// The template.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// A host file the built-in template is made of is missing.
    #[error("cannot build template `tiny`: {what} not found ({hint})")]
    MissingInput {
        /// What is missing.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// A store file could not be read or written.
    #[error("template store: cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process held the store lock too long.
    #[error("timed out after {waited:?} waiting for the template lock {} (another lago process is building)", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// A build tool failed.
    #[error("building template `{template}` failed")]
    Build {
        /// The template.
        template: String,
        /// The failing command.
        #[source]
        source: CommandError,
    },
    /// A template's metadata file is not valid.
    #[error("template metadata {} is malformed", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
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
    /// Seconds the build took.
    pub build_secs: f64,
}

const META: &str = "template.json";

/// The template store.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
    progress: bool,
}

impl TemplateStore {
    /// A store rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        TemplateStore {
            root: root.into(),
            progress: false,
        }
    }

    /// The store at `LAGO_TEMPLATE_STORE`, else the default directory.
    pub fn from_env() -> Self {
        match std::env::var_os("LAGO_TEMPLATE_STORE") {
            Some(d) if !d.is_empty() => TemplateStore::new(d),
            _ => TemplateStore::new(Self::default_dir()),
        }
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

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self, name: &str) -> Result<fs::File, StoreError> {
        fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        let path = self.root.join(format!("{name}.lock"));
        lock_exclusive(&path, Duration::from_secs(600)).map_err(|e| match e {
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
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
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
        for name in names.flatten().filter(|e| e.path().is_dir()) {
            for version in fs::read_dir(name.path()).into_iter().flatten().flatten() {
                if let Some(t) = Self::read_meta(&version.path())? {
                    out.push(t);
                }
            }
        }
        out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(out)
    }

    /// The template `name` at `version` (`None`: for `tiny`, the one matching
    /// the host's current inputs, built if needed; else the newest).
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<Template, StoreError> {
        if name == tiny::NAME && version.is_none() {
            return tiny::ensure(self);
        }
        let mut found: Vec<Template> = self.list()?.into_iter().filter(|t| t.name == name).collect();
        if found.is_empty() {
            let mut available: Vec<String> = self.list()?.into_iter().map(|t| t.name).collect();
            available.dedup();
            return Err(StoreError::Unknown {
                name: name.to_owned(),
                available,
            });
        }
        match version {
            Some(v) => found
                .into_iter()
                .find(|t| t.version == v)
                .ok_or(StoreError::UnknownVersion {
                    name: name.to_owned(),
                    version: v.to_owned(),
                }),
            None => {
                found.sort_by_key(|t| fs::metadata(&t.disk).and_then(|m| m.modified()).ok());
                found.pop().ok_or(StoreError::Unknown {
                    name: name.to_owned(),
                    available: Vec::new(),
                })
            }
        }
    }
}
