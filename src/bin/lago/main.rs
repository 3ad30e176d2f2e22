//! `lago`: the command line over the lago library. Argument parsing and one
//! small function per command; what commands show and do lives in the
//! library (`lago::cli` for output, `lago::Env` for the verbs).

mod args;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lago::{Result, error_chain};

use args::*;
use commands::*;

fn init_tracing(verbose: u8, command: &Command) {
    // On a terminal, `init` and `start` show their progress: each VM's boot stages.
    let progress = std::io::stderr().is_terminal() && matches!(command, Command::Init(_) | Command::Start { .. });
    let default = match verbose {
        0 if progress => "warn,lago::vm=info,lago::env=info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, &cli.command);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            // The user's input: 2 (as Lago did); anything else: 1.
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}
fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        workdir: cli.workdir,
        tty: std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Validate(a) => validate(a),
        Command::Init(a) => init(&ctx, a),
        Command::Start { vms, cold } => start(&ctx, &vms, cold),
        Command::Stop { vms } => ctx.env()?.stop(&names(&vms)).map(|()| ExitCode::SUCCESS),
        Command::Shutdown { vms, timeout } => ctx
            .env()?
            .shutdown(&names(&vms), Duration::from_secs(timeout))
            .map(|()| ExitCode::SUCCESS),
        Command::Status { output } => status(&ctx, output.get()),
        Command::Shell { vm, command } => shell(&ctx, &vm, &command),
        Command::Console { vm } => console(&ctx, &vm),
        Command::CopyToVm { vm, src, dst } => copy_to_vm(&ctx, &vm, &src, &dst),
        Command::CopyFromVm { vm, src, dst } => copy_from_vm(&ctx, &vm, &src, &dst),
        Command::Collect(a) => collect(&ctx, a),
        Command::Deploy { vms, output } => deploy(&ctx, &vms, output.get()),
        Command::Export(a) => export(&ctx, a),
        Command::AnsibleHosts(a) => ansible_hosts(&ctx, a),
        Command::SshConfig { json } => ssh_config(&ctx, json),
        Command::Destroy { yes } => destroy(&ctx, yes),
        Command::Snapshot(a) => snapshot(&ctx, a),
        Command::Revert { name } => revert(&ctx, &name),
        Command::Gc(a) => gc(a),
        Command::Doctor(a) => doctor(a),
        Command::Completions { shell } => {
            print_out(&completion_script(shell));
            Ok(ExitCode::SUCCESS)
        }
        Command::Template { command } => template(&ctx, command),
        Command::Warm { command } => warm(&ctx, command),
        Command::Replay(a) => replay(&ctx, a),
    }
}

#[cfg(test)]
mod ci_recipes;
#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use lago::cli::Format;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        match Cli::try_parse_from(args) {
            Ok(c) => c,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn validate_defaults_to_lago_init_file_and_takes_a_format() {
        let cli = parse(&["lago", "validate"]);
        assert!(
            matches!(cli.command, Command::Validate(ref a) if a.init_file == Path::new("LagoInitFile") && a.output.get() == Format::Table)
        );
        let cli = parse(&["lago", "-vv", "validate", "env.yaml", "--json"]);
        assert_eq!(cli.verbose, 2);
        assert!(
            matches!(cli.command, Command::Validate(ref a) if a.init_file == Path::new("env.yaml") && a.output.get() == Format::Json)
        );
        for (flag, want) in [
            ("yaml", Format::Yaml),
            ("flat", Format::Flat),
            ("default", Format::Table),
            ("table", Format::Table),
        ] {
            let cli = parse(&["lago", "validate", "--format", flag]);
            assert!(
                matches!(cli.command, Command::Validate(ref a) if a.output.get() == want),
                "{flag}"
            );
        }
        let cli = parse(&["lago", "status", "--out-format", "yaml"]);
        assert!(matches!(cli.command, Command::Status { output } if output.get() == Format::Yaml));
        let err = Cli::try_parse_from(["lago", "status", "--format", "xml"]).unwrap_err();
        assert!(err.to_string().contains("table, json, yaml or flat"), "{err}");
        assert!(Cli::try_parse_from(["lago", "status", "--json", "--format", "yaml"]).is_err());
    }

    #[test]
    fn lifecycle_verbs_take_vm_names_and_a_global_workdir() {
        let cli = parse(&["lago", "-w", "/tmp/w", "start", "vm01", "vm02"]);
        assert_eq!(cli.workdir, Some(PathBuf::from("/tmp/w")));
        assert!(matches!(cli.command, Command::Start { ref vms, cold: false } if vms == &["vm01", "vm02"]));
        let cli = parse(&["lago", "start", "--cold"]);
        assert!(matches!(cli.command, Command::Start { ref vms, cold: true } if vms.is_empty()));
        let cli = parse(&["lago", "warm", "clear", "--dry-run", "ab12"]);
        assert!(
            matches!(cli.command, Command::Warm { command: WarmCommand::Clear { ref keys, dry_run: true } } if keys == &["ab12"])
        );
        let cli = parse(&[
            "lago",
            "-w",
            "w",
            "replay",
            "b",
            "--template-repo",
            "r1",
            "--template-repo",
            "r2",
        ]);
        assert!(
            matches!(cli.command, Command::Replay(ReplayArgs { ref bundle, list: false, ref template_repo, .. }) if bundle == Path::new("b") && template_repo == &["r1", "r2"])
        );
        let cli = parse(&["lago", "replay", "--list", "b", "--format", "json"]);
        assert!(
            matches!(cli.command, Command::Replay(ReplayArgs { list: true, ref output, .. }) if output.get() == Format::Json)
        );
        assert!(Cli::try_parse_from(["lago", "replay"]).is_err(), "the bundle is needed");
        let cli = parse(&["lago", "stop", "-w", "x"]);
        assert_eq!(cli.workdir, Some(PathBuf::from("x")));
        assert!(matches!(cli.command, Command::Stop { ref vms } if vms.is_empty()));
        let cli = parse(&["lago", "shutdown", "--timeout", "5", "vm01"]);
        assert!(matches!(cli.command, Command::Shutdown { timeout: 5, .. }));
        let cli = parse(&["lago", "init", "env.yaml", "--accel", "tcg"]);
        assert!(matches!(
            cli.command,
            Command::Init(InitArgs {
                accel: Some(lago::backend::AccelChoice::Tcg),
                ..
            })
        ));
        assert!(Cli::try_parse_from(["lago", "init", "--accel", "hvf"]).is_err());
    }

    #[test]
    fn shell_takes_the_command_after_double_dash() {
        let cli = parse(&["lago", "shell", "vm01", "--", "ls", "-l", "/"]);
        assert!(
            matches!(cli.command, Command::Shell { ref vm, ref command } if vm == "vm01" && command == &["ls", "-l", "/"])
        );
        let cli = parse(&["lago", "copy-to-vm", "vm01", "a.txt", "/tmp/a.txt"]);
        assert!(matches!(cli.command, Command::CopyToVm { ref dst, .. } if dst == "/tmp/a.txt"));
        let cli = parse(&["lago", "destroy", "--yes"]);
        assert!(matches!(cli.command, Command::Destroy { yes: true }));
        let cli = parse(&["lago", "template", "list", "--format", "yaml"]);
        assert!(matches!(
            cli.command,
            Command::Template { command: TemplateCommand::List { output } } if output.get() == Format::Yaml
        ));
        for (args, want) in [
            (&["lago", "template", "build"][..], "tiny"),
            (&["lago", "template", "build", "debian-12"][..], "debian-12"),
        ] {
            let cli = parse(args);
            assert!(
                matches!(cli.command, Command::Template { command: TemplateCommand::Build { ref name, kernel: false } } if name == want),
                "{args:?}"
            );
        }
        let err = Cli::try_parse_from(["lago", "template", "build", "centos-7"]).unwrap_err();
        assert!(err.to_string().contains("debian-12"), "{err}");
    }

    #[test]
    fn snapshot_takes_a_name_or_list_and_revert_a_name() {
        let cli = parse(&["lago", "snapshot", "booted"]);
        assert!(
            matches!(cli.command, Command::Snapshot(SnapshotArgs { name: Some(ref n), list: false, .. }) if n == "booted")
        );
        let cli = parse(&["lago", "snapshot", "--list", "--json"]);
        assert!(
            matches!(cli.command, Command::Snapshot(SnapshotArgs { name: None, list: true, output }) if output.get() == Format::Json)
        );
        assert!(Cli::try_parse_from(["lago", "snapshot"]).is_err(), "a name or --list");
        assert!(Cli::try_parse_from(["lago", "snapshot", "x", "--list"]).is_err());
        let cli = parse(&["lago", "revert", "booted"]);
        assert!(matches!(cli.command, Command::Revert { ref name } if name == "booted"));
        let cli = parse(&["lago", "gc", "--dry-run", "--all-uris", "--format", "flat"]);
        assert!(matches!(
            cli.command,
            Command::Gc(GcArgs {
                dry_run: true,
                all_uris: true,
                output,
                ..
            }) if output.get() == Format::Flat
        ));
        let cli = parse(&["lago", "gc", "--orphans", "ab12cd34", "ef56"]);
        assert!(
            matches!(cli.command, Command::Gc(GcArgs { ref orphans, .. }) if orphans.iter().map(|o| o.as_str()).eq(["ab12cd34", "ef56"]))
        );
        assert!(
            Cli::try_parse_from(["lago", "gc", "--orphans", "Not-An-Id"]).is_err(),
            "env ids are checked"
        );
    }

    #[test]
    fn parity_verbs_parse_as_lago_spelled_them() {
        let cli = parse(&["lago", "collect", "--output", "out", "vm01"]);
        assert!(matches!(cli.command, Command::Collect(ref a) if a.output == Path::new("out") && a.vms == ["vm01"]));
        assert!(
            Cli::try_parse_from(["lago", "collect"]).is_err(),
            "--output is required"
        );
        let cli = parse(&["lago", "deploy"]);
        assert!(matches!(cli.command, Command::Deploy { ref vms, .. } if vms.is_empty()));
        let cli = parse(&["lago", "export", "-d", "out", "--layered", "vm02"]);
        assert!(
            matches!(cli.command, Command::Export(ref a) if a.dst_dir == Path::new("out") && a.layered && !a.shutdown && a.vms == ["vm02"] && a.init_file_name == "LagoInitFile")
        );
        assert!(
            Cli::try_parse_from(["lago", "export"]).is_err(),
            "--dst-dir is required"
        );
        for verb in ["ansible-hosts", "ansible_hosts"] {
            let cli = parse(&["lago", verb, "--format", "yaml"]);
            assert!(
                matches!(cli.command, Command::AnsibleHosts(ref a) if a.format == lago::inventory::InventoryFormat::Yaml && a.keys.is_empty()),
                "{verb}"
            );
        }
        let cli = parse(&["lago", "ansible-hosts", "-k", "vm-type", "distro"]);
        assert!(matches!(cli.command, Command::AnsibleHosts(ref a) if a.keys == ["vm-type", "distro"]));
        assert!(Cli::try_parse_from(["lago", "ansible-hosts", "--format", "toml"]).is_err());
        let cli = parse(&["lago", "-w", "w", "ssh-config"]);
        assert!(matches!(cli.command, Command::SshConfig { json: false }));
    }

    #[test]
    fn the_whole_command_tree_passes_clap_s_checks_and_completes() {
        use clap::CommandFactory;
        // Every subcommand built, as `--help` or a completion script builds it
        // (`template import --version` once clashed with the propagated `--version`).
        Cli::command().debug_assert();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = completion_script(shell);
            assert!(!script.contains('\u{FFFD}'), "{shell:?} completion is not UTF-8");
            for verb in ["doctor", "completions", "ansible-hosts", "template"] {
                assert!(script.contains(verb), "{shell:?} completion lacks {verb}");
            }
        }
        let cli = Cli::try_parse_from([
            "lago",
            "template",
            "import",
            "disk.qcow2",
            "--name",
            "t",
            "--version",
            "7",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Template {
                command: TemplateCommand::Import { version: Some(ref v), .. }
            } if v == "7"
        ));
        let cli = Cli::try_parse_from(["lago", "doctor", "--json", "--libvirt-uri", "test:///default"]).unwrap();
        assert!(matches!(cli.command, Command::Doctor(ref a) if a.libvirt_uri.as_deref() == Some("test:///default")));
        assert!(Cli::try_parse_from(["lago", "completions", "nope"]).is_err());
    }

    #[test]
    fn cli_reference_in_docs_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
        let now = reference::cli_reference();
        if std::env::var_os("LAGO_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &now).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == now,
            "{} is not what the CLI says: run `LAGO_BLESS=1 cargo test --bin lago cli_reference`",
            path.display()
        );
        // A command's own `--version` option is listed (only clap's flag is not).
        let import = now.split("## `lago template import`").nth(1).unwrap();
        assert!(
            import.split("\n## ").next().unwrap().contains("`--version`"),
            "{import}"
        );
        for verb in [
            "`lago doctor`",
            "`lago template import`",
            "`lago completions`",
            "`--format`",
        ] {
            assert!(now.contains(verb), "{verb} missing");
        }
    }

    #[test]
    fn unknown_verbs_and_flags_are_usage_errors() {
        assert!(Cli::try_parse_from(["lago", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["lago", "validate", "--yaml"]).is_err());
        assert!(Cli::try_parse_from(["lago"]).is_err());
    }
}
