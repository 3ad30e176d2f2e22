//! Files on a hypervisor that shares no filesystem with lago: libvirt's
//! storage API. One `dir` pool, `lago` (created when missing, at
//! `LAGO_REMOTE_POOL_PATH`, default `/var/lib/lago/pool`), holds every disk,
//! seed, kernel and console log of remote environments as volumes:
//!
//! ```text
//! lago-templates-<sha256>            a template's disk, kernel or initrd, named by its content
//! lago-templates-<sha256>.uploading  the upload lock: "<unix time> <owner token>", or "free"
//! lago-templates-<sha256>.done       says the upload completed and matched its digest
//! lago-<env id>-<vm>-…               an environment's own (destroy and gc delete them)
//! ```
//!
//! Template volumes are named by the sha256 of their content, so two
//! clients with different images never share a volume, and two uploads of
//! one volume write the same bytes: racing uploads are harmless. A template
//! volume is never deleted: an upload that died is finished by the next
//! client, into the same volume. The lock says who uploads now; its holder
//! rewrites its time every [`UPLOAD_LOCK_REFRESH`] while the upload runs
//! and checks that the lock still names it before it writes the marker; a
//! lock not rewritten for [`UPLOAD_LOCK_STALE`] is an upload that died, and
//! is taken over by writing a new owner into it.
//!
//! Uploads and downloads go through volume streams; overlays are volumes
//! backed by a template volume.

use std::io::Read;
use std::path::Path;

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::{Backend, BackendError};

/// The libvirt storage pool lago keeps a remote hypervisor's volumes in.
pub const POOL: &str = "lago";
/// Where the pool is created when it does not exist (`LAGO_REMOTE_POOL_PATH`).
pub const DEFAULT_POOL_PATH: &str = "/var/lib/lago/pool";
/// An upload lock not rewritten for this long is an upload that died.
pub const UPLOAD_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// How often an upload rewrites its lock.
pub const UPLOAD_LOCK_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a client waits for another client's upload of one template (at most).
pub const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(4 * 60 * 60);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The variable naming the pool's path on the hypervisor.
pub const ENV_POOL_PATH: &str = "LAGO_REMOTE_POOL_PATH";

/// A storage call that failed.
fn err(action: &'static str, name: &str) -> impl FnOnce(virt::error::Error) -> BackendError + use<> {
    let name = name.to_owned();
    move |source| BackendError::Storage { action, name, source }
}

use crate::util::text::xml_escape;

/// A volume name lago makes: letters, digits and `-_.` only.
pub use crate::util::text::plain_name as volume_name;

impl Backend {
    fn pool(&self) -> Result<StoragePool, BackendError> {
        self.conn
            .lookup_storage_pool_by_name(POOL)
            .map_err(err("find pool", POOL))
    }

    /// The `lago` pool, defined, built and started when it is not; returns
    /// its path on the hypervisor.
    pub fn ensure_pool(&self) -> Result<String, BackendError> {
        let pool = match self.pool() {
            Ok(p) => p,
            Err(_) => {
                let path = std::env::var(ENV_POOL_PATH)
                    .ok()
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or_else(|| DEFAULT_POOL_PATH.to_owned());
                let xml = format!(
                    "<pool type='dir'><name>{POOL}</name><target><path>{}</path></target></pool>",
                    xml_escape(&path)
                );
                let p = match self.conn.define_storage_pool_xml(&xml, 0) {
                    Ok(p) => p,
                    // Another client defined it meanwhile.
                    Err(e) => self.pool().map_err(|_| BackendError::Storage {
                        action: "define pool",
                        name: POOL.into(),
                        source: e,
                    })?,
                };
                let _ = p.build(0);
                let _ = p.set_autostart(true);
                p
            }
        };
        if !pool.is_active().unwrap_or(false)
            && let Err(e) = pool.create(0)
            && !pool.is_active().unwrap_or(false)
        {
            return Err(BackendError::Storage {
                action: "start pool",
                name: POOL.into(),
                source: e,
            });
        }
        let xml = pool.xml_desc(0).map_err(err("read pool", POOL))?;
        let doc = roxmltree::Document::parse(&xml).map_err(|e| BackendError::StorageXml {
            name: POOL.into(),
            message: e.to_string(),
        })?;
        doc.descendants()
            .find(|n| n.has_tag_name("path") && n.parent().is_some_and(|p| p.has_tag_name("target")))
            .and_then(|n| n.text())
            .map(str::to_owned)
            .ok_or_else(|| BackendError::StorageXml {
                name: POOL.into(),
                message: "the pool has no target path".into(),
            })
    }

    fn volume(&self, name: &str) -> Result<Option<StorageVol>, BackendError> {
        let pool = self.pool()?;
        Ok(pool.lookup_storage_vol_by_name(name).ok())
    }

    /// The path of volume `name` on the hypervisor, if it exists.
    pub fn volume_path(&self, name: &str) -> Result<Option<String>, BackendError> {
        match self.volume(name)? {
            Some(v) => Ok(Some(v.path().map_err(err("read volume", name))?)),
            None => Ok(None),
        }
    }

    /// Creates volume `name` (`format`: raw or qcow2) of `capacity` bytes,
    /// backed by the qcow2 volume at `backing` when given; returns its path.
    pub fn create_volume(
        &self,
        name: &str,
        capacity: u64,
        format: &str,
        backing: Option<&str>,
    ) -> Result<String, BackendError> {
        let vol = self.create_vol(name, capacity, format, backing)?;
        vol.path().map_err(err("read volume", name))
    }

    fn create_vol(
        &self,
        name: &str,
        capacity: u64,
        format: &str,
        backing: Option<&str>,
    ) -> Result<StorageVol, BackendError> {
        let pool = self.pool()?;
        let backing = backing
            .map(|b| {
                format!(
                    "<backingStore><path>{}</path><format type='qcow2'/></backingStore>",
                    xml_escape(b)
                )
            })
            .unwrap_or_default();
        let xml = format!(
            "<volume><name>{}</name><capacity unit='bytes'>{capacity}</capacity><allocation>0</allocation>\
             <target><format type='{}'/><permissions><mode>0600</mode></permissions></target>{backing}</volume>",
            xml_escape(name),
            xml_escape(format)
        );
        StorageVol::create_xml(&pool, &xml, 0).map_err(err("create volume", name))
    }

    /// Uploads local file `local` as a new volume `name`; returns its path.
    /// A failed upload deletes the volume again.
    pub fn upload_volume(&self, name: &str, local: &Path) -> Result<String, BackendError> {
        let io = |source| BackendError::StorageIo {
            name: name.to_owned(),
            path: local.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(local).map_err(io)?.len();
        let vol = self.create_vol(name, len.max(1), "raw", None)?;
        match self.upload_into(&vol, name, local, &mut |_| Ok(())) {
            Ok(_) => vol.path().map_err(err("read volume", name)),
            Err(e) => {
                let _ = vol.delete(0);
                Err(e)
            }
        }
    }

    /// Writes local file `local` into the existing volume `vol` (`name`)
    /// from its start, calling `tick` with the bytes sent so far after each
    /// chunk (an error from it stops the upload). Returns the sha256 of
    /// what was sent.
    fn upload_into(
        &self,
        vol: &StorageVol,
        name: &str,
        local: &Path,
        tick: &mut dyn FnMut(u64) -> Result<(), BackendError>,
    ) -> Result<String, BackendError> {
        use sha2::Digest;
        let io = |source| BackendError::StorageIo {
            name: name.to_owned(),
            path: local.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(local).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut file = file.take(len);
        let mut digest = sha2::Sha256::new();
        let stream = Stream::new(&self.conn, 0).map_err(err("open a stream to", name))?;
        let sent = (|| -> Result<(), BackendError> {
            vol.upload(&stream, 0, len, 0).map_err(err("upload to", name))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < n {
                    let k = stream.send(&buf[off..n]).map_err(err("upload to", name))?;
                    let k = usize::try_from(k)
                        .ok()
                        .filter(|k| *k > 0)
                        .ok_or_else(|| BackendError::StorageIo {
                            name: name.to_owned(),
                            path: local.to_path_buf(),
                            source: std::io::Error::other("the volume stream took no data"),
                        })?;
                    off += k.min(n - off);
                }
                digest.update(&buf[..n]);
                total += n as u64;
                tick(total)?;
            }
            if total != len {
                return Err(io(std::io::Error::other(format!(
                    "the file changed while it was uploaded ({total} of {len} bytes)"
                ))));
            }
            Ok(())
        })();
        // A stream that failed is aborted, so that libvirt lets go of the volume.
        match sent {
            Ok(()) => stream.finish().map_err(err("finish the upload to", name))?,
            Err(e) => {
                let _ = stream.abort();
                return Err(e);
            }
        }
        Ok(digest.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Up to `max` bytes of volume `name` from `offset` (for console logs).
    pub fn download_volume(&self, name: &str, offset: u64, max: u64) -> Result<Vec<u8>, BackendError> {
        let Some(vol) = self.volume(name)? else {
            return Ok(Vec::new());
        };
        let stream = Stream::new(&self.conn, 0).map_err(err("open a stream to", name))?;
        vol.download(&stream, offset, max, 0).map_err(err("download", name))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = stream.recv(&mut buf).map_err(err("download", name))?;
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
            if out.len() as u64 >= max {
                break;
            }
        }
        let _ = stream.finish();
        Ok(out)
    }

    /// Deletes every volume of the `lago` pool whose name starts with
    /// `prefix` (none when the daemon has no such pool); returns their names.
    pub fn delete_volumes_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let Ok(pool) = self.conn.lookup_storage_pool_by_name(POOL) else {
            return Ok(Vec::new());
        };
        if !pool.is_active().unwrap_or(false) {
            return Ok(Vec::new());
        }
        let _ = pool.refresh(0);
        let mut deleted = Vec::new();
        for vol in pool.list_all_volumes(0).map_err(err("list volumes of", POOL))? {
            let Ok(name) = vol.name() else { continue };
            if name.starts_with(prefix) {
                vol.delete(0).map_err(err("delete volume", &name))?;
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// The volume of a template file (a disk, kernel or initrd) whose
    /// content has sha256 `sha256`: `lago-templates-<sha256>`, uploaded once
    /// and shared. Reused when its upload completed (the `.done` marker);
    /// otherwise uploaded under the lock (see the module docs), or waited
    /// for while another client uploads it. Returns the volume's path.
    pub fn template_volume(&self, local: &Path, sha256: &str) -> Result<String, BackendError> {
        let name = format!("lago-templates-{sha256}");
        let done = format!("{name}.done");
        let lock = format!("{name}.uploading");
        let start = std::time::Instant::now();
        loop {
            if let (Some(path), Some(_)) = (self.volume_path(&name)?, self.volume_path(&done)?) {
                return Ok(path);
            }
            if let Some(token) = self.take_upload_lock(&lock)? {
                let result = self.upload_template(&name, &lock, &token, local, sha256);
                self.release_upload_lock(&lock, &token);
                return result;
            }
            if start.elapsed() > UPLOAD_WAIT {
                return Err(BackendError::UploadWait { name, lock });
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Uploads `local` into template volume `name` (made now, or left by an
    /// upload that died: the same bytes go into it), holding lock `lock`
    /// (rewritten as the upload goes), then writes the `.done` marker if the
    /// bytes sent have the digest the name says and the lock is still ours.
    fn upload_template(
        &self,
        name: &str,
        lock: &str,
        token: &str,
        local: &Path,
        sha256: &str,
    ) -> Result<String, BackendError> {
        let len = std::fs::metadata(local)
            .map_err(|source| BackendError::StorageIo {
                name: name.to_owned(),
                path: local.to_path_buf(),
                source,
            })?
            .len();
        let vol = match self.volume(name)? {
            Some(v) => v,
            None => self.create_vol(name, len.max(1), "raw", None)?,
        };
        let capacity = vol.info().map_err(err("read volume", name))?.capacity;
        if capacity != len.max(1) {
            return Err(BackendError::UploadMismatch {
                name: name.to_owned(),
                reason: format!("it holds {capacity} bytes, the file {len}"),
            });
        }
        let mut refreshed = std::time::Instant::now();
        let lost = || BackendError::UploadMismatch {
            name: name.to_owned(),
            reason: "another client took the upload lock over; its upload goes on".into(),
        };
        let sent = self.upload_into(&vol, name, local, &mut |_| {
            if refreshed.elapsed() >= UPLOAD_LOCK_REFRESH {
                if !self.lock_is(lock, token) {
                    return Err(lost());
                }
                self.write_lock(lock, &format!("{} {token}", unix_now()))?;
                refreshed = std::time::Instant::now();
            }
            Ok(())
        })?;
        if sent != sha256 {
            return Err(BackendError::UploadMismatch {
                name: name.to_owned(),
                reason: format!(
                    "the bytes sent have sha256 {sent}, not {sha256} ({} changed while it was uploaded)",
                    local.display()
                ),
            });
        }
        if !self.lock_is(lock, token) {
            return Err(lost());
        }
        if self.volume(&format!("{name}.done"))?.is_none() {
            self.create_volume(&format!("{name}.done"), 1, "raw", None)?;
        }
        vol.path().map_err(err("read volume", name))
    }

    /// Takes the upload lock `lock`: made new with our token, or taken over
    /// when it is free or stale (our token written, then read back after a
    /// moment: of two takers, the last writer has it). `None`: another
    /// client holds it.
    fn take_upload_lock(&self, lock: &str) -> Result<Option<String>, BackendError> {
        let token = crate::util::random::random_hex(16).map_err(|source| BackendError::StorageIo {
            name: lock.to_owned(),
            path: "/dev/urandom".into(),
            source,
        })?;
        let content = format!("{} {token}", unix_now());
        if self.volume(lock)?.is_none() {
            let pool = self.pool()?;
            let xml = format!(
                "<volume><name>{}</name><capacity unit='bytes'>{LOCK_BYTES}</capacity><allocation>0</allocation>\
                 <target><format type='raw'/><permissions><mode>0600</mode></permissions></target></volume>",
                xml_escape(lock)
            );
            // Creating is atomic in the daemon: of two creators, one fails.
            if let Ok(vol) = StorageVol::create_xml(&pool, &xml, 0) {
                self.write_into(&vol, lock, &content)?;
                return Ok(Some(token));
            }
        }
        let held = self.read_lock(lock);
        let stale = match held.split_once(' ') {
            _ if held == "free" => true,
            Some((t, _)) => t
                .parse::<u64>()
                .is_ok_and(|t| unix_now().saturating_sub(t) > UPLOAD_LOCK_STALE.as_secs()),
            // Being written, or unreadable: not ours to judge yet.
            None => false,
        };
        if !stale {
            return Ok(None);
        }
        if held != "free" {
            tracing::warn!(volume = lock, "taking over a template upload that stopped");
        }
        self.write_lock(lock, &content)?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(self.lock_is(lock, &token).then_some(token))
    }

    /// Frees the upload lock if it still names `token`.
    fn release_upload_lock(&self, lock: &str, token: &str) {
        if self.lock_is(lock, token)
            && let Err(e) = self.write_lock(lock, "free")
        {
            tracing::warn!(volume = lock, error = %e, "cannot free the template upload lock");
        }
    }

    fn read_lock(&self, lock: &str) -> String {
        self.download_volume(lock, 0, LOCK_BYTES)
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_owned()
            })
            .unwrap_or_default()
    }

    fn lock_is(&self, lock: &str, token: &str) -> bool {
        self.read_lock(lock).split_once(' ').is_some_and(|(_, t)| t == token)
    }

    fn write_lock(&self, lock: &str, content: &str) -> Result<(), BackendError> {
        let vol = self.volume(lock)?.ok_or_else(|| BackendError::UploadMismatch {
            name: lock.to_owned(),
            reason: "the upload lock volume is gone".into(),
        })?;
        self.write_into(&vol, lock, content)
    }

    /// Writes `content`, padded with NULs to [`LOCK_BYTES`], into lock volume `vol`.
    fn write_into(&self, vol: &StorageVol, name: &str, content: &str) -> Result<(), BackendError> {
        let mut bytes = content.as_bytes().to_vec();
        bytes.resize(LOCK_BYTES as usize, 0);
        let stream = Stream::new(&self.conn, 0).map_err(err("open a stream to", name))?;
        let sent = (|| {
            vol.upload(&stream, 0, LOCK_BYTES, 0).map_err(err("write", name))?;
            let mut off = 0;
            while off < bytes.len() {
                let k = stream.send(&bytes[off..]).map_err(err("write", name))?;
                off += usize::try_from(k)
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or_else(|| BackendError::UploadMismatch {
                        name: name.to_owned(),
                        reason: "the volume stream took no data".into(),
                    })?;
            }
            Ok(())
        })();
        match sent {
            Ok(()) => stream.finish().map_err(err("write", name)),
            Err(e) => {
                let _ = stream.abort();
                Err(e)
            }
        }
    }
}

/// The size of an upload lock volume.
const LOCK_BYTES: u64 = 128;

/// Subnet claims on a daemon several clients share: an inactive network
/// `lago-subnetclaim-<third octet>` defined per leased /24. Defining is atomic in
/// the daemon (a second client's definition under the same name fails), and
/// [`Backend::subnets_in_use`] counts claims as used.
pub const CLAIM_PREFIX: &str = "lago-subnetclaim-";

/// Whether a claim network's XML names `env_id` (libvirt may write either quote).
fn claimed_by(xml: &str, env_id: &str) -> bool {
    xml.contains(&format!("env='{env_id}'")) || xml.contains(&format!("env=\"{env_id}\""))
}

impl Backend {
    /// Claims `subnet` on the daemon for `env_id`: `true` when the claim is
    /// ours (new, or already ours), `false` when another environment holds it.
    pub fn claim_subnet(&self, subnet: crate::plan::Subnet, env_id: &str) -> Result<bool, BackendError> {
        let name = format!("{CLAIM_PREFIX}{}", subnet.third_octet());
        if let Ok(n) = self.conn.lookup_network_by_name(&name) {
            return Ok(n.xml_desc(0).is_ok_and(|x| claimed_by(&x, env_id)));
        }
        let xml = format!(
            "<network><name>{name}</name>\
             <metadata><lago:claim xmlns:lago='https://github.com/lago-project/lago-rs/claim' env='{}'/></metadata>\
             <ip address='{}' prefix='24'/></network>",
            xml_escape(env_id),
            subnet.host(1)
        );
        match self.conn.define_network_xml(&xml) {
            Ok(_) => Ok(true),
            // Defined by another client meanwhile: theirs unless it names us.
            Err(e) => match self.conn.lookup_network_by_name(&name) {
                Ok(n) => Ok(n.xml_desc(0).is_ok_and(|x| claimed_by(&x, env_id))),
                Err(_) => Err(BackendError::Storage {
                    action: "claim subnet",
                    name,
                    source: e,
                }),
            },
        }
    }

    /// Drops every subnet claim of `env_id` on the daemon.
    pub fn release_claims(&self, env_id: &str) -> Result<(), BackendError> {
        let all = self.conn.list_all_networks(0).map_err(|source| BackendError::List {
            what: "networks",
            source,
        })?;
        for n in all {
            let Ok(name) = n.name() else { continue };
            if name.starts_with(CLAIM_PREFIX) && n.xml_desc(0).is_ok_and(|x| claimed_by(&x, env_id)) {
                n.undefine()
                    .map_err(|source| BackendError::StopNetwork { name, source })?;
            }
        }
        Ok(())
    }
}
