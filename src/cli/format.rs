//! Output formats: lago's tables and Lago's `--out-format` (`json`, `yaml`,
//! `flat`), from the same serde types.

use std::fmt::Write as _;

use serde::Serialize;

use crate::env::error::{Error, Result};

/// How a command prints data: Lago's `--out-format` (`default`, `flat`,
/// `json`, `yaml`), `table` being lago's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Columns for people.
    #[default]
    Table,
    /// JSON (pretty).
    Json,
    /// YAML, from the same serde types as JSON.
    Yaml,
    /// One `path/to/key: value` line per value (Lago's flat format).
    Flat,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" | "default" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            "flat" => Ok(Format::Flat),
            other => Err(format!("unknown format `{other}`: expected table, json, yaml or flat")),
        }
    }
}

/// `value` in `format`; `table` renders it for [`Format::Table`].
pub fn render<T: Serialize>(value: &T, format: Format, table: impl FnOnce(&T) -> String) -> Result<String> {
    let encode = |e: String| Error::Render { message: e };
    Ok(match format {
        Format::Table => table(value),
        Format::Json => serde_json::to_string_pretty(value).map_err(|e| encode(e.to_string()))? + "\n",
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| encode(e.to_string()))?,
        Format::Flat => flat(&serde_json::to_value(value).map_err(|e| encode(e.to_string()))?),
    })
}

/// One `a/b/0/c: value` line per leaf (strings unquoted, `null` as `-`).
pub fn flat(v: &serde_json::Value) -> String {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    walk(x, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string());
                    walk(x, path, out);
                    path.pop();
                }
            }
            leaf => {
                let text = match leaf {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_owned(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{}: {text}", path.join("/"));
            }
        }
    }
    let mut out = String::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}
