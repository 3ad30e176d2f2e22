//! A YAML (and so JSON) document as a tree whose every node knows its line and column.
//!
//! serde stops at the first error and forgets positions; validation needs all
//! problems with the place each value was written, so the loader works on this tree.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{Pos, Problem};
use super::keypath::{child, index};

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

/// Bounds on what one init file may make the loader build.
pub(crate) mod limits {
    /// Largest init file read, in bytes.
    pub const MAX_FILE_BYTES: usize = 1 << 20;
    /// Deepest nesting of lists and maps (aliases count with what they stand for).
    pub const MAX_DEPTH: usize = 64;
    /// Most nodes that aliases may expand to, over the whole document.
    pub const MAX_ALIAS_NODES: usize = 100_000;
}

/// The outcome of parsing: the first document, problems found while building
/// the tree (duplicate keys, bad merges), a syntax error, or a limit crossed.
#[derive(Debug)]
pub(crate) enum Parsed {
    Empty,
    Doc(Node, Vec<Problem>),
    Syntax(Pos, String),
    Limit(Pos, String),
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
    // Events are pulled one by one: the parser's own `load` recurses once per
    // nesting level and overflows the stack on deep input.
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => b.on_event(ev, mark),
            // The scanner has a nesting bound of its own for flow collections,
            // which it may reach while looking ahead, before our check sees them.
            Err(e) if e.info() == "recursion limit exceeded" => {
                return Parsed::Limit(pos(e.marker()), depth_message(""));
            }
            Err(e) => return Parsed::Syntax(pos(e.marker()), e.info().to_owned()),
        }
        // A limit is reported where it was crossed; nothing after it is read.
        if let Some((p, message)) = b.limit.take() {
            return Parsed::Limit(p, message);
        }
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

fn depth_message(how: &str) -> String {
    format!(
        "lists and maps nest deeper than the limit of {} levels{how}",
        limits::MAX_DEPTH
    )
}

/// How much a node weighs: its nodes, and how deep its lists and maps nest.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    height: usize,
}

/// A collection being built.
struct Frame {
    map: bool,
    start: Pos,
    anchor: usize,
    /// Items in order (a map's keys and values alternate).
    items: Vec<Node>,
    /// Key path (for problems found while building).
    path: String,
    /// Weight of the items so far.
    nodes: usize,
    height: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Weight)>,
    docs: Vec<Node>,
    problems: Vec<Problem>,
    /// Nodes aliases have expanded to so far.
    alias_nodes: usize,
    /// The first limit crossed: everything after it is ignored.
    limit: Option<(Pos, String)>,
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize, w: Weight) {
        if anchor > 0 {
            self.anchors.insert(anchor, (node.clone(), w));
        }
        match self.stack.last_mut() {
            Some(f) => {
                f.items.push(node);
                f.nodes += w.nodes;
                f.height = f.height.max(w.height);
            }
            None => self.docs.push(node),
        }
    }

    fn open(&mut self, map: bool, start: Pos, anchor: usize) {
        if self.stack.len() >= limits::MAX_DEPTH {
            self.exceeded(start, depth_message(""));
            return;
        }
        let path = self.next_path();
        self.stack.push(Frame {
            map,
            start,
            anchor,
            items: Vec::new(),
            path,
            nodes: 0,
            height: 0,
        });
    }

    fn exceeded(&mut self, p: Pos, message: String) {
        if self.limit.is_none() {
            self.limit = Some((p, message));
        }
    }

    /// Key path of the next value pushed into the current frame.
    fn next_path(&self) -> String {
        match self.stack.last() {
            Some(f) if f.map => {
                let key = f.items.last().and_then(Node::key_text).unwrap_or_default();
                child(&f.path, &key)
            }
            Some(f) => index(&f.path, f.items.len()),
            None => String::new(),
        }
    }

    fn alias(&mut self, id: usize, p: Pos) {
        let Some((node, w)) = self.anchors.get(&id) else {
            let path = self.next_path();
            self.problems.push(Problem::new(
                Some(p),
                &path,
                "expected an alias to a defined anchor, found an unknown alias",
            ));
            self.push(
                Node {
                    kind: Kind::Null,
                    pos: p,
                },
                0,
                Weight { nodes: 1, height: 0 },
            );
            return;
        };
        let w = *w;
        // Checked before copying: "billion laughs" files stop here.
        if self.alias_nodes + w.nodes > limits::MAX_ALIAS_NODES {
            self.exceeded(
                p,
                format!(
                    "aliases expand to more than the limit of {} nodes",
                    limits::MAX_ALIAS_NODES
                ),
            );
            return;
        }
        if self.stack.len() + w.height > limits::MAX_DEPTH {
            self.exceeded(p, depth_message(" (through this alias)"));
            return;
        }
        self.alias_nodes += w.nodes;
        let node = node.clone();
        self.push(node, 0, w);
    }

    fn finish_map(&mut self, start: Pos, flat: Vec<Node>, path: &str) -> Node {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
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
            if let Some(first) = seen.get(&text) {
                self.problems.push(Problem::new(
                    Some(k.pos),
                    &child(path, &text),
                    format!("duplicate key `{text}` (first written at {first}); expected every key once"),
                ));
                continue;
            }
            seen.insert(text, k.pos);
            entries.push((k, v));
        }
        // YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`): keys written in
        // the map win, then earlier merged maps win over later ones.
        let mut merged: HashSet<String> = HashSet::new();
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
                    let Some(text) = k.key_text() else { continue };
                    if merged.insert(text.clone()) && !seen.contains_key(&text) {
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
                self.push(Node { kind, pos: p }, anchor, Weight { nodes: 1, height: 0 });
            }
            Event::SequenceStart(anchor, _) => self.open(false, p, anchor),
            Event::MappingStart(anchor, _) => self.open(true, p, anchor),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(f) = self.stack.pop() else { return };
                let w = Weight {
                    nodes: f.nodes + 1,
                    height: f.height + 1,
                };
                let node = if f.map {
                    self.finish_map(f.start, f.items, &f.path)
                } else {
                    Node {
                        kind: Kind::Seq(f.items),
                        pos: f.start,
                    }
                };
                self.push(node, f.anchor, w);
            }
            Event::Alias(id) => self.alias(id, p),
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
