//! The init-file schema: every key, its type, its default, and the rules that
//! tie keys together. One pass over the tree, collecting every problem.
//!
//! This file holds the entry point, `validate`, with the top-level map's keys,
//! the subnet pool bounds and the small helpers the element decoders share.
//! Each schema element has its own file, with its key tables next to its
//! decoder: `net` (`nets.*`), `domain` (`domains.*`), `nic` (`nics[*]`) and
//! `disk` (`disks[*]`). The rules that tie several keys or entries together
//! are in `rules`.

mod disk;
mod domain;
mod net;
mod nic;
mod rules;

use std::net::Ipv4Addr;
use std::path::Path;

use crate::decode::{Decoder, Fields, child, suggest};
use crate::error::Problem;
use crate::spec::*;
use crate::yaml::Node;
use net::Nets;

/// First and last /24 of the subnet lease pool (third octet), as Lago.
pub const POOL_FIRST: u8 = 200;
/// Last third octet of the pool.
pub const POOL_LAST: u8 = 255;

const TOP_KEYS: &[&str] = &["domains", "nets"];
const TOP_UNSUPPORTED: &[(&str, &str)] = &[(
    "prototypes",
    "share settings with YAML anchors and merge keys (`<<: *common`) instead",
)];

fn is_hostname_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_simple_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn subnet_text(octet: u8) -> String {
    format!("192.168.{octet}.0/24")
}

/// The pool /24 an address belongs to, if any.
fn pool_octet(ip: Ipv4Addr) -> Option<u8> {
    let o = ip.octets();
    (o[0] == 192 && o[1] == 168 && o[2] >= POOL_FIRST).then_some(o[2])
}

/// Validates the document `root` of init file `file` into an [`EnvSpec`].
pub(crate) fn validate(
    root: &Node,
    file: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvSpec, Vec<Problem>> {
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    let mut d = Decoder::default();
    let top = d.map_with_extensions(root, "", "a map with `domains` and `nets`", TOP_KEYS, TOP_UNSUPPORTED);

    let mut nets = Nets::default();
    if let Some(top) = &top {
        match top.get("nets") {
            None => d.report(
                Some(root.pos),
                "nets",
                "expected a `nets` map with at least one network, found no `nets` key",
            ),
            Some(node) => {
                if let Some(entries) = d.named_entries(node, "nets", "a map of network names to networks") {
                    if entries.is_empty() {
                        d.report(Some(node.pos), "nets", "expected at least one network, found none");
                    }
                    for (k, v) in entries {
                        if let Some(n) = net::net(&mut d, k, v) {
                            nets.push(n);
                        }
                    }
                }
            }
        }
    }
    rules::pick_management(&mut nets.list);
    nets.management_decided();

    let mut vms = Vec::new();
    if let Some(top) = &top {
        match top.get("domains") {
            None => d.report(
                Some(root.pos),
                "domains",
                "expected a `domains` map of VMs, found no `domains` key",
            ),
            Some(node) => {
                if let Some(entries) = d.named_entries(node, "domains", "a map of VM names to VMs") {
                    for (k, v) in entries {
                        if let Some(vm) = domain::domain(&mut d, k, v, &mut nets, base_dir, var) {
                            vms.push(vm);
                        }
                    }
                }
            }
        }
    }
    rules::check_pins_distinct(&mut d, &nets.list);

    if d.problems.is_empty() {
        Ok(EnvSpec {
            source: file.to_path_buf(),
            vms,
            nets: nets.list.into_iter().map(|n| n.spec).collect(),
        })
    } else {
        let mut problems = d.problems;
        problems.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0)));
        Err(problems)
    }
}

fn one_of(d: &mut Decoder, node: &Node, path: &str, choices: &[&str]) -> Option<String> {
    let s = d.string(node, path)?;
    if choices.contains(&s.as_str()) {
        return Some(s);
    }
    let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    let msg = format!("expected one of {list}, found {s:?}");
    match suggest(&s, choices) {
        Some(h) => d.report_hint(Some(node.pos), path, msg, format!("did you mean `{h}`?")),
        None => d.report(Some(node.pos), path, msg),
    }
    None
}

fn opt<T>(
    d: &mut Decoder,
    f: &Fields<'_>,
    key: &str,
    path: &str,
    read: impl FnOnce(&mut Decoder, &Node, &str) -> Option<T>,
) -> Option<T> {
    f.get(key).and_then(|n| read(d, n, &child(path, key)))
}
