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
//! The full schema, with every key and default, is in the crate's README.

mod decode;
mod error;
mod size;
mod spec;
mod validate;
mod vars;
mod yaml;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Pos, Problem, Problems};
pub use size::parse_size;
pub use spec::*;
pub use validate::{POOL_FIRST, POOL_LAST};

/// Reads and validates the init file at `path`, expanding `$VARS` in paths
/// from the process environment.
pub fn load(path: impl AsRef<Path>) -> Result<EnvSpec, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Like [`load`], with variables looked up through `var` (for tests and embedding).
pub fn load_with_env(path: impl AsRef<Path>, var: &dyn Fn(&str) -> Option<String>) -> Result<EnvSpec, ConfigError> {
    let path = absolute(path.as_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ConfigError::NotFound { path }),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    parse_with_env(&text, &path, var)
}

/// Validates init-file `text` as if read from `path` (relative disk paths
/// resolve against `path`'s folder). Variables come from the process environment.
pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<EnvSpec, ConfigError> {
    parse_with_env(text, &absolute(path.as_ref()), &|name| std::env::var(name).ok())
}

fn parse_with_env(text: &str, path: &Path, var: &dyn Fn(&str) -> Option<String>) -> Result<EnvSpec, ConfigError> {
    let path = path.to_path_buf();
    match yaml::parse(text) {
        yaml::Parsed::Empty => Err(ConfigError::Empty { path }),
        yaml::Parsed::Syntax(pos, message) => Err(ConfigError::Syntax { path, pos, message }),
        yaml::Parsed::Doc(root, mut problems) => match validate::validate(&root, &path, var) {
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
