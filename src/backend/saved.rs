//! Saved domains: a running domain's memory written to a file (libvirt's
//! save image: its XML, then QEMU's migration stream), and a domain
//! restored from one. Warm start's boot images are made of these.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Restores a domain saved by [`Backend::save_domain`] in `image` as
    /// domain `name`, defined by `xml` (lago's domain XML: the host side may
    /// differ from the saved one's, the guest's hardware may not). The
    /// domain gets a new uuid and VM generation id (the guest kernel reseeds
    /// its RNG when that changes). libvirt insists that the saved image
    /// names the domain as `xml` does, so the image is fed to it through the
    /// FIFO `fifo` (made here, removed after) with its header rewritten; the
    /// image itself is only read. Returns the image's sha256, computed on
    /// the way: the caller checks it, and destroys the domain on a mismatch.
    pub fn restore_domain(&self, name: &str, image: &Path, fifo: &Path, xml: &str) -> Result<String, BackendError> {
        let err = |source| BackendError::Restore {
            name: name.to_owned(),
            path: image.to_path_buf(),
            source,
        };
        let io_err = |source| BackendError::SaveImage {
            name: name.to_owned(),
            path: image.to_path_buf(),
            source,
        };
        let ids = Ids::fresh().map_err(io_err)?;
        let mut file = fs::File::open(image).map_err(io_err)?;
        let header = SaveHeader::read(&mut file).map_err(io_err)?;
        let head = header.rewritten(name, &ids).map_err(io_err)?;
        let xml = ids.apply(xml);
        let _ = fs::remove_file(fifo);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| io_err(e.into()))?;
        let (returned, failed) = (AtomicBool::new(false), AtomicBool::new(false));
        let (restored, fed) = std::thread::scope(|s| {
            let feeder = s.spawn(|| feed(fifo, &header, &head, &mut file, (&returned, &failed)));
            let restored =
                self.conn
                    .restore_domain_flags(&fifo.to_string_lossy(), Some(&xml), virt::sys::VIR_DOMAIN_SAVE_RUNNING);
            // A failed restore may leave a reader (a QEMU that libvirt
            // started, then lost) that never reads: the feeder gives up.
            failed.store(restored.is_err(), Ordering::Relaxed);
            returned.store(true, Ordering::Relaxed);
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the feeding thread panicked")));
            (restored, fed)
        });
        let _ = fs::remove_file(fifo);
        restored.map_err(err)?;
        fed.map_err(io_err)
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
#[derive(Debug)]
struct SaveHeader {
    raw: [u8; HEADER_LEN],
    data: Vec<u8>,
    xml: String,
    cookie: Option<Vec<u8>>,
}

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

impl SaveHeader {
    fn read(r: &mut impl Read) -> std::io::Result<SaveHeader> {
        let mut raw = [0u8; HEADER_LEN];
        r.read_exact(&mut raw)?;
        if &raw[..16] != MAGIC {
            return Err(bad("wrong magic"));
        }
        if word(&raw, 0) != 2 {
            return Err(bad("a header version other than 2"));
        }
        let (len, cookie_at) = (word(&raw, 1), word(&raw, 4));
        if len > MAX_DATA || cookie_at > len {
            return Err(bad("a data length out of bounds"));
        }
        let mut data = vec![0u8; len];
        r.read_exact(&mut data)?;
        let xml_end = data
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("no end to its XML"))?;
        let xml = String::from_utf8(data[..xml_end].to_vec()).map_err(|_| bad("XML that is not UTF-8"))?;
        let cookie = (cookie_at > 0).then(|| {
            let rest = &data[cookie_at..];
            rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())].to_vec()
        });
        Ok(SaveHeader { raw, data, xml, cookie })
    }

    /// The header and data again, with the domain's name, uuid and
    /// generation id replaced in the XML.
    fn rewritten(&self, name: &str, ids: &Ids) -> std::io::Result<Vec<u8>> {
        let mut xml = replace_element(&self.xml, "name", &super::xml::esc(name)).ok_or_else(|| bad("no <name>"))?;
        xml = replace_element(&xml, "uuid", &ids.uuid).ok_or_else(|| bad("no <uuid>"))?;
        xml = replace_element(&xml, "genid", &ids.genid).ok_or_else(|| bad("no <genid>"))?;
        let mut data = xml.into_bytes();
        data.push(0);
        let cookie_at = match &self.cookie {
            Some(c) => {
                let at = data.len();
                data.extend_from_slice(c);
                data.push(0);
                at
            }
            None => 0,
        };
        let mut out = self.raw.to_vec();
        out[20..24].copy_from_slice(&u32::try_from(data.len()).map_err(|_| bad("too long"))?.to_le_bytes());
        out[32..36].copy_from_slice(&u32::try_from(cookie_at).map_err(|_| bad("too long"))?.to_le_bytes());
        out.extend_from_slice(&data);
        Ok(out)
    }
}

/// `xml` with the text of its first `<tag>…</tag>` replaced by `text`.
fn replace_element(xml: &str, tag: &str, text: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(format!("{}{text}{}", &xml[..start], &xml[end..]))
}

/// A restored domain's new uuid and VM generation id.
struct Ids {
    uuid: String,
    genid: String,
}

impl Ids {
    fn fresh() -> std::io::Result<Ids> {
        let uuid = |h: String| format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
        Ok(Ids {
            uuid: uuid(crate::util::random::random_hex(16)?),
            genid: uuid(crate::util::random::random_hex(16)?),
        })
    }

    /// lago's domain XML with these ids.
    fn apply(&self, xml: &str) -> String {
        let with_genid = xml.replacen("<genid/>", &format!("<genid>{}</genid>", self.genid), 1);
        match with_genid.find("</name>") {
            Some(i) => {
                let at = i + "</name>".len();
                format!(
                    "{}\n  <uuid>{}</uuid>{}",
                    &with_genid[..at],
                    self.uuid,
                    &with_genid[at..]
                )
            }
            None => with_genid,
        }
    }
}

/// Writes the rewritten `head`, then the rest of the image, into the FIFO
/// once libvirt opens it; returns the sha256 of the image as it is on disk.
/// It gives up when libvirt returned (`flags.0`) without opening it, or
/// failed (`flags.1`) while no one reads.
fn feed(
    fifo: &Path,
    header: &SaveHeader,
    head: &[u8],
    image: &mut fs::File,
    flags: (&AtomicBool, &AtomicBool),
) -> std::io::Result<String> {
    let (returned, failed) = flags;
    let mut out = loop {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(fifo)
        {
            Ok(f) => break f,
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {
                if returned.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("libvirt never read the save image"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    let mut hash = Sha256::new();
    hash.update(header.raw);
    hash.update(&header.data);
    write_unless(&mut out, head, failed)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = image.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        write_unless(&mut out, &buf[..n], failed)?;
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// Writes all of `buf` into the non-blocking `out`, waiting while the pipe
/// is full, unless `failed` says the restore failed meanwhile.
fn write_unless(out: &mut fs::File, mut buf: &[u8], failed: &AtomicBool) -> std::io::Result<()> {
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if failed.load(Ordering::Relaxed) {
                    return Err(std::io::Error::other("the restore failed; no one reads the save image"));
                }
                let mut fds = [rustix::event::PollFd::new(&*out, rustix::event::PollFlags::OUT)];
                rustix::event::poll(&mut fds, Some(&tick))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn a_save_header_is_rewritten_with_the_new_names_and_the_stream_follows() {
        let xml = "<domain><name>lago-aaaa1111-vm01</name><uuid>u-old</uuid><genid>g-old</genid></domain>";
        let bytes = image(xml, "<cookie/>");
        let mut r = std::io::Cursor::new(&bytes);
        let h = SaveHeader::read(&mut r).expect("parse");
        assert_eq!(h.xml, xml);
        let ids = Ids {
            uuid: "u-new".into(),
            genid: "g-new".into(),
        };
        let head = h.rewritten("lago-bbbb2222-vm01-long", &ids).expect("rewrite");
        let mut r2 = std::io::Cursor::new(&head);
        let h2 = SaveHeader::read(&mut r2).expect("parse again");
        assert_eq!(
            h2.xml,
            "<domain><name>lago-bbbb2222-vm01-long</name><uuid>u-new</uuid><genid>g-new</genid></domain>"
        );
        assert_eq!(h2.cookie.as_deref(), Some(&b"<cookie/>"[..]));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"QEVM-stream", "the stream starts right after the announced data");
        // lago's own XML gets the same ids.
        let mine = ids.apply("<domain>\n  <name>x</name>\n  <genid/>\n</domain>");
        assert_eq!(
            mine,
            "<domain>\n  <name>x</name>\n  <uuid>u-new</uuid>\n  <genid>g-new</genid>\n</domain>"
        );
    }

    #[test]
    fn what_is_not_a_save_image_is_refused() {
        let mut bad_magic = image("<domain/>", "");
        bad_magic[0] = b'X';
        assert!(SaveHeader::read(&mut std::io::Cursor::new(bad_magic)).is_err());
        let mut huge = image("<domain/>", "");
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SaveHeader::read(&mut std::io::Cursor::new(huge)).is_err());
        assert!(SaveHeader::read(&mut std::io::Cursor::new(b"short")).is_err());
    }
}
