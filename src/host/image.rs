//! Disk images through `qemu-img`: qcow2 overlays on templates, empty disks,
//! copies. Templates are only ever read: every VM writes to its own overlay.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::cmd::{CommandError, run};
use lago_config::DiskFormat;

/// An image operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Creating an overlay failed.
    #[error("cannot create overlay {} on {}", path.display(), backing.display())]
    Overlay {
        /// The overlay to create (in the workdir's `images/`).
        path: PathBuf,
        /// Its backing file.
        backing: PathBuf,
        /// qemu-img's failure.
        #[source]
        source: CommandError,
    },
    /// Creating an empty disk failed.
    #[error("cannot create empty disk {}", path.display())]
    Create {
        /// The image file to create.
        path: PathBuf,
        /// qemu-img's failure.
        #[source]
        source: CommandError,
    },
    /// Copying a disk failed.
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        /// The file disk given in the init file.
        from: PathBuf,
        /// Its copy in the workdir.
        to: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Inspecting an image failed.
    #[error("cannot read image {}", path.display())]
    Info {
        /// The image `qemu-img info` was run on.
        path: PathBuf,
        /// qemu-img's failure.
        #[source]
        source: CommandError,
    },
    /// Converting (flattening) an image failed.
    #[error("cannot convert {} to {}", from.display(), to.display())]
    Convert {
        /// The image read (in the format given, never guessed).
        from: PathBuf,
        /// The qcow2 image to write.
        to: PathBuf,
        /// qemu-img's failure.
        #[source]
        source: CommandError,
    },
    /// A file disk's image is missing.
    #[error("disk image {} does not exist", path.display())]
    Missing {
        /// The missing file (a template image, a file disk or a backing file).
        path: PathBuf,
    },
}

/// Creates a qcow2 overlay at `path` backed by the qcow2 image `backing`.
pub fn create_overlay(path: &Path, backing: &Path) -> Result<(), ImageError> {
    if !backing.is_file() {
        return Err(ImageError::Missing {
            path: backing.to_path_buf(),
        });
    }
    run(Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            "-b",
        ])
        .arg(backing)
        .arg(path))
    .map(|_| ())
    .map_err(|source| ImageError::Overlay {
        path: path.to_path_buf(),
        backing: backing.to_path_buf(),
        source,
    })
}

/// Creates an empty image of `size_bytes`.
pub fn create_empty(path: &Path, format: DiskFormat, size_bytes: u64) -> Result<(), ImageError> {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", format.as_str()])
        .arg(path)
        .arg(size_bytes.to_string()))
    .map(|_| ())
    .map_err(|source| ImageError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Copies a file disk into the workdir.
pub fn copy(from: &Path, to: &Path) -> Result<(), ImageError> {
    if !from.is_file() {
        return Err(ImageError::Missing {
            path: from.to_path_buf(),
        });
    }
    std::fs::copy(from, to).map(|_| ()).map_err(|source| ImageError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

/// Copies `from` to `to` keeping holes (and sharing blocks where the
/// filesystem can): an empty disk of gigabytes costs what it holds.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), ImageError> {
    if !from.is_file() {
        return Err(ImageError::Missing {
            path: from.to_path_buf(),
        });
    }
    let err = |source| ImageError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    run(Command::new("cp")
        .args([
            "--sparse=always",
            "--reflink=auto",
            "--no-preserve=all",
            "--no-dereference",
            "--",
        ])
        .arg(from)
        .arg(to))
    .map(|_| ())
    .map_err(|e| err(std::io::Error::other(e)))
}

/// Writes `from` (read as `from_format`, never guessed: a guest could have
/// written any header into a raw disk) as a qcow2 image at `to`: standalone
/// (its whole backing chain flattened), or, with `backing`, only what differs
/// from that qcow2 file (a name relative to `to`'s folder, or absolute).
/// Sparse; without qemu's lock override, so an image a running VM holds is
/// refused rather than copied mid-write.
pub fn convert(from: &Path, from_format: DiskFormat, to: &Path, backing: Option<&Path>) -> Result<(), ImageError> {
    if !from.is_file() {
        return Err(ImageError::Missing {
            path: from.to_path_buf(),
        });
    }
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", from_format.as_str(), "-O", "qcow2"]);
    if let Some(b) = backing {
        cmd.arg("-B").arg(b).args(["-F", "qcow2"]);
    }
    run(cmd.arg(from).arg(to))
        .map(|_| ())
        .map_err(|source| ImageError::Convert {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        })
}

/// Points qcow2 image `path` (one lago made) at `backing`, a qcow2 image
/// with the same content as its old backing file (the same template found
/// elsewhere): only the header changes.
pub fn rebase_unsafe(path: &Path, backing: &Path) -> Result<(), ImageError> {
    if !backing.is_file() {
        return Err(ImageError::Missing {
            path: backing.to_path_buf(),
        });
    }
    run(Command::new("qemu-img")
        .args(["rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(backing)
        .arg(path))
    .map(|_| ())
    .map_err(|source| ImageError::Overlay {
        path: path.to_path_buf(),
        backing: backing.to_path_buf(),
        source,
    })
}

/// The backing file of qcow2 image `path` (one lago made), if any.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>, ImageError> {
    let out = run(Command::new("qemu-img")
        .args(["info", "-U", "-f", "qcow2", "--output=json"])
        .arg(path))
    .map_err(|source| ImageError::Info {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(v["full-backing-filename"]
        .as_str()
        .or_else(|| v["backing-filename"].as_str())
        .map(PathBuf::from))
}

/// Bytes the image takes on disk and its virtual size.
pub fn sizes(path: &Path) -> Result<(u64, u64), ImageError> {
    let out = run(Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(path)).map_err(|source| {
        ImageError::Info {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok((
        v["actual-size"].as_u64().unwrap_or(0),
        v["virtual-size"].as_u64().unwrap_or(0),
    ))
}
