//! The shape of the source tree stays: every module of `src/` imports only
//! from its own layer or the layers below it. The order is written here, once;
//! `docs/design.md` draws it.
//!
//! Reads the `crate::…` paths (in `use` lines and in code) of every file under
//! `src/` and finds the layer of the module each names; no VM, no libvirt.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first: (layer, the top-level modules of `src/` in it).
/// `lib.rs` and `sdk.rs` are the facade above them all; `bin/` is above that.
/// Below them all is the lago-config crate (init files, shared with the
/// proc-macro), which modules name as `lago_config`: `crate::config` is the
/// facade's re-export, and a layer never imports through the facade.
const LAYERS: &[(&str, &[&str])] = &[
    ("util", &["util"]),
    ("plan", &["plan"]),
    ("host", &["host"]),
    ("backend", &["backend"]),
    ("guest", &["guest"]),
    ("env", &["env"]),
    ("ops", &["ops"]),
    ("harness", &["harness"]),
    ("cli", &["cli"]),
];

fn layer_of_module(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// The layer a file of `src/` is in (`None`: the facade or the binary).
fn layer_of_file(rel: &Path) -> Option<usize> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let top = first.strip_suffix(".rs").unwrap_or(first);
    layer_of_module(top)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a file's code names with `crate::` (also inside
/// `use crate::{a, b::c}` groups, over several lines too), outside comments.
fn crate_imports(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name);
            }
            continue;
        };
        // The group up to its closing brace; each top-level item's first name.
        let mut depth = 1;
        let mut start = 0;
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' | ',' if depth == 1 => {
                    let name = ident(group[start..j].trim_start());
                    if !name.is_empty() {
                        out.push(name);
                    }
                    start = j + 1;
                    if c == '}' {
                        break;
                    }
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(mine) = layer_of_file(rel) else { continue };
        let text = fs::read_to_string(f).unwrap();
        for m in crate_imports(&text) {
            // A name the crate root re-exports (`crate::Error`, `crate::error_chain`) is the
            // facade's, above every layer: a layer names the module it is in.
            // `#[macro_export]` macros live at the crate root whatever defines them.
            if m.starts_with("__lago") {
                continue;
            }
            let Some(theirs) = layer_of_module(&m) else {
                wrong.push(format!(
                    "{} ({}) names crate::{m}, which is no layer's module (the facade's re-export?)",
                    rel.display(),
                    LAYERS[mine].0
                ));
                continue;
            };
            if theirs > mine {
                wrong.push(format!(
                    "{} ({}) imports crate::{m} ({}), a layer above it",
                    rel.display(),
                    LAYERS[mine].0,
                    LAYERS[theirs].0
                ));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_import_reader_sees_groups_and_skips_comments() {
    let text = "use crate::{util::cmd, host::workdir};\nlet x = crate::env::Env::load(p); // crate::cli::x\n\
                use crate::{\n    guest::{ssh, boot},\n    ops::gc,\n};\n";
    assert_eq!(crate_imports(text), ["util", "host", "env", "guest", "ops"]);
    assert_eq!(layer_of_file(Path::new("host/store/repo.rs")), Some(2));
    assert_eq!(layer_of_file(Path::new("lib.rs")), None);
    // The facade's re-export of lago-config is no layer: modules name the crate.
    assert_eq!(layer_of_module("config"), None);
}
