//! The README and `docs/` stay navigable: every relative link points at a
//! file of the repository and, with a `#fragment`, at a heading of it; the
//! README stays a newcomer's page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files: README.md and docs/*.md.
fn pages() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links in `text`'s prose.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            assert!(
                target.exists(),
                "{}: link `{link}`: {} does not exist",
                page.display(),
                target.display()
            );
            if !fragment.is_empty() {
                let body = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&body).contains(fragment),
                    "{}: link `{link}`: no heading `#{fragment}` in {} (it has {:?})",
                    page.display(),
                    target.display(),
                    anchors(&body)
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} links found: the link scan is broken");
}

#[test]
fn every_doc_is_linked_from_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap().to_owned())
        .collect();
    for page in pages().into_iter().skip(1) {
        let rel = Path::new("docs").join(page.file_name().unwrap());
        assert!(
            linked.contains(rel.to_str().unwrap()),
            "README does not link {}",
            rel.display()
        );
    }
}

#[test]
fn the_readme_stays_a_newcomers_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 400,
        "README.md has {lines} lines: move reference material into docs/"
    );
    // The two commands a newcomer runs.
    assert!(readme.contains("./scripts/quickstart") && readme.contains("./scripts/test"));
}

#[test]
fn the_link_scan_sees_links_and_anchors() {
    let text = "# A `b` c!\n```\n[no](x.md)\n```\nsee [y](y.md#a-b-c) and [z](#q)\n## Q\n";
    assert_eq!(links(text), ["y.md#a-b-c", "#q"]);
    assert_eq!(anchors(text), BTreeSet::from(["a-b-c".to_owned(), "q".to_owned()]));
    assert_eq!(
        slug("Sweeping crashed runs: `lago gc`"),
        "sweeping-crashed-runs-lago-gc"
    );
    assert_eq!(slug("`Env` and `Vm`"), "env-and-vm");
}
