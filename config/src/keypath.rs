//! Key paths of problems: `domains.vm01.nics[0].net`.

/// The key path of `key` under `path` (`domains.vm01`), quoted when the key
/// holds characters of the path syntax.
pub(crate) fn child(path: &str, key: &str) -> String {
    let needs_quotes = key.is_empty() || key.contains(['.', '[', ']', ' ', '"']);
    let key = if needs_quotes {
        format!("{key:?}")
    } else {
        key.to_owned()
    };
    if path.is_empty() { key } else { format!("{path}.{key}") }
}

/// The key path of item `i` of the list at `path` (`nics[0]`).
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
