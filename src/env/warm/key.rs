//! What a boot image is keyed by: a digest of everything that decides an
//! environment's booted state, with what differs between two environments
//! of one init file (the workdir, the env id) left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::host::store::warm::FORMAT;
use crate::plan::{EnvId, EnvPlan};
use lago_config::EnvSpec;

/// The QEMU binary whose saved state a boot image holds.
const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// The init file as validated, without where it was read from or the
/// warnings (whose lines move with comments).
fn spec_json(spec: &EnvSpec) -> serde_json::Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("source");
        m.remove("warnings");
    }
    v
}

/// The digest of the init file alone: environments of one family prefer
/// the subnets of its boot images.
pub(crate) fn family(spec: &EnvSpec) -> String {
    hex(&serde_json::json!({
        "format": FORMAT,
        "lago": env!("CARGO_PKG_VERSION"),
        "spec": spec_json(spec),
    }))
}

/// Everything a boot image's key covers.
pub(crate) struct KeyParts<'a> {
    pub spec: &'a EnvSpec,
    pub plan: &'a EnvPlan,
    pub workdir: &'a Path,
    pub env_id: &'a EnvId,
    /// `kvm` or `tcg`.
    pub accel: &'a str,
    /// Each template disk's template (`<vm>/<disk>` → name, version, digest).
    pub templates: BTreeMap<String, String>,
    /// Files the guests boot from or read (kernels, initrds, template
    /// images, CD-ROMs): each by path, size and modification time.
    pub files: Vec<PathBuf>,
    /// The libvirt XML lago makes for the nets and VMs (without owners).
    pub xml: Vec<String>,
}

/// The key: the family's inputs, plus the plan (names, addresses, MACs,
/// disk layout, all subnets), the templates and files by identity, the
/// accelerator, the QEMU binary and the libvirt XML lago makes.
pub(crate) fn key(p: &KeyParts<'_>) -> String {
    let plan = serde_json::to_string(p.plan).unwrap_or_default();
    let mut files: Vec<String> = p.files.iter().map(|f| identity(f)).collect();
    files.push(identity(Path::new(QEMU)));
    files.sort();
    hex(&serde_json::json!({
        "family": family(p.spec),
        "plan": normalized(&plan, p.workdir, p.env_id),
        "accel": p.accel,
        "templates": p.templates,
        "files": files,
        "xml": p.xml.iter().map(|x| normalized(x, p.workdir, p.env_id)).collect::<Vec<_>>(),
    }))
}

/// `json` with the workdir and the env id replaced by placeholders.
fn normalized(json: &str, workdir: &Path, env_id: &EnvId) -> String {
    let wd = serde_json::to_string(&workdir.to_string_lossy()).unwrap_or_default();
    let wd = wd.trim_matches('"');
    json.replace(wd, "<workdir>").replace(env_id.as_str(), "<env>")
}

/// A file by path, size and modification time (a rebuilt template or
/// kernel changes them; reading gigabytes to hash them would cost more than a boot).
fn identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => format!("{} {} {}.{}", path.display(), m.len(), m.mtime(), m.mtime_nsec()),
        Err(_) => format!("{} missing", path.display()),
    }
}

fn hex(v: &serde_json::Value) -> String {
    let d = Sha256::digest(v.to_string().as_bytes());
    super::to_hex(&d[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> EnvSpec {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("init.yaml");
        std::fs::write(&path, text).expect("write");
        lago_config::load(&path).expect("valid init file")
    }

    const INIT: &str = "domains:\n  vm01:\n    memory: 256\n    nics: [{net: lago}]\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\nnets:\n  lago: {type: nat}\n";

    fn key_of(spec: &EnvSpec, id: &str, workdir: &str, third: u8) -> String {
        let env_id = EnvId::new(id).expect("id");
        let subnets = [("lago".to_owned(), crate::plan::Subnet::new(third).expect("subnet"))].into();
        let plan = crate::plan::plan(spec, &env_id, &subnets, Path::new(workdir)).expect("plan");
        key(&KeyParts {
            spec,
            plan: &plan,
            workdir: Path::new(workdir),
            env_id: &env_id,
            accel: "tcg",
            templates: [("vm01/root".to_owned(), "tiny:1:abc".to_owned())].into(),
            files: vec![],
            xml: vec![format!(
                "<domain><name>lago-{id}-vm01</name><disk file='{workdir}/images/vm01_root.qcow2'/></domain>"
            )],
        })
    }

    #[test]
    fn two_environments_of_one_init_file_share_a_key_and_one_changed_key_misses() {
        let a = spec(INIT);
        let k = key_of(&a, "aaaa1111", "/tmp/one/env", 201);
        assert_eq!(
            k,
            key_of(&a, "bbbb2222", "/var/tmp/other place", 201),
            "workdir and env id do not count"
        );
        assert_ne!(k, key_of(&a, "aaaa1111", "/tmp/one/env", 202), "the subnet does");
        let b = spec(&INIT.replace("memory: 256", "memory: 320"));
        assert_ne!(
            k,
            key_of(&b, "aaaa1111", "/tmp/one/env", 201),
            "one key of the init file does"
        );
        assert_ne!(family(&a), family(&b));
        let commented = spec(&format!("# a comment\n{INIT}"));
        assert_eq!(
            k,
            key_of(&commented, "aaaa1111", "/tmp/one/env", 201),
            "a comment does not"
        );
    }
}
