//! An environment's first start with warm start: restore from the boot
//! image, or boot and save one; a boot image that does not restore is
//! discarded and the VMs boot.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::env::error::Result;
use crate::env::{Env, vm::Vm};
use crate::host::store::warm::BootImages;

/// How a VM came up at its environment's last start.
pub(crate) const RESTORED: &str = "restored";
/// How a VM that booted came up.
pub(crate) const BOOTED: &str = "booted";

/// Starts `vms` (every VM of `env`, all down) for the first time: restores
/// them from the boot image when init found one, else boots them with
/// `boot` and saves the boot image. Returns how each came up.
/// With `cold`, they boot and nothing is saved (disks init layered on the
/// boot image are made again as for a boot).
pub(crate) fn first_start(
    env: &Env,
    vms: &[&Vm],
    cold: bool,
    boot: impl Fn() -> Result<()>,
) -> Result<BTreeMap<String, &'static str>> {
    let all = |how: &'static str| vms.iter().map(|v| (v.name().to_owned(), how)).collect();
    let Some(w) = &env.saved.warm else {
        boot()?;
        return Ok(all(BOOTED));
    };
    if cold {
        if w.restore {
            cold_disks(env, vms)?;
        }
        boot()?;
        return Ok(all(BOOTED));
    }
    if w.restore && w.dir.is_some() {
        // A failure bundle's VMs restore, or the start fails: booting them
        // would not be the instant the bundle kept.
        super::restore(env, vms)?;
        return Ok(all(RESTORED));
    }
    if w.restore {
        let t = Instant::now();
        match super::restore(env, vms) {
            Ok(_) => {
                tracing::info!(
                    secs = t.elapsed().as_secs_f64(),
                    "every VM restored from the boot image"
                );
                return Ok(all(RESTORED));
            }
            Err(e) => {
                tracing::warn!(key = %w.key, error = %crate::util::text::error_chain(&e), "the boot image did not restore: it is discarded, and the VMs boot");
                discard(env, vms)?;
            }
        }
    }
    let t = Instant::now();
    boot()?;
    let secs = t.elapsed().as_secs_f64();
    let boot_secs = vms.iter().map(|v| (v.name().to_owned(), secs)).collect();
    if let Err(e) = super::save(env, vms, &boot_secs) {
        tracing::warn!(error = %crate::util::text::error_chain(&e), "cannot save a boot image; the next start boots too");
        // A VM the failed save left down boots again.
        crate::env::error::for_each_parallel("start", vms, |vm| vm.name().to_owned(), |vm| vm.start())?;
    }
    Ok(all(BOOTED))
}

/// After a failed restore: the VMs stop, their disks are made again as in a
/// cold boot, and the boot image goes (unless another environment uses it).
fn discard(env: &Env, vms: &[&Vm]) -> Result<()> {
    for vm in vms {
        vm.stop()?;
    }
    cold_disks(env, vms)?;
    if let Some(w) = &env.saved.warm {
        let store = env.template_store();
        store.forget_env(env.id(), env.workdir());
        BootImages::new(&store).remove_unused(&w.key)?;
    }
    Ok(())
}

/// Makes the disks of `vms` again as for a boot: overlays on their
/// templates, empty disks.
fn cold_disks(env: &Env, vms: &[&Vm]) -> Result<()> {
    let store = env.template_store();
    for vm in vms {
        for dp in vm
            .plan
            .disks
            .iter()
            .filter(|d| d.format != lago_config::DiskFormat::Iso)
        {
            let template = match env.saved_template(vm.name(), &dp.name) {
                Some(t) => {
                    let (name, version) = t.split_once(':').unwrap_or((t.as_str(), ""));
                    Some(store.resolve(name, (!version.is_empty()).then_some(version))?)
                }
                None => None,
            };
            let dir = crate::host::workdir::Dir::open(env.workdir())?;
            dir.remove_file(&dp.path)?;
            crate::env::init::local_disk(dp, template.as_ref())?;
        }
    }
    Ok(())
}
