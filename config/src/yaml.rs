//! A YAML (and so JSON) document as a tree whose every node knows its line and column.
//!
//! serde stops at the first error and forgets positions; validation needs all
//! problems with the place each value was written, so the loader works on this tree.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::decode::{child, index};
use super::error::{Pos, Problem};

/// A node of the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

/// What a node holds. Scalars are resolved with the YAML 1.2 core schema;
/// quoted scalars are always strings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order; keys are unique (duplicates are reported).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short description of what was found, for "expected X, found Y".
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".into(),
            Kind::Bool(b) => format!("boolean `{b}`"),
            Kind::Int(i) => format!("integer `{i}`"),
            Kind::Float(x) => format!("number `{x}`"),
            Kind::Str(s) => format!("string {s:?}"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a map".into(),
        }
    }

    /// The scalar as text, for map keys.
    pub fn key_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Null => Some(String::new()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(x) => Some(x.to_string()),
            Kind::Str(s) => Some(s.clone()),
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }
}

/// The outcome of parsing: the first document, problems found while building
/// the tree (duplicate keys, bad merges), or a syntax error.
#[derive(Debug)]
pub(crate) enum Parsed {
    Empty,
    Doc(Node, Vec<Problem>),
    Syntax(Pos, String),
}

fn pos(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Parses `text`. Only the first document is used; a second one is a problem.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        return Parsed::Syntax(pos(e.marker()), e.info().to_owned());
    }
    let mut docs = b.docs.into_iter();
    match docs.next() {
        None => Parsed::Empty,
        Some(n) if n.kind == Kind::Null && b.problems.is_empty() => Parsed::Empty,
        Some(n) => {
            let mut problems = b.problems;
            if let Some(extra) = docs.next() {
                problems.push(Problem::new(
                    Some(extra.pos),
                    "",
                    "expected one YAML document, found a second one",
                ));
            }
            Parsed::Doc(n, problems)
        }
    }
}

/// A collection being built: start, anchor, items (a map's keys and values
/// alternate), and its key path (for problems found while building).
enum Frame {
    Seq(Pos, usize, Vec<Node>, String),
    Map(Pos, usize, Vec<Node>, String),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    problems: Vec<Problem>,
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            Some(Frame::Seq(_, _, items, _)) | Some(Frame::Map(_, _, items, _)) => items.push(node),
            None => self.docs.push(node),
        }
    }

    /// Key path of the next value pushed into the current frame.
    fn next_path(&self) -> String {
        match self.stack.last() {
            Some(Frame::Seq(_, _, items, path)) => index(path, items.len()),
            Some(Frame::Map(_, _, items, path)) => {
                let key = items.last().and_then(Node::key_text).unwrap_or_default();
                child(path, &key)
            }
            None => String::new(),
        }
    }

    fn finish_map(&mut self, start: Pos, flat: Vec<Node>, path: &str) -> Node {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merges: Vec<Node> = Vec::new();
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if matches!(&k.kind, Kind::Str(s) if s == "<<") {
                merges.push(v);
                continue;
            }
            let Some(text) = k.key_text() else {
                self.problems.push(Problem::new(
                    Some(k.pos),
                    path,
                    format!("expected a scalar map key, found {}", k.describe()),
                ));
                continue;
            };
            if let Some((first, _)) = entries
                .iter()
                .find(|(e, _)| e.key_text().as_deref() == Some(text.as_str()))
            {
                self.problems.push(Problem::new(
                    Some(k.pos),
                    &child(path, &text),
                    format!(
                        "duplicate key `{text}` (first written at {}); expected every key once",
                        first.pos
                    ),
                ));
                continue;
            }
            entries.push((k, v));
        }
        // YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`): keys written in
        // the map win, then earlier merged maps win over later ones.
        for m in merges {
            let sources = match m.kind {
                Kind::Map(_) => vec![m],
                Kind::Seq(items) => items,
                _ => {
                    self.problems.push(Problem::new(
                        Some(m.pos),
                        path,
                        format!("expected a map (or list of maps) to merge, found {}", m.describe()),
                    ));
                    continue;
                }
            };
            for s in sources {
                let Kind::Map(src) = s.kind else {
                    self.problems.push(Problem::new(
                        Some(s.pos),
                        path,
                        format!("expected a map to merge, found {}", s.describe()),
                    ));
                    continue;
                };
                for (k, v) in src {
                    let text = k.key_text();
                    if !entries.iter().any(|(e, _)| e.key_text() == text) {
                        entries.push((k, v));
                    }
                }
            }
        }
        Node {
            kind: Kind::Map(entries),
            pos: start,
        }
    }
}

fn resolve_plain(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Kind::Int(i);
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Kind::Int(i);
    }
    let looks_float = digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float && let Ok(x) = s.parse::<f64>() {
        return Kind::Float(x);
    }
    Kind::Str(s.to_owned())
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let p = pos(&mark);
        match ev {
            Event::Scalar(value, style, anchor, tag) => {
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if style == TScalarStyle::Plain && !forced_str {
                    resolve_plain(&value)
                } else {
                    Kind::Str(value)
                };
                self.push(Node { kind, pos: p }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let path = self.next_path();
                self.stack.push(Frame::Seq(p, anchor, Vec::new(), path));
            }
            Event::MappingStart(anchor, _) => {
                let path = self.next_path();
                self.stack.push(Frame::Map(p, anchor, Vec::new(), path));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(start, anchor, items, _)) = self.stack.pop() {
                    self.push(
                        Node {
                            kind: Kind::Seq(items),
                            pos: start,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(start, anchor, flat, path)) = self.stack.pop() {
                    let node = self.finish_map(start, flat, &path);
                    self.push(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => {
                        let path = self.next_path();
                        self.problems.push(Problem::new(
                            Some(p),
                            &path,
                            "expected an alias to a defined anchor, found an unknown alias",
                        ));
                        Node {
                            kind: Kind::Null,
                            pos: p,
                        }
                    }
                };
                self.push(node, 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> (Node, Vec<Problem>) {
        match parse(text) {
            Parsed::Doc(n, p) => (n, p),
            other => panic!("expected a document, got {other:?}"),
        }
    }

    fn map(n: &Node) -> &Vec<(Node, Node)> {
        match &n.kind {
            Kind::Map(m) => m,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn scalars_resolve_with_core_schema() {
        let (n, p) = doc("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: x\ng: 0x10\nh: yes\n");
        assert!(p.is_empty());
        let kinds: Vec<_> = map(&n).iter().map(|(_, v)| v.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Int(1),
                Kind::Str("1".into()),
                Kind::Bool(true),
                Kind::Null,
                Kind::Float(1.5),
                Kind::Str("x".into()),
                Kind::Int(16),
                Kind::Str("yes".into()),
            ]
        );
    }

    #[test]
    fn positions_are_one_based_line_and_column() {
        let (n, _) = doc("top:\n  inner: value\n");
        let (_, v) = &map(&n)[0];
        let (k, vv) = &map(v)[0];
        assert_eq!(k.pos, Pos { line: 2, col: 3 });
        assert_eq!(vv.pos, Pos { line: 2, col: 10 });
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_places() {
        let (_, p) = doc("a: 1\nb: 2\na: 3\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pos, Some(Pos { line: 3, col: 1 }));
        assert!(p[0].message.contains("first written at 1:1"), "{}", p[0].message);
    }

    #[test]
    fn merge_keys_and_aliases_fill_missing_keys_only() {
        let (n, p) = doc("base: &b {x: 1, y: 2}\nvm:\n  <<: *b\n  y: 3\n");
        assert!(p.is_empty(), "{p:?}");
        let vm = &map(&n)[1].1;
        let got: Vec<_> = map(vm)
            .iter()
            .map(|(k, v)| (k.key_text().unwrap(), v.kind.clone()))
            .collect();
        assert_eq!(
            got,
            vec![("y".to_string(), Kind::Int(3)), ("x".to_string(), Kind::Int(1))]
        );
    }

    #[test]
    fn json_is_accepted() {
        let (n, p) = doc("{\n\t\"a\": [1, \"two\"],\n\t\"b\": {\"c\": null}\n}\n");
        assert!(p.is_empty());
        assert_eq!(map(&n).len(), 2);
    }

    #[test]
    fn empty_and_syntax_errors() {
        assert!(matches!(parse(""), Parsed::Empty));
        assert!(matches!(parse("# only a comment\n"), Parsed::Empty));
        assert!(matches!(parse("---\n~\n"), Parsed::Empty));
        match parse("a: [1, 2\nb: 3\n") {
            Parsed::Syntax(pos, msg) => {
                assert!(pos.line >= 2, "{pos}");
                assert!(!msg.is_empty());
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}
