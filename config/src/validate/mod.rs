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
mod unique;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::decode::{Decoder, Fields, child, suggest};
use crate::error::Problem;
use crate::spec::*;
use crate::yaml::{Kind, Node};
use net::Nets;

/// First and last /24 of the subnet lease pool (third octet), as Lago.
pub const POOL_FIRST: u8 = 200;
/// Last third octet of the pool.
pub const POOL_LAST: u8 = 255;

/// Top-level keys. Other keys are warnings (Lago files used them to hold YAML
/// anchors), unless they look like a typo of one of these (an error).
const TOP_KEYS: &[&str] = &["domains", "nets", "prototypes"];

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

/// The top-level map: its keys checked, the others warned about.
fn top<'a>(d: &mut Decoder, root: &'a Node) -> Option<Fields<'a>> {
    let Kind::Map(entries) = &root.kind else {
        d.report(
            Some(root.pos),
            "",
            format!("expected a map with `domains` and `nets`, found {}", root.describe()),
        );
        return None;
    };
    for (k, _) in entries {
        let Some(text) = k.key_text() else { continue };
        if TOP_KEYS.contains(&text.as_str()) || text.starts_with("x-") || text == "comment" {
            continue;
        }
        let path = child("", &text);
        match suggest(&text, &["domains", "nets"]) {
            Some(s) => d.report_hint(
                Some(k.pos),
                &path,
                format!("unknown top-level key `{text}`; expected `domains` and `nets`"),
                format!("did you mean `{s}`?"),
            ),
            None => d.warn(
                Some(k.pos),
                &path,
                format!("top-level key `{text}` is ignored (lago reads `domains` and `nets`; a key holding YAML anchors is best named `x-{text}`)"),
            ),
        }
    }
    Some(Fields::of(entries))
}

/// The domains with Lago's `based-on` applied: the keys of the prototype it
/// names (in `prototypes`, or given inline as a map) are added where the
/// domain lacks them.
fn merge_prototypes(d: &mut Decoder, top: &Fields<'_>, domains: &[(Node, Node)]) -> Vec<(Node, Node)> {
    let prototypes = top.get("prototypes");
    let known: Vec<String> = match prototypes.map(|p| &p.kind) {
        Some(Kind::Map(entries)) => entries.iter().filter_map(|(k, _)| k.key_text()).collect(),
        Some(_) => {
            if let Some(p) = prototypes {
                d.report(
                    Some(p.pos),
                    "prototypes",
                    format!(
                        "expected a map of prototype names to VM settings, found {}",
                        p.describe()
                    ),
                );
            }
            Vec::new()
        }
        None => Vec::new(),
    };
    domains
        .iter()
        .map(|(k, v)| {
            let Kind::Map(entries) = &v.kind else {
                return (k.clone(), v.clone());
            };
            let Some((bk, base)) = entries
                .iter()
                .find(|(bk, _)| bk.key_text().as_deref() == Some("based-on"))
            else {
                return (k.clone(), v.clone());
            };
            let path = child(&child("domains", &k.key_text().unwrap_or_default()), "based-on");
            let source = match &base.kind {
                Kind::Map(_) => Some(base.clone()),
                Kind::Str(name) => {
                    let found = match prototypes.map(|p| &p.kind) {
                        Some(Kind::Map(ps)) => ps.iter().find(|(pk, _)| pk.key_text().as_deref() == Some(name)),
                        _ => None,
                    };
                    match found {
                        Some((_, proto)) => Some(proto.clone()),
                        None => {
                            let names: Vec<&str> = known.iter().map(String::as_str).collect();
                            let msg = format!(
                                "expected the name of a prototype in `prototypes` ({}), found {name:?}",
                                if names.is_empty() {
                                    "there are none".to_owned()
                                } else {
                                    names.join(", ")
                                }
                            );
                            match suggest(name, &names) {
                                Some(h) => d.report_hint(Some(base.pos), &path, msg, format!("did you mean `{h}`?")),
                                None => d.report(Some(base.pos), &path, msg),
                            }
                            None
                        }
                    }
                }
                _ => {
                    d.report(
                        Some(base.pos),
                        &path,
                        format!(
                            "expected a prototype's name or a map of VM settings, found {}",
                            base.describe()
                        ),
                    );
                    None
                }
            };
            let mut merged: Vec<(Node, Node)> = entries.iter().filter(|(ek, _)| ek.pos != bk.pos).cloned().collect();
            if let Some(Node {
                kind: Kind::Map(proto), ..
            }) = source
            {
                for (pk, pv) in proto {
                    let name = pk.key_text();
                    if name.as_deref() != Some("based-on") && !merged.iter().any(|(mk, _)| mk.key_text() == name) {
                        merged.push((pk, pv));
                    }
                }
            }
            (
                k.clone(),
                Node {
                    kind: Kind::Map(merged),
                    pos: v.pos,
                },
            )
        })
        .collect()
}

/// Marks the nets that only `vm-provider: ssh` VMs use as external (lago
/// creates nothing for them), before the NICs on them are read.
fn mark_external_nets(nets: &mut Nets, domains: &[(Node, Node)]) {
    let mut by_ssh: HashSet<String> = HashSet::new();
    let mut by_libvirt: HashSet<String> = HashSet::new();
    for (_, v) in domains {
        let set = match domain::provider_of(v) {
            Provider::Ssh => &mut by_ssh,
            Provider::Libvirt => &mut by_libvirt,
        };
        let Kind::Map(entries) = &v.kind else { continue };
        let Some((_, nics)) = entries.iter().find(|(k, _)| k.key_text().as_deref() == Some("nics")) else {
            continue;
        };
        let Kind::Seq(items) = &nics.kind else { continue };
        for item in items {
            let Kind::Map(fields) = &item.kind else { continue };
            if let Some((_, n)) = fields.iter().find(|(k, _)| k.key_text().as_deref() == Some("net"))
                && let Kind::Str(name) = &n.kind
            {
                set.insert(name.clone());
            }
        }
    }
    for n in nets.list.iter_mut() {
        if by_ssh.contains(&n.spec.name) && !by_libvirt.contains(&n.spec.name) && n.spec.is_managed() {
            n.spec.external = true;
            n.pin = None;
        }
    }
}

/// Validates the document `root` of init file `file` into an [`EnvSpec`].
/// With `strict`, warnings (Lago keys lago ignores) are errors too.
pub(crate) fn validate(
    root: &Node,
    file: &Path,
    var: &dyn Fn(&str) -> Option<String>,
    strict: bool,
) -> Result<EnvSpec, Vec<Problem>> {
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    let mut d = Decoder::default();
    let top = top(&mut d, root);

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

    let mut vms = Vec::new();
    let domains = match top.as_ref().map(|t| (t, t.get("domains"))) {
        Some((_, None)) => {
            d.report(
                Some(root.pos),
                "domains",
                "expected a `domains` map of VMs, found no `domains` key",
            );
            None
        }
        Some((t, Some(node))) => d
            .named_entries(node, "domains", "a map of VM names to VMs")
            .map(|entries| merge_prototypes(&mut d, t, entries)),
        None => None,
    };
    if let Some(domains) = &domains {
        mark_external_nets(&mut nets, domains);
    }
    rules::pick_management(&mut nets.list);
    nets.management_decided();
    if let Some(domains) = &domains {
        let mut hostnames = unique::Unique::default();
        for (k, v) in domains {
            if let Some(vm) = domain::domain(&mut d, k, v, &mut nets, base_dir, var) {
                let path = child("domains", &vm.name);
                hostnames.claim(&mut d, &vm.hostname, &path, k.pos, &path, |other, pos| {
                    format!(
                        "expected VM names that make distinct hostnames, found `{}`, whose hostname `{}` {other} has too (at {pos})",
                        vm.name, vm.hostname
                    )
                });
                vms.push(vm);
            }
        }
    }
    rules::check_pins_distinct(&mut d, &nets.list);

    let mut problems = d.problems;
    let mut warnings = d.warnings;
    let by_place = |p: &Problem| p.pos.map(|p| (p.line, p.col)).unwrap_or((usize::MAX, 0));
    warnings.sort_by_key(by_place);
    if strict {
        problems.extend(
            warnings
                .drain(..)
                .map(|w| w.with_hint("a warning; strict mode makes it an error")),
        );
    }
    if problems.is_empty() {
        Ok(EnvSpec {
            source: file.to_path_buf(),
            vms,
            nets: nets.list.into_iter().map(|n| n.spec).collect(),
            warnings,
        })
    } else {
        problems.sort_by_key(by_place);
        Err(problems)
    }
}

/// A path value at `n` (key path `p`): variables expanded, anchored at the
/// init file's folder when relative; an expansion error is reported at `n`.
fn path_value(
    d: &mut Decoder,
    n: &Node,
    p: &str,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<std::path::PathBuf> {
    let raw = d.string(n, p)?;
    match crate::vars::expand_path(&raw, base_dir, var) {
        Ok(pb) => Some(pb),
        Err(e) => {
            d.report(Some(n.pos), p, e);
            None
        }
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
