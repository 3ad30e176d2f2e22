//! The Lago SDK's flow: init → start → `hostname -f` over SSH → destroy.
//!
//! ```sh
//! scripts/netns-run cargo run --example quickstart [INIT_FILE]
//! ```

use std::time::Instant;

use lago::sdk;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let init_file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/quickstart.yaml".into());
    let workdir = tempfile::Builder::new().prefix("lago-quickstart-").tempdir()?;
    let t0 = Instant::now();
    let mut opts = sdk::Options {
        workdir: Some(workdir.path().join("env")),
        ..Default::default()
    };
    opts.init.progress = true;
    let env = sdk::init(&init_file, opts)?;
    println!("init: {:.2?} (workdir {})", t0.elapsed(), env.workdir().display());

    // Whatever happens next, the environment is destroyed.
    let result = (|| -> lago::Result<()> {
        let t1 = Instant::now();
        env.start(&[])?;
        println!("start (all VMs answer SSH): {:.2?}", t1.elapsed());
        for (name, vm) in env.get_vms() {
            let st = vm.ssh(["hostname", "-f"])?;
            println!("{name} ({}): {st:?}", vm.ip());
        }
        Ok(())
    })();
    let t2 = Instant::now();
    env.destroy()?;
    println!("destroy: {:.2?}", t2.elapsed());
    Ok(result?)
}
