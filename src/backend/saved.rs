//! Saved domains: a running domain's memory written to a file (libvirt's
//! save image: its XML, then QEMU's migration stream), and a domain
//! restored from one. Warm start's boot images are made of these.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

    /// Restores a domain saved by [`Backend::save_domain`] from `path`, with
    /// `xml` as its definition (the host side may differ: name, disk paths,
    /// networks, console log; the guest's hardware must be the saved one's,
    /// uuid included). It runs when this returns.
    pub fn restore_domain(&self, name: &str, path: &Path, xml: &str) -> Result<(), BackendError> {
        let err = |source| BackendError::Restore {
            name: name.to_owned(),
            path: path.to_path_buf(),
            source,
        };
        // Boot images live under the store's folder, whose path is text.
        self.conn
            .restore_domain_flags(&path.to_string_lossy(), Some(xml), virt::sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(err)
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
