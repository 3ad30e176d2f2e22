//! The command line's shape: clap types for every command and option.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use lago::cli::Format;

/// Turn a Lago init file into VMs and networks, and drive them.
#[derive(Debug, Parser)]
#[command(name = "lago", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The environment's workdir (default: `.lago` in this folder or the nearest parent that has one;
    /// for `init`, `./.lago`).
    #[arg(short, long, global = true, value_name = "DIR")]
    pub(crate) workdir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How a command prints its data.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct Output {
    /// table (default), json, yaml or flat (Lago's --out-format; `default` means table).
    #[arg(short = 'f', long, alias = "out-format", value_name = "FORMAT")]
    pub(crate) format: Option<Format>,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,
}

impl Output {
    pub(crate) fn get(self) -> Format {
        match (self.format, self.json) {
            (_, true) => Format::Json,
            (Some(f), false) => f,
            (None, false) => Format::Table,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Parse and validate an init file and print the plan, without creating anything.
    ///
    /// Subnets shown are a preview: `lago init` leases real ones.
    Validate(ValidateArgs),
    /// Create an environment (workdir, leases, keys, disk images, seeds); starts nothing.
    Init(InitArgs),
    /// Start the networks and VMs (all, or the VMs named) and wait until they answer SSH.
    ///
    /// The first start of all VMs restores them from a boot image of the
    /// same init file when there is one (warm start), else boots them and
    /// saves one.
    Start {
        /// VMs to start (default: all).
        vms: Vec<String>,
        /// Boot, even when a boot image could be restored; save none.
        #[arg(long)]
        cold: bool,
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
        /// The VM to run the command on.
        vm: String,
        /// The command and its arguments (after `--`); none: an interactive shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Attach to a VM's serial console (virsh console; Ctrl-] leaves).
    Console {
        /// The VM whose serial console to attach to.
        vm: String,
    },
    /// Copy a local file or folder to a VM, like `cp -r`.
    ///
    /// The copy goes to DST, or inside DST when it is an existing folder (or ends with `/`).
    /// An existing file is replaced only by a file; an existing folder is never replaced.
    /// Limits: LAGO_COPY_TIMEOUT (seconds, default 600), LAGO_COPY_MAX_BYTES (default 1G).
    CopyToVm {
        /// The VM to copy to.
        vm: String,
        /// The local file or folder to copy.
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
        /// The VM to copy from.
        vm: String,
        /// Absolute path on the VM.
        src: String,
        /// Where to put the copy on this host.
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
        /// Destroy without asking for confirmation.
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
    /// Make a new environment (the workdir, `-w`, default .lago) from a
    /// failure bundle and restore every VM at the instant it was saved,
    /// running: then `lago shell VM`, `console`, `collect`, `destroy`.
    ///
    /// The bundle's templates must be in the store (or in a repository
    /// given with --template-repo: pulled by digest), and its subnets free.
    Replay(ReplayArgs),
    /// Boot images in the store (warm start: booted VMs saved by a first start).
    Warm {
        #[command(subcommand)]
        command: WarmCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WarmCommand {
    /// List the boot images: key, size, last use, VMs, init file, users.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Remove boot images no existing environment uses (all, or the keys given).
    Clear {
        /// Keys of the boot images to remove (default: all).
        keys: Vec<String>,
        /// Show what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The init file (YAML or JSON).
    #[arg(default_value = "LagoInitFile")]
    pub(crate) init_file: PathBuf,
    /// Lago keys lago does not act on are errors, not warnings.
    #[arg(long)]
    pub(crate) strict: bool,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The init file (YAML or JSON).
    #[arg(default_value = "LagoInitFile")]
    pub(crate) init_file: PathBuf,
    /// Lago keys lago does not act on are errors, not warnings.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Accelerator: auto (KVM where usable), kvm or tcg. Default: LAGO_ACCEL, else auto.
    #[arg(long, value_name = "auto|kvm|tcg")]
    pub(crate) accel: Option<lago::backend::AccelChoice>,
    /// libvirt URI (default: LIBVIRT_DEFAULT_URI, else qemu:///system; for
    /// a user who cannot reach it, qemu:///session).
    #[arg(long, value_name = "URI")]
    pub(crate) libvirt_uri: Option<String>,
    /// Session mode: this user's own libvirt daemon (qemu:///session), no
    /// root: nets are QEMU sockets on 127.0.0.1, SSH goes through a
    /// forwarded port.
    #[arg(long, conflicts_with = "libvirt_uri")]
    pub(crate) session: bool,
    /// A template repository: the URL or path of its repo.metadata (repeatable;
    /// asked in order, before the built-in templates; also LAGO_TEMPLATE_REPO).
    #[arg(long = "template-repo", alias = "template-repo-path", value_name = "URL|PATH")]
    pub(crate) template_repo: Vec<String>,
    /// Use only the template store: download and build nothing (also LAGO_OFFLINE=1).
    #[arg(long)]
    pub(crate) offline: bool,
    /// Treat the hypervisor as remote even when the URI is local: every file
    /// becomes a volume of its `lago` storage pool (a remote URI implies it).
    #[arg(long)]
    pub(crate) remote: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The bundle's folder (`<artifacts>/<test>/bundle`).
    pub(crate) bundle: PathBuf,
    /// Only show what the bundle holds; make nothing.
    #[arg(long)]
    pub(crate) list: bool,
    /// A template repository to pull the bundle's templates from (repeatable).
    #[arg(long = "template-repo", value_name = "URL|PATH")]
    pub(crate) template_repo: Vec<String>,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct CollectArgs {
    /// Where to put the files (created; it must not exist or be empty).
    #[arg(short, long, value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// VMs (default: all).
    pub(crate) vms: Vec<String>,
    #[command(flatten)]
    pub(crate) format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Where to write the disks and the init file (created; it must not exist or be empty).
    #[arg(short, long = "dst-dir", value_name = "DIR")]
    pub(crate) dst_dir: PathBuf,
    /// Keep template disks as overlays on a copy of their template (one per template,
    /// shared by the VMs) instead of standalone flattened images.
    #[arg(long)]
    pub(crate) layered: bool,
    /// Shut running VMs down (ACPI) first instead of refusing.
    #[arg(long)]
    pub(crate) shutdown: bool,
    /// The init file's name in DIR.
    #[arg(long, default_value = "LagoInitFile")]
    pub(crate) init_file_name: String,
    /// VMs (default: all, except those marked `skip-export`).
    pub(crate) vms: Vec<String>,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct AnsibleArgs {
    /// ini (default), yaml or json (Ansible's inventory formats).
    #[arg(short = 'f', long, alias = "out-format", default_value = "ini")]
    pub(crate) format: lago::inventory::InventoryFormat,
    /// Group by these VM keys (metadata keys or `groups`); default: vm-type, groups, vm-provider.
    #[arg(short, long = "keys", value_name = "KEY", num_args = 1..)]
    pub(crate) keys: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The snapshot's name.
    #[arg(required_unless_present = "list")]
    pub(crate) name: Option<String>,
    /// List the snapshots instead.
    #[arg(short, long, conflicts_with = "name")]
    pub(crate) list: bool,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Only say what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Also look at every libvirt URI that environments on this machine recorded.
    #[arg(long)]
    pub(crate) all_uris: bool,
    /// libvirt URI to look at (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub(crate) libvirt_uri: Option<String>,
    /// Also remove these environments (env ids), which nothing proves dead:
    /// orphaned (no owning process, or a workdir not visible here),
    /// elsewhere (owned on another host, container or boot) or kept. One
    /// whose owner runs on this host is never removed.
    #[arg(long, value_name = "ID", num_args = 1..)]
    pub(crate) orphans: Vec<lago::EnvId>,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct DoctorArgs {
    /// libvirt URI to check (default: LIBVIRT_DEFAULT_URI, else qemu:///system).
    #[arg(long, value_name = "URI")]
    pub(crate) libvirt_uri: Option<String>,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// List the templates in the store: name, version, source, size, last use, users.
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Build (or find up to date) a built-in template: `tiny` (from the
    /// host's packages, seconds) or `debian-12` (from Debian's mirror with
    /// mmdebstrap, minutes; needs root).
    Build {
        /// The built-in template to build.
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
        /// The qcow2 or raw image to copy into the store.
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
    /// Remove templates no existing environment uses (the newest version of
    /// each stays), after the boot images no environment uses.
    Prune {
        /// Show what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the newest versions too.
        #[arg(long)]
        all: bool,
    },
}
