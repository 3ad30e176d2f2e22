//! `lago`: the command line over the lago library.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use lago::config::{self, DiskBus, DiskSource, EnvSpec};
use lago::error_chain;
use lago::plan::{self, EnvId, EnvPlan};

/// Turn a Lago init file into VMs and networks, and drive them.
#[derive(Debug, Parser)]
#[command(name = "lago", version, about, propagate_version = true)]
struct Cli {
    /// The environment's workdir (default: `.lago` in this folder or the nearest parent that has one;
    /// for `init`, `./.lago`).
    #[arg(short, long, global = true, value_name = "DIR")]
    workdir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate an init file and print the plan, without creating anything.
    ///
    /// Subnets shown are a preview: `lago init` leases real ones.
    Validate {
        /// The init file (YAML or JSON).
        #[arg(default_value = "LagoInitFile")]
        init_file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Lago keys lago does not act on are errors, not warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Create an environment (workdir, leases, keys, disk images, seeds); starts nothing.
    Init {
        /// The init file (YAML or JSON).
        #[arg(default_value = "LagoInitFile")]
        init_file: PathBuf,
        /// Lago keys lago does not act on are errors, not warnings.
        #[arg(long)]
        strict: bool,
        /// Accelerator: auto (KVM where usable), kvm or tcg. Default: LAGO_ACCEL, else auto.
        #[arg(long, value_name = "auto|kvm|tcg")]
        accel: Option<lago::backend::AccelChoice>,
        /// libvirt URI (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
        #[arg(long, value_name = "URI")]
        libvirt_uri: Option<String>,
        /// A template repository: the URL or path of its repo.metadata (repeatable;
        /// asked in order, before the built-in templates; also LAGO_TEMPLATE_REPO).
        #[arg(long = "template-repo", alias = "template-repo-path", value_name = "URL|PATH")]
        template_repo: Vec<String>,
        /// Use only the template store: download and build nothing (also LAGO_OFFLINE=1).
        #[arg(long)]
        offline: bool,
    },
    /// Start the networks and VMs (all, or the VMs named) and wait until they answer SSH.
    Start {
        /// VMs to start (default: all).
        vms: Vec<String>,
    },
    /// Power VMs off at once (all, or the VMs named), then stop unused networks.
    Stop {
        /// VMs to stop (default: all).
        vms: Vec<String>,
    },
    /// Shut VMs down through ACPI and wait for them to power off.
    Shutdown {
        /// VMs to shut down (default: all).
        vms: Vec<String>,
        /// Seconds to wait for each VM.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show the state of every VM and network.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command on a VM over SSH (exit code: the command's), or an interactive shell.
    Shell {
        /// The VM.
        vm: String,
        /// The command and its arguments (after `--`); none: an interactive shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Attach to a VM's serial console (virsh console; Ctrl-] leaves).
    Console {
        /// The VM.
        vm: String,
    },
    /// Copy a local file or folder to a VM, like `cp -r`.
    ///
    /// The copy goes to DST, or inside DST when it is an existing folder (or ends with `/`).
    /// An existing file is replaced only by a file; an existing folder is never replaced.
    /// Limits: LAGO_COPY_TIMEOUT (seconds, default 600), LAGO_COPY_MAX_BYTES (default 1G).
    CopyToVm {
        /// The VM.
        vm: String,
        /// Local path.
        src: PathBuf,
        /// Absolute path on the VM.
        dst: String,
    },
    /// Copy a file or folder from a VM, like `cp -r`.
    ///
    /// The copy goes to DST, or inside DST when it is an existing folder. An existing file is
    /// replaced only by a file; an existing folder is never replaced; nothing else is deleted.
    /// Only regular files and folders are written (symlinks, devices: skipped, and said so).
    /// Limits: LAGO_COPY_TIMEOUT (seconds, default 600), LAGO_COPY_MAX_BYTES (default 1G).
    CopyFromVm {
        /// The VM.
        vm: String,
        /// Absolute path on the VM.
        src: String,
        /// Local path.
        dst: PathBuf,
    },
    /// Destroy the environment: VMs, networks, leases and the workdir.
    Destroy {
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
    /// Take a snapshot of every running VM (disks and memory), or list the snapshots.
    Snapshot {
        /// The snapshot's name.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// List the snapshots instead.
        #[arg(long, conflicts_with = "name")]
        list: bool,
        /// With --list: print JSON.
        #[arg(long, requires = "list")]
        json: bool,
    },
    /// Revert every VM to a snapshot; they run and answer SSH when this returns.
    Revert {
        /// The snapshot's name.
        name: String,
    },
    /// Remove the environments crashed runs left behind (domains, networks, leases, workdirs).
    ///
    /// Only environments that are provably gone on this machine: their workdir is missing, or
    /// the process that owned them (a test run) is gone. Never a running one, one kept by
    /// LAGO_KEEP, one made by `lago init` whose workdir exists, or one owned by another machine.
    Gc {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also look at every libvirt URI that environments on this machine recorded.
        #[arg(long)]
        all_uris: bool,
        /// libvirt URI to look at (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
        #[arg(long, value_name = "URI")]
        libvirt_uri: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Templates in the store.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// List the templates in the store: name, version, source, size, last use, users.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build (or find up to date) a built-in template: `tiny` (from the
    /// host's packages, seconds) or `debian-12` (from Debian's mirror with
    /// mmdebstrap, minutes; needs root).
    Build {
        /// The template.
        #[arg(default_value = "tiny", value_parser = ["tiny", "debian-12"])]
        name: String,
    },
    /// Download a template from a repository into the store (a no-op when it is there).
    Pull {
        /// NAME or NAME:VERSION (default: the newest version).
        template: String,
        /// The repository: URL or path of its repo.metadata (repeatable; also LAGO_TEMPLATE_REPO).
        #[arg(long = "template-repo", alias = "template-repo-path", value_name = "URL|PATH")]
        template_repo: Vec<String>,
    },
    /// Copy a local qcow2 or raw image into the store.
    Import {
        /// The image file.
        file: PathBuf,
        /// The template's name.
        #[arg(long)]
        name: String,
        /// Its version (default: the first 12 hex digits of its sha256).
        #[arg(long)]
        version: Option<String>,
    },
    /// Write store templates into DIR as a Lago repository (xz images, sha256
    /// and sha1 sidecars, repo.metadata) to host on any web server.
    Publish {
        /// The repository folder (created; an existing repo.metadata is extended).
        dir: PathBuf,
        /// Templates to publish, NAME or NAME:VERSION (default: all).
        #[arg(long = "template", value_name = "NAME[:VERSION]")]
        templates: Vec<String>,
        /// The repository's name (default: the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// The baseurl written in repo.metadata (default `.`: beside it).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// xz preset 0-9.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
        xz_level: u32,
    },
    /// Re-hash templates against the sha256 recorded when they entered the store.
    Verify {
        /// NAME or NAME:VERSION (default: all).
        templates: Vec<String>,
    },
    /// Remove templates no existing environment uses (the newest version of each stays).
    Prune {
        /// Show what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the newest versions too.
        #[arg(long)]
        all: bool,
    },
}

/// How the command failed: the user's input (exit 2) or anything else (exit 1).
enum Failure {
    Usage(String),
    Other(String),
}

impl From<lago::Error> for Failure {
    fn from(e: lago::Error) -> Self {
        use lago::Error as E;
        let text = error_chain(&e);
        match e {
            E::Config(_)
            | E::NoEnv { .. }
            | E::NoSuchVm { .. }
            | E::WorkdirExists { .. }
            | E::WorkdirNotEmpty { .. }
            | E::SnapshotName { .. }
            | E::SnapshotExists { .. }
            | E::NoSuchSnapshot { .. } => Failure::Usage(text),
            _ => Failure::Other(text),
        }
    }
}

fn init_tracing(verbose: u8, command: &Command) {
    // On a terminal, `init` and `start` show their progress: each VM's boot stages.
    let progress = std::io::stderr().is_terminal() && matches!(command, Command::Init { .. } | Command::Start { .. });
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
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Other(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The workdir: `-w`, else `.lago` here or in the nearest parent holding one.
fn find_workdir(explicit: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(w) = explicit {
        return Ok(w);
    }
    let cwd = std::env::current_dir().map_err(|e| Failure::Other(format!("cannot read the current folder: {e}")))?;
    for dir in cwd.ancestors() {
        let candidate = dir.join(".lago");
        if candidate.join(lago::env::STATE_FILE).is_file() || candidate.join(lago::lease::OWNER_ID_FILE).is_file() {
            return Ok(candidate);
        }
    }
    Err(Failure::Usage(format!(
        "no .lago workdir in {} or any parent; give one with -w or create one with `lago init`",
        cwd.display()
    )))
}

fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn print_out(text: &str) {
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let tty = std::io::stderr().is_terminal();
    match cli.command {
        Command::Validate {
            init_file,
            json,
            strict,
        } => validate(&init_file, json, strict).map(|()| ExitCode::SUCCESS),
        Command::Init {
            init_file,
            strict,
            accel,
            libvirt_uri,
            template_repo,
            offline,
        } => {
            let opts = lago::InitOptions {
                workdir: Some(cli.workdir.unwrap_or_else(|| PathBuf::from(".lago"))),
                libvirt_uri,
                accel: accel.unwrap_or_default(),
                progress: tty,
                strict,
                template_repos: template_repo,
                offline,
                ..Default::default()
            };
            let t = Instant::now();
            let env = lago::Env::init(&init_file, opts)?;
            eprintln!(
                "initialized {} ({} VMs, {} nets) in {:.1?}",
                env.workdir().display(),
                env.get_vms().len(),
                env.get_nets().len(),
                t.elapsed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { vms } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let t = Instant::now();
            if tty {
                eprintln!(
                    "starting {} ...",
                    if vms.is_empty() {
                        "all VMs".to_owned()
                    } else {
                        vms.join(", ")
                    }
                );
            }
            env.start(&names(&vms))?;
            eprintln!("started; every VM answers SSH ({:.1?})", t.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { vms } => {
            lago::Env::load(find_workdir(cli.workdir)?)?.stop(&names(&vms))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Shutdown { vms, timeout } => {
            lago::Env::load(find_workdir(cli.workdir)?)?.shutdown(&names(&vms), Duration::from_secs(timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let st = lago::Env::load(find_workdir(cli.workdir)?)?.status()?;
            if json {
                print_out(&(serde_json::to_string_pretty(&st).map_err(|e| Failure::Other(e.to_string()))? + "\n"));
            } else {
                print_out(&render_status(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Shell { vm, command } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let vm = env.vm(&vm)?;
            let state = vm.state()?;
            if state != lago::backend::VmState::Running {
                return Err(Failure::Usage(
                    lago::Error::NotRunning {
                        vm: vm.name().into(),
                        state,
                    }
                    .to_string(),
                ));
            }
            let interactive = command.is_empty() || std::io::stdin().is_terminal();
            let code = if interactive {
                let words: Vec<&str> = command.iter().map(String::as_str).collect();
                vm.interactive_ssh(if words.is_empty() { None } else { Some(&words) })?
            } else {
                let mut input = Vec::new();
                let _ = std::io::stdin().read_to_end(&mut input);
                let st = vm.ssh_with(&lago::ssh::quote_command(&command), Some(&input), None)?;
                print_out(&st.out);
                eprint!("{}", st.err);
                st.code
            };
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        Command::Console { vm } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let vm = env.vm(&vm)?;
            let status = std::process::Command::new("virsh")
                .args(["-c", env.libvirt_uri(), "console", &vm.plan().libvirt_name])
                .status()
                .map_err(|e| Failure::Other(format!("cannot run virsh (install libvirt-clients): {e}")))?;
            Ok(ExitCode::from(
                status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
            ))
        }
        Command::CopyToVm { vm, src, dst } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let limits = lago::ssh::CopyLimits::from_env().map_err(lago::Error::from)?;
            let report = env.vm(&vm)?.copy_to_with(&src, &dst, &limits)?;
            print_copy(&vm, &report);
            Ok(ExitCode::SUCCESS)
        }
        Command::CopyFromVm { vm, src, dst } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let limits = lago::ssh::CopyLimits::from_env().map_err(lago::Error::from)?;
            let report = env.vm(&vm)?.copy_from_with(&src, &dst, &limits)?;
            print_copy(&vm, &report);
            Ok(ExitCode::SUCCESS)
        }
        Command::Destroy { yes } => {
            let workdir = find_workdir(cli.workdir)?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::Usage(format!(
                        "refusing to destroy {} without --yes (stdin is not a terminal)",
                        workdir.display()
                    )));
                }
                eprint!(
                    "destroy the environment in {} (VMs, networks, disks)? [y/N] ",
                    workdir.display()
                );
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    eprintln!("nothing destroyed");
                    return Ok(ExitCode::from(1));
                }
            }
            lago::env::destroy_workdir(&workdir, None)?;
            eprintln!("destroyed {}", workdir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { name, list, json } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            match name {
                Some(name) if !list => {
                    let t = Instant::now();
                    let info = env.snapshot(&name)?;
                    eprintln!("snapshot {} taken ({:.1?})", info.name, t.elapsed());
                }
                _ => {
                    let snaps = env.snapshots()?;
                    if json {
                        print_out(
                            &(serde_json::to_string_pretty(&snaps).map_err(|e| Failure::Other(e.to_string()))? + "\n"),
                        );
                    } else {
                        let mut out = String::new();
                        for s in &snaps {
                            let kinds: Vec<String> = s
                                .vms
                                .iter()
                                .map(|(vm, k)| format!("{vm}: {k:?}").to_lowercase())
                                .collect();
                            out += &format!(
                                "{}  (taken at {} s since the epoch; {})\n",
                                s.name,
                                s.taken_unix,
                                kinds.join(", ")
                            );
                        }
                        print_out(&out);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Revert { name } => {
            let env = lago::Env::load(find_workdir(cli.workdir)?)?;
            let t = Instant::now();
            env.revert(&name)?;
            eprintln!("reverted to {name}; every VM answers SSH ({:.1?})", t.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc {
            dry_run,
            all_uris,
            libvirt_uri,
            json,
        } => {
            let opts = lago::gc::GcOptions {
                dry_run,
                all_uris,
                uris: vec![lago::backend::Backend::resolve_uri(libvirt_uri.as_deref())],
                ..Default::default()
            };
            let report = lago::gc::sweep(&opts)?;
            if json {
                print_out(&(serde_json::to_string_pretty(&report).map_err(|e| Failure::Other(e.to_string()))? + "\n"));
            } else {
                print_out(&render_gc(&report, dry_run));
            }
            let failed = report.envs.iter().any(|f| f.error.is_some());
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Template { command } => {
            let store = lago::store::TemplateStore::from_env().with_progress(tty);
            match command {
                TemplateCommand::List { json } => {
                    let list = store.entries().map_err(|e| Failure::Other(error_chain(&e)))?;
                    if json {
                        let text = serde_json::to_string_pretty(&list).map_err(|e| Failure::Other(e.to_string()))?;
                        print_out(&format!("{text}\n"));
                    } else {
                        print_out(&render_templates(store.root(), &list));
                    }
                }
                TemplateCommand::Import { file, name, version } => {
                    let t = store
                        .import(&file, &name, version.as_deref())
                        .map_err(|e| Failure::Other(error_chain(&e)))?;
                    print_out(&format!("{}:{}  {}\n", t.name, t.version, t.disk.display()));
                }
                TemplateCommand::Publish {
                    dir,
                    templates,
                    name,
                    base_url,
                    xz_level,
                } => {
                    let opts = lago::store::manage::PublishOptions {
                        repo_name: name,
                        base_url,
                        xz_level,
                    };
                    let done = store
                        .publish(&dir, &templates, &opts)
                        .map_err(|e| Failure::Other(error_chain(&e)))?;
                    let mut out = String::new();
                    for p in &done {
                        out += &format!(
                            "{}  {}  {} -> {} xz{}\n",
                            p.template,
                            p.file.display(),
                            approx_size(p.image_bytes),
                            approx_size(p.xz_bytes),
                            if p.unchanged { " (already published)" } else { "" }
                        );
                    }
                    out += &format!("repository: {}\n", dir.join("repo.metadata").display());
                    print_out(&out);
                }
                TemplateCommand::Verify { templates } => {
                    let results = store.verify(&templates).map_err(|e| Failure::Other(error_chain(&e)))?;
                    let mut out = String::new();
                    let mut bad = false;
                    for (t, r) in results {
                        let verdict = match r {
                            Ok(true) => "ok".to_owned(),
                            Ok(false) => {
                                bad = true;
                                "CHANGED (its sha256 is not the one recorded)".to_owned()
                            }
                            Err(e) => {
                                bad = true;
                                format!("error: {}", error_chain(&e))
                            }
                        };
                        out += &format!("{}:{}  {verdict}\n", t.name, t.version);
                    }
                    print_out(&out);
                    if bad {
                        return Ok(ExitCode::from(1));
                    }
                }
                TemplateCommand::Prune { dry_run, all } => {
                    let r = store.prune(dry_run, all).map_err(|e| Failure::Other(error_chain(&e)))?;
                    let mut out = String::new();
                    let verb = if dry_run { "would remove" } else { "removed" };
                    for (id, size) in &r.removed {
                        out += &format!("{verb} {id} ({})\n", approx_size(*size));
                    }
                    for (id, users) in &r.in_use {
                        let users: Vec<String> = users.iter().map(|u| u.display().to_string()).collect();
                        out += &format!("kept {id}: used by {}\n", users.join(", "));
                    }
                    for id in &r.newest {
                        out += &format!("kept {id}: newest version (--all removes it)\n");
                    }
                    let freed: u64 = r.removed.iter().map(|(_, s)| s).sum();
                    out += &format!("{verb} {} templates, {}\n", r.removed.len(), approx_size(freed));
                    print_out(&out);
                }
                TemplateCommand::Pull {
                    template,
                    template_repo,
                } => {
                    let (name, version) = match template.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (template.as_str(), None),
                    };
                    let store =
                        store.with_repos(template_repo.iter().map(|r| lago::store::repo::RepoLocation::parse(r)));
                    if store.repos().is_empty() {
                        return Err(Failure::Usage(
                            "no template repository: give --template-repo URL|PATH or set LAGO_TEMPLATE_REPO".into(),
                        ));
                    }
                    let t = store.pull(name, version).map_err(|e| Failure::Other(error_chain(&e)))?;
                    print_out(&format!("{}:{}  {}\n", t.name, t.version, t.disk.display()));
                }
                TemplateCommand::Build { name } => {
                    let t = store.build(&name).map_err(|e| Failure::Other(error_chain(&e)))?;
                    print_out(&format!("{}:{}  {}\n", t.name, t.version, t.disk.display()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_gc(r: &lago::gc::GcReport, dry_run: bool) -> String {
    use lago::gc::Verdict;
    use std::fmt::Write as _;
    let mut s = String::new();
    for (uri, why) in &r.unreachable {
        let _ = writeln!(s, "{uri}: not reachable ({why})");
    }
    if r.envs.is_empty() {
        s.push_str("no lago environments found\n");
    }
    for f in &r.envs {
        let (state, why) = match &f.verdict {
            Verdict::Live(why) => ("live", why.as_str()),
            Verdict::Kept => ("kept", "LAGO_KEEP kept it"),
            Verdict::Elsewhere => ("elsewhere", "its owner is on another machine"),
            Verdict::Gone(why) => ("gone", why.as_str()),
        };
        let action = match (&f.verdict, f.removed, &f.error) {
            (_, _, Some(e)) => format!("NOT removed: {e}"),
            (_, true, _) => "removed".to_owned(),
            (Verdict::Gone(_), false, None) if dry_run => "would be removed".to_owned(),
            (Verdict::Gone(_), false, None) => "not removed (out of time)".to_owned(),
            _ => "left alone".to_owned(),
        };
        let _ = writeln!(
            s,
            "{} {state}: {action} ({} domains, {} networks, {} leases; {}) - {why}",
            f.env_id,
            f.domains.len(),
            f.networks.len(),
            f.subnets.len(),
            f.workdir
                .as_ref()
                .map_or_else(|| "no workdir".to_owned(), |w| w.display().to_string()),
        );
    }
    s
}

/// Where a copy went and what it skipped (stderr, so stdout stays clean).
fn print_copy(vm: &str, report: &lago::ssh::CopyReport) {
    let place = if report.destination.is_empty() {
        "?"
    } else {
        &report.destination
    };
    eprintln!("copied to {place} ({} bytes)", report.bytes);
    for s in &report.skipped {
        eprintln!(
            "skipped {} on {vm}: a {}; only regular files and folders are copied",
            s.path, s.kind
        );
    }
}

fn render_status(st: &lago::env::Status) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "env {}  workdir {}  ({})",
        st.env_id,
        st.workdir.display(),
        st.init_file.display()
    );
    let _ = writeln!(s, "nets:");
    for n in &st.nets {
        let _ = writeln!(
            s,
            "  {:<12} {:<5} {:<18} gateway {}{}",
            n.name,
            if n.up { "up" } else { "down" },
            n.subnet.as_deref().unwrap_or("-"),
            n.gateway.as_deref().unwrap_or("-"),
            if n.management { "  (management)" } else { "" }
        );
    }
    let _ = writeln!(s, "vms:");
    for v in &st.vms {
        let _ = writeln!(s, "  {:<12} {:<8} {:<15} {}", v.name, v.state.to_string(), v.ip, v.fqdn);
        for (nic, net, ip, mac) in &v.nics {
            let _ = writeln!(
                s,
                "    {nic:<6} net {net:<10} {:<15} {mac}",
                ip.as_deref().unwrap_or("-")
            );
        }
    }
    s
}

fn validate(init_file: &std::path::Path, json: bool, strict: bool) -> Result<(), Failure> {
    let spec =
        config::load_with(init_file, config::LoadOptions { strict }).map_err(|e| Failure::Usage(e.to_string()))?;
    // Lago keys lago does not act on: on stderr, so that stdout stays the plan.
    for w in &spec.warnings {
        eprintln!("warning: {}:{w}", spec.source.display());
    }
    let subnets = plan::preview_subnets(&spec).map_err(|e| Failure::Usage(e.to_string()))?;
    let workdir = spec.source.parent().unwrap_or(std::path::Path::new("/")).join(".lago");
    let plan = plan::plan(&spec, &EnvId::preview(), &subnets, &workdir).map_err(|e| Failure::Usage(e.to_string()))?;
    let text = if json {
        let doc = serde_json::json!({
            "init_file": spec.source,
            "preview": true,
            "env_id": plan.env_id,
            "workdir": plan.workdir,
            "nets": plan.nets,
            "vms": plan.vms,
            "start_order": plan.start_order,
            "warnings": spec.warnings,
        });
        serde_json::to_string_pretty(&doc).map_err(|e| Failure::Other(e.to_string()))? + "\n"
    } else {
        render_plan(&spec, &plan)
    };
    print_out(&text);
    Ok(())
}

fn render_plan(spec: &EnvSpec, plan: &EnvPlan) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: valid (subnets are a preview; `lago init` leases real ones)",
        spec.source.display()
    );
    let _ = writeln!(s, "\nnets:");
    for n in &plan.nets {
        let _ = write!(s, "  {:<12} {:<8}", n.name, n.kind);
        match (n.subnet, n.gateway) {
            (Some(sub), Some(gw)) => {
                let _ = write!(s, " {sub}  gateway {gw}");
            }
            _ => {
                let _ = write!(s, " bridge {}", n.bridge);
            }
        }
        if let Some(d) = &n.dhcp {
            let _ = write!(s, "  dhcp .{}-.{}", d.start.octets()[3], d.end.octets()[3]);
        }
        if let Some(d) = &n.dns_domain {
            let _ = write!(s, "  dns {d}");
        }
        if n.mtu != config::DEFAULT_MTU {
            let _ = write!(s, "  mtu {}", n.mtu);
        }
        if n.management {
            let _ = write!(s, "  (management)");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\nvms:");
    for (vm, vs) in plan.vms.iter().zip(&spec.vms) {
        if vs.provider == config::Provider::Ssh {
            let _ = writeln!(
                s,
                "  {:<12} an existing machine (vm-provider: ssh), ssh {}@{} ({})",
                vm.name, vs.ssh_user, vm.ip, vm.fqdn
            );
            for nic in &vm.nics {
                let ip = nic.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(s, "    {:<6} net {:<10} {}", nic.name, nic.net, ip);
            }
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<12} {} MiB, {} vcpu, ssh {}@{} ({}){}",
            vm.name,
            vs.memory_mib,
            vs.vcpu,
            vs.ssh_user,
            vm.ip,
            vm.fqdn,
            if vs.bootstrap { "" } else { ", no bootstrap" }
        );
        for nic in &vm.nics {
            let ip = nic.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(s, "    {:<6} net {:<10} {:<15} {}", nic.name, nic.net, ip, nic.mac);
        }
        for d in &vm.disks {
            let bus = match d.bus {
                DiskBus::Virtio => "virtio-blk",
                DiskBus::Scsi => "virtio-scsi",
                DiskBus::Ide => "ide",
            };
            let src = match &d.source {
                DiskSource::Template { name, version } => match version {
                    Some(v) => format!("template {name}:{v}"),
                    None => format!("template {name}"),
                },
                DiskSource::TemplateFile { path } => format!("overlay on {}", path.display()),
                DiskSource::Empty { size_bytes } => format!("empty {}", human_size(*size_bytes)),
                DiskSource::File {
                    path,
                    make_a_copy: true,
                } => format!("copy of {}", path.display()),
                DiskSource::File { .. } => "file, used in place".to_owned(),
            };
            let _ = writeln!(
                s,
                "    {:<6} disk {:<9} {:<11} {:<5} {}  -> {}",
                d.dev,
                d.name,
                bus,
                d.format.as_str(),
                src,
                d.path.display()
            );
        }
    }
    s
}

/// A size for people: `432.1M`.
fn approx_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, m) in UNITS {
        if bytes >= m {
            return format!("{:.1}{u}", bytes as f64 / m as f64);
        }
    }
    format!("{bytes}B")
}

fn render_templates(root: &std::path::Path, list: &[lago::store::manage::StoreEntry]) -> String {
    use std::fmt::Write as _;
    let mut s = format!("store: {}\n", root.display());
    if list.is_empty() {
        s.push_str("  (empty: templates are built or pulled on first use)\n");
        return s;
    }
    let _ = writeln!(
        s,
        "  {:<24} {:<18} {:>8} {:>8}  {:<20} SOURCE",
        "NAME", "VERSION", "DISK", "VIRTUAL", "LAST USED"
    );
    for e in list {
        let t = &e.template;
        let last = e
            .last_used
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(|d| ago(d.as_secs()))
            .unwrap_or_else(|| "never".to_owned());
        let _ = writeln!(
            s,
            "  {:<24} {:<18} {:>8} {:>8}  {:<20} {}",
            t.name,
            t.version,
            approx_size(e.size_on_disk),
            approx_size(e.virtual_size),
            last,
            t.source.as_deref().unwrap_or("-")
        );
        for u in &e.used_by {
            let _ = writeln!(s, "      used by {}", u.display());
        }
    }
    s
}

fn ago(secs: u64) -> String {
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("E", 1 << 60),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, m) in UNITS {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{u}", bytes / m);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_defaults_to_lago_init_file() {
        let cli = Cli::try_parse_from(["lago", "validate"]).unwrap();
        match cli.command {
            Command::Validate { init_file, json, .. } => {
                assert_eq!(init_file, PathBuf::from("LagoInitFile"));
                assert!(!json);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn lifecycle_verbs_take_vm_names_and_a_global_workdir() {
        let cli = Cli::try_parse_from(["lago", "-w", "/tmp/w", "start", "vm01", "vm02"]).unwrap();
        assert_eq!(cli.workdir, Some(PathBuf::from("/tmp/w")));
        assert!(matches!(cli.command, Command::Start { ref vms } if vms == &["vm01", "vm02"]));
        let cli = Cli::try_parse_from(["lago", "stop", "-w", "x"]).unwrap();
        assert_eq!(cli.workdir, Some(PathBuf::from("x")));
        assert!(matches!(cli.command, Command::Stop { ref vms } if vms.is_empty()));
        let cli = Cli::try_parse_from(["lago", "shutdown", "--timeout", "5", "vm01"]).unwrap();
        assert!(matches!(cli.command, Command::Shutdown { timeout: 5, .. }));
        let cli = Cli::try_parse_from(["lago", "init", "env.yaml", "--accel", "tcg"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Init {
                accel: Some(lago::backend::AccelChoice::Tcg),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["lago", "init", "--accel", "hvf"]).is_err());
    }

    #[test]
    fn shell_takes_the_command_after_double_dash() {
        let cli = Cli::try_parse_from(["lago", "shell", "vm01", "--", "ls", "-l", "/"]).unwrap();
        match cli.command {
            Command::Shell { vm, command } => {
                assert_eq!(vm, "vm01");
                assert_eq!(command, ["ls", "-l", "/"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["lago", "copy-to-vm", "vm01", "a.txt", "/tmp/a.txt"]).unwrap();
        assert!(matches!(cli.command, Command::CopyToVm { ref dst, .. } if dst == "/tmp/a.txt"));
        let cli = Cli::try_parse_from(["lago", "destroy", "--yes"]).unwrap();
        assert!(matches!(cli.command, Command::Destroy { yes: true }));
        let cli = Cli::try_parse_from(["lago", "template", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Template {
                command: TemplateCommand::List { json: false }
            }
        ));
        for (args, want) in [
            (&["lago", "template", "build"][..], "tiny"),
            (&["lago", "template", "build", "debian-12"][..], "debian-12"),
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(
                matches!(cli.command, Command::Template { command: TemplateCommand::Build { ref name } } if name == want),
                "{args:?}"
            );
        }
        let err = Cli::try_parse_from(["lago", "template", "build", "centos-7"]).unwrap_err();
        assert!(err.to_string().contains("debian-12"), "{err}");
    }

    #[test]
    fn snapshot_takes_a_name_or_list_and_revert_a_name() {
        let cli = Cli::try_parse_from(["lago", "snapshot", "booted"]).unwrap();
        assert!(matches!(cli.command, Command::Snapshot { name: Some(ref n), list: false, .. } if n == "booted"));
        let cli = Cli::try_parse_from(["lago", "snapshot", "--list", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot {
                name: None,
                list: true,
                json: true
            }
        ));
        assert!(Cli::try_parse_from(["lago", "snapshot"]).is_err(), "a name or --list");
        assert!(Cli::try_parse_from(["lago", "snapshot", "x", "--list"]).is_err());
        let cli = Cli::try_parse_from(["lago", "revert", "booted"]).unwrap();
        assert!(matches!(cli.command, Command::Revert { ref name } if name == "booted"));
        let cli = Cli::try_parse_from(["lago", "gc", "--dry-run", "--all-uris"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Gc {
                dry_run: true,
                all_uris: true,
                ..
            }
        ));
    }

    #[test]
    fn validate_takes_a_path_and_json() {
        let cli = Cli::try_parse_from(["lago", "-vv", "validate", "env.yaml", "--json"]).unwrap();
        assert_eq!(cli.verbose, 2);
        match cli.command {
            Command::Validate { init_file, json, .. } => {
                assert_eq!(init_file, PathBuf::from("env.yaml"));
                assert!(json);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn unknown_verbs_and_flags_are_usage_errors() {
        assert!(Cli::try_parse_from(["lago", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["lago", "validate", "--yaml"]).is_err());
        assert!(Cli::try_parse_from(["lago"]).is_err());
    }

    #[test]
    fn sizes_print_in_their_largest_exact_unit() {
        assert_eq!(human_size(10 << 30), "10G");
        assert_eq!(human_size(1536 << 20), "1536M");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
