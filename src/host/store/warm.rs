//! Boot images: environments saved right after their first boot, so that
//! later starts restore them instead of booting (warm start).
//!
//! Each lives in the store as `warm/<key>/`, where the key is a digest of
//! everything that decides the booted state (`lago::env` computes it):
//!
//! ```text
//! warm/<key>/boot-image.json     what it holds (written last: no file, no boot image)
//! warm/<key>/<vm>.state          libvirt's save image of the VM (memory and devices)
//! warm/<key>/<vm>_<disk>.qcow2   its disks as they were (overlays on the templates)
//! warm/<key>/users/<env id>.json environments whose disks are layered on it
//! warm/<key>/last-used           when an environment last used it
//! ```
//!
//! A boot image is made in a hidden folder (`warm/.new-…`) and renamed into
//! place once whole. The store keeps them under a total size
//! (`LAGO_WARM_MAX`, default 8 GiB), dropping the least recently used ones
//! that no environment uses.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StoreError, TemplateStore, io};
use crate::plan::{EnvId, Subnet};

/// The store's folder of boot images.
pub const DIR: &str = "warm";
/// A boot image's description, written last.
pub const META: &str = "boot-image.json";
/// The layout of boot images this lago writes and reads.
pub const FORMAT: u32 = 1;
/// The default bound on the boot images' total size (`LAGO_WARM_MAX` overrides).
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;
const MAX_META_BYTES: u64 = 1 << 20;
const USERS: &str = "users";
const LAST_USED: &str = "last-used";

/// What a boot image holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootImageMeta {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// Its key (the folder's name).
    pub key: String,
    /// The digest of the environment's init file alone (without its
    /// subnets): environments of one family prefer the subnets of its boot images.
    pub family: String,
    /// The lago that wrote it.
    pub lago_version: String,
    /// The init file the environment was made from.
    pub init_file: PathBuf,
    /// When it was made (seconds since the epoch).
    pub created_unix: u64,
    /// The subnet of each managed net (the guests' memory holds their addresses).
    pub subnets: BTreeMap<String, Subnet>,
    /// The SSH client key the guests authorize (OpenSSH private key).
    pub client_key: String,
    /// Its public half (OpenSSH).
    pub client_key_public: String,
    /// Each VM, by name.
    pub vms: BTreeMap<String, SavedVm>,
}

/// One VM of a boot image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedVm {
    /// Its SSH host key, which the guest holds (none without a seed).
    pub host_key: Option<SavedHostKey>,
    /// The save image's file name in the folder.
    pub state: String,
    /// Its size in bytes.
    pub state_bytes: u64,
    /// Its sha256 (checked before a restore).
    pub state_sha256: String,
    /// Its disks' files in the folder, by disk name.
    pub disks: BTreeMap<String, String>,
    /// Seconds from the domain's creation until it was ready, when it booted.
    pub boot_secs: f64,
    /// Its serial console up to the save, a file in the folder (a restored
    /// VM's console log starts with it).
    #[serde(default)]
    pub console: Option<String>,
}

/// A VM's SSH host key, as its seed gave it to the guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedHostKey {
    /// The private key (OpenSSH).
    pub private_openssh: String,
    /// The same key in dropbear's format, hex (what `tiny` reads).
    pub private_dropbear_hex: String,
    /// The public key (OpenSSH).
    pub public_openssh: String,
}

/// A boot image in the store.
#[derive(Debug, Clone)]
pub struct BootImage {
    /// Its folder.
    pub dir: PathBuf,
    /// What it holds.
    pub meta: BootImageMeta,
}

impl BootImage {
    /// The boot image in folder `dir` (in a store, or a failure bundle's),
    /// when this lago may use it: the folder and its description belong to
    /// this user and no one else may write them, the description is whole,
    /// of this format, and names only plain files of its own folder.
    pub fn open(dir: &Path) -> Result<BootImage, String> {
        if !ours(dir, true) || !ours(&dir.join(META), false) {
            return Err("another user could have written it (or it is not a plain folder with a description)".into());
        }
        let meta = read_meta(dir).ok_or("its description cannot be read")?;
        if !names_only_its_own_files(&meta) {
            return Err("it names files outside its folder".into());
        }
        if let Some(name) = first_unplain_file(dir, &meta) {
            return Err(format!(
                "{name} is not a plain file of its own (a link, another user's, or linked elsewhere too)"
            ));
        }
        if meta.format != FORMAT || !valid_key(&meta.key) {
            return Err(format!(
                "it is of another format ({}; this lago reads {FORMAT})",
                meta.format
            ));
        }
        Ok(BootImage {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// File `name` of the boot image's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A boot image as `lago warm list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BootImageEntry {
    /// Its key.
    pub key: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The init file it was made from.
    pub init_file: PathBuf,
    /// Its VMs.
    pub vms: Vec<String>,
    /// Bytes it takes on disk.
    pub bytes: u64,
    /// When an environment last used it (or it was made).
    #[serde(skip)]
    pub last_used: Option<SystemTime>,
    /// Workdirs of the environments whose disks are layered on it.
    pub users: Vec<PathBuf>,
}

/// The boot images of a template store.
#[derive(Debug, Clone)]
pub struct BootImages {
    root: PathBuf,
}

/// The bound on the boot images' total size: `LAGO_WARM_MAX` (bytes, or
/// with a `K`/`M`/`G` suffix), else [`DEFAULT_MAX_BYTES`].
pub fn max_bytes() -> u64 {
    std::env::var("LAGO_WARM_MAX")
        .ok()
        .and_then(|v| parse_size(&v))
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// A size in bytes, or with a `K`/`M`/`G` suffix.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, shift) = match v.chars().last()? {
        'K' | 'k' => (&v[..v.len() - 1], 10),
        'M' | 'm' => (&v[..v.len() - 1], 20),
        'G' | 'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A key is lowercase hex: never a path.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl BootImages {
    /// The boot images of `store`.
    pub fn new(store: &TemplateStore) -> Self {
        BootImages {
            root: store.root().join(DIR),
        }
    }

    /// Their folder (`<store>/warm`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new hidden folder to make the boot image `key` in.
    pub fn begin(&self, key: &str) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(&self.root).map_err(io("create", &self.root))?;
        let tag = crate::util::random::random_hex(4).map_err(io("name a folder in", &self.root))?;
        let dir = self.root.join(format!(
            ".new-{}-{}-{tag}",
            &key[..key.len().min(16)],
            std::process::id()
        ));
        // Its disks and memory hold the guests' secrets (host keys, whatever
        // they booted with): for this user only.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        Ok(dir)
    }

    /// Makes the boot image in `pending` (from [`BootImages::begin`]) the
    /// one of its key: its description is written, then the folder renamed
    /// into place. A stale one of the same key that no one uses is replaced.
    pub fn commit(&self, pending: &Path, meta: &BootImageMeta) -> Result<BootImage, StoreError> {
        let meta_path = pending.join(META);
        let text = serde_json::to_vec_pretty(meta).map_err(|e| io("write", &meta_path)(std::io::Error::other(e)))?;
        // It holds the guests' private keys: for this user only.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&meta_path)
            .map_err(io("write", &meta_path))?;
        std::io::Write::write_all(&mut f, &text).map_err(io("write", &meta_path))?;
        let dir = self.root.join(&meta.key);
        if dir.exists() {
            if !self.users(&meta.key).is_empty() {
                return Err(io("replace", &dir)(std::io::Error::other(
                    "a boot image of this key is in use",
                )));
            }
            self.remove(&meta.key)?;
        }
        fs::rename(pending, &dir).map_err(io("rename into place", pending))?;
        Ok(BootImage {
            dir,
            meta: meta.clone(),
        })
    }

    /// Removes a folder [`BootImages::begin`] made that never became a boot image.
    pub fn abandon(&self, pending: &Path) {
        if pending.parent() == Some(self.root.as_path())
            && pending
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".new-"))
            && let Err(e) = fs::remove_dir_all(pending)
        {
            tracing::warn!(dir = %pending.display(), error = %e, "cannot remove an unfinished boot image");
        }
    }

    /// The boot image of `key`, if there is a whole one this lago can read.
    pub fn find(&self, key: &str) -> Option<BootImage> {
        if !valid_key(key) {
            return None;
        }
        let dir = self.root.join(key);
        fs::symlink_metadata(dir.join(META)).ok()?;
        BootImage::open(&dir)
            .inspect_err(|why| tracing::warn!(dir = %dir.display(), why, "boot image ignored"))
            .ok()
            .filter(|img| img.meta.key == key)
    }

    /// Every whole boot image, most recently used first.
    pub fn all(&self) -> Vec<BootImage> {
        let mut out: Vec<(Option<SystemTime>, BootImage)> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|k| self.find(k)))
            .map(|b| (last_used(&b.dir), b))
            .collect();
        out.sort_by_key(|b| std::cmp::Reverse(b.0));
        out.into_iter().map(|(_, b)| b).collect()
    }

    /// The subnets of the boot images of `family`, most recently used first:
    /// what a new environment of that family asks the lease store for first.
    pub fn subnets_of(&self, family: &str) -> Vec<BTreeMap<String, Subnet>> {
        self.all()
            .into_iter()
            .filter(|b| b.meta.family == family)
            .map(|b| b.meta.subnets)
            .collect()
    }

    /// Records that environment `env_id` in `workdir` layers disks on boot image `key`.
    pub fn record_use(&self, key: &str, env_id: &EnvId, workdir: &Path) -> Result<(), StoreError> {
        let dir = self.root.join(key);
        let users = dir.join(USERS);
        // Not create_dir_all: a boot image a prune moved away must not come back empty.
        match fs::create_dir(&users) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("record the use of the boot image in", &users)(e)),
        }
        let record = users.join(format!("{env_id}.json"));
        let text = serde_json::to_vec(&super::manage::UseRecord {
            env_id: env_id.clone(),
            workdir: workdir.to_path_buf(),
        })
        .map_err(|e| io("write", &record)(std::io::Error::other(e)))?;
        fs::write(&record, text).map_err(io("write", &record))?;
        let _ = fs::write(dir.join(LAST_USED), format!("{}\n", now_unix()));
        Ok(())
    }

    /// Workdirs of the environments that use boot image `key` and still exist.
    pub fn users(&self, key: &str) -> Vec<PathBuf> {
        live_users(&self.root.join(key).join(USERS))
    }

    /// Removes boot image `key` (moved out of sight first, so no one finds
    /// half of it). `false`: there was none.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let Some(trash) = self.move_aside(key)? else {
            return Ok(false);
        };
        fs::remove_dir_all(&trash).map_err(io("remove", &trash))?;
        Ok(true)
    }

    /// Removes boot image `key` unless an environment uses it: it is moved
    /// out of sight first, then its use records are read again (one an
    /// environment wrote meanwhile brings it back). `false`: it stays (or
    /// there was none).
    pub fn remove_unused(&self, key: &str) -> Result<bool, StoreError> {
        let Some(trash) = self.move_aside(key)? else {
            return Ok(false);
        };
        if !live_users(&trash.join(USERS)).is_empty() {
            let dir = self.root.join(key);
            fs::rename(&trash, &dir).map_err(io("put back", &dir))?;
            return Ok(false);
        }
        fs::remove_dir_all(&trash).map_err(io("remove", &trash))?;
        Ok(true)
    }

    /// Moves boot image `key` out of sight (`.old-<key>-<tag>`); `None`:
    /// there is none.
    fn move_aside(&self, key: &str) -> Result<Option<PathBuf>, StoreError> {
        if !valid_key(key) {
            return Ok(None);
        }
        let dir = self.root.join(key);
        let tag = crate::util::random::random_hex(4).map_err(io("remove", &dir))?;
        let trash = self.root.join(format!(".old-{key}-{tag}"));
        match fs::rename(&dir, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }

    /// Every boot image with its size and users.
    pub fn entries(&self) -> Vec<BootImageEntry> {
        self.all()
            .into_iter()
            .map(|b| BootImageEntry {
                key: b.meta.key.clone(),
                bytes: super::manage::du(&b.dir),
                last_used: last_used(&b.dir),
                users: self.users(&b.meta.key),
                init_file: b.meta.init_file.clone(),
                vms: b.meta.vms.keys().cloned().collect(),
                dir: b.dir,
            })
            .collect()
    }

    /// Removes the least recently used boot images that no environment uses
    /// until all of them take at most `max` bytes; returns those removed (or,
    /// with `dry_run`, that would be).
    pub fn prune_to(&self, max: u64, dry_run: bool) -> Result<Vec<BootImageEntry>, StoreError> {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut removed = Vec::new();
        // Oldest first.
        entries.reverse();
        for e in entries {
            if total <= max {
                break;
            }
            if !e.users.is_empty() {
                continue;
            }
            if !dry_run && !self.remove_unused(&e.key)? {
                continue;
            }
            total = total.saturating_sub(e.bytes);
            removed.push(e);
        }
        self.remove_leftovers();
        Ok(removed)
    }

    /// Folders an interrupted save or removal left (`.new-…`, `.old-…`)
    /// a day ago or more (a process id says nothing across pid namespaces).
    fn remove_leftovers(&self) {
        let day = std::time::Duration::from_secs(24 * 3600);
        for e in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= day);
            if (name.starts_with(".new-") || name.starts_with(".old-")) && old {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn names_only_its_own_files(meta: &BootImageMeta) -> bool {
    let plain = |n: &str| {
        !n.is_empty()
            && n.len() <= 255
            && !n.starts_with('.')
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    meta.vms.iter().all(|(vm, v)| {
        plain(vm)
            && plain(&v.state)
            && v.console.as_deref().is_none_or(plain)
            && v.disks.iter().all(|(d, f)| plain(d) && plain(f))
    })
}

/// The first file the description names, present in `dir`, that is not a
/// regular file of this user with one name only: a link, or a hard link to
/// a file elsewhere, could make a restore read, or a rebase write, a file
/// outside the folder. (Files not there are `usable`'s to report.)
fn first_unplain_file(dir: &Path, meta: &BootImageMeta) -> Option<String> {
    let names = meta.vms.values().flat_map(|v| {
        std::iter::once(v.state.as_str())
            .chain(v.console.as_deref())
            .chain(v.disks.values().map(String::as_str))
    });
    for name in names {
        match fs::symlink_metadata(dir.join(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(m) if m.is_file() && m.nlink() == 1 && m.uid() == rustix::process::geteuid().as_raw() => continue,
            _ => return Some(name.to_owned()),
        }
    }
    None
}

/// Whether `path` is a folder (`dir`) or a regular file, not a link, of
/// this user, that no one else may write.
fn ours(path: &Path, dir: bool) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) => {
            let kind = if dir { m.is_dir() } else { m.is_file() };
            kind && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
        }
        Err(_) => false,
    }
}

fn read_meta(dir: &Path) -> Option<BootImageMeta> {
    let path = dir.join(META);
    let mut text = Vec::new();
    fs::File::open(&path)
        .ok()?
        .take(MAX_META_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    match serde_json::from_slice(&text) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "unreadable boot image description; ignored");
            None
        }
    }
}

fn last_used(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir.join(LAST_USED))
        .or_else(|_| fs::metadata(dir.join(META)))
        .and_then(|m| m.modified())
        .ok()
}

/// The zstd level boot images' memory is compressed at: the fastest, which
/// already takes a booted guest's memory to about a third.
const ZSTD_LEVEL: i32 = 1;

/// Compresses save image `raw` into `<raw>.zst` beside it and removes
/// `raw`; returns the new file's name, its sha256 and its size.
pub fn compress_state(raw: &Path) -> Result<(String, String, u64), StoreError> {
    let mut name = raw.file_name().unwrap_or_default().to_os_string();
    name.push(".zst");
    let to = raw.with_file_name(&name);
    let mut from = fs::File::open(raw).map_err(io("read", raw))?;
    let out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&to)
        .map_err(io("write", &to))?;
    let mut hashing = HashingWriter {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut enc = zstd::Encoder::new(&mut hashing, ZSTD_LEVEL).map_err(io("compress", raw))?;
    std::io::copy(&mut from, &mut enc).map_err(io("compress", raw))?;
    enc.finish().map_err(io("compress", raw))?;
    std::io::Write::flush(&mut hashing.inner).map_err(io("write", &to))?;
    fs::remove_file(raw).map_err(io("remove", raw))?;
    Ok((
        name.to_string_lossy().into_owned(),
        format!("{:x}", hashing.hash.finalize()),
        hashing.bytes,
    ))
}

/// A writer that hashes and counts what it writes.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Workdirs the use records in `users` name that still hold an environment.
fn live_users(users: &Path) -> Vec<PathBuf> {
    super::manage::users_in(users)
        .into_iter()
        .filter(|w| w.join(crate::host::workdir::OWNER_ID_FILE).exists())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, family: &str, third: u8) -> BootImageMeta {
        BootImageMeta {
            format: FORMAT,
            key: key.into(),
            family: family.into(),
            lago_version: "0".into(),
            init_file: "/x/init.yaml".into(),
            created_unix: 0,
            subnets: [("lago".to_owned(), Subnet::new(third).expect("pool subnet"))].into(),
            client_key: "k".into(),
            client_key_public: "p".into(),
            vms: BTreeMap::new(),
        }
    }

    #[test]
    fn memory_is_compressed_beside_and_the_digest_is_of_the_compressed_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let raw = tmp.path().join("vm01.state");
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i % 251) as u8)
            .chain(vec![0u8; 4 << 20])
            .collect();
        fs::write(&raw, &data).expect("write");
        let (name, sha, bytes) = compress_state(&raw).expect("compress");
        assert_eq!(name, "vm01.state.zst");
        assert!(!raw.exists(), "the plain image goes");
        let zst = tmp.path().join(&name);
        assert_eq!(super::super::sha256_file(&zst).expect("hash"), sha);
        assert_eq!(fs::metadata(&zst).expect("size").len(), bytes);
        assert!(bytes < data.len() as u64 / 10, "{bytes}");
        let back = zstd::decode_all(fs::File::open(&zst).expect("open")).expect("decode");
        assert!(back == data);
    }

    #[test]
    fn a_boot_image_whose_files_are_links_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("img");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).expect("dir");
        let mut m = meta("cd", "f", 204);
        m.vms.insert(
            "vm01".into(),
            SavedVm {
                host_key: None,
                state: "vm01.state.zst".into(),
                state_bytes: 0,
                state_sha256: String::new(),
                disks: [("root".to_owned(), "vm01-root.qcow2".to_owned())].into(),
                boot_secs: 0.0,
                console: Some("vm01.console.log".into()),
            },
        );
        let text = serde_json::to_vec(&m).expect("json");
        fs::write(dir.join(META), text).expect("write");
        fs::set_permissions(dir.join(META), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        fs::write(dir.join("vm01.state.zst"), b"x").expect("write");
        assert!(
            BootImage::open(&dir).is_ok(),
            "plain files (the disk missing is usable()'s)"
        );
        // A disk that is a link to a file elsewhere (a rebase would write it).
        let elsewhere = tmp.path().join("someone-elses.qcow2");
        fs::write(&elsewhere, b"x").expect("write");
        std::os::unix::fs::symlink(&elsewhere, dir.join("vm01-root.qcow2")).expect("symlink");
        let e = BootImage::open(&dir).expect_err("a link");
        assert!(e.contains("vm01-root.qcow2 is not a plain file"), "{e}");
        // A console hard-linked to a file elsewhere.
        fs::remove_file(dir.join("vm01-root.qcow2")).expect("rm");
        fs::hard_link(&elsewhere, dir.join("vm01.console.log")).expect("link");
        let e = BootImage::open(&dir).expect_err("a hard link");
        assert!(e.contains("vm01.console.log"), "{e}");
    }

    #[test]
    fn a_boot_image_naming_files_outside_its_folder_is_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let images = BootImages::new(&TemplateStore::new(tmp.path()));
        for (state, disk) in [
            ("../../etc/shadow", "vm01_root.qcow2"),
            ("vm01.state.zst", "/dev/sda"),
            ("vm01.state.zst", ".hidden"),
        ] {
            let dir = images.begin("cc").expect("begin");
            let mut m = meta("cc", "f", 203);
            m.vms.insert(
                "vm01".into(),
                SavedVm {
                    host_key: None,
                    state: state.into(),
                    state_bytes: 0,
                    state_sha256: String::new(),
                    disks: [("root".to_owned(), disk.to_owned())].into(),
                    boot_secs: 0.0,
                    console: None,
                },
            );
            images.commit(&dir, &m).expect("commit");
            assert!(images.find("cc").is_none(), "{state} {disk}");
            images.remove("cc").expect("remove");
        }
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("5m"), Some(5 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn a_boot_image_is_found_only_once_committed_and_pruned_oldest_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let images = BootImages::new(&TemplateStore::new(tmp.path()));
        let a = images.begin("aa").expect("begin");
        fs::write(a.join("vm01.state"), vec![1u8; 4096]).expect("write");
        assert!(images.find("aa").is_none(), "not before its description is written");
        images.commit(&a, &meta("aa", "f", 201)).expect("commit");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = images.begin("bb").expect("begin");
        fs::write(b.join("vm01.state"), vec![1u8; 4096]).expect("write");
        images.commit(&b, &meta("bb", "f", 202)).expect("commit");
        assert!(images.find("aa").is_some() && images.find("bb").is_some());
        assert!(images.find("../aa").is_none(), "a key is never a path");
        let subnets = images.subnets_of("f");
        assert_eq!(subnets.len(), 2);
        assert_eq!(subnets[0]["lago"].to_string(), "192.168.202.0/24", "newest first");
        assert!(images.subnets_of("other").is_empty());
        // aa is in use by a live workdir: pruning to nothing keeps it.
        let wd = tmp.path().join("wd");
        fs::create_dir(&wd).expect("mkdir");
        fs::write(wd.join(crate::host::workdir::OWNER_ID_FILE), "abcd1234").expect("write");
        let env = EnvId::new("abcd1234").expect("env id");
        images.record_use("aa", &env, &wd).expect("record");
        let gone = images.prune_to(0, false).expect("prune");
        assert_eq!(gone.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["bb"]);
        assert!(images.find("aa").is_some() && images.find("bb").is_none());
        assert!(!images.remove_unused("aa").expect("remove unused"), "in use: it stays");
        assert!(images.find("aa").is_some(), "and is whole");
        // Its environment is destroyed: the store forgets it, and it can go.
        TemplateStore::new(tmp.path()).forget_env(&env, &wd);
        assert!(images.users("aa").is_empty());
        assert!(images.remove_unused("aa").expect("remove unused"));
        assert!(!images.remove("aa").expect("remove twice"));
        // A use recorded for a boot image that is gone does not bring an empty one back.
        assert!(images.record_use("aa", &env, &wd).is_err());
        assert!(!images.root().join("aa").exists());
    }
}
