//! A system suite on the libtest-mimic runner: one environment per init
//! file, booted once, torn down at the end; libtest's arguments and
//! `--junit PATH` work.
//!
//! ```sh
//! scripts/netns-run cargo run --example custom_runner -- --test-threads 2 --junit target/junit.xml
//! ```
//!
//! In a project, put this in `tests/system.rs` with
//! `[[test]] name = "system" harness = false` in Cargo.toml, and `cargo test`
//! (or `cargo nextest run`) drives it.

use lago::harness::runner::{Runner, Suite, ssh_ok};

fn main() {
    Runner::new()
        .suite(
            Suite::new("examples/four.yaml")
                .test("every_vm_has_its_name", |env| {
                    for name in env.get_vms().keys() {
                        let out = ssh_ok(env, name, &["hostname"])?;
                        if out.trim() != name {
                            return Err(format!("{name} says it is {out:?}").into());
                        }
                    }
                    Ok(())
                })
                .test("vms_reach_each_other_by_name", |env| {
                    ssh_ok(env, "vm01", &["ping", "-c1", "-W3", "vm04"])?;
                    Ok(())
                })
                .test("root_disk_is_writable", |env| {
                    // `?` works on lago's own errors too.
                    let st = env
                        .vm("vm02")?
                        .ssh(["sh", "-c", "echo ok > /root/probe && cat /root/probe"])?;
                    assert_eq!(st.out, "ok\n");
                    Ok(())
                }),
        )
        .suite(
            // Two NICs per VM on two nets (examples/lab.yaml).
            Suite::new("examples/lab.yaml")
                .test("storage_net_carries_traffic", |env| {
                    // `storage-storage`: the storage VM's address on the storage net.
                    let st = ssh_ok(env, "engine", &["ping", "-c1", "-W3", "storage-storage"])?;
                    let ip = env.vm("storage")?.plan().nics[0].ip.ok_or("no address")?;
                    if !st.contains(&ip.to_string()) {
                        return Err(format!("storage-storage is not {ip}: {st}").into());
                    }
                    Ok(())
                })
                .test("export_disk_is_there", |env| {
                    let size = ssh_ok(env, "storage", &["cat", "/sys/block/sdb/size"])?;
                    assert_eq!(size.trim().parse::<u64>()? * 512, 1 << 30);
                    Ok(())
                }),
        )
        .run()
}
