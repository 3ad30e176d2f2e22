//! Saved domains: a running domain's memory written to a file (libvirt's
//! save image: its XML, then QEMU's migration stream), and a domain
//! restored from one. Warm start's boot images are made of these.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Backend, BackendError};

impl Backend {
    /// Saves running domain `name` to `path` (memory and device state; the
    /// disks stay where they are, and must not change before a restore). The
    /// domain stops (it is gone, being transient); the image restores it running.
    pub fn save_domain(&self, name: &str, path: &Path) -> Result<(), BackendError> {
        let err = |source| BackendError::Save {
            name: name.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        let d = self.conn.lookup_domain_by_name(name).map_err(err)?;
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| err(e.into()))?;
        save_flags(&d, &c_path).map_err(err)
    }

    /// Restores a domain saved by [`Backend::save_domain`] in `image` as a
    /// new transient domain defined by `xml` (lago's domain XML: name,
    /// disks, networks and console are this environment's; the guest's
    /// hardware must be the saved one's). It is created paused, waiting for
    /// an incoming migration (`-incoming defer`), and QEMU is fed the saved
    /// stream over a unix socket in a private folder; then it runs. Created
    /// this way, unlike by libvirt's own restore, it can be one libvirtd
    /// destroys when this process ends (`autodestroy`). Its VM generation id
    /// is new: QEMU hands it to the guest on load (its kernel reseeds its
    /// RNG). The image's sha256 is computed on the way; when it is not
    /// `sha256`, the domain is destroyed before it ever ran.
    pub fn restore_domain(
        &self,
        name: &str,
        image: &Path,
        sha256: Option<&str>,
        xml: &str,
        autodestroy: bool,
    ) -> Result<(), BackendError> {
        let io_err = |source| BackendError::SaveImage {
            name: name.to_owned(),
            path: image.to_path_buf(),
            source,
        };
        let (mut stream, hash) = open_saved(image).map_err(io_err)?;
        skip_header(&mut stream).map_err(io_err)?;
        let dir = tempfile::Builder::new()
            .prefix("lago-restore-")
            .tempdir()
            .map_err(io_err)?;
        let socket = dir.path().join("in");
        let flags = virt::sys::VIR_DOMAIN_START_PAUSED
            | if autodestroy {
                virt::sys::VIR_DOMAIN_START_AUTODESTROY
            } else {
                0
            };
        let t = std::time::Instant::now();
        let d = self
            .conn
            .create_domain_xml(&incoming_xml(xml), flags)
            .map_err(|source| BackendError::StartDomain {
                name: name.to_owned(),
                source,
            })?;
        tracing::debug!(
            domain = name,
            ms = t.elapsed().as_millis() as u64,
            "domain created, waiting for its saved state"
        );
        let check = || match sha256 {
            Some(want) if format!("{:x}", hash.borrow().clone().finalize()) != want => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "its sha256 is not the one recorded when it was saved (damaged)",
            )),
            _ => Ok(()),
        };
        let fed = feed(&d, &socket, &mut stream, &check);
        if fed.is_err() {
            let _ = d.destroy();
        }
        fed.map_err(|e| match e {
            Fed::Io(source) => io_err(source),
            Fed::Libvirt(source) => BackendError::Restore {
                name: name.to_owned(),
                path: image.to_path_buf(),
                source,
            },
        })
    }

    /// The uuid of domain `name` (libvirt's, as text).
    pub fn domain_uuid(&self, name: &str) -> Result<String, BackendError> {
        let err = |source| BackendError::State {
            name: name.to_owned(),
            source,
        };
        self.conn
            .lookup_domain_by_name(name)
            .and_then(|d| d.uuid_string())
            .map_err(err)
    }
}

/// `virDomainSaveFlags`, which the `virt` crate does not wrap.
#[allow(unsafe_code)]
fn save_flags(d: &virt::domain::Domain, path: &CString) -> Result<(), virt::error::Error> {
    // SAFETY: `d` owns a live domain pointer for the whole call; `path` is a
    // NUL-terminated string that outlives it; a null `dxml` is allowed.
    let r = unsafe {
        virt::sys::virDomainSaveFlags(
            d.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            virt::sys::VIR_DOMAIN_SAVE_RUNNING,
        )
    };
    if r < 0 {
        Err(virt::error::Error::last_error())
    } else {
        Ok(())
    }
}

/// The start of libvirt's save image (`LibvirtQemudSave`, version 2): a
/// 92-byte header (magic, version, data length, was running, format,
/// cookie offset, 14 unused words), then the data: the domain XML and the
/// cookie, each NUL-terminated, and padding. QEMU's stream follows.
const HEADER_LEN: usize = 92;
const MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// The most data a header may announce (libvirt writes tens of KiB).
const MAX_DATA: usize = 16 << 20;

fn word(raw: &[u8], i: usize) -> usize {
    let at = 16 + 4 * i;
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("not a libvirt save image: {what}"),
    )
}

/// Reads past the header and data of a save image (checking them), to
/// where QEMU's stream begins.
fn skip_header(r: &mut dyn Read) -> std::io::Result<()> {
    let mut raw = [0u8; HEADER_LEN];
    r.read_exact(&mut raw)?;
    if &raw[..16] != MAGIC {
        return Err(bad("wrong magic"));
    }
    if word(&raw, 0) != 2 {
        return Err(bad("a header version other than 2"));
    }
    // libvirt's own compression (qemu.conf's save_image_format) is not read here.
    if word(&raw, 3) != 0 {
        return Err(bad("compressed by libvirt (qemu.conf's save_image_format must be raw)"));
    }
    let (len, cookie_at) = (word(&raw, 1), word(&raw, 4));
    if len > MAX_DATA || cookie_at > len {
        return Err(bad("a data length out of bounds"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    if !data.starts_with(b"<domain") || !data.contains(&0) {
        return Err(bad("no domain XML"));
    }
    Ok(())
}

/// lago's domain XML for a domain that waits for an incoming migration.
fn incoming_xml(xml: &str) -> String {
    let ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'";
    let with_ns = match xml.find("<domain ") {
        Some(i) => format!("{}{ns}{}", &xml[..i + "<domain".len()], &xml[i + "<domain".len()..]),
        None => xml.to_owned(),
    };
    let args = "  <qemu:commandline>\n    <qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>\n  </qemu:commandline>\n";
    match with_ns.rfind("</domain>") {
        Some(i) => format!("{}{args}{}", &with_ns[..i], &with_ns[i..]),
        None => with_ns,
    }
}

/// What failed while feeding a saved stream to QEMU.
enum Fed {
    Io(std::io::Error),
    Libvirt(virt::error::Error),
}

/// How long QEMU may take to load a saved stream.
const LOAD_WITHIN: Duration = Duration::from_secs(120);

/// A save image as read from disk, through a digest of its bytes, and
/// decompressed when it is compressed (`.zst`).
fn open_saved(image: &Path) -> std::io::Result<(Box<dyn Read>, SharedHash)> {
    let hash = Rc::new(RefCell::new(Sha256::new()));
    let file = Hashing {
        inner: fs::File::open(image)?,
        hash: hash.clone(),
    };
    let stream: Box<dyn Read> = if image.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Decoder::new(file)?)
    } else {
        Box::new(file)
    };
    Ok((stream, hash))
}

/// A digest the reader that feeds it and its owner share.
type SharedHash = Rc<RefCell<Sha256>>;

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    hash: SharedHash,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Has paused domain `d` listen on `socket` for its incoming migration,
/// writes `stream` (the image after its header) into it to its end, runs
/// `check` (the image's digest), waits until QEMU loaded it and resumes the
/// domain.
fn feed(
    d: &virt::domain::Domain,
    socket: &Path,
    stream: &mut dyn Read,
    check: &dyn Fn() -> std::io::Result<()>,
) -> Result<(), Fed> {
    let cmd =
        serde_json::json!({"execute": "migrate-incoming", "arguments": {"uri": format!("unix:{}", socket.display())}});
    let t = std::time::Instant::now();
    d.qemu_monitor_command(&cmd.to_string(), 0).map_err(Fed::Libvirt)?;
    let mut out = std::os::unix::net::UnixStream::connect(socket).map_err(Fed::Io)?;
    // One deadline for the whole stream, not one per write.
    let deadline = t + LOAD_WITHIN;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stream.read(&mut buf).map_err(Fed::Io)?;
        if n == 0 {
            break;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Fed::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "QEMU did not take the saved state in time",
            )));
        }
        out.set_write_timeout(Some(left)).map_err(Fed::Io)?;
        std::io::Write::write_all(&mut out, &buf[..n]).map_err(Fed::Io)?;
    }
    drop(out);
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "saved state streamed to QEMU");
    // Before the guest runs a single instruction.
    check().map_err(Fed::Io)?;
    let t = std::time::Instant::now();
    loaded(d)?;
    d.resume().map_err(Fed::Libvirt)?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "saved state loaded; resumed");
    Ok(())
}

/// Waits until QEMU says the incoming migration completed.
fn loaded(d: &virt::domain::Domain) -> Result<(), Fed> {
    let query = r#"{"execute": "query-migrate"}"#;
    let t = std::time::Instant::now();
    loop {
        let said = d.qemu_monitor_command(query, 0).map_err(Fed::Libvirt)?;
        let status: serde_json::Value = serde_json::from_str(&said).unwrap_or_default();
        match status["return"]["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed" | "cancelled") => {
                return Err(Fed::Io(std::io::Error::other(format!(
                    "QEMU could not load the saved state: {said}"
                ))));
            }
            _ if t.elapsed() > LOAD_WITHIN => {
                return Err(Fed::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "QEMU did not load the saved state in time",
                )));
            }
            _ => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(xml: &str, cookie: &str) -> Vec<u8> {
        let mut data = xml.as_bytes().to_vec();
        data.push(0);
        let cookie_at = data.len() as u32;
        data.extend_from_slice(cookie.as_bytes());
        data.push(0);
        data.extend_from_slice(&[0u8; 64]);
        let mut out = MAGIC.to_vec();
        for w in [2u32, data.len() as u32, 1, 0, cookie_at] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&[0u8; 56]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"QEVM-stream");
        out
    }

    #[test]
    fn the_stream_starts_right_after_the_header_and_its_data() {
        let xml = "<domain><name>lago-aaaa1111-vm01</name></domain>";
        let bytes = image(xml, "<cookie/>");
        let mut r = std::io::Cursor::new(&bytes);
        skip_header(&mut r).expect("parse");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"QEVM-stream");
    }

    #[test]
    fn a_domain_to_restore_waits_for_its_incoming_stream() {
        let x = incoming_xml("<domain type='qemu'>\n  <name>x</name>\n</domain>\n");
        assert!(
            x.starts_with("<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='qemu'>"),
            "{x}"
        );
        assert!(
            x.contains("<qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>"),
            "{x}"
        );
        assert!(x.trim_end().ends_with("</qemu:commandline>\n</domain>"), "{x}");
    }

    #[test]
    fn what_is_not_a_save_image_is_refused() {
        let mut bad_magic = image("<domain/>", "");
        bad_magic[0] = b'X';
        assert!(skip_header(&mut std::io::Cursor::new(bad_magic)).is_err());
        let mut squeezed = image("<domain/>", "");
        squeezed[28..32].copy_from_slice(&1u32.to_le_bytes());
        assert!(skip_header(&mut std::io::Cursor::new(squeezed)).is_err());
        let mut huge = image("<domain/>", "");
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(skip_header(&mut std::io::Cursor::new(huge)).is_err());
        assert!(skip_header(&mut std::io::Cursor::new(b"short")).is_err());
    }
}
