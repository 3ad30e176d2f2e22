//! One function per command: each finds the environment, calls the library
//! and prints what `lago::cli` renders.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use lago::cli::{self, Format};
use lago::{Env, Error, Result};

use crate::args::*;

/// What every command may need: the workdir asked for and whether stderr is a terminal.
pub(crate) struct Ctx {
    pub(crate) workdir: Option<PathBuf>,
    pub(crate) tty: bool,
}

impl Ctx {
    pub(crate) fn workdir(&self) -> Result<PathBuf> {
        let cwd = std::env::current_dir().map_err(|source| Error::Workdir {
            action: "read the current folder",
            path: PathBuf::from("."),
            source,
        })?;
        cli::discover_workdir(self.workdir.clone(), &cwd)
    }

    pub(crate) fn env(&self) -> Result<Env> {
        Env::load(self.workdir()?)
    }
}
pub(crate) fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

pub(crate) fn print_out(text: &str) {
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
}
pub(crate) fn validate(a: ValidateArgs) -> Result<ExitCode> {
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

pub(crate) fn init(ctx: &Ctx, a: InitArgs) -> Result<ExitCode> {
    let opts = lago::InitOptions {
        workdir: Some(ctx.workdir.clone().unwrap_or_else(|| PathBuf::from(".lago"))),
        libvirt_uri: if a.session {
            Some("qemu:///session".to_owned())
        } else {
            a.libvirt_uri
        },
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

pub(crate) fn replay(ctx: &Ctx, a: ReplayArgs) -> Result<ExitCode> {
    if a.list {
        let info = lago::env::bundle::info(&a.bundle)?;
        print_out(&cli::render(&info, a.output.get(), cli::bundle_table)?);
        return Ok(ExitCode::SUCCESS);
    }
    let workdir = ctx.workdir.clone().unwrap_or_else(|| PathBuf::from(".lago"));
    let opts = lago::InitOptions {
        workdir: Some(workdir.clone()),
        progress: ctx.tty,
        template_repos: a.template_repo,
        ..Default::default()
    };
    let t = Instant::now();
    let env = Env::replay(&a.bundle, opts)?;
    let vms: Vec<&str> = env.get_vms().keys().map(String::as_str).collect();
    eprintln!(
        "replayed {} into {}: {} restored at the failing instant, running ({:.1?}); `lago -w {} shell {}`",
        a.bundle.display(),
        env.workdir().display(),
        vms.join(", "),
        t.elapsed(),
        workdir.display(),
        vms.first().copied().unwrap_or("VM")
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn start(ctx: &Ctx, vms: &[String], cold: bool) -> Result<ExitCode> {
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
    // Only a first start restores or saves (warm start): it says which.
    let first = env.came_up().is_empty();
    if cold {
        env.start_cold(&names(vms))?;
    } else {
        env.start(&names(vms))?;
    }
    let came_up = env.came_up();
    let how = match (first, came_up.values().all(|h| h == "restored")) {
        (false, _) => "",
        (true, true) if !came_up.is_empty() => ", restored from a boot image",
        (true, _) => ", booted",
    };
    eprintln!("started; every VM answers SSH ({:.1?}{how})", t.elapsed());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(ctx: &Ctx, format: Format) -> Result<ExitCode> {
    let st = ctx.env()?.status()?;
    print_out(&cli::render(&st, format, cli::status_table)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn shell(ctx: &Ctx, vm: &str, command: &[String]) -> Result<ExitCode> {
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

pub(crate) fn console(ctx: &Ctx, vm: &str) -> Result<ExitCode> {
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

pub(crate) fn copy_to_vm(ctx: &Ctx, vm: &str, src: &Path, dst: &str) -> Result<ExitCode> {
    let env = ctx.env()?;
    let limits = lago::ssh::CopyLimits::from_env()?;
    let report = env.vm(vm)?.copy_to_with(src, dst, &limits)?;
    eprint!("{}", cli::copy_summary(vm, &report));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn copy_from_vm(ctx: &Ctx, vm: &str, src: &str, dst: &Path) -> Result<ExitCode> {
    let env = ctx.env()?;
    let limits = lago::ssh::CopyLimits::from_env()?;
    let report = env.vm(vm)?.copy_from_with(src, dst, &limits)?;
    eprint!("{}", cli::copy_summary(vm, &report));
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn collect(ctx: &Ctx, a: CollectArgs) -> Result<ExitCode> {
    let report = ctx.env()?.collect(&a.output, &names(&a.vms))?;
    print_out(&cli::render(&report, a.format.get(), cli::collect_table)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn deploy(ctx: &Ctx, vms: &[String], format: Format) -> Result<ExitCode> {
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

pub(crate) fn export(ctx: &Ctx, a: ExportArgs) -> Result<ExitCode> {
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

pub(crate) fn ansible_hosts(ctx: &Ctx, a: AnsibleArgs) -> Result<ExitCode> {
    let keys: Vec<&str> = if a.keys.is_empty() {
        lago::inventory::DEFAULT_GROUP_KEYS.to_vec()
    } else {
        names(&a.keys)
    };
    let inventory = ctx.env()?.ansible_inventory(&keys)?;
    print_out(&inventory.render(a.format)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn ssh_config(ctx: &Ctx, json: bool) -> Result<ExitCode> {
    let hosts = ctx.env()?.ssh_hosts()?;
    let text = if json {
        cli::render(&hosts, Format::Json, |_| String::new())?
    } else {
        lago::inventory::ssh_config(&hosts)?
    };
    print_out(&text);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn destroy(ctx: &Ctx, yes: bool) -> Result<ExitCode> {
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

pub(crate) fn snapshot(ctx: &Ctx, a: SnapshotArgs) -> Result<ExitCode> {
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

pub(crate) fn revert(ctx: &Ctx, name: &str) -> Result<ExitCode> {
    let env = ctx.env()?;
    let t = Instant::now();
    env.revert(name)?;
    eprintln!("reverted to {name}; every VM answers SSH ({:.1?})", t.elapsed());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn gc(a: GcArgs) -> Result<ExitCode> {
    let opts = lago::gc::GcOptions {
        dry_run: a.dry_run,
        all_uris: a.all_uris,
        uris: a.libvirt_uri.into_iter().collect(),
        orphans: a.orphans,
        ..Default::default()
    };
    let report = lago::gc::sweep(&opts)?;
    print_out(&cli::render(&report, a.output.get(), |r| cli::gc_table(r, a.dry_run))?);
    let failed = report.envs.iter().any(|f| f.error.is_some()) || !report.not_found.is_empty();
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The completion script of `shell`, generated from the clap definition.
pub(crate) fn completion_script(shell: clap_complete::Shell) -> String {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lago", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    let checks = lago::doctor::run(&lago::doctor::Host::current(a.libvirt_uri.as_deref()));
    print_out(&cli::render(&checks, a.output.get(), |c| lago::doctor::table(c))?);
    Ok(if lago::doctor::healthy(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn template(ctx: &Ctx, command: TemplateCommand) -> Result<ExitCode> {
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
            // Boot images first: their disks are layered on templates.
            print_out(&clear_boot_images(&store, &[], dry_run)?);
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

/// Removes the boot images no environment uses (all, or those of `keys`);
/// what went and what stayed, as text.
fn clear_boot_images(store: &lago::store::TemplateStore, keys: &[String], dry_run: bool) -> Result<String> {
    let images = lago::store::warm::BootImages::new(store);
    let chosen: Vec<_> = images
        .entries()
        .into_iter()
        .filter(|e| keys.is_empty() || keys.contains(&e.key))
        .collect();
    if let Some(k) = keys.iter().find(|k| !chosen.iter().any(|e| &&e.key == k)) {
        return Err(Error::Usage {
            message: format!("no boot image {k} (lago warm list shows them)"),
        });
    }
    let (mut kept, candidates): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|e| !e.users.is_empty());
    let mut gone = Vec::new();
    for e in candidates {
        // An environment that took it up meanwhile keeps it.
        if dry_run || images.remove_unused(&e.key)? {
            gone.push(e);
        } else {
            kept.push(e);
        }
    }
    Ok(cli::boot_images_removed(&gone, &kept, dry_run))
}

pub(crate) fn warm(_ctx: &Ctx, command: WarmCommand) -> Result<ExitCode> {
    let store = lago::store::TemplateStore::from_env();
    match command {
        WarmCommand::List { output } => {
            let images = lago::store::warm::BootImages::new(&store);
            let list = images.entries();
            print_out(&cli::render(&list, output.get(), |l| {
                cli::boot_images_table(images.root(), l)
            })?);
        }
        WarmCommand::Clear { keys, dry_run } => print_out(&clear_boot_images(&store, &keys, dry_run)?),
    }
    Ok(ExitCode::SUCCESS)
}
