//! A disk (`domains.<vm>.disks[i]`): its keys, types and formats, and its
//! decoder: the name, device and bus checks, the keys that only some disk
//! types take, and the disk's source (template, empty or file).

use std::path::{Path, PathBuf};

use super::unique::{Unique, used_twice_in_vm};
use super::{is_simple_name, one_of, opt, path_value};
use crate::decode::{Decoder, Fields, Keys, child};
use crate::size::parse_size;
use crate::spec::*;
use crate::yaml::{Kind, Node};

const DISK_KEYS: &[&str] = &[
    "type",
    "name",
    "dev",
    "format",
    "size",
    "template_name",
    "template_version",
    "template_digest",
    "template_type",
    "path",
    "make_a_copy",
];
const DISK_LAGO_KEYS: Keys = Keys {
    known: DISK_KEYS,
    refused: &[
        (
            "url",
            "lago downloads nothing: download the image yourself and point `path` at it",
        ),
        (
            "build",
            "lago runs no virt-customize steps: customise the guest over SSH after start, or bake it into the template",
        ),
    ],
    ignored: &[
        ("metadata", "lago keeps no disk metadata; put metadata on the VM"),
        (
            "skip-export",
            "`lago export` writes every disk of a VM it exports; put `skip-export` on the VM to leave it out",
        ),
    ],
};
const DISK_TYPES: &[&str] = &["template", "empty", "file"];
const DISK_FORMATS: &[&str] = &["qcow2", "raw", "iso"];
const TEMPLATE_TYPES: &[&str] = &["lago", "qcow2"];

/// One disk entry being read: its settings, where it is, and how its paths resolve.
struct Entry<'a> {
    f: Fields<'a>,
    node: &'a Node,
    path: &'a str,
    base_dir: &'a Path,
    var: &'a dyn Fn(&str) -> Option<String>,
}

impl Entry<'_> {
    /// The string at required key `k` (`what` says what it is), reported if missing.
    fn required(&self, d: &mut Decoder, k: &str, what: &str) -> Option<String> {
        match self.f.get(k) {
            Some(n) => d.string(n, &child(self.path, k)),
            None => {
                d.report(
                    Some(self.node.pos),
                    &child(self.path, k),
                    format!("expected `{k}` ({what}), found no `{k}` key"),
                );
                None
            }
        }
    }

    /// `path` (`what` says what it points at), variables expanded, anchored at
    /// the init file's folder if relative.
    fn path_of(&self, d: &mut Decoder, what: &str) -> Option<PathBuf> {
        let Some(n) = self.f.get("path") else {
            d.report(
                Some(self.node.pos),
                &child(self.path, "path"),
                format!("expected `path` ({what}), found no `path` key"),
            );
            return None;
        };
        path_value(d, n, &child(self.path, "path"), self.base_dir, self.var)
    }
}

/// Reads the disk at `path`; its name and device must not be in `names` and
/// `devs` (the VM's disks so far), which it is added to.
pub(super) fn disk(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
    names: &mut Unique<String>,
    devs: &mut Unique<String>,
) -> Option<DiskSpec> {
    let f = d.map(node, path, "a map of disk settings", &DISK_LAGO_KEYS)?;
    let e = Entry {
        f,
        node,
        path,
        base_dir,
        var,
    };
    let kind = match e.f.get("type") {
        Some(n) => one_of(d, n, &child(path, "type"), DISK_TYPES),
        None => {
            d.report(
                Some(node.pos),
                &child(path, "type"),
                "expected `type` (`template`, `empty` or `file`), found no `type` key",
            );
            None
        }
    };
    let name = disk_name(d, &e, names);
    let (dev, bus) = dev_and_bus(d, &e, devs);
    let format = disk_format(d, &e, bus);

    let kind = kind?;
    let template_type = match (kind.as_str(), e.f.get("template_type")) {
        ("template", Some(n)) => one_of(d, n, &child(path, "template_type"), TEMPLATE_TYPES),
        _ => Some("lago".to_owned()),
    };
    check_type_keys(d, &e, &kind, template_type.as_deref());
    let source = match kind.as_str() {
        "template" => template_source(d, &e, template_type, format)?,
        "empty" => empty_source(d, &e, format)?,
        _ => DiskSource::File {
            path: e.path_of(d, "the image file")?,
            make_a_copy: opt(d, &e.f, "make_a_copy", path, |d, n, p| d.boolean(n, p)).unwrap_or(false),
        },
    };
    Some(DiskSpec {
        name: name?,
        dev: dev?,
        bus: bus?,
        format: format?,
        source,
    })
}

/// `name`: a simple name, unique in the VM.
fn disk_name(d: &mut Decoder, e: &Entry<'_>, names: &mut Unique<String>) -> Option<String> {
    let name = e.required(d, "name", "the disk's name, unique in the VM");
    if let (Some(n), Some(name)) = (e.f.get("name"), &name) {
        let p = child(e.path, "name");
        if !is_simple_name(name, 64) {
            d.report(
                Some(n.pos),
                &p,
                format!("expected a disk name of letters, digits, `-`, `_` or `.`, found {name:?}"),
            );
        } else {
            names.claim(d, name, e.path, n.pos, &p, used_twice_in_vm("disk name", name));
        }
    }
    name
}

/// `dev`, and the bus its prefix selects; the bus is `None` unless the device
/// is well-formed and unique in the VM.
fn dev_and_bus(d: &mut Decoder, e: &Entry<'_>, devs: &mut Unique<String>) -> (Option<String>, Option<DiskBus>) {
    let dev = e.required(
        d,
        "dev",
        "the guest device: `vdX` virtio-blk, `sdX` virtio-scsi or `hdX` IDE",
    );
    let mut bus = None;
    if let (Some(n), Some(dev)) = (e.f.get("dev"), &dev) {
        let p = child(e.path, "dev");
        // By bytes, not characters: `split_at` would panic inside a multi-byte character.
        let (prefix, rest) = dev.as_bytes().split_at(dev.len().min(2));
        let prefix = std::str::from_utf8(prefix).unwrap_or("");
        let letters_ok = (1..=2).contains(&rest.len()) && rest.iter().all(|b| b.is_ascii_lowercase());
        bus = match (prefix, letters_ok) {
            ("vd", true) => Some(DiskBus::Virtio),
            ("sd", true) => Some(DiskBus::Scsi),
            ("hd", true) => Some(DiskBus::Ide),
            _ => {
                d.report(
                    Some(n.pos),
                    &p,
                    format!(
                        "expected a device like `vda` (virtio-blk), `sda` (virtio-scsi) or `hdc` (IDE), found {dev:?}"
                    ),
                );
                None
            }
        };
        if bus.is_some() && !devs.claim(d, dev, e.path, n.pos, &p, used_twice_in_vm("device", dev)) {
            bus = None;
        }
    }
    (dev, bus)
}

/// `format` (default `qcow2`); an `iso` (a CD-ROM) cannot be on the virtio-blk `bus`.
fn disk_format(d: &mut Decoder, e: &Entry<'_>, bus: Option<DiskBus>) -> Option<DiskFormat> {
    let format = match e.f.get("format") {
        Some(n) => one_of(d, n, &child(e.path, "format"), DISK_FORMATS).map(|s| match s.as_str() {
            "raw" => DiskFormat::Raw,
            "iso" => DiskFormat::Iso,
            _ => DiskFormat::Qcow2,
        }),
        None => Some(DiskFormat::Qcow2),
    };
    if let (Some(DiskFormat::Iso), Some(DiskBus::Virtio)) = (format, bus) {
        d.report(
            e.f.get("dev").map(|n| n.pos),
            &child(e.path, "dev"),
            "expected `hdX` or `sdX` for an `iso` disk (a CD-ROM), found a virtio-blk `vdX` device",
        );
    }
    format
}

/// Reports the keys that do not apply to a disk of type `kind` (and `template_type`).
fn check_type_keys(d: &mut Decoder, e: &Entry<'_>, kind: &str, template_type: Option<&str>) {
    // Keys that only make sense for some disk types.
    let allowed: &[&str] = match (kind, template_type) {
        ("template", Some("qcow2")) => &["template_type", "path"],
        ("template", _) => &["template_type", "template_name", "template_version", "template_digest"],
        ("empty", _) => &["size"],
        _ => &["path", "make_a_copy"],
    };
    // Every disk key but the four all disks take.
    let type_specific = DISK_KEYS
        .iter()
        .copied()
        .filter(|k| !["type", "name", "dev", "format"].contains(k));
    for k in type_specific {
        if let (false, Some(n)) = (allowed.contains(&k), e.f.get(k)) {
            let applies = match k {
                "size" => "`type: empty` disks",
                "template_name" | "template_version" | "template_digest" => {
                    "`type: template` disks with `template_type: lago`"
                }
                "template_type" => "`type: template` disks",
                "path" => "`type: file` disks and `template_type: qcow2` templates",
                _ => "`type: file` disks",
            };
            // Lago ignored a template's name once `template_type: qcow2` gave a path.
            let qcow2_template =
                kind == "template" && matches!(k, "template_name" | "template_version" | "template_digest");
            if qcow2_template {
                d.warn(
                    Some(n.pos),
                    &child(e.path, k),
                    format!(
                        "`{k}` is ignored on a `template_type: qcow2` disk, as in Lago: the image at `path` is used"
                    ),
                );
            } else {
                d.report(
                    Some(n.pos),
                    &child(e.path, k),
                    format!("`{k}` only applies to {applies}, found it on a `type: {kind}` disk"),
                );
            }
        }
    }
}

/// The source of a `type: template` disk: a Lago template by name, or a
/// qcow2 image (`template_type: qcow2`).
fn template_source(
    d: &mut Decoder,
    e: &Entry<'_>,
    template_type: Option<String>,
    format: Option<DiskFormat>,
) -> Option<DiskSource> {
    if let (Some(fmt), Some(n)) = (format, e.f.get("format"))
        && fmt != DiskFormat::Qcow2
    {
        d.report(
            Some(n.pos),
            &child(e.path, "format"),
            format!(
                "expected `qcow2` for a template disk (it is a qcow2 overlay), found `{}`",
                fmt.as_str()
            ),
        );
    }
    match template_type?.as_str() {
        "qcow2" => Some(DiskSource::TemplateFile {
            path: e.path_of(d, "the qcow2 image to use as backing file")?,
        }),
        _ => match e.f.get("template_name") {
            None => {
                d.report(
                    Some(e.node.pos),
                    &child(e.path, "template_name"),
                    "expected `template_name` on a `type: template` disk (or `template_type: qcow2` with `path`), found no `template_name` key",
                );
                None
            }
            Some(n) => Some(DiskSource::Template {
                name: d.string(n, &child(e.path, "template_name"))?,
                version: opt(d, &e.f, "template_version", e.path, |d, n, p| match &n.kind {
                    Kind::Int(i) => Some(i.to_string()),
                    _ => d.string(n, p),
                }),
                digest: opt(d, &e.f, "template_digest", e.path, |d, n, p| {
                    let text = d.string(n, p)?;
                    let hex = text.strip_prefix("sha256:").unwrap_or(&text).to_ascii_lowercase();
                    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Some(hex);
                    }
                    d.report(
                        Some(n.pos),
                        p,
                        format!(
                            "expected a sha256 digest (64 hex digits, `sha256:` before them or not), found `{text}`"
                        ),
                    );
                    None
                }),
            }),
        },
    }
}

/// The source of a `type: empty` disk: its `size`.
fn empty_source(d: &mut Decoder, e: &Entry<'_>, format: Option<DiskFormat>) -> Option<DiskSource> {
    if format == Some(DiskFormat::Iso) {
        d.report(
            e.f.get("format").map(|n| n.pos),
            &child(e.path, "format"),
            "expected `qcow2` or `raw` for an empty disk, found `iso`",
        );
    }
    let Some(n) = e.f.get("size") else {
        d.report(
            Some(e.node.pos),
            &child(e.path, "size"),
            "expected `size` (e.g. `10G`) on a `type: empty` disk, found no `size` key",
        );
        return None;
    };
    let p = child(e.path, "size");
    let parsed = match &n.kind {
        Kind::Int(i) if *i > 0 => Ok(*i as u64),
        Kind::Str(s) => parse_size(s),
        _ => Err(format!(
            "expected a size like `10G`, `512M` or a number of bytes, found {}",
            n.describe()
        )),
    };
    match parsed {
        Ok(size_bytes) => Some(DiskSource::Empty { size_bytes }),
        Err(e) => {
            d.report(Some(n.pos), &p, e);
            None
        }
    }
}
