//! Warm start under libvirt + QEMU: an environment's first start boots and
//! saves a boot image; later environments of the same init file restore
//! from it and behave as booted ones. The multi-NIC lab shape (two nets, a
//! NIC on each, `vd*` and `sd*` roots, a raw extra disk), made unique to
//! this run by a metadata value so that no other test's boot image answers.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lago::store::TemplateStore;
use lago::store::warm::BootImages;
use lago::{Env, InitOptions};

use common::{in_test_namespace, out};

/// multinic.yaml, tagged with `tag` (and with vm02's memory `mem`).
fn init_file(dir: &Path, tag: &str, mem: u32) -> PathBuf {
    let text = std::fs::read_to_string(common::envs("multinic.yaml"))
        .unwrap()
        .replacen("  vm01:\n", &format!("  vm01:\n    metadata: {{run: {tag}}}\n"), 1)
        .replacen("  vm02:\n    memory: 192", &format!("  vm02:\n    memory: {mem}"), 1);
    let path = dir.join(format!("init-{mem}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn init(file: &Path, workdir: PathBuf, warm: Option<bool>) -> Env {
    Env::init(
        file,
        InitOptions {
            workdir: Some(workdir),
            warm,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Starts `env`; how each VM came up, and how long the start took.
fn start(env: &Env) -> (Vec<String>, Duration) {
    let t = Instant::now();
    env.start(&[]).unwrap();
    let took = t.elapsed();
    let status = env.status().unwrap();
    (
        status
            .vms
            .iter()
            .map(|v| v.came_up.clone().unwrap_or_default())
            .collect(),
        took,
    )
}

/// The boot images made from `file`.
fn images_of(file: &Path) -> Vec<lago::store::warm::BootImageEntry> {
    BootImages::new(&TemplateStore::from_env())
        .entries()
        .into_iter()
        .filter(|e| e.init_file == file)
        .collect()
}

/// What a booted environment is, asserted on a restored one.
fn behaves_as_booted(env: &Env) {
    let (vm01, vm02) = (env.vm("vm01").unwrap(), env.vm("vm02").unwrap());
    for vm in [vm01, vm02] {
        assert_eq!(out(vm, &["hostname"]).trim(), vm.name());
        // Every NIC has its planned address.
        common::has_planned_addresses(vm);
        // The clock is the host's, not the boot image's.
        common::clock_is_the_hosts(vm);
    }
    // Names resolve and answer over both nets.
    out(vm01, &["ping", "-c", "1", "-W", "5", "vm02"]);
    let back = vm02.plan().nics[0].ip.unwrap().to_string();
    out(vm01, &["ping", "-c", "1", "-W", "5", &back]);
    // The root and the raw extra disk are there and writable.
    assert_eq!(
        out(vm02, &["cat", "/sys/block/sdb/size"]).trim(),
        (64u64 << 20 >> 9).to_string()
    );
    out(
        vm02,
        &[
            "sh",
            "-c",
            "echo hello > /dev/sdb && head -c 5 /dev/sdb | grep -q hello",
        ],
    );
    out(vm01, &["sh", "-c", "echo kept > /root/mark && sync"]);
    // A snapshot and a revert, on the restored VMs.
    env.snapshot("s1").unwrap();
    out(vm01, &["rm", "/root/mark"]);
    env.revert("s1").unwrap();
    assert_eq!(out(vm01, &["cat", "/root/mark"]).trim(), "kept");
}

fn urandom(env: &Env) -> String {
    out(
        env.vm("vm01").unwrap(),
        &["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"],
    )
}

#[test]
#[ignore = "boots VMs: run through scripts/test (inside the test network namespace)"]
fn a_restored_environment_behaves_as_a_booted_one() {
    in_test_namespace();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("t{}-{}", std::process::id(), tmp.path().display().to_string().len());
    let file = init_file(tmp.path(), &tag, 192);
    // 1. The first environment boots, and saves a boot image.
    let a = init(&file, tmp.path().join("a"), None);
    let (how, cold) = start(&a);
    assert_eq!(how, ["booted", "booted"]);
    let images = images_of(&file);
    assert_eq!(images.len(), 1, "one boot image");
    assert_eq!(images[0].users, [tmp.path().join("a")]);
    let subnet_a = a.get_nets()["lago"].subnet;
    a.destroy().unwrap();
    // 2. The next one restores from it, on the same subnet.
    let b = init(&file, tmp.path().join("b"), None);
    assert_eq!(
        b.get_nets()["lago"].subnet,
        subnet_a,
        "the lease prefers the boot image's subnet"
    );
    let (how, warm) = start(&b);
    assert_eq!(how, ["restored", "restored"]);
    eprintln!("warm: cold start {cold:.1?}, restored start {warm:.1?}");
    behaves_as_booted(&b);
    let rng_b = urandom(&b);
    b.destroy().unwrap();
    // 3. Two at once: one restores, the other (on another subnet) boots and
    //    saves its own; then two at once both restore, with their own RNG.
    let c = init(&file, tmp.path().join("c"), None);
    let d = init(&file, tmp.path().join("d"), None);
    assert_eq!(start(&c).0, ["restored", "restored"]);
    assert_eq!(start(&d).0, ["booted", "booted"]);
    assert_ne!(urandom(&c), rng_b, "the RNG is fed anew on each restore");
    c.destroy().unwrap();
    d.destroy().unwrap();
    assert_eq!(images_of(&file).len(), 2);
    let e = init(&file, tmp.path().join("e"), None);
    let f = init(&file, tmp.path().join("f"), None);
    assert_eq!(start(&e).0, ["restored", "restored"]);
    assert_eq!(start(&f).0, ["restored", "restored"]);
    out(e.vm("vm01").unwrap(), &["ping", "-c", "1", "-W", "5", "vm02"]);
    out(f.vm("vm01").unwrap(), &["ping", "-c", "1", "-W", "5", "vm02"]);
    e.destroy().unwrap();
    f.destroy().unwrap();
    // 4. A damaged boot image: the VMs boot, and a sound one replaces it.
    for img in images_of(&file) {
        let state = img.dir.join("vm01.state.zst");
        let mut bytes = std::fs::read(&state).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&state, bytes).unwrap();
    }
    let g = init(&file, tmp.path().join("g"), None);
    assert_eq!(
        start(&g).0,
        ["booted", "booted"],
        "a damaged boot image is never restored"
    );
    out(g.vm("vm01").unwrap(), &["hostname"]);
    g.destroy().unwrap();
    let h = init(&file, tmp.path().join("h"), None);
    assert_eq!(start(&h).0, ["restored", "restored"], "the damaged one was replaced");
    h.destroy().unwrap();
    // 5. One key of the init file changed: no boot image answers.
    let changed = init_file(tmp.path(), &tag, 224);
    let i = init(&changed, tmp.path().join("i"), None);
    assert_eq!(start(&i).0, ["booted", "booted"]);
    i.destroy().unwrap();
    // 6. Asked cold: it boots, and saves nothing.
    let cold_file = init_file(tmp.path(), &tag, 160);
    let j = init(&cold_file, tmp.path().join("j"), Some(false));
    assert_eq!(start(&j).0, ["booted", "booted"]);
    j.destroy().unwrap();
    assert!(images_of(&cold_file).is_empty());
    // This run's boot images go again.
    let images = BootImages::new(&TemplateStore::from_env());
    for f in [&file, &changed] {
        for img in images_of(f) {
            assert!(img.users.is_empty(), "destroyed environments use no boot image");
            images.remove(&img.key).unwrap();
        }
    }
}
