//! `lago export` ([`Env::export`]): VMs' disks written into a folder with an
//! init file that boots them, so an environment's state can be shipped and
//! started elsewhere (Lago's `export`).
//!
//! ```text
//! DIR/LagoInitFile            the exported VMs and the nets they use; disks point
//!                             at the files beside it ($LAGO_INITFILE_PATH)
//! DIR/<vm>-<disk>.qcow2       each disk: standalone (flattened) by default;
//!                             with `layered`, an overlay on ...
//! DIR/<template>.qcow2        ... one copy of its template, shared by the VMs
//! DIR/<kernel>, DIR/<initrd>  what a directly booted VM (the `tiny` template) boots
//! ```
//!
//! The init file's disks are `template_type: qcow2` templates: a VM made
//! from it writes to its own overlay, and the exported files are never
//! changed. VMs must be down (a disk is never copied while its VM writes to
//! it): running ones are refused, or shut down through ACPI first when asked.
//! A failure removes everything the export wrote.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::backend::VmState;
use crate::env::Env;
use crate::env::error::{Error, Result};
use crate::env::vm::Vm;
use crate::host::image;
use crate::host::workdir::plain_name as safe;
use lago_config::{self as config, DiskFormat, DiskSource, NetKind};

/// Options for [`Env::export`].
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Template disks as overlays on one shared copy of their template
    /// (smaller when VMs share a template) instead of standalone images.
    pub layered: bool,
    /// Shut running VMs down (ACPI) first instead of refusing.
    pub shutdown: bool,
    /// How long each VM gets to shut down.
    pub shutdown_timeout: Duration,
    /// The init file's name in the folder.
    pub init_file_name: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            layered: false,
            shutdown: false,
            shutdown_timeout: Duration::from_secs(60),
            init_file_name: "LagoInitFile".to_owned(),
        }
    }
}

/// What [`Env::export`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The output folder given (absolute).
    pub dir: PathBuf,
    /// The init file that boots the export.
    pub init_file: PathBuf,
    /// The VMs exported.
    pub vms: Vec<String>,
    /// Every file written, with its size on disk.
    pub files: Vec<ExportedFile>,
    /// Whether template disks are overlays (`layered`).
    pub layered: bool,
}

/// One file an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// Its path in the output folder (absolute).
    pub path: PathBuf,
    /// Its size on disk (sparse files count what they hold).
    pub bytes: u64,
}

/// The files of an export being written: into a staging folder made
/// exclusively inside DIR, then moved into DIR (never replacing anything)
/// once everything is written. Dropped unfinished, it removes what it wrote
/// (and DIR, when it made it).
struct Staging {
    dir: PathBuf,
    made_dir: bool,
    stage: PathBuf,
    names: Vec<String>,
    moved: Vec<PathBuf>,
    done: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for f in &self.moved {
            let _ = fs::remove_file(f);
        }
        let _ = fs::remove_dir_all(&self.stage);
        if self.made_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

impl Staging {
    fn new(dir: &Path, made_dir: bool) -> Result<Staging> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let stage = dir.join(format!(".lago-export-{}-{nanos}", std::process::id()));
        let mut staging = Staging {
            dir: dir.to_path_buf(),
            made_dir,
            stage: stage.clone(),
            names: Vec::new(),
            moved: Vec::new(),
            done: false,
        };
        // Exclusive: a folder of that name already there is an error, never shared.
        if let Err(source) = fs::DirBuilder::new().mode(0o700).create(&stage) {
            staging.stage = PathBuf::new();
            return Err(Error::Output {
                action: "create",
                path: stage,
                source,
            });
        }
        Ok(staging)
    }

    /// A path in the staging folder for `name` (made unique among the export's files).
    fn reserve(&mut self, name: &str) -> PathBuf {
        let mut unique = name.to_owned();
        let mut n = 2;
        while self.names.contains(&unique) {
            unique = format!("{n}-{name}");
            n += 1;
        }
        self.names.push(unique.clone());
        self.stage.join(unique)
    }

    /// Moves every file into DIR, none replacing anything there.
    fn commit(mut self) -> Result<Vec<PathBuf>> {
        for name in self.names.clone() {
            let (from, to) = (self.stage.join(&name), self.dir.join(&name));
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &from,
                rustix::fs::CWD,
                &to,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| Error::Output {
                action: "move the export into place at",
                path: to.clone(),
                source: e.into(),
            })?;
            self.moved.push(to);
        }
        let _ = fs::remove_dir(&self.stage);
        self.done = true;
        Ok(self.moved.clone())
    }
}

/// Disks hold what the guests wrote (keys, data): mode 0600, whatever the
/// umask or the source's mode (a template is 0444 in the store).
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| Error::Output {
        action: "chmod",
        path: path.to_path_buf(),
        source,
    })
}

/// `$LAGO_INITFILE_PATH/<file name>`: the path an init file in the same folder uses.
fn beside(path: &Path) -> String {
    format!(
        "$LAGO_INITFILE_PATH/{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )
}

/// The kernel, initrd and command line (lago's own parameters removed) a
/// domain boots directly, from its XML.
fn direct_boot(domain_xml: &str) -> Option<(PathBuf, Option<PathBuf>, String)> {
    let doc = roxmltree::Document::parse(domain_xml).ok()?;
    let text = |tag: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(tag) && n.parent().is_some_and(|p| p.has_tag_name("os")))
            .and_then(|n| n.text())
            .map(str::to_owned)
    };
    let kernel = PathBuf::from(text("kernel")?);
    let initrd = text("initrd").map(PathBuf::from);
    let cmdline = text("cmdline").unwrap_or_default();
    let args = cmdline
        .split_whitespace()
        .filter(|w| {
            !["lago.root=", "lago.seed=", "lago.mgmt="]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some((kernel, initrd, args))
}

fn size_on_disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

fn net_entry(n: &config::NetSpec) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(n.kind_str()));
    if let NetKind::Bridge { bridge } = &n.kind {
        m.insert("bridge".into(), json!(bridge));
    }
    if let Some(d) = n.dhcp {
        m.insert("dhcp".into(), json!({ "start": d.start, "end": d.end }));
    }
    m.insert("management".into(), json!(n.management));
    if let Some(d) = &n.dns_domain {
        m.insert("dns_domain_name".into(), json!(d));
    }
    if let Some(gw) = n.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    if n.mtu != config::DEFAULT_MTU {
        m.insert("mtu".into(), json!(n.mtu));
    }
    Value::Object(m)
}

/// The VM's settings as init-file keys, disks and kernel left to the caller.
fn vm_entry(vm: &Vm) -> Map<String, Value> {
    let s = vm.spec();
    let mut m = Map::new();
    m.insert("memory".into(), json!(s.memory_mib));
    m.insert("vcpu".into(), json!(s.vcpu));
    if let Some(c) = &s.cpu_model {
        m.insert("cpu_model".into(), json!(c));
    }
    let nics: Vec<Value> = s
        .nics
        .iter()
        .map(|n| match n.ip {
            Some(ip) => json!({ "net": n.net, "ip": ip.to_string() }),
            None => json!({ "net": n.net }),
        })
        .collect();
    m.insert("nics".into(), Value::Array(nics));
    let mut meta = s.metadata.clone();
    // Scripts are paths on this machine; `distro` is written as its own key.
    for k in ["deploy-scripts", "ovirt-scripts", "distro"] {
        meta.remove(k);
    }
    if !meta.is_empty() {
        m.insert("metadata".into(), Value::Object(meta));
    }
    if !s.groups.is_empty() {
        m.insert("groups".into(), json!(s.groups));
    }
    if !s.artifacts.is_empty() {
        m.insert("artifacts".into(), json!(s.artifacts));
    }
    m.insert("bootstrap".into(), json!(s.bootstrap));
    m.insert("ssh-user".into(), json!(s.ssh_user));
    m.insert("boot_time_sec".into(), json!(s.boot_time_sec));
    if let Some(d) = &s.distro {
        m.insert("distro".into(), json!(d));
    }
    if let Some(p) = &s.root_password {
        m.insert("root-password".into(), json!(p));
    }
    if let Some(p) = &s.ssh_password {
        m.insert("ssh-password".into(), json!(p));
    }
    m
}

impl Env {
    /// Writes the chosen VMs' (`&[]`: all but those marked `skip-export`;
    /// machines lago did not create are never exported) disks into `dir`,
    /// with an init file that boots them and whatever else they need to boot.
    /// `dir` must not exist or be empty. See the [module docs](crate::env::export).
    pub fn export(&self, dir: impl AsRef<Path>, names: &[&str], opts: &ExportOptions) -> Result<ExportReport> {
        let vms = self.exportable(names)?;
        let init_name = opts.init_file_name.as_str();
        check_init_name(init_name)?;
        let dir = std::path::absolute(dir.as_ref()).map_err(|source| Error::Output {
            action: "resolve",
            path: dir.as_ref().to_path_buf(),
            source,
        })?;
        // The folder is checked before any VM is touched.
        let made_dir = !dir.exists();
        crate::env::collect::claim_output_dir(&dir)?;
        let stage = Staging::new(&dir, made_dir)?;
        let up = running(&vms);
        if !up.is_empty() {
            if !opts.shutdown {
                return Err(Error::ExportRunning { vms: up });
            }
            tracing::info!(vms = ?up, "export: shutting down");
            let up: Vec<&str> = up.iter().map(String::as_str).collect();
            self.shutdown(&up, opts.shutdown_timeout)?;
        }
        let mut ex = Exporter {
            env: self,
            stage,
            shared: BTreeMap::new(),
            layered: opts.layered,
        };
        let mut domains = Map::new();
        for vm in &vms {
            domains.insert(vm.name().to_owned(), Value::Object(ex.vm(vm)?));
        }
        // A VM started while its disks were copied: the copy may be torn.
        let up = running(&vms);
        if !up.is_empty() {
            return Err(Error::ExportRunning { vms: up });
        }
        let init_file = ex.stage.reserve(init_name);
        self.write_init_file(&init_file, &vms, domains, init_name)?;
        let files = ex
            .stage
            .commit()?
            .into_iter()
            .map(|f| ExportedFile {
                bytes: size_on_disk(&f),
                path: f,
            })
            .collect();
        tracing::info!(dir = %dir.display(), vms = vms.len(), "exported");
        Ok(ExportReport {
            dir: dir.clone(),
            init_file: dir.join(init_name),
            vms: vms.iter().map(|v| v.name().to_owned()).collect(),
            files,
            layered: opts.layered,
        })
    }

    /// The VMs an export of `names` takes: lago's own, and with `&[]` those
    /// not marked `skip-export`; on this machine's disks.
    fn exportable(&self, names: &[&str]) -> Result<Vec<&Vm>> {
        let vms: Vec<&Vm> = self
            .select(names)?
            .into_iter()
            .filter(|v| !v.is_existing_machine())
            .filter(|v| !names.is_empty() || !v.spec().skip_export)
            .collect();
        if vms.is_empty() {
            return Err(Error::Usage {
                message: "nothing to export: no VM lago created is chosen (VMs marked `skip-export` are exported only when named)".into(),
            });
        }
        if vms.iter().any(|v| v.remote_storage()) {
            return Err(Error::Usage {
                message: "export reads disk files on this machine; the disks of an environment on a remote hypervisor are volumes there (not supported yet)".into(),
            });
        }
        Ok(vms)
    }

    /// Writes the init file that boots the exported `domains` (and the nets
    /// they use) at `path` (mode 0600 when it holds passwords), and checks it loads.
    fn write_init_file(&self, path: &Path, vms: &[&Vm], domains: Map<String, Value>, init_name: &str) -> Result<()> {
        let nets_used: std::collections::BTreeSet<&str> = vms
            .iter()
            .flat_map(|vm| vm.spec().nics.iter().map(|n| n.net.as_str()))
            .collect();
        let secrets = vms
            .iter()
            .any(|vm| vm.spec().root_password.is_some() || vm.spec().ssh_password.is_some());
        let nets: Map<String, Value> = self
            .spec()
            .nets
            .iter()
            .filter(|n| nets_used.contains(n.name.as_str()))
            .map(|n| (n.name.clone(), net_entry(n)))
            .collect();
        let doc = json!({ "domains": domains, "nets": nets });
        let yaml = serde_yaml::to_string(&doc).map_err(|e| Error::Render { message: e.to_string() })?;
        let text = format!(
            "# Written by `lago export` from environment {} ({:?}).\n# Start it with: lago init {init_name:?} && lago start\n{yaml}",
            self.id(),
            self.spec().source.display().to_string(),
        );
        write_file(path, text.as_bytes(), if secrets { 0o600 } else { 0o644 })?;
        // What was written must load: a check of this module, not of the user's input.
        config::load(path)?;
        Ok(())
    }
}

/// The names of the VMs of `vms` that are not down.
fn running(vms: &[&Vm]) -> Vec<String> {
    vms.iter()
        .filter(|v| v.state().map(|s| s != VmState::Down).unwrap_or(true))
        .map(|v| v.name().to_owned())
        .collect()
}

/// An init file's name must be a plain file name.
fn check_init_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with(".lago-export-")
        && !name.contains(|c: char| c == '/' || c.is_control());
    if plain {
        return Ok(());
    }
    Err(Error::Usage {
        message: format!("init file name {name:?}: expected a plain file name"),
    })
}

/// One export in progress: its staging folder, and the files VMs share
/// (a template's copy, a kernel, an initrd, an ISO), each copied once.
struct Exporter<'a> {
    env: &'a Env,
    stage: Staging,
    shared: BTreeMap<PathBuf, PathBuf>,
    layered: bool,
}

impl Exporter<'_> {
    /// `src` copied once into the export as `name`: converted to qcow2
    /// when it is an image (a template, read-only in the store), else as it is.
    fn share(&mut self, src: &Path, name: &str, image: bool) -> Result<PathBuf> {
        if let Some(p) = self.shared.get(src) {
            return Ok(p.clone());
        }
        let dst = self.stage.reserve(name);
        if image {
            image::convert(src, DiskFormat::Qcow2, &dst, None)?;
        } else {
            fs::copy(src, &dst).map_err(|source| Error::Output {
                action: "write",
                path: dst.clone(),
                source,
            })?;
        }
        owner_only(&dst)?;
        self.shared.insert(src.to_path_buf(), dst.clone());
        Ok(dst)
    }

    /// VM `vm`'s init-file entry, its disks and kernel written into the export.
    fn vm(&mut self, vm: &Vm) -> Result<Map<String, Value>> {
        let mut entry = vm_entry(vm);
        let mut disks = Vec::new();
        for (ds, dp) in vm.spec().disks.iter().zip(&vm.plan().disks) {
            disks.push(Value::Object(self.disk(vm, ds, dp)?));
        }
        entry.insert("disks".into(), Value::Array(disks));
        if let Some((kernel, initrd, args)) = direct_boot(&vm.domain_xml) {
            let base = |p: &Path| p.file_name().map(|n| safe(&n.to_string_lossy())).unwrap_or_default();
            let k = self.share(&kernel, &base(&kernel), false)?;
            entry.insert("kernel".into(), json!(beside(&k)));
            if let Some(i) = initrd {
                let i = self.share(&i, &base(&i), false)?;
                entry.insert("initrd".into(), json!(beside(&i)));
            }
            if !args.is_empty() {
                entry.insert("kernel-args".into(), json!(args));
            }
        }
        Ok(entry)
    }

    /// Disk `ds` of `vm` written into the export (standalone, or with
    /// `--layered` only what the VM changed over one copy of its template),
    /// and its init-file entry.
    fn disk(&mut self, vm: &Vm, ds: &config::DiskSpec, dp: &crate::plan::DiskPlan) -> Result<Map<String, Value>> {
        let mut d = Map::new();
        d.insert("name".into(), json!(ds.name));
        d.insert("dev".into(), json!(ds.dev));
        // The disk the VM wrote to: its overlay or copy in the workdir, or a file used in place.
        let live = match &ds.source {
            DiskSource::File {
                path,
                make_a_copy: false,
            } => path.clone(),
            _ => dp.path.clone(),
        };
        if ds.is_cdrom() {
            // A CD-ROM is read-only: one copy, used in place.
            let iso = self.share(&live, &format!("{}.iso", safe(&ds.name)), false)?;
            d.insert("type".into(), json!("file"));
            d.insert("format".into(), json!("iso"));
            d.insert("path".into(), json!(beside(&iso)));
            return Ok(d);
        }
        let dst = self
            .stage
            .reserve(&format!("{}-{}.qcow2", safe(vm.name()), safe(&ds.name)));
        // Overlays are lago's own qcow2 files; every other disk is read as its declared format.
        let overlay = matches!(ds.source, DiskSource::Template { .. } | DiskSource::TemplateFile { .. });
        let format = if overlay { DiskFormat::Qcow2 } else { ds.format };
        let base = if self.layered && overlay {
            image::backing_file(&live)?
        } else {
            None
        };
        match base {
            Some(base) => {
                let base_name = match &ds.source {
                    DiskSource::Template { .. } => self
                        .env
                        .saved_template(vm.name(), &ds.name)
                        .map(|t| format!("{}.qcow2", safe(&t.replace(':', "-"))))
                        .unwrap_or_else(|| "template.qcow2".into()),
                    _ => base
                        .file_name()
                        .map(|n| safe(&n.to_string_lossy()))
                        .unwrap_or_else(|| "base.qcow2".into()),
                };
                let base_copy = self.share(&base, &base_name, true)?;
                // Only what the VM changed, on the copy of its template, named relative to the folder.
                let rel = base_copy.file_name().map(PathBuf::from).unwrap_or(base_copy.clone());
                image::convert(&live, DiskFormat::Qcow2, &dst, Some(&rel))?;
            }
            None => image::convert(&live, format, &dst, None)?,
        }
        owner_only(&dst)?;
        d.insert("type".into(), json!("template"));
        d.insert("template_type".into(), json!("qcow2"));
        d.insert("format".into(), json!("qcow2"));
        d.insert("path".into(), json!(beside(&dst)));
        Ok(d)
    }
}

/// Writes a new file (never an existing one) with `mode`.
pub(crate) fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| Error::Output {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_drops_lagos_own_parameters() {
        let xml = "<domain><os><type>hvm</type><kernel>/s/tiny/1/vmlinuz</kernel><initrd>/s/tiny/1/initrd</initrd>\
                   <cmdline>console=ttyS0 quiet lago.root=/dev/vda lago.seed=1 lago.mgmt=54:52:c0:a8:c8:02</cmdline></os></domain>";
        let (k, i, args) = direct_boot(xml).unwrap();
        assert_eq!(k, Path::new("/s/tiny/1/vmlinuz"));
        assert_eq!(i.as_deref(), Some(Path::new("/s/tiny/1/initrd")));
        assert_eq!(args, "console=ttyS0 quiet");
        assert!(direct_boot("<domain><os><boot dev='hd'/></os></domain>").is_none());
    }

    #[test]
    fn staged_files_move_in_without_replacing_anything_or_roll_back() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("out");
        fs::create_dir(&dir).unwrap();
        let mut stage = Staging::new(&dir, false).unwrap();
        let a = stage.reserve("a.qcow2");
        assert_eq!(stage.reserve("a.qcow2").file_name().unwrap(), "2-a.qcow2");
        fs::write(&a, "1").unwrap();
        fs::write(stage.stage.join("2-a.qcow2"), "2").unwrap();
        // Someone else's file appears under a final name: nothing of theirs is replaced or removed.
        fs::write(dir.join("2-a.qcow2"), "theirs").unwrap();
        assert!(stage.commit().is_err());
        assert_eq!(fs::read_to_string(dir.join("2-a.qcow2")).unwrap(), "theirs");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(
            left,
            ["2-a.qcow2"],
            "what the export moved in and its staging folder are gone"
        );
        // A clean run: the files in place, no staging folder.
        fs::remove_file(dir.join("2-a.qcow2")).unwrap();
        let mut stage = Staging::new(&dir, false).unwrap();
        fs::write(stage.reserve("x"), "x").unwrap();
        assert_eq!(stage.commit().unwrap(), [dir.join("x")]);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["x"]);
        assert_eq!(safe("vm 01/../x"), "vm_01_.._x");
    }
}
