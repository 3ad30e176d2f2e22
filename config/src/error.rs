//! Errors of the init-file loader: where a problem is and what was expected.

use std::fmt;
use std::path::PathBuf;

/// A position in the init file, 1-based, as an editor shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem found in an init file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where in the file, when the problem belongs to a written value.
    pub pos: Option<Pos>,
    /// Key path of the value, e.g. `domains.vm01.nics[0].net` (empty for the whole file).
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
    /// A suggestion, e.g. a "did you mean" for a misspelt key.
    pub hint: Option<String>,
}

impl Problem {
    pub(crate) fn new(pos: Option<Pos>, path: &str, message: impl Into<String>) -> Self {
        Problem {
            pos,
            path: path.to_owned(),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = self.pos {
            write!(f, "{pos}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The list of problems of an invalid init file, printed one per line as
/// `FILE:LINE:COL: KEY.PATH: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The init file's path, made absolute.
    pub file: PathBuf,
    /// Every problem found, in file order.
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.len();
        write!(
            f,
            "{} problem{} in {}",
            n,
            if n == 1 { "" } else { "s" },
            self.file.display()
        )?;
        for p in &self.list {
            write!(f, "\n  {}:{p}", self.file.display())?;
        }
        Ok(())
    }
}

/// Why an init file could not be turned into an [`EnvSpec`](super::EnvSpec).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not exist.
    #[error("init file {} not found", path.display())]
    NotFound {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read init file {}", path.display())]
    Read {
        /// The init file's path, made absolute.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no document (or only comments / whitespace / `null`).
    #[error("init file {} is empty: expected a map with `domains` and `nets`", path.display())]
    Empty {
        /// The init file's path, made absolute.
        path: PathBuf,
    },
    /// The text is not valid YAML (or JSON).
    #[error("{}:{pos}: YAML syntax error: {message}", path.display())]
    Syntax {
        /// The init file's path, made absolute.
        path: PathBuf,
        /// Where the parser stopped.
        pos: Pos,
        /// The parser's message.
        message: String,
    },
    /// The file is not UTF-8 text.
    #[error("{}:{pos}: expected UTF-8 text, found bytes that are not UTF-8", path.display())]
    Encoding {
        /// The init file's path, made absolute.
        path: PathBuf,
        /// Where the first bad byte is.
        pos: Pos,
    },
    /// The file crosses one of the loader's bounds (size, nesting depth, alias expansion).
    #[error("{}:{pos}: {message}", path.display())]
    Limit {
        /// The init file's path, made absolute.
        path: PathBuf,
        /// Where the limit was crossed.
        pos: Pos,
        /// Which limit, and its value.
        message: String,
    },
    /// The document parsed but does not describe a valid environment.
    #[error("{0}")]
    Invalid(Problems),
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] file (empty for the other variants).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => &p.list,
            _ => &[],
        }
    }
}
