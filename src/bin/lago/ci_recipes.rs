//! The CI recipes under `examples/ci/` stay runnable: every `lago` command
//! they run parses with this CLI, every runner argument with the runner's
//! parser, the scripts they call exist, and what they upload is what the
//! suite writes.

use std::path::{Path, PathBuf};

use clap::Parser;

use super::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Shell words of `line`, with `&&`, `||`, `;` and `|` as words of their
/// own; quotes are removed, `$(…)` stays one word. Enough for the recipes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                started = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                started = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        _ => cur.push(c),
                    }
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                started = true;
                cur.push('$');
                let mut depth = 0;
                for c in chars.by_ref() {
                    cur.push(c);
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        break;
                    }
                }
            }
            '#' if !started => break,
            ' ' | '\t' | '\n' => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            ';' | '&' | '|' => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    op.push(c);
                    chars.next();
                }
                out.push(op);
            }
            _ => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// The simple commands of a shell text (continuation lines joined), each
/// with leading `VAR=value` words and a function definition's `f() {` taken
/// off; a command under `netns-run` is listed with and without it.
fn commands(text: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        for cmd in words(line).split(|w| matches!(w.as_str(), "&&" | "||" | ";" | "|" | "&")) {
            let mut cmd: Vec<String> = cmd
                .iter()
                // A function body's `{` (`f() { cmd; }`) opens nothing here.
                .skip_while(|w| w.ends_with("()") || *w == "{" || *w == "}")
                .skip_while(|w| {
                    w.split_once('=')
                        .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                })
                .cloned()
                .collect();
            if cmd
                .first()
                .is_some_and(|w| w == "netns_run" || w.ends_with("scripts/netns-run"))
            {
                out.push(cmd.clone());
                cmd.remove(0);
            }
            // A trap's handler runs too.
            if cmd.first().is_some_and(|w| w == "trap")
                && let Some(handler) = cmd.get(1)
            {
                out.extend(commands(handler));
            }
            if !cmd.is_empty() {
                out.push(cmd);
            }
        }
    }
    out
}

/// What one recipe runs, checked: the lago verbs it uses, and the JUnit
/// paths its suite runs write.
#[derive(Default)]
struct Checked {
    verbs: Vec<String>,
    junit: Vec<String>,
    scripts: Vec<String>,
}

fn check(file: &str, shell: &[String]) -> Checked {
    let mut seen = Checked::default();
    for text in shell {
        for cmd in commands(text) {
            let first = cmd[0].as_str();
            if first == "lago" {
                if let Err(e) = Cli::try_parse_from(&cmd) {
                    panic!("{file}: `{}` is not a command lago takes:\n{e}", cmd.join(" "));
                }
                seen.verbs.push(
                    cmd[1..]
                        .iter()
                        .take_while(|w| !w.starts_with('-'))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            } else if let Some(script) = first
                .strip_prefix("$LAGO_SRC/")
                .or_else(|| first.strip_prefix("$lago_src/"))
            {
                assert!(
                    root().join(script).is_file(),
                    "{file}: runs {script}, which lago does not have"
                );
                seen.scripts.push(script.to_owned());
            } else if first == "cargo" && cmd.get(1).is_some_and(|w| w == "test") {
                let Some(dash) = cmd.iter().position(|w| w == "--") else {
                    continue;
                };
                // The runner takes `--junit PATH` out, and gives the rest to libtest-mimic.
                let mut rest = vec!["suite".to_owned()];
                let mut it = cmd[dash + 1..].iter();
                while let Some(a) = it.next() {
                    if a == "--junit" {
                        let path = it.next().unwrap_or_else(|| panic!("{file}: --junit without a path"));
                        // Absolute (the runner's folder is the package's, not always the
                        // job's); uploaded relative to the job's folder.
                        let rel = path
                            .strip_prefix("$PWD/")
                            .or_else(|| path.strip_prefix("$CI_PROJECT_DIR/"))
                            .unwrap_or_else(|| panic!("{file}: --junit {path} is not under the job's folder"));
                        seen.junit.push(rel.to_owned());
                    } else {
                        rest.push(a.clone());
                    }
                }
                if let Err(e) = <libtest_mimic::Arguments as Parser>::try_parse_from(&rest) {
                    panic!("{file}: `{}`: the runner does not take {rest:?}:\n{e}", cmd.join(" "));
                }
            }
        }
    }
    // Each recipe checks the host, sweeps, builds tiny's kernel ahead, and runs a suite with JUnit.
    for verb in ["doctor", "gc", "template build tiny"] {
        assert!(
            seen.verbs.iter().any(|v| v == verb),
            "{file}: never runs `lago {verb}` ({:?})",
            seen.verbs
        );
    }
    assert_eq!(seen.junit.len(), 1, "{file}: one suite run writes JUnit");
    assert!(
        seen.scripts.iter().any(|s| s == "scripts/setup-host"),
        "{file}: no host setup"
    );
    assert!(
        seen.scripts.iter().any(|s| s == "scripts/netns-run"),
        "{file}: the suite must run in the namespace"
    );
    // The packages tiny's kernel build needs are the ones scripts/test installs.
    let kernel_pkgs = "linux-source-6.1 build-essential flex bison libelf-dev bc";
    assert!(
        read("scripts/test").contains(kernel_pkgs),
        "scripts/test changed its kernel packages"
    );
    assert!(
        shell.iter().any(|s| s.contains(kernel_pkgs)),
        "{file}: installs other kernel build packages than scripts/test"
    );
    seen
}

fn strings(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::String(s) => vec![s.clone()],
        serde_yaml::Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn github_actions_recipe_runs_what_lago_has() {
    let file = "examples/ci/github-actions.yml";
    let doc = yaml(file);
    assert!(
        doc["on"]["schedule"][0]["cron"].is_string(),
        "{file}: a nightly schedule"
    );
    let jobs = doc["jobs"].as_mapping().expect("jobs");
    assert_eq!(jobs.len(), 1);
    let job = jobs.values().next().unwrap();
    assert_eq!(job["container"]["image"], "debian:12");
    assert!(job["container"]["options"].as_str().unwrap().contains("--privileged"));
    let steps = job["steps"].as_sequence().expect("steps");
    let runs: Vec<String> = steps.iter().flat_map(|s| strings(&s["run"])).collect();
    let seen = check(file, &runs);
    // The template store is cached where the job keeps it, and the report and artifacts uploaded.
    let store = doc["env"]["LAGO_TEMPLATE_STORE"].as_str().expect("LAGO_TEMPLATE_STORE");
    let uses = |name: &str| {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(name)))
            .unwrap_or_else(|| panic!("{file}: no {name} step"))
    };
    // Restored first, saved right after tiny's kernel is built (so a failing suite keeps it).
    for step in ["actions/cache/restore@", "actions/cache/save@"] {
        let paths = uses(step)["with"]["path"].as_str().unwrap();
        assert!(paths.lines().any(|l| l.trim() == store), "{step}: {paths}");
    }
    let at = |name: &str| {
        steps
            .iter()
            .position(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(name)))
    };
    let kernel = steps
        .iter()
        .position(|s| strings(&s["run"]).iter().any(|r| r.contains("build tiny --kernel")))
        .unwrap();
    assert_eq!(at("actions/cache/save@"), Some(kernel + 1));
    let upload = uses("actions/upload-artifact@");
    assert_eq!(upload["if"], "always()");
    let paths = upload["with"]["path"].as_str().unwrap();
    assert!(
        paths.contains("target/lago-artifacts/") && paths.contains(&seen.junit[0]),
        "{paths}"
    );
    // The sweep after the suite runs whatever the suite did.
    assert!(
        steps
            .iter()
            .any(|s| s["if"] == "always()" && strings(&s["run"]).iter().any(|r| r.contains("lago gc")))
    );
}

#[test]
fn gitlab_recipe_runs_what_lago_has() {
    let file = "examples/ci/gitlab-ci.yml";
    let doc = yaml(file);
    let job = &doc["lago-nightly"];
    assert_eq!(job["image"], "debian:12");
    let shell: Vec<String> = ["before_script", "script", "after_script"]
        .iter()
        .flat_map(|k| strings(&job[*k]))
        .collect();
    let seen = check(file, &shell);
    assert!(
        strings(&job["after_script"]).iter().any(|s| s.contains("lago gc")),
        "{file}: gc after"
    );
    assert_eq!(job["artifacts"]["when"], "always");
    assert_eq!(
        job["artifacts"]["reports"]["junit"].as_str(),
        Some(seen.junit[0].as_str())
    );
    assert!(
        strings(&job["artifacts"]["paths"])
            .iter()
            .any(|p| p == "target/lago-artifacts/")
    );
    // GitLab caches only folders of the project: the store must be one.
    let store = job["variables"]["LAGO_TEMPLATE_STORE"].as_str().unwrap();
    let rel = store
        .strip_prefix("$CI_PROJECT_DIR/")
        .expect("store inside the project");
    assert!(strings(&job["cache"]["paths"]).iter().any(|p| p == rel));
}

#[test]
fn self_hosted_recipe_runs_what_lago_has() {
    let file = "examples/ci/self-hosted.sh";
    let text = read(file);
    let ok = std::process::Command::new("bash")
        .arg("-n")
        .arg(root().join(file))
        .status()
        .unwrap();
    assert!(ok.success(), "{file}: bash -n");
    let seen = check(file, std::slice::from_ref(&text));
    assert!(
        seen.verbs.iter().filter(|v| *v == "gc").count() >= 2,
        "{file}: gc before and after"
    );
    assert!(text.contains("trap 'netns_run lago gc' EXIT"));
}

#[test]
fn the_recipe_checker_sees_commands_and_refuses_bad_ones() {
    assert_eq!(
        commands("A=1 lago -v doctor --json && \"$LAGO_SRC/scripts/netns-run\" lago gc --dry-run # sweep"),
        [
            vec!["lago", "-v", "doctor", "--json"],
            vec!["$LAGO_SRC/scripts/netns-run", "lago", "gc", "--dry-run"],
            vec!["lago", "gc", "--dry-run"],
        ]
    );
    assert_eq!(commands("x=$(dirname \"$(a | b)\") \\\n  y"), [vec!["y"]]);
    let bad = std::panic::catch_unwind(|| check("t", &["lago doctr".to_owned()]));
    assert!(bad.is_err());
    let bad = std::panic::catch_unwind(|| check("t", &["cargo test -- --no-such-flag".to_owned()]));
    assert!(bad.is_err());
    assert!(Path::new(&root().join("scripts/netns-run")).is_file());
}
