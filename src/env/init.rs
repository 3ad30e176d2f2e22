//! `Env::init`: a recipe of named steps. Load the init file, claim the
//! workdir, lease subnets (and claim them on a shared daemon), plan, write
//! the keys, then make each VM: its disks, its seed, how it boots and its
//! domain XML, as local files or, on a remote hypervisor, as volumes
//! ([`Placement`]); finally the state. A failure at any step rolls back what
//! the steps before it made ([`InitGuard`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::error::{Error, Result};
use super::{Env, InitOptions, wd_err};
use crate::backend::{self, Accel, Backend, Boot, DomainParams};
use crate::host::image;
use crate::host::keys::{self, KeyPair};
use crate::host::lease::{LeaseOwner, LeaseStore};
use crate::host::owner::Owner;
use crate::host::seed::{self, SeedKeys};
use crate::host::state::SavedEnv;
use crate::host::store::warm::BootImage;
use crate::host::store::{Template, TemplateStore};
use crate::host::workdir::{self, CLIENT_KEY, STATE_FILE};
use crate::plan::{self, EnvId, EnvPlan, Subnet};
use lago_config::{self as config, DiskSource, EnvSpec};

/// How many times leasing tries again when another client of a shared
/// daemon holds the subnets it got.
const CLAIM_ATTEMPTS: usize = 8;

impl Env {
    /// Creates an environment from `init_file` in a new workdir: leases
    /// subnets, plans, makes keys, builds or finds templates, creates the
    /// disk images and seeds. Does not start anything. On failure, everything
    /// created is removed again.
    pub fn init(init_file: impl AsRef<Path>, opts: InitOptions) -> Result<Env> {
        Env::init_from(init_file.as_ref(), opts, None)
    }

    /// [`Env::init`], layered on `replay` (a failure bundle's boot image)
    /// when given: its subnets, keys and disks, its first start restoring it.
    pub(crate) fn init_from(init_file: &Path, opts: InitOptions, replay: Option<BootImage>) -> Result<Env> {
        let started = Instant::now();
        let spec = load_spec(init_file, opts.strict)?;
        let workdir = std::path::absolute(opts.workdir.clone().unwrap_or_else(|| PathBuf::from(".lago")))
            .map_err(wd_err("resolve", init_file))?;
        workdir::check_free(&workdir)?;
        // Reach libvirt before creating anything: an unreachable daemon is the commonest failure.
        let backend = Arc::new(Backend::connect(opts.libvirt_uri.as_deref())?);
        let remote = opts
            .remote
            .unwrap_or_else(|| crate::backend::uri::is_remote(backend.uri()));
        // Leases record the daemon they are for (so that `lago gc --all-uris` finds it) and the owner.
        let session = !remote && crate::backend::uri::is_session(backend.uri());
        let leases = opts
            .leases
            .clone()
            .unwrap_or_else(|| match session {
                true => LeaseStore::for_session(),
                false => LeaseStore::from_env(),
            })
            .for_uri(backend.uri())
            .with_owner(opts.owner.clone());
        let env_id = EnvId::random();
        let mut guard = InitGuard::new(workdir::claim(&workdir, &env_id)?);
        write_owner(&guard.claim.dir, opts.owner.as_ref())?;
        tracing::info!(%env_id, workdir = %workdir.display(), init_file = %spec.source.display(), "init");
        let store = template_store(&opts);
        if !session && !remote && opts.leases.is_none() {
            leases.warn_if_private();
        }
        // A replay restores whatever LAGO_WARM says; only an environment
        // that cannot be saved whole stops it.
        let warm_off = match &replay {
            Some(img) => match super::warm::saving_blocker(&spec, remote, backend.uri()) {
                Some(what) => {
                    return Err(Error::Replay {
                        path: img.dir.clone(),
                        what,
                    });
                }
                None => None,
            },
            None => super::warm::blocker(&opts, &spec, remote, backend.uri()),
        };
        if let Some(why) = &warm_off {
            tracing::debug!(why, "warm start off");
        }
        let preferred = match (&replay, &warm_off) {
            (Some(img), _) => vec![img.meta.subnets.clone()],
            (None, None) => super::warm::preferred_subnets(&store, &spec),
            (None, Some(_)) => Vec::new(),
        };
        let subnets = lease_subnets(&mut guard, &leases, &backend, &spec, &env_id, remote, &preferred)?;
        let plan = plan::plan(&spec, &env_id, &subnets, &workdir)?;
        guard.uses = Some((store.clone(), env_id.clone()));
        let accel = backend::choose_accel(opts.accel)?;
        let mut templates = Templates::new(&store, &workdir, &env_id);
        let warm = match (replay, warm_off) {
            (Some(img), _) => Some(super::warm::replaying(img, &spec, &plan)?),
            (None, None) => Some(prepare_warm(&spec, &plan, &workdir, &env_id, accel, &mut templates)?),
            (None, Some(_)) => None,
        };
        let image = warm.as_ref().and_then(|w| w.image.clone());
        let client = match &image {
            Some(img) => super::warm::client_key(img)?,
            None => KeyPair::generate(&format!("lago-{env_id}"))?,
        };
        write_client_key(&guard.claim.dir, &client)?;
        let placement = Placement::choose(remote, &backend, &env_id, &mut guard)?;
        let mut saved = SavedEnv::new(&env_id, &spec, &plan, &backend, &leases, &store);
        saved.accel = format!("{accel:?}").to_lowercase();
        saved.remote = Some(remote);
        saved.warm = warm.map(|w| w.state);
        saved.session = session.then(|| session_state(&env_id, &spec)).transpose()?;
        let mut build = Build {
            saved,
            templates,
            dir: &guard.claim.dir,
            client_public: client.public_openssh,
            placement,
            accel,
            owner: opts.owner.as_ref(),
            image,
        };
        let makes = spec.vms.iter().zip(&plan.vms);
        // An existing machine (`vm-provider: ssh`) has nothing to make.
        for (vs, vp) in makes.filter(|(vs, _)| vs.provider != config::Provider::Ssh) {
            build.vm(vs, vp)?;
        }
        let saved = build.saved;
        write_state(&guard.claim.dir, &saved)?;
        let env = Env::attach_with(workdir, saved, backend)?;
        guard.armed = true;
        tracing::info!(secs = started.elapsed().as_secs_f64(), "init done");
        Ok(env)
    }
}

/// The init file, read and validated; lago keys it does not act on are
/// logged (or errors, with `strict`).
fn load_spec(init_file: &Path, strict: bool) -> Result<EnvSpec> {
    let spec = config::load_with(init_file, config::LoadOptions { strict })?;
    for w in &spec.warnings {
        tracing::warn!(file = %spec.source.display(), "{w}");
    }
    Ok(spec)
}

/// Records the process that owns the environment's lifetime, if one does.
fn write_owner(dir: &workdir::Dir, owner: Option<&Owner>) -> Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    let path = dir.path().join(crate::host::owner::OWNER_FILE);
    let text = serde_json::to_string_pretty(owner).map_err(|source| Error::State { path, source })?;
    dir.write_new(Path::new(crate::host::owner::OWNER_FILE), text.as_bytes(), 0o600)?;
    Ok(())
}

/// The environment's SSH client key, written into the workdir.
fn write_client_key(dir: &workdir::Dir, client: &KeyPair) -> Result<()> {
    dir.write_new(Path::new(CLIENT_KEY), client.private_openssh.as_bytes(), 0o600)?;
    let public = format!("{}\n", client.public_openssh.trim_end());
    dir.write_new(Path::new("id_ed25519.pub"), public.as_bytes(), 0o644)?;
    Ok(())
}

/// How an environment in session mode reaches its nets (multicast groups
/// named from its env id) and its VMs (an SSH port each on 127.0.0.1, free now).
fn session_state(env_id: &EnvId, spec: &EnvSpec) -> Result<crate::host::state::SessionState> {
    let hex = env_id.as_str().as_bytes();
    let byte = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    let mut ssh_ports = BTreeMap::new();
    for vm in spec.vms.iter().filter(|v| v.provider != config::Provider::Ssh) {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Usage {
                message: format!("no free port on 127.0.0.1 for {}'s SSH: {e}", vm.name),
            })?
            .port();
        ssh_ports.insert(vm.name.clone(), port);
    }
    Ok(crate::host::state::SessionState {
        group: [byte(0), byte(2)],
        port: 40000 + (u16::from(byte(4)) << 8 | u16::from(byte(6))) % 20000,
        ssh_ports,
        egress: spec.nets.iter().any(|n| matches!(n.kind, config::NetKind::Nat)),
    })
}

/// Warm start's key for this environment (its templates are resolved for
/// it), and its boot image when the store has one.
fn prepare_warm(
    spec: &EnvSpec,
    plan: &EnvPlan,
    workdir: &Path,
    env_id: &EnvId,
    accel: Accel,
    templates: &mut Templates<'_>,
) -> Result<super::warm::Prepared> {
    let mut names = BTreeMap::new();
    let mut files = Vec::new();
    let mut xml: Vec<String> = plan.nets.iter().map(backend::xml::network_xml).collect();
    for (vs, vp) in spec.vms.iter().zip(&plan.vms) {
        let mut root = None;
        for dp in &vp.disks {
            match &dp.source {
                DiskSource::Template { name, version, digest } => {
                    let t = templates.get(name, version, digest)?;
                    if std::ptr::eq(dp, &vp.disks[0]) {
                        root = Some(t.clone());
                    }
                    let id = format!("{}:{}:{}", t.name, t.version, t.sha256.as_deref().unwrap_or("-"));
                    names.insert(format!("{}/{}", vs.name, dp.name), id);
                    files.push(t.disk.clone());
                    files.extend(t.kernel.iter().chain(&t.initrd).cloned());
                }
                DiskSource::TemplateFile { path } | DiskSource::File { path, .. } => files.push(path.clone()),
                DiskSource::Empty { .. } => {}
            }
        }
        if let Some(k) = &vs.kernel_boot {
            files.extend(std::iter::once(&k.kernel).chain(&k.initrd).cloned());
        }
        if vs.provider != config::Provider::Ssh {
            xml.push(reference_domain_xml(vs, vp, workdir, env_id, accel, root)?);
        }
    }
    let accel = format!("{accel:?}").to_lowercase();
    let parts = super::warm::KeyParts {
        spec,
        plan,
        workdir,
        env_id,
        accel: &accel,
        templates: names,
        files,
        xml,
    };
    Ok(super::warm::prepare(&parts, templates.store, workdir, env_id))
}

/// VM `vs`'s domain XML as a local init makes it, without its owner: what
/// lago's own code decides about the guest (devices, machine, kernel command
/// line) counts in the boot image's key.
fn reference_domain_xml(
    vs: &config::VmSpec,
    vp: &plan::VmPlan,
    workdir: &Path,
    env_id: &EnvId,
    accel: Accel,
    root: Option<Template>,
) -> Result<String> {
    let boot = match direct_kernel(vs, root)? {
        Some(DirectKernel { kernel, initrd, args }) => kernel_boot(vp, kernel, initrd, args.as_deref()),
        None => Boot::Disk,
    };
    Ok(backend::xml::domain_xml(&DomainParams {
        spec: vs,
        plan: vp,
        env_id: env_id.as_str(),
        workdir,
        accel,
        boot,
        seed_dev: vp.seed.as_ref().map(|_| backend::xml::free_virtio_dev(vp)),
        run_as: None,
        owner: None,
        session: None,
        nets: Vec::new(),
    }))
}

/// The template store the options name, with their repositories.
pub(super) fn template_store(opts: &InitOptions) -> TemplateStore {
    let repos = opts
        .template_repos
        .iter()
        .map(|r| crate::host::store::repo::RepoLocation::parse(r));
    let store = opts
        .store
        .clone()
        .unwrap_or_else(TemplateStore::from_env)
        .with_repos(repos)
        .with_progress(opts.progress);
    if opts.offline { store.offline(true) } else { store }
}

/// Everything the environment is, as saved in `env.json`.
fn write_state(dir: &workdir::Dir, saved: &SavedEnv) -> Result<()> {
    let path = dir.path().join(STATE_FILE);
    let text = serde_json::to_string_pretty(saved).map_err(|source| Error::State { path, source })?;
    dir.write_new(Path::new(STATE_FILE), text.as_bytes(), 0o600)?;
    Ok(())
}

/// Leases one subnet per managed net, never one the daemon's networks (any
/// user's) or the host's routes use. On a remote hypervisor (a daemon other
/// machines may share) each /24 is also claimed in the daemon (atomic
/// there); one another client holds is given back and another one leased.
fn lease_subnets<'a>(
    guard: &mut InitGuard<'a>,
    leases: &'a LeaseStore,
    backend: &Arc<Backend>,
    spec: &EnvSpec,
    env_id: &EnvId,
    remote: bool,
    preferred: &[BTreeMap<String, Subnet>],
) -> Result<BTreeMap<String, Subnet>> {
    let owner = LeaseOwner {
        workdir: guard.claim.dir.path().to_path_buf(),
        env_id: env_id.clone(),
    };
    let mut in_use = backend.subnets_in_use()?;
    in_use.extend(crate::host::lease::host_route_subnets());
    let requests = plan::subnet_requests(spec);
    for _ in 0..CLAIM_ATTEMPTS {
        let subnets = leases.acquire_preferring(&owner, &requests, &in_use, preferred)?;
        guard.lease = Some((leases, owner.clone()));
        if !remote {
            return Ok(subnets);
        }
        guard.claims = Some((backend.clone(), env_id.to_string()));
        let mut taken = Vec::new();
        for s in subnets.values() {
            if !backend.claim_subnet(*s, env_id.as_str())? {
                taken.push(*s);
            }
        }
        if taken.is_empty() {
            return Ok(subnets);
        }
        tracing::info!(
            ?taken,
            "subnets claimed on the daemon by another client; leasing others"
        );
        backend.release_claims(env_id.as_str())?;
        leases.release(&owner)?;
        in_use.extend(taken);
    }
    Err(crate::host::lease::LeaseError::Exhausted {
        needed: requests.len(),
        free: 0,
        dir: leases.dir().to_path_buf(),
    }
    .into())
}

/// Undoes a half-done init when dropped unarmed: volumes, claims, leases,
/// use records, then what the workdir claim made.
struct InitGuard<'a> {
    claim: workdir::Claim,
    lease: Option<(&'a LeaseStore, LeaseOwner)>,
    /// Volumes made on a remote hypervisor: their name prefix.
    volumes: Option<(Arc<Backend>, String)>,
    /// Subnets claimed on a shared daemon, by the env id.
    claims: Option<(Arc<Backend>, String)>,
    /// Template use records, by env id.
    uses: Option<(TemplateStore, EnvId)>,
    armed: bool,
}

impl InitGuard<'_> {
    fn new(claim: workdir::Claim) -> Self {
        crate::util::logging::attach_env_log(&claim.dir.path().join(workdir::LOG_FILE));
        InitGuard {
            claim,
            lease: None,
            volumes: None,
            claims: None,
            uses: None,
            armed: false,
        }
    }
}

impl Drop for InitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            return;
        }
        if let Some((backend, prefix)) = &self.volumes
            && let Err(e) = backend.delete_volumes_with_prefix(prefix)
        {
            tracing::warn!(error = %e, "rollback: deleting the environment's volumes failed");
        }
        if let Some((backend, env_id)) = &self.claims
            && let Err(e) = backend.release_claims(env_id)
        {
            tracing::warn!(error = %e, "rollback: releasing subnet claims failed");
        }
        if let Some((store, owner)) = &self.lease
            && let Err(e) = store.release(owner)
        {
            tracing::warn!(error = %e, "rollback: releasing subnet leases failed");
        }
        if let Some((store, env_id)) = &self.uses {
            store.forget_env(env_id, self.claim.dir.path());
        }
        crate::util::logging::detach_env_log(&self.claim.dir.path().join(workdir::LOG_FILE));
        self.claim.undo();
    }
}

/// Where an environment's files are made.
enum Placement<'a> {
    /// Local files in the workdir (the fast path); QEMU runs as this user.
    Local { run_as: (u32, u32) },
    /// Volumes of the remote hypervisor's `lago` pool, named with `prefix`:
    /// it shares no files with this machine.
    Remote { backend: &'a Backend, prefix: String },
}

impl<'a> Placement<'a> {
    /// Remote when the hypervisor is (its pool is made then, and its
    /// volumes are the guard's to delete), else local.
    fn choose(remote: bool, backend: &'a Arc<Backend>, env_id: &EnvId, guard: &mut InitGuard<'_>) -> Result<Self> {
        if !remote {
            let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
            return Ok(Placement::Local {
                run_as: (uid.as_raw(), gid.as_raw()),
            });
        }
        backend.ensure_pool()?;
        guard.volumes = Some((backend.clone(), env_id.object_prefix()));
        Ok(Placement::Remote {
            backend,
            prefix: env_id.object_prefix(),
        })
    }
}

impl SavedEnv {
    /// The state of a new environment before its VMs are made.
    fn new(
        env_id: &EnvId,
        spec: &EnvSpec,
        plan: &EnvPlan,
        backend: &Backend,
        leases: &LeaseStore,
        store: &TemplateStore,
    ) -> Self {
        SavedEnv {
            env_id: env_id.clone(),
            spec: spec.clone(),
            plan: plan.clone(),
            libvirt_uri: backend.uri().to_owned(),
            lease_dir: leases.dir().to_path_buf(),
            accel: String::new(),
            network_xml: plan
                .nets
                .iter()
                .map(|n| (n.name.clone(), backend::xml::network_xml(n)))
                .collect(),
            domain_xml: BTreeMap::new(),
            host_keys: BTreeMap::new(),
            templates: BTreeMap::new(),
            remote: None,
            store: Some(store.root().to_path_buf()),
            warm: None,
            session: None,
            host_secret_keys: BTreeMap::new(),
        }
    }
}

/// What making the VMs needs, and the state it fills in.
struct Build<'a> {
    saved: SavedEnv,
    templates: Templates<'a>,
    dir: &'a workdir::Dir,
    client_public: String,
    placement: Placement<'a>,
    accel: Accel,
    owner: Option<&'a Owner>,
    /// The boot image the environment restores from: its disks are layered
    /// on its disks, its VMs keep its host keys.
    image: Option<crate::host::store::warm::BootImage>,
}

impl Build<'_> {
    /// Makes VM `vs`: its disks, its seed, how it boots, its domain XML.
    fn vm(&mut self, vs: &config::VmSpec, vp: &plan::VmPlan) -> Result<()> {
        // Where each file is on the hypervisor, when it is remote.
        let mut there = BTreeMap::new();
        let mut root_template = None;
        for (ds, dp) in vs.disks.iter().zip(&vp.disks) {
            let t = self.disk(vs, ds, dp, &mut there)?;
            if std::ptr::eq(ds, &vs.disks[0]) {
                root_template = t;
            }
        }
        self.seed(vs, vp, &mut there)?;
        let boot = self.boot(vs, vp, root_template)?;
        let placed = self.placed(vs, vp, &there)?;
        let params = DomainParams {
            spec: vs,
            plan: &placed,
            env_id: self.saved.env_id.as_str(),
            workdir: self.dir.path(),
            accel: self.accel,
            boot,
            seed_dev: vp.seed.as_ref().map(|_| backend::xml::free_virtio_dev(vp)),
            // A session daemon runs QEMU as this user anyway.
            run_as: match self.placement {
                Placement::Local { run_as } if self.saved.session.is_none() => Some(run_as),
                _ => None,
            },
            owner: self.owner,
            session: self.session_nics(&vs.name),
            nets: self.saved.spec.nets.iter().map(|n| n.name.clone()).collect(),
        };
        self.saved
            .domain_xml
            .insert(vs.name.clone(), backend::xml::domain_xml(&params));
        Ok(())
    }

    /// VM `vm`'s NICs in session mode.
    fn session_nics(&self, vm: &str) -> Option<backend::xml::SessionNics> {
        let s = self.saved.session.as_ref()?;
        Some(backend::xml::SessionNics {
            group: s.group,
            port: s.port,
            ssh_port: s.ssh_ports.get(vm).copied().unwrap_or(22),
            egress: s.egress,
            user_mac: session_user_mac(vm),
        })
    }

    /// Makes disk `ds` of VM `vs`, locally or as a volume (its path there
    /// goes into `there`); returns the template it is layered on, if any.
    fn disk(
        &mut self,
        vs: &config::VmSpec,
        ds: &config::DiskSpec,
        dp: &plan::DiskPlan,
        there: &mut BTreeMap<PathBuf, PathBuf>,
    ) -> Result<Option<Template>> {
        let template = match &dp.source {
            DiskSource::Template { name, version, digest } => {
                let t = self.templates.get(name, version, digest)?;
                let key = format!("{}/{}", vs.name, ds.name);
                self.saved.templates.insert(key, format!("{}:{}", t.name, t.version));
                Some(t)
            }
            _ => None,
        };
        match &self.placement {
            Placement::Remote { backend, prefix } => {
                let path = remote_disk(backend, prefix, vs, ds, dp, &mut self.templates)?;
                there.insert(dp.path.clone(), path);
            }
            Placement::Local { .. } => {
                let warm = match &self.image {
                    Some(img) => super::warm::layer_disk(img, &vs.name, dp)?,
                    None => false,
                };
                if !warm {
                    local_disk(dp, template.as_ref())?;
                }
            }
        }
        Ok(template)
    }

    /// Writes VM `vs`'s cloud-init seed (with a host key made for it, which
    /// the state pins), and uploads it on a remote hypervisor.
    fn seed(&mut self, vs: &config::VmSpec, vp: &plan::VmPlan, there: &mut BTreeMap<PathBuf, PathBuf>) -> Result<()> {
        let Some(seed_path) = &vp.seed else { return Ok(()) };
        let env_id = &self.saved.env_id;
        let adopted = match &self.image {
            Some(img) => super::warm::host_key(img, &vs.name)?,
            None => None,
        };
        let host = match adopted {
            Some(k) => k,
            None => KeyPair::generate(&format!("{}@lago-{env_id}", vs.name))?,
        };
        let secret = crate::host::store::warm::SavedHostKey {
            private_openssh: host.private_openssh.clone(),
            private_dropbear_hex: super::warm::to_hex(&host.private_dropbear),
            public_openssh: host.public_openssh.clone(),
        };
        self.saved.host_secret_keys.insert(vs.name.clone(), secret);
        let keys = SeedKeys {
            authorized: vec![self.client_public.clone()],
            host_private: host.private_openssh.clone(),
            host_public: host.public_openssh.clone(),
            host_private_dropbear: Some(host.private_dropbear.clone()),
            root_password_hash: vs.root_password.as_deref().map(keys::password_hash).transpose()?,
        };
        let mut files = seed::seed_files(vs, vp, &format!("{}{}", env_id.object_prefix(), vs.name), &keys);
        if self.saved.session.is_some() {
            let user_mac = session_user_mac(&vs.name).to_string();
            files = files.for_session(vp, &user_mac, seed::hosts_lines(&self.saved.plan));
        }
        self.dir.write_new(seed_path, &files.image(), 0o600)?;
        if let Placement::Remote { backend, prefix } = &self.placement {
            let name = backend::storage::volume_name(&format!("{prefix}{}-cidata.img", vs.name));
            let path = backend.upload_volume(&name, seed_path)?;
            there.insert(seed_path.clone(), PathBuf::from(path));
        }
        self.saved.host_keys.insert(vs.name.clone(), host.public_openssh);
        Ok(())
    }

    /// How VM `vs` boots: a kernel given directly (the init file's, which
    /// wins, or the one its root template brings), or from its disk.
    fn boot(&self, vs: &config::VmSpec, vp: &plan::VmPlan, root_template: Option<Template>) -> Result<Boot> {
        let Some(DirectKernel { kernel, initrd, args }) = direct_kernel(vs, root_template)? else {
            return Ok(Boot::Disk);
        };
        let (kernel, initrd) = match &self.placement {
            Placement::Remote { backend, prefix } => upload_kernel(backend, prefix, vs, kernel, initrd)?,
            Placement::Local { .. } => (kernel, initrd),
        };
        let mut boot = kernel_boot(vp, kernel, initrd, args.as_deref());
        if let (Boot::Kernel { cmdline, .. }, Some(_)) = (&mut boot, &self.saved.session) {
            session_cmdline(cmdline, vp);
        }
        Ok(boot)
    }

    /// VM `vp`'s plan with its paths on the hypervisor when it is remote:
    /// its volumes, and a volume for its console log.
    fn placed(
        &self,
        vs: &config::VmSpec,
        vp: &plan::VmPlan,
        there: &BTreeMap<PathBuf, PathBuf>,
    ) -> Result<plan::VmPlan> {
        let mut placed = vp.clone();
        let Placement::Remote { backend, prefix } = &self.placement else {
            return Ok(placed);
        };
        for d in &mut placed.disks {
            if let Some(p) = there.get(&d.path) {
                d.path = p.clone();
            }
        }
        if let Some(seed) = &mut placed.seed
            && let Some(p) = there.get(seed)
        {
            *seed = p.clone();
        }
        let console = backend::storage::volume_name(&format!("{prefix}{}-console.log", vs.name));
        placed.console_log = PathBuf::from(backend.create_volume(&console, 0, "raw", None)?);
        Ok(placed)
    }
}

/// Makes disk `dp` in the workdir: an overlay on its template (or qcow2
/// file), an empty image, or a copy; a file used in place must exist.
pub(super) fn local_disk(dp: &plan::DiskPlan, template: Option<&Template>) -> Result<()> {
    match (&dp.source, template) {
        (DiskSource::Template { .. }, Some(t)) => image::create_overlay(&dp.path, &t.disk)?,
        (DiskSource::TemplateFile { path }, _) => image::create_overlay(&dp.path, path)?,
        (DiskSource::Empty { size_bytes }, _) => image::create_empty(&dp.path, dp.format, *size_bytes)?,
        (
            DiskSource::File {
                path,
                make_a_copy: true,
            },
            _,
        ) => image::copy(path, &dp.path)?,
        (DiskSource::File { path, .. }, _) if !path.is_file() => {
            return Err(image::ImageError::Missing { path: path.clone() }.into());
        }
        // A file used in place, as it is (a template disk always has its template).
        _ => {}
    }
    Ok(())
}

/// The MAC of VM `vm`'s user-mode NIC in session mode (a locally
/// administered one, from its name).
fn session_user_mac(vm: &str) -> plan::Mac {
    let h = vm
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let [a, b, c, _] = h.to_be_bytes();
    plan::Mac([0x52, 0x54, 0x00, a, b, c])
}

/// A directly booted kernel's command line in session mode: the user-mode
/// NIC is the one whose DHCP lease sets the route and resolver
/// (`lago.mgmt=`), and each NIC with an address gets it statically
/// (`lago.ip=<mac>,<ip>/24`): there is no DHCP server on the nets.
fn session_cmdline(cmdline: &mut String, vp: &plan::VmPlan) {
    let kept: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("lago.mgmt="))
        .collect();
    let mut line = kept.join(" ");
    line.push_str(&format!(" lago.mgmt={}", session_user_mac(&vp.name)));
    for nic in &vp.nics {
        if let Some(ip) = nic.ip {
            line.push_str(&format!(" lago.ip={},{ip}/24", nic.mac));
        }
    }
    *cmdline = line;
}

/// How VM `vp` boots kernel `kernel` directly: its command line with
/// lago's parameters.
fn kernel_boot(vp: &plan::VmPlan, kernel: PathBuf, initrd: Option<PathBuf>, args: Option<&str>) -> Boot {
    let root_dev = vp.disks.first().map(|d| d.dev.clone()).unwrap_or_else(|| "vda".into());
    Boot::Kernel {
        cmdline: direct_cmdline(
            args.unwrap_or_default(),
            &root_dev,
            initrd.is_some(),
            vp.seed.is_some(),
            // The NIC whose DHCP lease sets the default route and resolver.
            vp.mgmt_nic().map(|i| vp.nics[i].mac.to_string()),
        ),
        kernel,
        initrd,
    }
}

/// A kernel booted directly.
struct DirectKernel {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    args: Option<String>,
}

/// The kernel a VM boots directly, if it does: the init file's `kernel`
/// (its files must exist), else its root template's.
fn direct_kernel(vs: &config::VmSpec, root_template: Option<Template>) -> Result<Option<DirectKernel>> {
    match (&vs.kernel_boot, root_template) {
        (Some(k), _) => {
            for f in std::iter::once(&k.kernel).chain(&k.initrd) {
                if !f.is_file() {
                    return Err(image::ImageError::Missing { path: f.clone() }.into());
                }
            }
            Ok(Some(DirectKernel {
                kernel: k.kernel.clone(),
                initrd: k.initrd.clone(),
                args: k.args.clone(),
            }))
        }
        (
            None,
            Some(Template {
                kernel: Some(kernel),
                initrd,
                cmdline,
                ..
            }),
        ) => Ok(Some(DirectKernel {
            kernel,
            initrd,
            args: cmdline,
        })),
        _ => Ok(None),
    }
}

/// A directly booted kernel and initrd as volumes of a remote hypervisor:
/// a template's are shared like its disk (named by their content); one the
/// init file names is the VM's own.
fn upload_kernel(
    backend: &Backend,
    prefix: &str,
    vs: &config::VmSpec,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
) -> Result<(PathBuf, Option<PathBuf>)> {
    let shared = vs.kernel_boot.is_none();
    let upload = |what: &str, local: &Path| -> Result<PathBuf> {
        let path = if shared {
            backend.template_volume(local, &crate::host::store::sha256_file(local)?)?
        } else {
            let name = backend::storage::volume_name(&format!("{prefix}{}-{what}", vs.name));
            backend.upload_volume(&name, local)?
        };
        Ok(PathBuf::from(path))
    };
    let kernel = upload("kernel", &kernel)?;
    let initrd = initrd.map(|i| upload("initrd", &i)).transpose()?;
    Ok((kernel, initrd))
}

/// The store's templates an init uses, each resolved once (for `tiny`,
/// checking it is up to date reads its inputs) and recorded as used by the
/// environment.
pub(super) struct Templates<'a> {
    store: &'a TemplateStore,
    workdir: &'a Path,
    env_id: &'a EnvId,
    resolved: BTreeMap<(String, Option<String>, Option<String>), Template>,
}

impl<'a> Templates<'a> {
    fn new(store: &'a TemplateStore, workdir: &'a Path, env_id: &'a EnvId) -> Self {
        Templates {
            store,
            workdir,
            env_id,
            resolved: BTreeMap::new(),
        }
    }

    /// Template `name` at `version`, whose image has sha256 `digest` when that is pinned.
    fn get(&mut self, name: &str, version: &Option<String>, digest: &Option<String>) -> Result<Template> {
        let key = (name.to_owned(), version.clone(), digest.clone());
        if let Some(t) = self.resolved.get(&key) {
            return Ok(t.clone());
        }
        let t = self.store.resolve_pinned(name, version.as_deref(), digest.as_deref())?;
        self.store.record_use(&t, self.workdir, self.env_id)?;
        self.resolved.insert(key, t.clone());
        Ok(t)
    }
}

/// The command line of a directly booted kernel: its own `args`, then
/// lago's parameters for the guest (`lago.root=`, `lago.seed=1`,
/// `lago.mgmt=<mac>`). A kernel booted without an initrd mounts the root disk
/// itself, so it also gets `root=/dev/<root dev>`, unless `args` name one.
fn direct_cmdline(args: &str, root_dev: &str, has_initrd: bool, seed: bool, mgmt_mac: Option<String>) -> String {
    let mut line = args.trim().to_owned();
    let mut add = |w: String| {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&w);
    };
    if !has_initrd && !args.split_whitespace().any(|w| w.starts_with("root=")) {
        add(format!("root=/dev/{root_dev}"));
    }
    add(format!("lago.root=/dev/{root_dev}"));
    if seed {
        add("lago.seed=1".into());
    }
    if let Some(mac) = mgmt_mac {
        add(format!("lago.mgmt={mac}"));
    }
    line
}

/// Makes disk `ds` of VM `vs` as a volume on a remote hypervisor; returns its path there.
fn remote_disk(
    backend: &Backend,
    prefix: &str,
    vs: &config::VmSpec,
    ds: &config::DiskSpec,
    dp: &crate::plan::DiskPlan,
    templates: &mut Templates<'_>,
) -> Result<PathBuf> {
    use backend::storage::volume_name;
    let own = volume_name(&format!("{prefix}{}-{}.{}", vs.name, ds.name, ds.format.as_str()));
    // A qcow2 file goes up alone: one naming a backing file would make the
    // hypervisor open a path of its own choosing.
    let standalone = |path: &Path| -> Result<()> {
        match image::backing_file(path)? {
            Some(b) => Err(Error::Usage {
                message: format!(
                    "{}: disk {} ({}) has a backing file ({}); a remote hypervisor gets the file alone: flatten it first (qemu-img convert -O qcow2)",
                    vs.name,
                    ds.name,
                    path.display(),
                    b.display()
                ),
            }),
            None => Ok(()),
        }
    };
    let path = match &dp.source {
        DiskSource::Template { name, version, digest } => {
            let t = templates.get(name, version, digest)?;
            // Named by its content: two images under one version never share a volume.
            let sha = match &t.sha256 {
                Some(sha) => sha.clone(),
                None => crate::host::store::sha256_file(&t.disk)?,
            };
            let base = backend.template_volume(&t.disk, &sha)?;
            let (_, virtual_size) = image::sizes(&t.disk)?;
            let own = volume_name(&format!("{prefix}{}-{}.qcow2", vs.name, ds.name));
            backend.create_volume(&own, virtual_size, "qcow2", Some(&base))?
        }
        DiskSource::TemplateFile { path } => {
            if !path.is_file() {
                return Err(image::ImageError::Missing { path: path.clone() }.into());
            }
            standalone(path)?;
            let base = backend.upload_volume(
                &volume_name(&format!("{prefix}{}-{}-base.qcow2", vs.name, ds.name)),
                path,
            )?;
            let (_, virtual_size) = image::sizes(path)?;
            let own = volume_name(&format!("{prefix}{}-{}.qcow2", vs.name, ds.name));
            backend.create_volume(&own, virtual_size, "qcow2", Some(&base))?
        }
        DiskSource::Empty { size_bytes } => backend.create_volume(&own, *size_bytes, ds.format.as_str(), None)?,
        DiskSource::File { path, make_a_copy } => {
            if !path.is_file() {
                return Err(image::ImageError::Missing { path: path.clone() }.into());
            }
            if ds.format == config::DiskFormat::Qcow2 {
                standalone(path)?;
            }
            if !make_a_copy {
                tracing::warn!(vm = %vs.name, disk = %ds.name, path = %path.display(), "a remote hypervisor cannot use a local file in place: it gets a copy");
            }
            backend.upload_volume(&own, path)?
        }
    };
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::direct_cmdline;

    #[test]
    fn a_session_guest_is_told_its_addresses_and_its_user_mode_nic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("init.yaml");
        std::fs::write(&path, "domains:\n  vm01:\n    nics: [{net: a}, {net: b}]\n    disks: [{type: template, template_name: tiny, name: root, dev: vda}]\nnets:\n  a: {type: nat}\n  b: {type: isolated}\n").expect("write");
        let spec = lago_config::load(&path).expect("init file");
        let env_id = crate::plan::EnvId::new("abcd1234").expect("id");
        let subnets = [("a", 201), ("b", 202)]
            .into_iter()
            .map(|(n, t)| (n.to_owned(), crate::plan::Subnet::new(t).expect("subnet")))
            .collect();
        let plan = crate::plan::plan(&spec, &env_id, &subnets, dir.path()).expect("plan");
        let vp = &plan.vms[0];
        let mut line = format!("console=ttyS0 lago.seed=1 lago.mgmt={}", vp.nics[0].mac);
        super::session_cmdline(&mut line, vp);
        let user = super::session_user_mac("vm01").to_string();
        assert_eq!(
            line,
            format!(
                "console=ttyS0 lago.seed=1 lago.mgmt={user} lago.ip={},192.168.201.2/24 lago.ip={},192.168.202.2/24",
                vp.nics[0].mac, vp.nics[1].mac
            )
        );
        assert!(user.starts_with("52:54:00:"));
        let state = super::session_state(&env_id, &spec).expect("state");
        assert_eq!(state.group, [0xab, 0xcd]);
        assert!(state.egress, "a nat net: the user-mode NIC reaches out");
        assert!(state.ssh_ports["vm01"] > 0);
    }

    #[test]
    fn a_kernel_without_initrd_is_told_its_root_unless_its_args_say() {
        assert_eq!(
            direct_cmdline(
                "console=ttyS0 quiet",
                "sda",
                false,
                true,
                Some("54:52:c0:a8:c8:02".into())
            ),
            "console=ttyS0 quiet root=/dev/sda lago.root=/dev/sda lago.seed=1 lago.mgmt=54:52:c0:a8:c8:02"
        );
        // With an initrd, the initramfs finds the root (lago.root=): no root=.
        assert_eq!(
            direct_cmdline("console=ttyS0", "vda", true, false, None),
            "console=ttyS0 lago.root=/dev/vda"
        );
        // The init file's own root= is kept, not overridden.
        assert_eq!(
            direct_cmdline("root=LABEL=sys ro", "vda", false, false, None),
            "root=LABEL=sys ro lago.root=/dev/vda"
        );
        assert_eq!(
            direct_cmdline("", "vdb", false, false, None),
            "root=/dev/vdb lago.root=/dev/vdb"
        );
    }
}
