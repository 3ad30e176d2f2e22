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
    /// An image's header could not be read.
    #[error("cannot read the image header of {}", path.display())]
    Header {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file disk's image is missing.
    #[error("disk image {} does not exist", path.display())]
    Missing {
        /// The missing file (a template image, a file disk or a backing file).
        path: PathBuf,
    },
}

/// [`ImageError::Missing`] unless `path` is a file.
fn must_exist(path: &Path) -> Result<(), ImageError> {
    match path.is_file() {
        true => Ok(()),
        false => Err(ImageError::Missing {
            path: path.to_path_buf(),
        }),
    }
}

/// Creates a qcow2 overlay at `path` backed by the qcow2 image `backing`.
pub fn create_overlay(path: &Path, backing: &Path) -> Result<(), ImageError> {
    must_exist(backing)?;
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
    must_exist(from)?;
    std::fs::copy(from, to).map(|_| ()).map_err(|source| ImageError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })
}

/// Copies `from` to `to` keeping holes (and sharing blocks where the
/// filesystem can): an empty disk of gigabytes costs what it holds.
pub fn copy_sparse(from: &Path, to: &Path) -> Result<(), ImageError> {
    must_exist(from)?;
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
    must_exist(from)?;
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
    must_exist(backing)?;
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

/// What a qcow2 header says about the files an image refers to, read
/// here, without qemu-img (which would open them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Refs {
    /// The backing file's name, if any.
    pub backing: Option<String>,
    /// Whether its data lives in an external data file.
    pub data_file: bool,
}

/// The header of `path` when it is a qcow2 image (`None`: not one).
pub fn qcow2_refs(path: &Path) -> Result<Option<Qcow2Refs>, ImageError> {
    use std::io::{Read, Seek, SeekFrom};
    let info = |source: std::io::Error| ImageError::Header {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(info)?;
    let mut h = [0u8; 104];
    let mut got = 0;
    while got < h.len() {
        match f.read(&mut h[got..]).map_err(info)? {
            0 => break,
            n => got += n,
        }
    }
    if got < 72 || h[..4] != *b"QFI\xfb" {
        return Ok(None);
    }
    let be64 = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
    let version = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let (offset, size) = (be64(8), u32::from_be_bytes([h[16], h[17], h[18], h[19]]));
    // Version 3's incompatible features: bit 2 is "external data file".
    let data_file = version >= 3 && got >= 80 && be64(72) & (1 << 2) != 0;
    let backing = match (offset, size) {
        (0, _) | (_, 0) => None,
        (_, n) if n > 1023 => return Err(info(std::io::Error::other("a backing file name over 1023 bytes"))),
        (at, n) => {
            let mut name = vec![0u8; n as usize];
            f.seek(SeekFrom::Start(at)).map_err(info)?;
            f.read_exact(&mut name).map_err(info)?;
            Some(String::from_utf8_lossy(&name).into_owned())
        }
    };
    Ok(Some(Qcow2Refs { backing, data_file }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A qcow2 header of `version` naming `backing` (at offset 512), with
    /// incompatible features `incompatible`.
    fn header(version: u32, backing: &str, incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; 1024];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        if !backing.is_empty() {
            h[8..16].copy_from_slice(&512u64.to_be_bytes());
            h[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
            h[512..512 + backing.len()].copy_from_slice(backing.as_bytes());
        }
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    #[test]
    fn qcow2_headers_are_read_without_opening_what_they_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("d.qcow2");
        std::fs::write(&p, header(3, "/var/lib/lago/store/tiny/1/root.qcow2", 0)).expect("write");
        let r = qcow2_refs(&p).expect("read").expect("qcow2");
        assert_eq!(r.backing.as_deref(), Some("/var/lib/lago/store/tiny/1/root.qcow2"));
        assert!(!r.data_file);
        std::fs::write(&p, header(3, "", 1 << 2)).expect("write");
        let r = qcow2_refs(&p).expect("read").expect("qcow2");
        assert_eq!(
            r,
            Qcow2Refs {
                backing: None,
                data_file: true
            }
        );
        // Version 2 has no data files; the bit means nothing there.
        std::fs::write(&p, header(2, "json:{\"driver\":\"nbd\"}", 1 << 2)).expect("write");
        let r = qcow2_refs(&p).expect("read").expect("qcow2");
        assert!(!r.data_file && r.backing.is_some_and(|b| b.starts_with("json:")));
        // Not qcow2 (a raw disk), or too short to be.
        std::fs::write(&p, vec![0u8; 4096]).expect("write");
        assert_eq!(qcow2_refs(&p).expect("read"), None);
        std::fs::write(&p, b"QFI").expect("write");
        assert_eq!(qcow2_refs(&p).expect("read"), None);
        // A name longer than qemu allows is refused.
        let mut h = header(3, "x", 0);
        h[16..20].copy_from_slice(&4096u32.to_be_bytes());
        std::fs::write(&p, h).expect("write");
        assert!(qcow2_refs(&p).is_err());
    }
}
