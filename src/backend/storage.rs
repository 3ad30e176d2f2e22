//! Files on a hypervisor that shares no filesystem with lago: libvirt's
//! storage API. One `dir` pool, `lago` (created when missing, at
//! `LAGO_REMOTE_POOL_PATH`, default `/var/lib/lago/pool`), holds every disk,
//! seed, kernel and console log of remote environments as volumes:
//!
//! ```text
//! lago-templates-<name>_<version>[-kernel|-initrd]  templates, uploaded once, shared
//! lago-templates-….uploading                       one client's upload in progress (a lock)
//! lago-templates-….done                            says the upload completed
//! lago-<env id>-<vm>-…                          an environment's own (destroy and gc delete them)
//! ```
//!
//! Uploads and downloads go through volume streams; overlays are volumes
//! backed by a template volume.

use std::io::Read;
use std::path::Path;

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use super::{Backend, BackendError};

/// The pool's name.
pub const POOL: &str = "lago";
/// Where the pool is created when it does not exist (`LAGO_REMOTE_POOL_PATH`).
pub const DEFAULT_POOL_PATH: &str = "/var/lib/lago/pool";
/// An upload lock older than this is an upload that died.
pub const UPLOAD_LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

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

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A volume name lago makes: letters, digits and `-_.` only.
pub use crate::workdir::plain_name as volume_name;

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
        let file = std::fs::File::open(local).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut file = file.take(len);
        let vol = self.create_vol(name, len.max(1), "raw", None)?;
        let path = vol.path().map_err(err("read volume", name))?;
        let stream = match Stream::new(&self.conn, 0) {
            Ok(s) => s,
            Err(e) => {
                let _ = vol.delete(0);
                return Err(err("open a stream to", name)(e));
            }
        };
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
                total += n as u64;
            }
            if total != len {
                return Err(io(std::io::Error::other(format!(
                    "the file changed while it was uploaded ({total} of {len} bytes)"
                ))));
            }
            Ok(())
        })();
        // A stream that failed is aborted, so that libvirt lets go of the volume and it can be deleted.
        let sent = match sent {
            Ok(()) => stream.finish().map_err(err("finish the upload to", name)),
            Err(e) => {
                let _ = stream.abort();
                Err(e)
            }
        };
        if let Err(e) = sent {
            let _ = vol.delete(0);
            return Err(e);
        }
        Ok(path)
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

    /// The volume of a template file, uploaded once and shared: reused when
    /// its upload completed (a `.done` marker volume says so). One client
    /// uploads at a time (an `.uploading` lock volume, created atomically,
    /// holding when it was taken); others wait for the marker. A lock older
    /// than [`UPLOAD_LOCK_STALE`] is an upload that died, and is taken over.
    /// Returns the volume's path.
    pub fn template_volume(&self, name: &str, local: &Path) -> Result<String, BackendError> {
        let done = format!("{name}.done");
        let lock = format!("{name}.uploading");
        let start = std::time::Instant::now();
        loop {
            if let (Some(path), Some(_)) = (self.volume_path(name)?, self.volume_path(&done)?) {
                return Ok(path);
            }
            // The lock: a volume holding when it was taken (creating it is atomic in the daemon).
            let stamp = std::env::temp_dir().join(format!("lago-upload-lock-{}", std::process::id()));
            std::fs::write(&stamp, format!("{}\n", unix_now())).map_err(|source| BackendError::StorageIo {
                name: lock.clone(),
                path: stamp.clone(),
                source,
            })?;
            let locked = self.upload_volume(&lock, &stamp);
            let _ = std::fs::remove_file(&stamp);
            match locked {
                Ok(_) => {
                    let result = (|| {
                        // A volume without its marker: an upload that did not finish.
                        if let Some(v) = self.volume(name)? {
                            let _ = v.delete(0);
                        }
                        let path = self.upload_volume(name, local)?;
                        self.create_volume(&done, 1, "raw", None)?;
                        Ok(path)
                    })();
                    if let Some(v) = self.volume(&lock)? {
                        let _ = v.delete(0);
                    }
                    return result;
                }
                // Not held by anyone: a real failure.
                Err(e) if self.volume(&lock)?.is_none() => return Err(e),
                Err(_) => {
                    let stale = self
                        .download_volume(&lock, 0, 64)
                        .ok()
                        .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok())
                        .is_some_and(|t| unix_now().saturating_sub(t) > UPLOAD_LOCK_STALE.as_secs());
                    if stale && let Some(v) = self.volume(&lock)? {
                        tracing::warn!(volume = lock, "taking over a template upload that stopped");
                        let _ = v.delete(0);
                        continue;
                    }
                    if start.elapsed() > UPLOAD_LOCK_STALE {
                        return Err(BackendError::UploadWait {
                            name: name.to_owned(),
                            lock: lock.clone(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
    }
}

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
