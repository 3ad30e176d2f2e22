//! How many Lago init files of a folder lago loads, and why the others do
//! not (a report, not a test).
//!
//! ```sh
//! cargo run --example lago_compat -- DIR [--strict]
//! ```
//!
//! This is how the "Coming from Lago" figures in docs/coming-from-lago.md were measured:
//! DIR held every `LagoInitFile`, `init.json` and `common/init-configs` file
//! of oVirt's system-test history, rendered as its suites rendered them.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strict = args.iter().any(|a| a == "--strict");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: lago_compat DIR [--strict]")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json" | "in")
            )
        })
        .collect();
    files.sort();
    let (mut loaded, mut warned) = (0, 0);
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match lago::config::load_with(f, lago::config::LoadOptions { strict }) {
            Ok(spec) => {
                loaded += 1;
                warned += spec.warnings.len();
                println!("loads  {name} ({} warnings)", spec.warnings.len());
            }
            Err(e) => {
                println!("FAILS  {name}");
                for p in e.problems() {
                    println!("         {p}");
                }
                if e.problems().is_empty() {
                    println!("         {e}");
                }
            }
        }
    }
    println!("\n{loaded} of {} load ({warned} warnings in all)", files.len());
    Ok(())
}
