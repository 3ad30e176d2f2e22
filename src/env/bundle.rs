//! Failure bundles ([`Env::bundle`], [`Env::replay`]): every VM of an
//! environment saved at one instant, memory and devices and disks, with the
//! keys, the init file and the consoles, in one folder that `lago replay`
//! turns into a running environment again, on this machine or another of
//! the same kind with the same templates.
//!
//! ```text
//! BUNDLE/bundle.json        what it is: the test, the failure, its templates by digest, its size
//! BUNDLE/boot-image.json    the VMs as a boot image (warm start's format): keys, subnets, files
//! BUNDLE/<vm>.state.zst     each VM's memory and devices (libvirt's save image, zstd)
//! BUNDLE/<vm>-<disk>.qcow2  each disk: an overlay on its template holding what the guest wrote
//! BUNDLE/<vm>.console.log   each VM's console up to that instant
//! BUNDLE/init.yaml          the init file it was made from
//! ```
//!
//! Replaying makes a new environment of the bundle's init file whose disks
//! are layered on the bundle's and whose first start restores every VM
//! from it, on the subnets the guests' memory holds. The bundle holds the
//! guests' secrets (SSH keys, what they wrote): it is for this user only.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::VmState;
use crate::env::error::{Error, Result, map_parallel};
use crate::env::vm::Vm;
use crate::env::{Env, InitOptions};
use crate::host::image;
use crate::host::store::warm::{self, BootImage, BootImageMeta};
use lago_config::DiskFormat;

/// The bundle's own description, in its folder.
pub const BUNDLE_META: &str = "bundle.json";
/// The copy of the init file, in the bundle's folder.
pub const INIT_COPY: &str = "init.yaml";
/// The format [`BundleMeta`] is written in.
pub const BUNDLE_FORMAT: u32 = 1;
/// The default bound on a bundle's size (`LAGO_BUNDLE_MAX`): 2 GiB.
pub const DEFAULT_BUNDLE_MAX: u64 = 2 << 30;
/// The most of the init file a bundle copies.
const MAX_INIT_FILE: u64 = 1 << 20;

/// What a failure bundle holds, besides its boot image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleMeta {
    /// [`BUNDLE_FORMAT`] when written.
    pub format: u32,
    /// The lago that wrote it.
    pub lago_version: String,
    /// When it was made (seconds since the epoch).
    pub created_unix: u64,
    /// The test that failed, if a test made it.
    pub test: Option<String>,
    /// The failure, as the test reported it.
    pub failure: Option<String>,
    /// The environment it was taken from.
    pub env_id: String,
    /// The init file's path where it was made (`init.yaml` is its copy).
    pub init_file: PathBuf,
    /// The template each disk is an overlay on, by `<vm>/<disk>`.
    pub templates: BTreeMap<String, TemplateRef>,
    /// Bytes it takes on disk.
    pub bytes: u64,
    /// Seconds the save took (the VMs paused, saved, resumed).
    pub save_secs: f64,
}

/// A template a bundle's disk is layered on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    /// Its name (`tiny`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The sha256 of its image, when the store knows it.
    pub sha256: Option<String>,
}

/// What [`Env::bundle`] records beside the VMs, and its bound.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// The test that failed.
    pub test: Option<String>,
    /// How it failed.
    pub failure: Option<String>,
    /// The most bytes the bundle may take (estimated before, measured after).
    pub max_bytes: u64,
}

impl Default for BundleOptions {
    fn default() -> Self {
        BundleOptions {
            test: None,
            failure: None,
            max_bytes: max_bytes(),
        }
    }
}

/// The bound on a bundle's size: `LAGO_BUNDLE_MAX` (bytes, or with a
/// `K`/`M`/`G` suffix), else [`DEFAULT_BUNDLE_MAX`].
pub fn max_bytes() -> u64 {
    std::env::var("LAGO_BUNDLE_MAX")
        .ok()
        .and_then(|v| warm::parse_size(&v))
        .unwrap_or(DEFAULT_BUNDLE_MAX)
}

/// A bundle [`Env::bundle`] made.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// Its folder.
    pub dir: PathBuf,
    /// Bytes it takes on disk.
    pub bytes: u64,
    /// Seconds the save took.
    pub secs: f64,
    /// The VMs it holds.
    pub vms: Vec<String>,
}

/// A bundle as `lago replay --list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    /// Its folder.
    pub dir: PathBuf,
    /// Its description.
    pub bundle: BundleMeta,
    /// Each VM: memory bytes (compressed) and its disks' files.
    pub vms: BTreeMap<String, (u64, Vec<String>)>,
    /// The subnet of each net (the guests' addresses are on them).
    pub subnets: BTreeMap<String, String>,
}

/// The bundle in folder `dir`: its boot image and description, when this
/// user may use it.
pub fn open(dir: &Path) -> Result<(BootImage, BundleMeta)> {
    let bad = |what: String| Error::Replay {
        path: dir.to_path_buf(),
        what,
    };
    let img = BootImage::open(dir).map_err(bad)?;
    let path = dir.join(BUNDLE_META);
    // The folder is this user's and no one else may write it (checked above).
    let text = read_bounded(&path, 1 << 20).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let meta: BundleMeta = serde_json::from_slice(&text).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if meta.format != BUNDLE_FORMAT {
        return Err(bad(format!("format {} (this lago reads {BUNDLE_FORMAT})", meta.format)));
    }
    Ok((img, meta))
}

/// What bundle `dir` holds (`lago replay --list`).
pub fn info(dir: &Path) -> Result<BundleInfo> {
    let (img, bundle) = open(dir)?;
    Ok(BundleInfo {
        dir: dir.to_path_buf(),
        bundle,
        vms: img
            .meta
            .vms
            .iter()
            .map(|(n, v)| (n.clone(), (v.state_bytes, v.disks.values().cloned().collect())))
            .collect(),
        subnets: img
            .meta
            .subnets
            .iter()
            .map(|(n, s)| (n.clone(), s.to_string()))
            .collect(),
    })
}

impl Env {
    /// Saves every VM of the environment, as it is this instant, into a
    /// failure bundle at `dir` (a new folder), and lets them run on: each
    /// VM's memory and devices (compressed), its disks as overlays on their
    /// templates, its console; the init file, the keys. A bundle that
    /// would be over `opts.max_bytes`, or an environment that cannot be
    /// saved whole (remote, session mode, file disks, existing machines),
    /// is [`Error::BundleSkipped`], and nothing is written.
    pub fn bundle(&self, dir: impl AsRef<Path>, opts: &BundleOptions) -> Result<BundleReport> {
        let dir = dir.as_ref();
        let skip = |why: String| Error::BundleSkipped {
            path: dir.to_path_buf(),
            why,
        };
        let vms: Vec<&Vm> = self.vms.values().collect();
        if let Some(why) = self.unbundlable(&vms) {
            return Err(skip(why));
        }
        let estimate = self.bundle_estimate(&vms);
        if estimate > opts.max_bytes {
            return Err(skip(format!(
                "it would take about {}, over its bound of {} (LAGO_BUNDLE_MAX)",
                lago_config::approx_size(estimate),
                lago_config::approx_size(opts.max_bytes)
            )));
        }
        let t = Instant::now();
        let staging = staging_dir(dir)?;
        let made = self.bundle_into(&staging, &vms, opts, t).and_then(|report| {
            if report.bytes > opts.max_bytes {
                return Err(skip(format!(
                    "it took {}, over its bound of {} (LAGO_BUNDLE_MAX)",
                    lago_config::approx_size(report.bytes),
                    lago_config::approx_size(opts.max_bytes)
                )));
            }
            // Never over a folder that appeared meanwhile.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &staging,
                rustix::fs::CWD,
                dir,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| super::wd_err("move into place", dir)(e.into()))?;
            Ok(BundleReport {
                dir: dir.to_path_buf(),
                ..report
            })
        });
        if made.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        made
    }

    /// Why `vms` (every VM of the environment) cannot be bundled, if they cannot.
    fn unbundlable(&self, vms: &[&Vm]) -> Option<String> {
        let remote = self.saved.remote.unwrap_or(false);
        if let Some(why) = super::warm::saving_blocker(&self.saved.spec, remote, &self.saved.libvirt_uri) {
            return Some(why);
        }
        // What a replay would refuse to take from a bundle (a CD-ROM of yours, say).
        if let Some(why) = host_files_named(&self.saved.spec) {
            return Some(format!("{why}, which a bundle cannot hold"));
        }
        if let Some(vm) = vms.iter().find(|v| !matches!(v.state(), Ok(VmState::Running))) {
            return Some(format!("{} is not running", vm.name()));
        }
        vms.iter()
            .find(|v| v.plan.seed.is_some() && !self.saved.host_secret_keys.contains_key(v.name()))
            .map(|vm| {
                format!(
                    "{}'s SSH host key is not kept in its workdir (an environment made by an older lago)",
                    vm.name()
                )
            })
    }

    /// About how many bytes a bundle of `vms` takes: their memory and what
    /// their disks hold.
    fn bundle_estimate(&self, vms: &[&Vm]) -> u64 {
        vms.iter()
            .map(|vm| {
                let memory = vm.spec.memory_mib << 20;
                let disks: u64 = vm
                    .plan
                    .disks
                    .iter()
                    .filter(|d| d.format != DiskFormat::Iso)
                    .map(|d| image::sizes(&d.path).map(|(on_disk, _)| on_disk).unwrap_or(0))
                    .sum();
                memory + disks
            })
            .sum()
    }

    /// Saves `vms` into `staging`, resumes them, writes the descriptions.
    fn bundle_into(&self, staging: &Path, vms: &[&Vm], opts: &BundleOptions, t: Instant) -> Result<BundleReport> {
        let store = self.template_store();
        let templates = self.bundle_templates(&store)?;
        let saved = map_parallel(
            "save",
            vms,
            |vm| vm.name().to_owned(),
            |vm| save_vm(vm, staging, &templates),
        );
        // Every VM runs again, saved or not: resumed, or else booted (its
        // saved state stays in the bundle all the same).
        for vm in vms {
            if let Err(e) = super::warm::resume_saved(vm, staging) {
                tracing::warn!(vm = %vm.name(), error = %crate::util::text::error_chain(&e), "cannot resume the VM after saving it: it boots");
                if let Err(e) = vm.start() {
                    tracing::warn!(vm = %vm.name(), error = %crate::util::text::error_chain(&e), "cannot boot it either");
                }
            }
        }
        let disks = saved?;
        let save_secs = t.elapsed().as_secs_f64();
        let states = map_parallel(
            "compress the memory of",
            vms,
            |vm| vm.name().to_owned(),
            |vm| Ok(warm::compress_state(&staging.join(super::warm::state_file(vm.name())))?),
        )?;
        let family = super::warm::family(&self.saved.spec);
        let image = super::warm::boot_image_meta(
            self,
            (self.id().as_str(), &family),
            vms,
            disks,
            states,
            &BTreeMap::new(),
        )?;
        self.write_bundle_files(staging, image, templates, opts, save_secs)?;
        Ok(BundleReport {
            dir: staging.to_path_buf(),
            bytes: crate::host::store::manage::du(staging),
            secs: t.elapsed().as_secs_f64(),
            vms: vms.iter().map(|v| v.name().to_owned()).collect(),
        })
    }

    /// The template of each disk made from one, by `<vm>/<disk>`, with its image.
    fn bundle_templates(
        &self,
        store: &crate::host::store::TemplateStore,
    ) -> Result<BTreeMap<String, (TemplateRef, PathBuf)>> {
        let mut out = BTreeMap::new();
        for (at, t) in &self.saved.templates {
            let (name, version) = t.split_once(':').unwrap_or((t.as_str(), ""));
            let found = store.resolve(name, (!version.is_empty()).then_some(version))?;
            let r = TemplateRef {
                name: found.name.clone(),
                version: found.version.clone(),
                sha256: found.sha256.clone(),
            };
            out.insert(at.clone(), (r, found.disk.clone()));
        }
        Ok(out)
    }

    /// Writes the boot image's description, the bundle's and the init file's copy.
    fn write_bundle_files(
        &self,
        staging: &Path,
        image: BootImageMeta,
        templates: BTreeMap<String, (TemplateRef, PathBuf)>,
        opts: &BundleOptions,
        save_secs: f64,
    ) -> Result<()> {
        let init = read_bounded(&self.saved.spec.source, MAX_INIT_FILE)
            .map_err(super::wd_err("read", &self.saved.spec.source))?;
        super::export::write_file(&staging.join(INIT_COPY), &init, 0o600)?;
        let bundle = BundleMeta {
            format: BUNDLE_FORMAT,
            lago_version: env!("CARGO_PKG_VERSION").to_owned(),
            created_unix: image.created_unix,
            test: opts.test.clone(),
            failure: opts.failure.clone(),
            env_id: self.id().to_string(),
            init_file: self.saved.spec.source.clone(),
            templates: templates.into_iter().map(|(k, (r, _))| (k, r)).collect(),
            bytes: crate::host::store::manage::du(staging),
            save_secs,
        };
        write_json(&staging.join(BUNDLE_META), &bundle)?;
        // Last: a folder with it is a whole bundle.
        write_json(&staging.join(warm::META), &image)
    }
}

/// Writes `value` as JSON into a new file for this user only.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| Error::State {
        path: path.to_path_buf(),
        source,
    })?;
    super::export::write_file(path, &text, 0o600)
}

/// A new hidden folder beside `dir` (which must not exist yet) to make the bundle in.
fn staging_dir(dir: &Path) -> Result<PathBuf> {
    if fs::symlink_metadata(dir).is_ok() {
        return Err(Error::BundleSkipped {
            path: dir.to_path_buf(),
            why: "it exists already".into(),
        });
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(super::wd_err("create", parent))?;
    let tag = crate::util::random::random_hex(4).map_err(super::wd_err("name a folder in", parent))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.new-{tag}"));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(super::wd_err("create", &staging))?;
    Ok(staging)
}

/// At most `max` bytes of regular file `path`.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    if !fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(fs::File::open(path)?, max), &mut text)?;
    Ok(text)
}

/// Saves VM `vm`'s memory into `dir` (the domain stops), then writes its
/// disks there, each made from a template as an overlay on that template
/// holding everything the guest changed (also below a boot image's layer);
/// returns its disks' files by disk name.
fn save_vm(
    vm: &Vm,
    dir: &Path,
    templates: &BTreeMap<String, (TemplateRef, PathBuf)>,
) -> Result<BTreeMap<String, String>> {
    vm.backend
        .save_domain(&vm.plan.libvirt_name, &dir.join(super::warm::state_file(vm.name())))?;
    let mut disks = BTreeMap::new();
    for d in vm.plan.disks.iter().filter(|d| d.format != DiskFormat::Iso) {
        let file = format!("{}-{}.{}", vm.name(), d.name, d.format.as_str());
        let to = dir.join(&file);
        match (d.format, templates.get(&format!("{}/{}", vm.name(), d.name))) {
            (DiskFormat::Qcow2, Some((_, template))) => {
                image::convert(&d.path, DiskFormat::Qcow2, &to, Some(template))?
            }
            (DiskFormat::Qcow2, None) => image::convert(&d.path, DiskFormat::Qcow2, &to, None)?,
            _ => image::copy_sparse(&d.path, &to)?,
        }
        // The guest's secrets: for this user only, also once archived.
        fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(super::wd_err("restrict", &to))?;
        disks.insert(d.name.clone(), file);
    }
    super::warm::save_console(vm, dir)?;
    Ok(disks)
}

/// Readies bundle `dir` for a replay, trusting none of it (it may come
/// from elsewhere): its init file may name no file of this host (file
/// disks, kernels, keys, scripts); each qcow2 disk may have no external
/// data file, and a backing file only where the bundle names the template
/// it is layered on, by digest, which must be in the store (or pulled by
/// digest from `opts.template_repos`); those disks are then pointed at this
/// store's copy. Returns its boot image.
pub fn prepare_replay(dir: &Path, opts: &InitOptions) -> Result<BootImage> {
    let (img, meta) = open(dir)?;
    let bad = |what: String| Error::Replay {
        path: dir.to_path_buf(),
        what,
    };
    let spec = lago_config::load(dir.join(INIT_COPY))?;
    if let Some(why) = host_files_named(&spec) {
        return Err(bad(why));
    }
    let store = super::init::template_store(opts);
    for (vm, saved) in &img.meta.vms {
        for (disk, file) in &saved.disks {
            let at = format!("{vm}/{disk}");
            let path = img.file(file);
            let refs = image::qcow2_refs(&path)?;
            if refs.as_ref().is_some_and(|r| r.data_file) {
                return Err(bad(format!("{at}: {file} keeps its data in another file")));
            }
            let backing = refs.and_then(|r| r.backing);
            match meta.templates.get(&at) {
                Some(t) => {
                    let template = bundle_template(&store, &at, t).map_err(bad)?;
                    image::rebase_unsafe(&path, &template)?;
                }
                None if backing.is_some() => {
                    return Err(bad(format!(
                        "{at}: {file} is layered on {} but the bundle names no template for it",
                        backing.unwrap_or_default()
                    )));
                }
                None => {}
            }
        }
    }
    Ok(img)
}

/// The image of template `t` that `at` is layered on: in `store` with its
/// digest (or pulled from the store's repositories by it).
fn bundle_template(
    store: &crate::host::store::TemplateStore,
    at: &str,
    t: &TemplateRef,
) -> std::result::Result<PathBuf, String> {
    let sha = t.sha256.as_deref().ok_or_else(|| {
        format!(
            "{at} is layered on template {}:{}, whose digest the bundle does not say",
            t.name, t.version
        )
    })?;
    let found = store.resolve_pinned(&t.name, Some(&t.version), Some(sha)).map_err(|e| {
        format!(
            "{at} is layered on template {}:{} (sha256 {sha}), which is not here: {} (give a repository that has it with --template-repo)",
            t.name,
            t.version,
            crate::util::text::error_chain(&e)
        )
    })?;
    Ok(found.disk)
}

/// What a replayed init file names of this host, which it may not: a
/// replay makes only what its bundle and the store hold.
fn host_files_named(spec: &lago_config::EnvSpec) -> Option<String> {
    use lago_config::DiskSource;
    for vm in &spec.vms {
        for d in &vm.disks {
            if let DiskSource::File { path, .. } | DiskSource::TemplateFile { path } = &d.source {
                return Some(format!(
                    "its init file gives {} disk {} from {}",
                    vm.name,
                    d.name,
                    path.display()
                ));
            }
        }
        if let Some(k) = &vm.kernel_boot {
            return Some(format!("its init file boots {} from {}", vm.name, k.kernel.display()));
        }
        if let Some(k) = &vm.ssh_key {
            return Some(format!("its init file gives {} the key {}", vm.name, k.display()));
        }
        if let Some(s) = vm.deploy_scripts.first() {
            return Some(format!("its init file deploys {} to {}", s.display(), vm.name));
        }
    }
    None
}

impl Env {
    /// Replays failure bundle `dir` ([`prepare_replay`]) into a new
    /// environment (its workdir `opts.workdir`) and starts it: every VM
    /// restored at the bundle's instant, running, its clock set. A replay
    /// that fails halfway removes the environment it made.
    pub fn replay(dir: impl AsRef<Path>, opts: InitOptions) -> Result<Env> {
        let dir = dir.as_ref();
        let img = prepare_replay(dir, &opts)?;
        let env = Env::init_from(&dir.join(INIT_COPY), opts, Some(img))?;
        if let Err(e) = env.start(&[]) {
            if let Err(d) = env.destroy() {
                tracing::warn!(error = %crate::util::text::error_chain(&d), "cannot remove the environment of a failed replay");
            }
            return Err(e);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> lago_config::EnvSpec {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("init.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::write(dir.path().join("cd.iso"), b"").expect("write");
        lago_config::load(&path).expect("valid init file")
    }

    #[test]
    fn a_replayed_init_file_may_name_no_file_of_this_host() {
        let plain = spec(
            "domains:\n  vm01:\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\n    nics: [{net: n}]\nnets:\n  n: {type: nat}\n",
        );
        assert_eq!(host_files_named(&plain), None);
        let iso = spec(
            "domains:\n  vm01:\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}, {type: file, path: cd.iso, name: cd, dev: sdb, format: iso}]\n    nics: [{net: n}]\nnets:\n  n: {type: nat}\n",
        );
        let why = host_files_named(&iso).expect("a file disk");
        assert!(why.contains("vm01 disk cd from") && why.contains("cd.iso"), "{why}");
    }

    #[test]
    fn the_bound_reads_sizes_with_suffixes() {
        assert_eq!(warm::parse_size("1G"), Some(1 << 30));
        assert_eq!(warm::parse_size("512M"), Some(512 << 20));
        assert_eq!(warm::parse_size("lots"), None);
    }
}
