//! `lago`: the command line over the lago library. Argument parsing and one
//! small function per command; what commands show and do lives in the
//! library (`lago::cli` for output, `lago::Env` for the verbs).

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use lago::cli::{self, Format};
use lago::{Env, Error, Result, error_chain};

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

/// How a command prints its data.
#[derive(Debug, Clone, Copy, Args)]
struct Output {
    /// table (default), json, yaml or flat (Lago's --out-format; `default` means table).
    #[arg(short = 'f', long, alias = "out-format", value_name = "FORMAT")]
    format: Option<Format>,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

impl Output {
    fn get(self) -> Format {
        match (self.format, self.json) {
            (_, true) => Format::Json,
            (Some(f), false) => f,
            (None, false) => Format::Table,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate an init file and print the plan, without creating anything.
    ///
    /// Subnets shown are a preview: `lago init` leases real ones.
    Validate(ValidateArgs),
    /// Create an environment (workdir, leases, keys, disk images, seeds); starts nothing.
    Init(InitArgs),
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
        #[command(flatten)]
        output: Output,
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
    /// Gather each VM's `artifacts` (from the init file), its console log and the
    /// environment's log into DIR/<vm>/ (Lago's collect). Missing files are listed, not fatal.
    Collect(CollectArgs),
    /// Run each VM's `metadata: deploy-scripts` in order over SSH (VMs in parallel);
    /// the first failing script stops its VM.
    Deploy {
        /// VMs (default: all).
        vms: Vec<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Write VMs' disks and an init file that boots them into a folder, to ship an
    /// environment's state and start it elsewhere. VMs must be shut down (or --shutdown).
    Export(ExportArgs),
    /// Print an Ansible inventory of the VMs, grouped by vm-type, groups and vm-provider
    /// (as Lago did), with pinned host keys and strict host-key checking.
    #[command(alias = "ansible_hosts")]
    AnsibleHosts(AnsibleArgs),
    /// Print an OpenSSH client config for the VMs: `ssh -F <(lago ssh-config) vm01` works.
    SshConfig {
        /// Print the hosts as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Destroy the environment: VMs, networks, leases and the workdir.
    Destroy {
        /// Do not ask.
        #[arg(short, long)]
        yes: bool,
    },
    /// Take a snapshot of every running VM (disks and memory), or list the snapshots.
    Snapshot(SnapshotArgs),
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
    Gc(GcArgs),
    /// Check this host: libvirt, QEMU, KVM or TCG, dnsmasq, the test network namespace, subnets,
    /// a libvirtd in another network namespace, the template store, tiny's build inputs, the
    /// leases, mmdebstrap, cargo-nextest under a nextest run. Each check says OK, a warning or a
    /// failure, with the fix. Exit code 0 when lago can boot VMs here, 1 when not.
    Doctor(DoctorArgs),
    /// Print a shell completion script: `lago completions bash > /etc/bash_completion.d/lago`,
    /// `lago completions zsh > "${fpath[1]}/_lago"`, `lago completions fish > ~/.config/fish/completions/lago.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Templates in the store.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The init file (YAML or JSON).
    #[arg(default_value = "LagoInitFile")]
    init_file: PathBuf,
    /// Lago keys lago does not act on are errors, not warnings.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct InitArgs {
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
    /// Treat the hypervisor as remote even when the URI is local: every file
    /// becomes a volume of its `lago` storage pool (a remote URI implies it).
    #[arg(long)]
    remote: bool,
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// Where to put the files (created; it must not exist or be empty).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// VMs (default: all).
    vms: Vec<String>,
    #[command(flatten)]
    format: Output,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Where to write the disks and the init file (created; it must not exist or be empty).
    #[arg(short, long = "dst-dir", value_name = "DIR")]
    dst_dir: PathBuf,
    /// Keep template disks as overlays on a copy of their template (one per template,
    /// shared by the VMs) instead of standalone flattened images.
    #[arg(long)]
    layered: bool,
    /// Shut running VMs down (ACPI) first instead of refusing.
    #[arg(long)]
    shutdown: bool,
    /// The init file's name in DIR.
    #[arg(long, default_value = "LagoInitFile")]
    init_file_name: String,
    /// VMs (default: all, except those marked `skip-export`).
    vms: Vec<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct AnsibleArgs {
    /// ini (default), yaml or json (Ansible's inventory formats).
    #[arg(short = 'f', long, alias = "out-format", default_value = "ini")]
    format: lago::inventory::InventoryFormat,
    /// Group by these VM keys (metadata keys or `groups`); default: vm-type, groups, vm-provider.
    #[arg(short, long = "keys", value_name = "KEY", num_args = 1..)]
    keys: Vec<String>,
}

#[derive(Debug, Args)]
struct SnapshotArgs {
    /// The snapshot's name.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// List the snapshots instead.
    #[arg(short, long, conflicts_with = "name")]
    list: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct GcArgs {
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Also look at every libvirt URI that environments on this machine recorded.
    #[arg(long)]
    all_uris: bool,
    /// libvirt URI to look at (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,
    /// Also remove these environments (env ids), which nothing proves dead:
    /// orphaned (no owning process, or a workdir not visible here),
    /// elsewhere (owned on another host, container or boot) or kept. One
    /// whose owner runs on this host is never removed.
    #[arg(long, value_name = "ID", num_args = 1..)]
    orphans: Vec<lago::EnvId>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct DoctorArgs {
    /// libvirt URI to check (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    libvirt_uri: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// List the templates in the store: name, version, source, size, last use, users.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Build (or find up to date) a built-in template: `tiny` (from the
    /// host's packages, seconds) or `debian-12` (from Debian's mirror with
    /// mmdebstrap, minutes; needs root).
    Build {
        /// The template.
        #[arg(default_value = "tiny", value_parser = ["tiny", "debian-12"])]
        name: String,
        /// For `tiny`: first build the kernel it boots from Debian's
        /// linux-source (minutes, once; needs linux-source-6.1, flex, bison,
        /// libelf-dev, bc). Until it exists, tiny boots the distribution's kernel.
        #[arg(long)]
        kernel: bool,
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
    // `--version` here is the template's: no propagated `lago --version` flag.
    #[command(disable_version_flag = true)]
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

/// What every command may need: the workdir asked for and whether stderr is a terminal.
struct Ctx {
    workdir: Option<PathBuf>,
    tty: bool,
}

impl Ctx {
    fn workdir(&self) -> Result<PathBuf> {
        let cwd = std::env::current_dir().map_err(|source| Error::Workdir {
            action: "read the current folder",
            path: PathBuf::from("."),
            source,
        })?;
        cli::discover_workdir(self.workdir.clone(), &cwd)
    }

    fn env(&self) -> Result<Env> {
        Env::load(self.workdir()?)
    }
}

fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn print_out(text: &str) {
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        workdir: cli.workdir,
        tty: std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Validate(a) => validate(a),
        Command::Init(a) => init(&ctx, a),
        Command::Start { vms } => start(&ctx, &vms),
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
    }
}

fn validate(a: ValidateArgs) -> Result<ExitCode> {
    let (spec, plan) = cli::preview(&a.init_file, a.strict)?;
    // Lago keys lago does not act on: on stderr, so that stdout stays the plan.
    for w in &spec.warnings {
        eprintln!("warning: {}:{w}", spec.source.display());
    }
    let preview = cli::Preview::new(&spec, &plan);
    print_out(&cli::render(&preview, a.output.get(), |_| {
        cli::plan_table(&spec, &plan)
    })?);
    Ok(ExitCode::SUCCESS)
}

fn init(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let opts = lago::InitOptions {
        workdir: Some(ctx.workdir.clone().unwrap_or_else(|| PathBuf::from(".lago"))),
        libvirt_uri: a.libvirt_uri,
        accel: a.accel.unwrap_or_default(),
        progress: ctx.tty,
        strict: a.strict,
        template_repos: a.template_repo,
        offline: a.offline,
        remote: a.remote.then_some(true),
        ..Default::default()
    };
    let t = Instant::now();
    let env = Env::init(&a.init_file, opts)?;
    eprintln!(
        "initialized {} ({} VMs, {} nets) in {:.1?}",
        env.workdir().display(),
        env.get_vms().len(),
        env.get_nets().len(),
        t.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

fn start(ctx: &Ctx, vms: &[String]) -> Result<ExitCode> {
    let env = ctx.env()?;
    let t = Instant::now();
    if ctx.tty {
        let which = if vms.is_empty() {
            "all VMs".to_owned()
        } else {
            vms.join(", ")
        };
        eprintln!("starting {which} ...");
    }
    env.start(&names(vms))?;
    eprintln!("started; every VM answers SSH ({:.1?})", t.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn status(ctx: &Ctx, format: Format) -> Result<ExitCode> {
    let st = ctx.env()?.status()?;
    print_out(&cli::render(&st, format, cli::status_table)?);
    Ok(ExitCode::SUCCESS)
}

fn shell(ctx: &Ctx, vm: &str, command: &[String]) -> Result<ExitCode> {
    let env = ctx.env()?;
    let vm = env.vm(vm)?;
    vm.require_running()?;
    let code = if command.is_empty() || std::io::stdin().is_terminal() {
        let words = names(command);
        vm.interactive_ssh(if words.is_empty() { None } else { Some(&words) })?
    } else {
        let mut input = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut input);
        let st = vm.ssh_with(&lago::ssh::quote_command(command), Some(&input), None)?;
        print_out(&st.out);
        eprint!("{}", st.err);
        st.code
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

fn console(ctx: &Ctx, vm: &str) -> Result<ExitCode> {
    let env = ctx.env()?;
    let vm = env.vm(vm)?;
    let status = std::process::Command::new("virsh")
        .args(["-c", env.libvirt_uri(), "console", &vm.plan().libvirt_name])
        .status()
        .map_err(|e| Error::Usage {
            message: format!("cannot run virsh (install libvirt-clients): {e}"),
        })?;
    Ok(ExitCode::from(
        status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
    ))
}

fn copy_to_vm(ctx: &Ctx, vm: &str, src: &Path, dst: &str) -> Result<ExitCode> {
    let env = ctx.env()?;
    let limits = lago::ssh::CopyLimits::from_env()?;
    let report = env.vm(vm)?.copy_to_with(src, dst, &limits)?;
    eprint!("{}", cli::copy_summary(vm, &report));
    Ok(ExitCode::SUCCESS)
}

fn copy_from_vm(ctx: &Ctx, vm: &str, src: &str, dst: &Path) -> Result<ExitCode> {
    let env = ctx.env()?;
    let limits = lago::ssh::CopyLimits::from_env()?;
    let report = env.vm(vm)?.copy_from_with(src, dst, &limits)?;
    eprint!("{}", cli::copy_summary(vm, &report));
    Ok(ExitCode::SUCCESS)
}

fn collect(ctx: &Ctx, a: CollectArgs) -> Result<ExitCode> {
    let report = ctx.env()?.collect(&a.output, &names(&a.vms))?;
    print_out(&cli::render(&report, a.format.get(), cli::collect_table)?);
    Ok(ExitCode::SUCCESS)
}

fn deploy(ctx: &Ctx, vms: &[String], format: Format) -> Result<ExitCode> {
    // Each line the scripts write, as it comes, on stderr (stdout stays the report).
    let report = ctx.env()?.deploy_with(&names(vms), &|l| {
        let name = l.script.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        // Guest output: control characters (terminal escapes) shown as `?`.
        let line: String = l
            .line
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        eprintln!("[{} {name}] {line}", l.vm);
    })?;
    print_out(&cli::render(&report, format, cli::deploy_table)?);
    Ok(ExitCode::SUCCESS)
}

fn export(ctx: &Ctx, a: ExportArgs) -> Result<ExitCode> {
    let opts = lago::export::ExportOptions {
        layered: a.layered,
        shutdown: a.shutdown,
        init_file_name: a.init_file_name,
        ..Default::default()
    };
    let t = Instant::now();
    let report = ctx.env()?.export(&a.dst_dir, &names(&a.vms), &opts)?;
    eprintln!("exported in {:.1?}", t.elapsed());
    print_out(&cli::render(&report, a.output.get(), cli::export_table)?);
    Ok(ExitCode::SUCCESS)
}

fn ansible_hosts(ctx: &Ctx, a: AnsibleArgs) -> Result<ExitCode> {
    let keys: Vec<&str> = if a.keys.is_empty() {
        lago::inventory::DEFAULT_GROUP_KEYS.to_vec()
    } else {
        names(&a.keys)
    };
    let inventory = ctx.env()?.ansible_inventory(&keys)?;
    print_out(&inventory.render(a.format)?);
    Ok(ExitCode::SUCCESS)
}

fn ssh_config(ctx: &Ctx, json: bool) -> Result<ExitCode> {
    let hosts = ctx.env()?.ssh_hosts()?;
    let text = if json {
        cli::render(&hosts, Format::Json, |_| String::new())?
    } else {
        lago::inventory::ssh_config(&hosts)?
    };
    print_out(&text);
    Ok(ExitCode::SUCCESS)
}

fn destroy(ctx: &Ctx, yes: bool) -> Result<ExitCode> {
    let workdir = ctx.workdir()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage {
                message: format!(
                    "refusing to destroy {} without --yes (stdin is not a terminal)",
                    workdir.display()
                ),
            });
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

fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<ExitCode> {
    let env = ctx.env()?;
    match a.name {
        Some(name) if !a.list => {
            let t = Instant::now();
            let info = env.snapshot(&name)?;
            eprintln!("snapshot {} taken ({:.1?})", info.name, t.elapsed());
        }
        _ => {
            let snaps = env.snapshots()?;
            print_out(&cli::render(&snaps, a.output.get(), |s| cli::snapshots_table(s))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn revert(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let env = ctx.env()?;
    let t = Instant::now();
    env.revert(name)?;
    eprintln!("reverted to {name}; every VM answers SSH ({:.1?})", t.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn gc(a: GcArgs) -> Result<ExitCode> {
    let opts = lago::gc::GcOptions {
        dry_run: a.dry_run,
        all_uris: a.all_uris,
        uris: vec![lago::backend::Backend::resolve_uri(a.libvirt_uri.as_deref())],
        orphans: a.orphans,
        ..Default::default()
    };
    let report = lago::gc::sweep(&opts)?;
    print_out(&cli::render(&report, a.output.get(), |r| cli::gc_table(r, a.dry_run))?);
    let failed = report.envs.iter().any(|f| f.error.is_some()) || !report.not_found.is_empty();
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The CLI reference (`docs/cli.md`), in Markdown, from the clap definition itself.
#[cfg(test)]
fn cli_reference() -> String {
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

/// The completion script of `shell`, generated from the clap definition.
fn completion_script(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lago", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    let checks = lago::doctor::run(&lago::doctor::Host::current(a.libvirt_uri.as_deref()));
    print_out(&cli::render(&checks, a.output.get(), |c| lago::doctor::table(c))?);
    Ok(if lago::doctor::healthy(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn template(ctx: &Ctx, command: TemplateCommand) -> Result<ExitCode> {
    let store = lago::store::TemplateStore::from_env().with_progress(ctx.tty);
    let line = |t: &lago::store::Template| format!("{}:{}  {}\n", t.name, t.version, t.disk.display());
    match command {
        TemplateCommand::List { output } => {
            let list = store.entries()?;
            print_out(&cli::render(&list, output.get(), |l| {
                cli::templates_table(store.root(), l)
            })?);
        }
        TemplateCommand::Import { file, name, version } => {
            print_out(&line(&store.import(&file, &name, version.as_deref())?));
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
            let done = store.publish(&dir, &templates, &opts)?;
            print_out(&cli::published_table(&dir, &done));
        }
        TemplateCommand::Verify { templates } => {
            let (text, ok) = cli::verified_table(&store.verify(&templates)?);
            print_out(&text);
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        TemplateCommand::Prune { dry_run, all } => {
            print_out(&cli::pruned_table(&store.prune(dry_run, all)?, dry_run));
        }
        TemplateCommand::Pull {
            template,
            template_repo,
        } => {
            let (name, version) = match template.split_once(':') {
                Some((n, v)) => (n, Some(v)),
                None => (template.as_str(), None),
            };
            let store = store.with_repos(template_repo.iter().map(|r| lago::store::repo::RepoLocation::parse(r)));
            if store.repos().is_empty() {
                return Err(Error::Usage {
                    message: "no template repository: give --template-repo URL|PATH or set LAGO_TEMPLATE_REPO".into(),
                });
            }
            print_out(&line(&store.pull(name, version)?));
        }
        TemplateCommand::Build { name, kernel } => {
            if kernel {
                if name != "tiny" {
                    return Err(Error::Usage {
                        message: "--kernel builds the kernel of `tiny` only".into(),
                    });
                }
                let t = Instant::now();
                let k = store.build_tiny_kernel()?;
                eprintln!("kernel for tiny: {} ({:.1?})", k.display(), t.elapsed());
            }
            print_out(&line(&store.build(&name)?));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[path = "lago/ci_recipes.rs"]
mod ci_recipes;

#[cfg(test)]
mod tests {
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
        assert!(matches!(cli.command, Command::Start { ref vms } if vms == &["vm01", "vm02"]));
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
        let now = super::cli_reference();
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
