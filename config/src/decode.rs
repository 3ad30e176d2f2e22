//! Typed reads from the position-aware tree, collecting every problem.

use std::net::Ipv4Addr;

use super::error::{Pos, Problem};
use super::yaml::{Kind, Node};

pub(crate) use crate::keypath::{child, index};

/// Longest word (and candidate) a "did you mean" is computed for: the
/// distances are quadratic in the lengths.
const MAX_SUGGEST_LEN: usize = 64;

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
/// Only short words get suggestions.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if word.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let norm = |s: &str| s.to_ascii_lowercase().replace(['_', '-'], "");
    let w = norm(word);
    candidates
        .iter()
        .filter(|c| c.len() <= MAX_SUGGEST_LEN)
        .map(|&c| {
            let n = norm(c);
            let score = if n == w { 2.0 } else { strsim::jaro_winkler(&w, &n) };
            (score, c)
        })
        .filter(|(score, c)| *score >= 0.85 || strsim::levenshtein(word, c) <= 2 && word.len() > 2)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The entries of a map node, checked against the keys it may hold.
pub(crate) struct Fields<'a> {
    entries: &'a [(Node, Node)],
}

impl<'a> Fields<'a> {
    /// The fields of map entries read without key checks.
    pub fn of(entries: &'a [(Node, Node)]) -> Self {
        Fields { entries }
    }

    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.key_text().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    /// Position of the key itself (for "missing in this map" problems on a sibling).
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.key_text().as_deref() == Some(key))
            .map(|(k, _)| k.pos)
    }
}

/// The keys a map may hold: lago's own, and the Lago keys lago refuses
/// (an error saying why) or ignores (a warning saying what lago does instead).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys {
    pub known: &'static [&'static str],
    pub refused: &'static [(&'static str, &'static str)],
    pub ignored: &'static [(&'static str, &'static str)],
}

impl Keys {
    pub const fn only(known: &'static [&'static str]) -> Keys {
        Keys {
            known,
            refused: &[],
            ignored: &[],
        }
    }
}

/// Collects problems (errors) and warnings while reading typed values.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Decoder {
    pub fn report(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(pos, path, message));
    }

    pub fn report_hint(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        self.problems.push(Problem::new(pos, path, message).with_hint(hint));
    }

    /// Something lago does not act on: the file still loads (unless strict).
    pub fn warn(&mut self, pos: Option<Pos>, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem::new(pos, path, message));
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        self.report(
            Some(node.pos),
            path,
            format!("expected {what}, found {}", node.describe()),
        );
    }

    /// Reads a map whose keys must be among `keys.known`. Lago keys lago
    /// refuses are errors with the reason; Lago keys it ignores are warnings
    /// saying what it does instead; `comment` is free text anywhere.
    pub fn map<'a>(&mut self, node: &'a Node, path: &str, what: &str, keys: &Keys) -> Option<Fields<'a>> {
        self.map_inner(node, path, what, keys)
    }

    fn map_inner<'a>(&mut self, node: &'a Node, path: &str, what: &str, keys: &Keys) -> Option<Fields<'a>> {
        let Kind::Map(entries) = &node.kind else {
            self.expected(node, path, what);
            return None;
        };
        for (k, _) in entries {
            let Some(text) = k.key_text() else { continue };
            if keys.known.contains(&text.as_str()) || text == "comment" {
                continue;
            }
            let kpath = child(path, &text);
            if let Some((_, why)) = keys.refused.iter().find(|(u, _)| *u == text) {
                self.report(
                    Some(k.pos),
                    &kpath,
                    format!("`{text}` is a Lago key that lago does not support: {why}"),
                );
                continue;
            }
            if let Some((_, instead)) = keys.ignored.iter().find(|(u, _)| *u == text) {
                self.warn(
                    Some(k.pos),
                    &kpath,
                    format!("`{text}` (a Lago key) is ignored: {instead}"),
                );
                continue;
            }
            let allowed = keys
                .known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let msg = format!("unknown key `{text}`; expected one of {allowed}");
            match suggest(&text, keys.known) {
                Some(s) => self.report_hint(Some(k.pos), &kpath, msg, format!("did you mean `{s}`?")),
                None => self.report(Some(k.pos), &kpath, msg),
            }
        }
        Some(Fields { entries })
    }

    /// The entries of a map whose keys are names (`domains`, `nets`).
    pub fn named_entries<'a>(&mut self, node: &'a Node, path: &str, what: &str) -> Option<&'a [(Node, Node)]> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            _ => {
                self.expected(node, path, what);
                None
            }
        }
    }

    pub fn list<'a>(&mut self, node: &'a Node, path: &str, what: &str) -> Option<&'a [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.expected(node, path, what);
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) if s.trim().is_empty() => {
                self.report(
                    Some(node.pos),
                    path,
                    "expected a non-empty string, found an empty string",
                );
                None
            }
            Kind::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            Kind::Bool(b) => Some(*b),
            _ => {
                self.expected(node, path, "`true` or `false`");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn uint(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let value = match &node.kind {
            Kind::Int(i) => *i,
            // Lago read numbers with int(): `memory: "2047"` works there.
            Kind::Str(s) if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().unwrap_or(i64::MAX)
            }
            _ => {
                self.expected(node, path, &format!("an integer from {min} to {max}"));
                return None;
            }
        };
        match u64::try_from(value) {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.report(
                    Some(node.pos),
                    path,
                    format!("expected an integer from {min} to {max}, found {value}"),
                );
                None
            }
        }
    }

    pub fn ipv4(&mut self, node: &Node, path: &str) -> Option<Ipv4Addr> {
        match &node.kind {
            Kind::Str(s) => match s.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.report(
                        Some(node.pos),
                        path,
                        format!("expected an IPv4 address like 192.168.200.10, found {s:?}"),
                    );
                    None
                }
            },
            _ => {
                self.expected(node, path, "an IPv4 address like 192.168.200.10");
                None
            }
        }
    }

    /// A list of non-empty strings; with `single_ok`, a lone string is a one-item list.
    pub fn strings(&mut self, node: &Node, path: &str, single_ok: bool) -> Option<Vec<String>> {
        match &node.kind {
            Kind::Str(_) if single_ok => self.string(node, path).map(|s| vec![s]),
            Kind::Seq(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &index(path, i)) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.expected(
                    node,
                    path,
                    if single_ok {
                        "a string or a list of strings"
                    } else {
                        "a list of strings"
                    },
                );
                None
            }
        }
    }
}

/// Converts a node to JSON (for free-form `metadata`).
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Int(i) => Value::from(*i),
        Kind::Float(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.key_text().unwrap_or_default(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_separator_mixups() {
        let keys = ["memory", "vcpu", "ssh-user", "nics", "disks", "boot_time_sec"];
        assert_eq!(suggest("memroy", &keys), Some("memory"));
        assert_eq!(suggest("ssh_user", &keys), Some("ssh-user"));
        assert_eq!(suggest("boot-time-sec", &keys), Some("boot_time_sec"));
        assert_eq!(suggest("nic", &keys), Some("nics"));
        assert_eq!(suggest("kernel", &keys), None);
        assert_eq!(
            suggest(&"memory".repeat(100), &keys),
            None,
            "long words get no suggestion"
        );
    }

    #[test]
    fn key_paths() {
        assert_eq!(child("", "domains"), "domains");
        assert_eq!(index(&child("domains.vm01", "nics"), 0), "domains.vm01.nics[0]");
        assert_eq!(child("nets", "a.b"), "nets.\"a.b\"");
    }
}
