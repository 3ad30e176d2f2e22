//! Saving a booted environment as a boot image.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::env::error::{Result, map_parallel};
use crate::env::{Env, vm::Vm};
use crate::host::store::warm::{self, BootImageMeta, BootImages, SavedVm};
use crate::host::workdir::{self, CLIENT_KEY};

/// Saves the VMs of `env`, just booted, as its boot image: each VM's memory
/// is saved (the domain stops), its disks copied, and it is restored from
/// the saved memory on its own disks, running on. The image goes into the
/// store only whole. `boot_secs`: how long each VM took to come up.
pub(crate) fn save(env: &Env, vms: &[&Vm], boot_secs: &BTreeMap<String, f64>) -> Result<()> {
    let Some(w) = &env.saved.warm else { return Ok(()) };
    let t = Instant::now();
    let store = env.template_store();
    let images = BootImages::new(&store);
    let pending = images.begin(&w.key)?;
    let saved = map_parallel("save", vms, |vm| vm.name().to_owned(), |vm| save_vm(vm, &pending));
    // Every VM runs again, saved or not.
    let back = map_parallel(
        "restore",
        vms,
        |vm| vm.name().to_owned(),
        |vm| super::restore::resume_saved(vm, &pending),
    );
    let made = saved.and_then(|disks| {
        back?;
        // Compressed once the VMs run again (their restore read the plain image).
        let states = map_parallel(
            "compress the memory of",
            vms,
            |vm| vm.name().to_owned(),
            |vm| Ok(warm::compress_state(&pending.join(state_file(vm.name())))?),
        )?;
        meta(env, (&w.key, &w.family), vms, disks, states, boot_secs)
    });
    let meta = match made {
        Ok(m) => m,
        Err(e) => {
            images.abandon(&pending);
            return Err(e);
        }
    };
    images
        .commit(&pending, &meta)
        .inspect_err(|_| images.abandon(&pending))?;
    images.record_use(&w.key, env.id(), env.workdir())?;
    let bytes = crate::host::store::manage::du(&images.root().join(&w.key));
    tracing::info!(key = %w.key, mib = bytes >> 20, secs = t.elapsed().as_secs_f64(), "boot image saved");
    for gone in images.prune_to(warm::max_bytes(), false)? {
        tracing::info!(key = %gone.key, mib = gone.bytes >> 20, "boot image removed (LAGO_WARM_MAX)");
    }
    Ok(())
}

/// Saves VM `vm`'s memory into `dir` (the domain stops), then copies its
/// disks there; returns its disks' files by disk name.
fn save_vm(vm: &Vm, dir: &Path) -> Result<BTreeMap<String, String>> {
    let t = Instant::now();
    vm.backend
        .save_domain(&vm.plan.libvirt_name, &dir.join(state_file(vm.name())))?;
    tracing::debug!(vm = %vm.name(), ms = t.elapsed().as_millis() as u64, "memory saved");
    let mut disks = BTreeMap::new();
    for d in vm
        .plan
        .disks
        .iter()
        .filter(|d| d.format != lago_config::DiskFormat::Iso)
    {
        let file = d
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}_{}", vm.name(), d.name));
        crate::host::image::copy_sparse(&d.path, &dir.join(&file))?;
        disks.insert(d.name.clone(), file);
    }
    // The console up to here: the boot a restored VM's console log starts with.
    save_console(vm, dir)?;
    Ok(disks)
}

/// The most of a VM's boot console a boot image keeps (its end).
const MAX_CONSOLE: usize = 1 << 20;

/// Writes the end of VM `vm`'s console log (its last [`MAX_CONSOLE`]
/// bytes: what a restore starts the console log with) into `dir`, for this
/// user only.
pub(crate) fn save_console(vm: &Vm, dir: &Path) -> Result<()> {
    let console = std::fs::read(vm.console_log()).unwrap_or_default();
    let keep = &console[console.len().saturating_sub(MAX_CONSOLE)..];
    crate::env::export::write_file(&dir.join(console_file(vm.name())), keep, 0o600)
}

/// The saved console's file name of VM `vm`.
fn console_file(vm: &str) -> String {
    format!("{vm}.console.log")
}

/// The save image's file name of VM `vm`.
pub(crate) fn state_file(vm: &str) -> String {
    format!("{vm}.state")
}

/// What the boot image (or a failure bundle's, `key` its env id) holds: the
/// environment's subnets and keys, and each VM of `vms` with its disks'
/// files and its compressed memory (`states`: file, sha256, bytes).
pub(crate) fn meta(
    env: &Env,
    (key, family): (&str, &str),
    vms: &[&Vm],
    disks: Vec<BTreeMap<String, String>>,
    states: Vec<(String, String, u64)>,
    boot_secs: &BTreeMap<String, f64>,
) -> Result<BootImageMeta> {
    let dir = workdir::Dir::open(env.workdir())?;
    let read = |name: &str| -> Result<String> {
        let bytes = dir
            .read(Path::new(name), 64 << 10)
            .map_err(crate::env::wd_err("read", &env.workdir().join(name)))?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    };
    let mut out = BTreeMap::new();
    for ((vm, disks), (state, sha, bytes)) in vms.iter().zip(disks).zip(states) {
        out.insert(
            vm.name().to_owned(),
            SavedVm {
                host_key: env.saved.host_secret_keys.get(vm.name()).cloned(),
                state,
                state_bytes: bytes,
                state_sha256: sha,
                disks,
                boot_secs: boot_secs.get(vm.name()).copied().unwrap_or_default(),
                console: Some(console_file(vm.name())),
            },
        );
    }
    Ok(BootImageMeta {
        format: warm::FORMAT,
        key: key.to_owned(),
        family: family.to_owned(),
        lago_version: env!("CARGO_PKG_VERSION").to_owned(),
        init_file: env.saved.spec.source.clone(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        subnets: env
            .saved
            .plan
            .nets
            .iter()
            .filter_map(|n| n.subnet.map(|s| (n.name.clone(), s)))
            .collect(),
        client_key: format!("{}\n", read(CLIENT_KEY)?),
        client_key_public: read("id_ed25519.pub")?,
        vms: out,
    })
}
