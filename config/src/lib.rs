//! The Lago init file: parsing, validation, and the validated [`EnvSpec`].
//!
//! Re-exported by the `lago` crate as `lago::config`; the `#[lago_env]`
//! macro uses it to validate init files at compile time.
//!
//! An init file is YAML (or JSON, which is YAML too) with two top-level maps,
//! `domains` (the VMs) and `nets`. [`load`] reads one and returns an
//! [`EnvSpec`], or a [`ConfigError`] that lists **every** problem with its
//! file, line and column, key path (`domains.vm01.nics[0].net`), what was
//! expected and what was found. Unknown keys are errors, with a "did you mean".
//! Lago keys lago does not act on are warnings ([`EnvSpec::warnings`]), each
//! saying what lago does instead; [`LoadOptions::strict`] makes them errors.
//!
//! ```
//! let spec = lago_config::from_str(
//!     "domains:\n  vm01:\n    nics: [{net: lago}]\n    disks: [{type: empty, name: root, dev: vda, size: 1G}]\nnets:\n  lago: {}\n",
//!     "/tmp/LagoInitFile",
//! ).unwrap();
//! assert_eq!(spec.vms[0].mgmt_net, "lago");
//! assert_eq!(spec.nets[0].dns_domain.as_deref(), Some("lago.local"));
//! ```
//!
//! Every input is bounded: a file of at most [`MAX_FILE_BYTES`], lists and
//! maps nested at most [`MAX_DEPTH`] deep, aliases expanding to at most
//! [`MAX_ALIAS_NODES`] nodes; crossing one is a [`ConfigError::Limit`] at the
//! place it happened. No input makes the loader panic.
//!
//! The full schema, with every key and default, is in `docs/init-file.md`
//! of the lago repository.

mod decode;
mod duration;
mod error;
mod keypath;
mod size;
mod spec;
mod validate;
mod vars;
mod yaml;

use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use error::{ConfigError, Pos, Problem, Problems};
pub use size::{approx_size, format_size, parse_size};
pub use spec::*;
pub use validate::{POOL_FIRST, POOL_LAST};
pub use yaml::limits::{MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES};

/// Reads and validates the init file at `path`, expanding `$VARS` in paths
/// from the process environment.
pub fn load(path: impl AsRef<Path>) -> Result<EnvSpec, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// How an init file is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Lago keys lago does not act on are errors, not warnings.
    pub strict: bool,
}

/// Like [`load`], with options (e.g. strict).
pub fn load_with(path: impl AsRef<Path>, opts: LoadOptions) -> Result<EnvSpec, ConfigError> {
    let path = absolute(path.as_ref());
    let text = read_bounded(&path)?;
    parse_with_env(&text, &path, &|name| std::env::var(name).ok(), opts)
}

/// Like [`load`], with variables looked up through `var` (for tests and embedding).
pub fn load_with_env(path: impl AsRef<Path>, var: &dyn Fn(&str) -> Option<String>) -> Result<EnvSpec, ConfigError> {
    let path = absolute(path.as_ref());
    let text = read_bounded(&path)?;
    parse_with_env(&text, &path, var, LoadOptions::default())
}

/// Reads at most [`MAX_FILE_BYTES`] (so `/dev/zero` or a huge file is an
/// error, not a hang), as UTF-8.
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(path, &bytes));
    }
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfigError::Encoding {
            path: path.to_path_buf(),
            pos: end_pos(good),
        }
    })
}

/// The position just after `prefix` (1-based line and column, columns in characters).
fn end_pos(prefix: &[u8]) -> Pos {
    let line_start = prefix.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Pos {
        line: prefix.iter().filter(|&&b| b == b'\n').count() + 1,
        col: String::from_utf8_lossy(&prefix[line_start..]).chars().count() + 1,
    }
}

fn too_large(path: &Path, text: &[u8]) -> ConfigError {
    let cut = text.len().min(MAX_FILE_BYTES);
    ConfigError::Limit {
        path: path.to_path_buf(),
        pos: end_pos(&text[..cut]),
        message: format!("the file is larger than the limit of {} bytes (1 MiB)", MAX_FILE_BYTES),
    }
}

/// Validates init-file `text` as if read from `path` (relative disk paths
/// resolve against `path`'s folder). Variables come from the process environment.
pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<EnvSpec, ConfigError> {
    parse_with_env(
        text,
        &absolute(path.as_ref()),
        &|name| std::env::var(name).ok(),
        LoadOptions::default(),
    )
}

fn parse_with_env(
    text: &str,
    path: &Path,
    var: &dyn Fn(&str) -> Option<String>,
    opts: LoadOptions,
) -> Result<EnvSpec, ConfigError> {
    let path = path.to_path_buf();
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(&path, text.as_bytes()));
    }
    match yaml::parse(text) {
        yaml::Parsed::Empty => Err(ConfigError::Empty { path }),
        yaml::Parsed::Syntax(pos, message) => Err(ConfigError::Syntax { path, pos, message }),
        yaml::Parsed::Limit(pos, message) => Err(ConfigError::Limit { path, pos, message }),
        yaml::Parsed::Doc(root, mut problems) => match validate::validate(&root, &path, var, opts.strict) {
            Ok(spec) if problems.is_empty() => Ok(spec),
            Ok(_) => Err(ConfigError::Invalid(Problems {
                file: path,
                list: problems,
            })),
            Err(more) => {
                problems.extend(more);
                problems.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
                Err(ConfigError::Invalid(Problems {
                    file: path,
                    list: problems,
                }))
            }
        },
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
