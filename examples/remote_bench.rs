//! Start → SSH over the remote path vs local (a benchmark, not a test): one
//! `tiny` VM, booted `ROUNDS` times through `qemu:///system` (local files,
//! direct SSH) and through `qemu+ssh://` to an sshd on 127.0.0.1 (volumes,
//! console through libvirt, SSH through the hypervisor host as jump host).
//!
//! ```sh
//! scripts/netns-run cargo run --release --example remote_bench
//! ```

#[path = "../tests/common/sshd.rs"]
mod sshd;

use std::path::Path;
use std::time::{Duration, Instant};

use lago::{Env, InitOptions};

const ROUNDS: usize = 3;

fn round(init_file: &Path, uri: Option<&str>) -> lago::Result<(Duration, Duration, Duration)> {
    let tmp = tempfile::tempdir().map_err(|e| lago::Error::Usage { message: e.to_string() })?;
    let t = Instant::now();
    let env = Env::init(
        init_file,
        InitOptions {
            workdir: Some(tmp.path().join("env")),
            libvirt_uri: uri.map(str::to_owned),
            ..Default::default()
        },
    )?;
    let init = t.elapsed();
    let t = Instant::now();
    let started = env.start(&[]);
    let start = t.elapsed();
    let t = Instant::now();
    env.destroy()?;
    started?;
    Ok((init, start, t.elapsed()))
}

fn main() -> lago::Result<()> {
    if std::env::var_os("LAGO_IN_NETNS").is_none() {
        eprintln!("run inside the test namespace: scripts/netns-run cargo run --release --example remote_bench");
        std::process::exit(2);
    }
    let init_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envs/tiny1.yaml");
    let server = sshd::Sshd::start();
    let remote = server.uri();
    // One warm-up each (template build / first upload of the template volumes).
    round(&init_file, None)?;
    round(&init_file, Some(&remote))?;
    for (label, uri) in [
        ("local  (qemu:///system)", None),
        ("remote (qemu+ssh, volumes, jump)", Some(remote.as_str())),
    ] {
        let mut figures = Vec::new();
        for _ in 0..ROUNDS {
            figures.push(round(&init_file, uri)?);
        }
        let show = |f: &dyn Fn(&(Duration, Duration, Duration)) -> Duration| {
            figures
                .iter()
                .map(|x| format!("{:.2}s", f(x).as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{label}: init {}; start -> SSH {}; destroy {}",
            show(&|x| x.0),
            show(&|x| x.1),
            show(&|x| x.2)
        );
    }
    Ok(())
}
