//! `lago`: the command line over the lago library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lago::config::{self, DiskBus, DiskSource, EnvSpec};
use lago::plan::{self, EnvId, EnvPlan};

/// Turn a Lago init file into VMs and networks, and drive them.
#[derive(Debug, Parser)]
#[command(name = "lago", version, about, propagate_version = true)]
struct Cli {
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
    },
}

/// An error that is the user's input: exit code 2.
struct UsageError(String);

fn init_tracing(verbose: u8) {
    let default = match verbose {
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
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Validate { init_file, json } => validate(&init_file, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(UsageError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn validate(init_file: &std::path::Path, json: bool) -> Result<(), UsageError> {
    let spec = config::load(init_file).map_err(|e| UsageError(e.to_string()))?;
    let subnets = plan::preview_subnets(&spec).map_err(|e| UsageError(e.to_string()))?;
    let workdir = spec.source.parent().unwrap_or(std::path::Path::new("/")).join(".lago");
    let plan = plan::plan(&spec, &EnvId::preview(), &subnets, &workdir).map_err(|e| UsageError(e.to_string()))?;
    let text = if json {
        let doc = serde_json::json!({
            "init_file": spec.source,
            "preview": true,
            "env_id": plan.env_id,
            "workdir": plan.workdir,
            "nets": plan.nets,
            "vms": plan.vms,
            "start_order": plan.start_order,
        });
        serde_json::to_string_pretty(&doc).map_err(|e| UsageError(e.to_string()))? + "\n"
    } else {
        render_plan(&spec, &plan)
    };
    // A closed stdout (e.g. `| head`) is not an error worth a message.
    let _ = std::io::stdout().write_all(text.as_bytes());
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
            Command::Validate { init_file, json } => {
                assert_eq!(init_file, PathBuf::from("LagoInitFile"));
                assert!(!json);
            }
        }
    }

    #[test]
    fn validate_takes_a_path_and_json() {
        let cli = Cli::try_parse_from(["lago", "-vv", "validate", "env.yaml", "--json"]).unwrap();
        assert_eq!(cli.verbose, 2);
        match cli.command {
            Command::Validate { init_file, json } => {
                assert_eq!(init_file, PathBuf::from("env.yaml"));
                assert!(json);
            }
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
