//! Warm start: an environment's first start boots its VMs and saves them as
//! a boot image (memory, devices and disks, right after they came up); a
//! later environment of the same init file, with the same subnets and
//! templates, restores every VM from it instead of booting.
//!
//! At init ([`prepare`]) the key is computed and the boot image looked up;
//! when it is there its SSH keys are adopted (the guests hold them) and the
//! disks are layered on its disks. The first start then restores
//! ([`restore`]), or boots and saves ([`save`]). A boot image that fails its
//! digest or does not restore is discarded, and the VMs boot.

mod key;
mod restore;
mod save;
mod start;

use std::collections::BTreeMap;
use std::path::Path;

use super::InitOptions;
use super::error::Result;
use crate::host::keys::KeyPair;
use crate::host::state::WarmState;
use crate::host::store::TemplateStore;
use crate::host::store::warm::{BootImage, BootImages};
use crate::plan::{EnvId, Subnet};
use lago_config::{self as config, DiskFormat, DiskSource, EnvSpec};

pub(crate) use key::{KeyParts, family, key};
use restore::restore;
pub(crate) use restore::resume_saved;
use save::save;
pub(crate) use save::{meta as boot_image_meta, save_console, state_file};
pub(crate) use start::{BOOTED, first_start};

/// Whether warm start is off for this environment, and why (`None`: on).
pub(crate) fn blocker(opts: &InitOptions, spec: &EnvSpec, remote: bool, uri: &str) -> Option<String> {
    if opts.warm == Some(false) {
        return Some("the caller asked for a cold boot".into());
    }
    if std::env::var("LAGO_WARM").is_ok_and(|v| v.trim() == "0") {
        return Some("LAGO_WARM=0".into());
    }
    saving_blocker(spec, remote, uri)
}

/// Whether an environment of `spec` on `uri` cannot be saved and restored
/// whole (a boot image, a failure bundle), and why (`None`: it can).
pub(crate) fn saving_blocker(spec: &EnvSpec, remote: bool, uri: &str) -> Option<String> {
    if crate::backend::uri::is_session(uri) {
        return Some("session mode (no root) does not save environments yet".into());
    }
    if remote {
        return Some("the hypervisor is remote".into());
    }
    if !crate::util::lock::running_as_root() && uri.starts_with("qemu:///system") {
        return Some("libvirtd (root) would write the boot images into a store of another user".into());
    }
    let bridged: Vec<&str> = spec
        .nets
        .iter()
        .filter(|n| matches!(n.kind, config::NetKind::Bridge { .. }))
        .map(|n| n.name.as_str())
        .collect();
    for vm in &spec.vms {
        if vm.provider == config::Provider::Ssh {
            return Some(format!("{} is an existing machine", vm.name));
        }
        if let Some(n) = vm.nics.iter().find(|n| bridged.contains(&n.net.as_str())) {
            return Some(format!(
                "{} has a NIC on bridge net {}, whose MAC is the environment's own",
                vm.name, n.net
            ));
        }
        for d in &vm.disks {
            if matches!(d.source, DiskSource::File { .. }) && d.format != DiskFormat::Iso {
                return Some(format!(
                    "disk {} of {} is a file of yours, which a boot image cannot hold",
                    d.name, vm.name
                ));
            }
        }
    }
    None
}

/// The subnets of the boot images made from this init file, most recently
/// used first (what the lease store is asked for first).
pub(crate) fn preferred_subnets(store: &TemplateStore, spec: &EnvSpec) -> Vec<BTreeMap<String, Subnet>> {
    BootImages::new(store).subnets_of(&family(spec))
}

/// The boot image an environment restores from, or the key of the one it makes.
pub(crate) struct Prepared {
    pub state: WarmState,
    pub image: Option<BootImage>,
}

/// Computes the key and looks up the boot image; a found one is recorded
/// as used by the environment (its disks are about to be layered on it).
pub(crate) fn prepare(parts: &KeyParts<'_>, store: &TemplateStore, workdir: &Path, env_id: &EnvId) -> Prepared {
    let key = key(parts);
    let images = BootImages::new(store);
    let mut image = images.find(&key);
    if let Some(img) = &image
        && let Err(why) = usable(img, parts.spec, parts.plan)
    {
        tracing::warn!(boot_image = %img.dir.display(), why, "the boot image cannot be used; booting cold");
        image = None;
    }
    if let Some(img) = &image
        && let Err(e) = images.record_use(&key, env_id, workdir)
    {
        tracing::warn!(boot_image = %img.dir.display(), error = %crate::util::text::error_chain(&e), "cannot record the use of the boot image; booting cold");
        image = None;
    }
    match &image {
        Some(img) => tracing::info!(key, boot_image = %img.dir.display(), "warm start: restoring from a boot image"),
        None => tracing::info!(
            key,
            "warm start: no boot image yet; the first start boots and saves one"
        ),
    }
    Prepared {
        state: WarmState {
            key,
            family: family(parts.spec),
            restore: image.is_some(),
            dir: None,
        },
        image,
    }
}

/// The warm state of an environment replaying failure bundle `img`: the
/// plan must be on the bundle's subnets (the guests' memory holds their
/// addresses), and the bundle hold every VM and disk the plan makes.
pub(crate) fn replaying(img: BootImage, spec: &EnvSpec, plan: &crate::plan::EnvPlan) -> Result<Prepared> {
    let bad = |what: String| super::error::Error::Replay {
        path: img.dir.clone(),
        what,
    };
    for n in &plan.nets {
        let want = img.meta.subnets.get(&n.name);
        if n.subnet.as_ref() != want {
            return Err(bad(format!(
                "net {} must be on {} (its guests' addresses are there), which another environment here holds: destroy it, or replay in another network namespace",
                n.name,
                want.map(|s| s.to_string()).unwrap_or_else(|| "no subnet".into())
            )));
        }
    }
    usable(&img, spec, plan).map_err(bad)?;
    tracing::info!(bundle = %img.dir.display(), "replaying a failure bundle: the first start restores it");
    Ok(Prepared {
        state: WarmState {
            key: img.meta.key.clone(),
            family: img.meta.family.clone(),
            restore: true,
            dir: Some(img.dir.clone()),
        },
        image: Some(img),
    })
}

/// Whether boot image `img` holds everything the environment needs: each
/// VM lago runs, with its save image and each disk it makes, as regular
/// files, and keys that parse.
pub(crate) fn usable(img: &BootImage, spec: &EnvSpec, plan: &crate::plan::EnvPlan) -> std::result::Result<(), String> {
    let regular = |name: &str| match std::fs::symlink_metadata(img.file(name)) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(format!("{name} is not a regular file of it")),
    };
    for (vs, vp) in spec.vms.iter().zip(&plan.vms) {
        if vs.provider == config::Provider::Ssh {
            continue;
        }
        let saved = img
            .meta
            .vms
            .get(&vs.name)
            .ok_or_else(|| format!("it has no VM {}", vs.name))?;
        regular(&saved.state)?;
        for d in vp.disks.iter().filter(|d| d.format != DiskFormat::Iso) {
            let file = saved
                .disks
                .get(&d.name)
                .ok_or_else(|| format!("it has no disk {} of {}", d.name, vs.name))?;
            regular(file)?;
        }
        host_key(img, &vs.name).map_err(|e| e.to_string())?;
    }
    client_key(img).map(|_| ()).map_err(|e| e.to_string())
}

/// The boot image's SSH client key (its guests authorize it).
pub(crate) fn client_key(img: &BootImage) -> Result<KeyPair> {
    let public_blob = crate::host::keys::public_blob(&img.meta.client_key_public).ok_or_else(|| unreadable(img))?;
    Ok(KeyPair {
        private_openssh: img.meta.client_key.clone(),
        public_openssh: img.meta.client_key_public.clone(),
        public_blob,
        private_dropbear: Vec::new(),
    })
}

/// VM `vm`'s SSH host key in the boot image, when it has one.
pub(crate) fn host_key(img: &BootImage, vm: &str) -> Result<Option<KeyPair>> {
    let Some(k) = img.meta.vms.get(vm).and_then(|v| v.host_key.as_ref()) else {
        return Ok(None);
    };
    let public_blob = crate::host::keys::public_blob(&k.public_openssh).ok_or_else(|| unreadable(img))?;
    let private_dropbear = unhex(&k.private_dropbear_hex).ok_or_else(|| unreadable(img))?;
    Ok(Some(KeyPair {
        private_openssh: k.private_openssh.clone(),
        public_openssh: k.public_openssh.clone(),
        public_blob,
        private_dropbear,
    }))
}

fn unreadable(img: &BootImage) -> super::error::Error {
    crate::host::store::StoreError::Io {
        action: "read the keys of",
        path: img.file(crate::host::store::warm::META),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "a key that does not parse"),
    }
    .into()
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Makes disk `dp` of VM `vm` from the boot image: an overlay on its saved
/// qcow2 disk, or a copy of a raw one. Returns `false` when the boot image
/// has no such disk (it is made as in a cold boot then).
pub(crate) fn layer_disk(img: &BootImage, vm: &str, dp: &crate::plan::DiskPlan) -> Result<bool> {
    let Some(file) = img.meta.vms.get(vm).and_then(|v| v.disks.get(&dp.name)) else {
        return Ok(false);
    };
    let saved = img.file(file);
    match dp.format {
        DiskFormat::Qcow2 => crate::host::image::create_overlay(&dp.path, &saved)?,
        DiskFormat::Raw => crate::host::image::copy_sparse(&saved, &dp.path)?,
        DiskFormat::Iso => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> EnvSpec {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("init.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::write(dir.path().join("disk.raw"), b"").expect("write");
        lago_config::load(&path).expect("valid init file")
    }

    #[test]
    fn warm_start_is_off_where_a_boot_image_could_not_be_right() {
        let plain = spec(
            "domains:\n  vm01:\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\n    nics: [{net: n}]\nnets:\n  n: {type: nat}\n",
        );
        let uri = "test:///default";
        let on = InitOptions::default();
        let off = InitOptions {
            warm: Some(false),
            ..Default::default()
        };
        assert!(blocker(&off, &plain, false, uri).is_some_and(|w| w.contains("cold")));
        assert!(blocker(&on, &plain, true, uri).is_some_and(|w| w.contains("remote")));
        let file = spec(
            "domains:\n  vm01:\n    disks: [{type: file, path: disk.raw, name: root, dev: vda, format: raw}]\n    nics: [{net: n}]\nnets:\n  n: {type: nat}\n",
        );
        assert!(
            blocker(&on, &file, false, uri).is_some_and(|w| w.contains("a file of yours")),
            "{:?}",
            blocker(&on, &file, false, uri)
        );
        let bridged = spec(
            "domains:\n  vm01:\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\n    nics: [{net: n}, {net: b}]\nnets:\n  n: {type: nat}\n  b: {type: bridge, bridge: br0}\n",
        );
        assert!(blocker(&on, &bridged, false, uri).is_some_and(|w| w.contains("bridge net b")));
        if std::env::var_os("LAGO_WARM").is_none() {
            assert_eq!(blocker(&on, &plain, false, uri), None);
        }
        assert!(blocker(&on, &plain, false, "qemu:///session").is_some_and(|w| w.contains("session mode")));
    }

    #[test]
    fn hex_goes_both_ways_and_refuses_junk() {
        assert_eq!(unhex(&to_hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
