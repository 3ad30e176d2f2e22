//! `docs/cli.md`, generated from the clap definition (its test keeps the
//! file current).

use crate::args::Cli;

/// The CLI reference (`docs/cli.md`), in Markdown, from the clap definition itself.
pub(crate) fn cli_reference() -> String {
    use clap::CommandFactory;
    fn section(cmd: &mut clap::Command, path: &str, out: &mut String) {
        let name = if path.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{path} {}", cmd.get_name())
        };
        out.push_str(&format!("\n## `{name}`\n\n"));
        if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
            out.push_str(&format!("{about}\n\n"));
        }
        let usage = cmd.render_usage().to_string();
        out.push_str(&format!("```text\n{}\n```\n", usage.trim_start_matches("Usage: ")));
        let args: Vec<String> = cmd
            .get_arguments()
            // clap's own --help and --version (not a command's `--version` option).
            .filter(|a| !a.is_hide_set() && !matches!(a.get_action(), clap::ArgAction::Help | clap::ArgAction::Version))
            .map(|a| {
                let names = if a.is_positional() {
                    format!("`<{}>`", a.get_id().as_str().to_uppercase())
                } else {
                    [
                        a.get_short().map(|s| format!("`-{s}`")),
                        a.get_long().map(|l| format!("`--{l}`")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
                };
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                format!("| {names} | {} |", help.replace('|', "\\|").replace('\n', " "))
            })
            .collect();
        if !args.is_empty() {
            out.push_str("\n| argument | meaning |\n|---|---|\n");
            for a in args {
                out.push_str(&a);
                out.push('\n');
            }
        }
        let mut subs: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
        for s in &mut subs {
            if s.get_name() != "help" {
                section(s, &name, out);
            }
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = String::from(
        "# `lago` command reference\n\nGenerated from the command's own definition by the `lago` binary's \
         unit tests (`LAGO_BLESS=1 cargo test --bin lago cli_reference` rewrites it); do not edit by hand.\n",
    );
    section(&mut cmd, "", &mut out);
    out
}
