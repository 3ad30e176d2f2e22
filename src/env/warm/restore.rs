//! Restoring an environment's VMs from its boot image, and making a
//! restored guest's identity its own again (clock, RNG).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::VmState;
use crate::env::error::{Error, Result, map_parallel};
use crate::env::{Env, vm::Vm};
use crate::guest::console::console_len;
use crate::host::store::warm::{BootImage, BootImages};

/// How long a restored guest has to answer SSH (it was answering when saved).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Restores every VM of `vms` from the environment's boot image, in
/// parallel; returns the seconds each took until it answered SSH.
pub(crate) fn restore(env: &Env, vms: &[&Vm]) -> Result<BTreeMap<String, f64>> {
    let w = env.saved.warm.as_ref().ok_or_else(|| Error::Usage {
        message: "warm start is off for this environment".into(),
    })?;
    let names = || vms.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ");
    let img = match &w.dir {
        // A failure bundle's.
        Some(dir) => BootImage::open(dir).map_err(|what| Error::BootImage {
            vm: names(),
            path: dir.clone(),
            what,
        })?,
        None => {
            let images = BootImages::new(&env.template_store());
            images.find(&w.key).ok_or_else(|| Error::BootImage {
                vm: names(),
                path: images.root().join(&w.key),
                what: "it is gone from the store".into(),
            })?
        }
    };
    let secs = map_parallel(
        "restore",
        vms,
        |vm| vm.name().to_owned(),
        |vm| restore_vm(env.workdir(), vm, &img),
    )?;
    Ok(vms.iter().map(|v| v.name().to_owned()).zip(secs).collect())
}

/// Restores VM `vm` from boot image `img`, checks the image's digest, waits
/// for SSH and refreshes the guest.
fn restore_vm(workdir: &Path, vm: &Vm, img: &BootImage) -> Result<f64> {
    let t = Instant::now();
    let saved = img.meta.vms.get(vm.name()).ok_or_else(|| Error::BootImage {
        vm: vm.name().to_owned(),
        path: img.dir.clone(),
        what: "it holds no such VM".into(),
    })?;
    let state = img.file(&saved.state);
    if let Some(c) = &saved.console {
        carry_console(workdir, vm, &img.file(c), &img.meta.key);
    }
    let offset = console_len(&vm.plan.console_log);
    restore_from(vm, &state, Some(&saved.state_sha256))?;
    tracing::debug!(vm = %vm.name(), ms = t.elapsed().as_millis() as u64, "domain restored");
    answered(vm, offset)?;
    tracing::info!(vm = %vm.name(), ms = t.elapsed().as_millis() as u64, "restored from its boot image");
    Ok(t.elapsed().as_secs_f64())
}

/// Starts VM `vm`'s console log (in `workdir`) with the boot the boot
/// image saved (its last MiB at most), and a line that says where the
/// restore begins; a console log that exists is left as it is.
fn carry_console(workdir: &Path, vm: &Vm, saved: &Path, key: &str) {
    let mut text = Vec::new();
    if let Ok(f) = std::fs::File::open(saved) {
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut text);
    }
    text.extend_from_slice(format!("\n[lago: restored from boot image {key}]\n").as_bytes());
    let made =
        crate::host::workdir::Dir::open(workdir).and_then(|dir| dir.write_new(&vm.plan.console_log, &text, 0o600));
    if let Err(e) = made {
        tracing::debug!(vm = %vm.name(), error = %e, "cannot carry the boot console over");
    }
}

/// After a save: brings VM `vm` back from its save image in `dir`. A VM
/// whose save failed still runs (or, if it went down, boots).
pub(crate) fn resume_saved(vm: &Vm, dir: &Path) -> Result<()> {
    let state = dir.join(super::save::state_file(vm.name()));
    if vm.state()? == VmState::Running {
        return Ok(());
    }
    if !state.is_file() {
        return vm.start();
    }
    let offset = console_len(&vm.plan.console_log);
    restore_from(vm, &state, None)?;
    answered(vm, offset)
}

/// Restores VM `vm`'s domain from save image `state`, which must have
/// `sha256` when that is given.
fn restore_from(vm: &Vm, state: &Path, sha256: Option<&str>) -> Result<()> {
    vm.sync_console();
    let autodestroy = vm.autodestroy.load(std::sync::atomic::Ordering::Relaxed);
    Ok(vm
        .backend
        .restore_domain(&vm.plan.libvirt_name, state, sha256, &vm.domain_xml, autodestroy)?)
}

/// Waits for a restored guest's SSH (a new session), then sets its clock
/// and feeds its RNG.
fn answered(vm: &Vm, offset: u64) -> Result<()> {
    let t = Instant::now();
    vm.conn.reset();
    vm.wait_from(ANSWER_WITHIN, offset)?;
    let ssh_ms = t.elapsed().as_millis() as u64;
    refresh(vm)?;
    tracing::debug!(vm = %vm.name(), ssh_ms, refresh_ms = t.elapsed().as_millis() as u64 - ssh_ms, "restored guest answered");
    Ok(())
}

/// Sets the guest's clock to the host's and writes fresh random bytes into
/// its RNG: the memory it was restored from holds the clock and the entropy
/// pool of the instant it was saved (the VM generation id, new on every
/// restore, also tells kernels that read it).
fn refresh(vm: &Vm) -> Result<()> {
    let mut seed = [0u8; 64];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Whole seconds (busybox's date takes no fraction), rounded. The bytes
    // go in the command line, as hex: no stdin to send and close.
    let secs = (now.as_secs_f64() + 0.5).floor() as u64;
    let line = format!(
        "date -u -s @{secs} >/dev/null 2>&1; echo {} > /dev/urandom",
        crate::env::warm::to_hex(&seed)
    );
    let command = if vm.spec.ssh_user == "root" {
        format!("sh -c '{line}'")
    } else {
        format!("sudo -n sh -c '{line}'")
    };
    let st = vm.conn.exec(&command, None, Some(Duration::from_secs(30)))?;
    if st.code != 0 {
        tracing::warn!(vm = %vm.name(), code = st.code, err = %st.err.trim(), "cannot set the restored guest's clock or feed its RNG");
    }
    Ok(())
}
