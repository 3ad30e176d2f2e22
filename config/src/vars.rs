//! Path values of the init file: `$VARS`, `~`, and paths relative to the init file.

use std::path::{Path, PathBuf};

/// Expands `$NAME` and `${NAME}` (`$$` is a literal `$`) and a leading `~/`,
/// then anchors a relative result at `base_dir` (the init file's folder).
/// `LAGO_INITFILE_PATH` always names `base_dir`, as in Lago.
/// An unset variable is an error naming it.
pub(crate) fn expand_path(raw: &str, base_dir: &Path, var: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, String> {
    if raw.trim().is_empty() {
        return Err("expected a path, found an empty string".into());
    }
    let lookup = |name: &str| -> Result<String, String> {
        if name == "LAGO_INITFILE_PATH" {
            return Ok(base_dir.display().to_string());
        }
        var(name).ok_or_else(|| format!("environment variable `{name}` (used in {raw:?}) is not set"))
    };
    let mut out = String::new();
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let rest = &raw[i + 2..];
                let Some(end) = rest.find('}') else {
                    return Err(format!("expected `}}` to close `${{` in {raw:?}"));
                };
                let name = &rest[..end];
                if !is_var_name(name) {
                    return Err(format!(
                        "expected a variable name inside `${{}}` in {raw:?}, found {name:?}"
                    ));
                }
                out.push_str(&lookup(name)?);
                for _ in 0..=end {
                    chars.next();
                }
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = i + 1;
                let mut end = start;
                while let Some(&(j, c)) = chars.peek() {
                    if c == '_' || c.is_ascii_alphanumeric() {
                        end = j + c.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&raw[start..end])?);
            }
            _ => out.push('$'),
        }
    }
    if out == "~" || out.starts_with("~/") {
        let home = var("HOME").ok_or_else(|| format!("`~` in {raw:?} needs HOME, which is not set"))?;
        out = format!("{home}{}", &out[1..]);
    }
    let p = PathBuf::from(out);
    Ok(if p.is_absolute() { p } else { base_dir.join(p) })
}

fn is_var_name(s: &str) -> bool {
    let mut it = s.chars();
    matches!(it.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && it.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "IMAGES" => Some("/srv/images".into()),
            "HOME" => Some("/home/u".into()),
            _ => None,
        }
    }

    #[test]
    fn variables_home_and_relative_paths() {
        let base = Path::new("/work/envs");
        let x = |s| expand_path(s, base, &env);
        assert_eq!(x("$IMAGES/a.qcow2"), Ok("/srv/images/a.qcow2".into()));
        assert_eq!(x("${IMAGES}x.qcow2"), Ok("/srv/imagesx.qcow2".into()));
        assert_eq!(x("disks/a.raw"), Ok("/work/envs/disks/a.raw".into()));
        assert_eq!(x("~/a.iso"), Ok("/home/u/a.iso".into()));
        assert_eq!(x("$LAGO_INITFILE_PATH/b"), Ok("/work/envs/b".into()));
        assert_eq!(x("/a/$$b"), Ok("/a/$b".into()));
        assert_eq!(x("/a/$"), Ok("/a/$".into()));
    }

    #[test]
    fn unset_and_malformed_variables_are_errors() {
        let base = Path::new("/w");
        let e = expand_path("$NOPE/x", base, &env).unwrap_err();
        assert!(e.contains("`NOPE`"), "{e}");
        assert!(expand_path("${IMAGES/x", base, &env).is_err());
        assert!(expand_path("${1X}/x", base, &env).is_err());
        assert!(expand_path("  ", base, &env).is_err());
    }
}
