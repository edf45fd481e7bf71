//! `wrun run`: runs a module or an image in a new sandbox, attached (exit code of the guest)
//! or detached as a named container (`-d`: prints its ID once it runs).

pub(super) mod plain_line;

use super::Failure;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use wrun::config::{EngineSettings, RegistrySettings};
use wrun::container::monitor;
use wrun::container::record::{self, ContainerConfig, Containers, ImageRef, RestartPolicy};
use wrun::exit;
use wrun::handoff::Handoff;
use wrun::image::{self, Runnable};
use wrun::spec::native::NativeOptions;
use wrun::spec::oci;
use wrun::spec::{self, EnvEntry, Limits, NativeSpec, Payload, Preopen, RootfsSource, RunSpec};
use wrun::spec::{SandboxSpec, WasmPayload};
use wrun::state::StateRoot;

/// Run a WebAssembly module, component or image in a new sandbox
#[derive(clap::Args, Debug, Clone)]
pub struct RunCommand {
    /// Run in the background as a container and print its ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Name the container (makes an attached run a container too, with logs)
    #[arg(long, value_parser = spec::parse_name)]
    name: Option<String>,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Make a host directory visible to the guest (repeatable); `:ro` makes it read-only
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = Preopen::parse)]
    dirs: Vec<Preopen>,
    /// Docker's form of --dir: absolute HOST:GUEST paths (repeatable)
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro]", value_parser = Preopen::parse_volume)]
    volumes: Vec<Preopen>,
    /// Set an environment variable, or pass the caller's value with NAME alone (repeatable)
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = spec::parse_env)]
    env: Vec<EnvEntry>,
    /// Read environment variables from a file of NAME=VALUE lines (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Run it again when it exits: no, on-failure[:N], always or unless-stopped (with -d)
    #[arg(long, value_name = "POLICY", value_parser = RestartPolicy::parse, default_value = "no", conflicts_with = "rm")]
    restart: RestartPolicy,
    /// Label the container, KEY=VALUE or KEY (repeatable), for `ps --filter label=`
    #[arg(short = 'l', long = "label", value_name = "KEY[=VALUE]")]
    labels: Vec<String>,
    /// Read labels from a file of KEY=VALUE lines (repeatable)
    #[arg(long = "label-file", value_name = "FILE")]
    label_files: Vec<PathBuf>,
    /// Memory limit, e.g. 64m or 1g: the guest's memories and tables together, and the
    /// sandbox's cgroup (plus 32 MiB for the runtime)
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = spec::parse_memory)]
    memory: Option<u64>,
    /// CPU limit in CPUs, e.g. 0.5 (a cgroup CPU quota)
    #[arg(long, value_name = "N.N", value_parser = spec::parse_cpus)]
    cpus: Option<u64>,
    /// Maximum number of processes and threads in the sandbox (the runtime uses up to 4)
    #[arg(long, alias = "pids-limit", value_name = "N", value_parser = spec::parse_pids)]
    pids: Option<u64>,
    /// Interrupt the guest after this long (e.g. 500ms, 10s, 2m); exit code 124
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    timeout: Option<Duration>,
    /// Publish a port: HTTP served from a `wasi:http/incoming-handler` component, the
    /// listener a command component's socket gets when it binds GUEST_PORT, or a preview-1
    /// module's pre-opened fd 3, 4, … (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "[HOST_IP:]HOST_PORT:GUEST_PORT", value_parser = spec::PublishedPort::parse, conflicts_with_all = ["rootfs", "bundle"])]
    publish: Vec<spec::PublishedPort>,
    /// With -p, for an HTTP handler: answer 503 to a request still running after this long
    /// (e.g. 2s)
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration, requires = "publish")]
    request_timeout: Option<Duration>,
    /// Let the guest connect to this host (TCP, or HTTP requests; default port 80), through
    /// wrun (repeatable); every other connection is refused
    #[arg(long, value_name = "HOST[:PORT]", value_parser = spec::OutboundRule::parse)]
    allow_outbound: Vec<spec::OutboundRule>,
    /// Cgroup under which the run's cgroup is created, in every hierarchy
    #[arg(long, value_name = "PATH", default_value = "wrun", value_parser = spec::parse_cgroup_parent)]
    cgroup_parent: String,
    /// Run a native command in this root file system directory (the arguments are the command)
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    rootfs: Option<PathBuf>,
    /// Run an OCI runtime bundle (config.json and its root file system)
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Mount a native workload's root file system read-only
    #[arg(long)]
    read_only: bool,
    /// Let a module define shared memories (wasmtime's tier-2 threads support, off by
    /// default as in wasmtime; the guest still has one thread: no wasi-threads)
    #[arg(long, conflicts_with_all = ["rootfs", "bundle"])]
    shared_memory: bool,
    /// Run a minimal init as PID 1 of a native workload, which reaps the zombies it adopts
    #[arg(long)]
    init: bool,
    /// User of a native workload: NAME|UID[:GROUP|GID] (the image's user by default)
    #[arg(short = 'u', long, value_name = "USER")]
    user: Option<String>,
    /// Working directory of a native workload
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Use this run ID instead of a fresh one (a containerd task's ID)
    #[arg(long, hide = true, value_parser = spec::parse_name, conflicts_with_all = ["detach", "name"])]
    id: Option<String>,
    #[command(flatten)]
    handoff: Handoff,
    /// A module file (wasm binary, component or WAT text), an image (NAME[:TAG] or digest),
    /// or with --rootfs the command; then the arguments passed to the guest (for an image:
    /// they replace its default command). Everything after it is the guest's, as in
    /// `docker run IMAGE ARGS…` and `wasmtime run MODULE ARGS…`
    #[arg(
        value_name = "IMAGE|MODULE",
        trailing_var_arg = true,
        required_unless_present = "bundle"
    )]
    command: Vec<String>,
}

/// What the positional argument named.
struct Target {
    module: PathBuf,
    module_digest: Option<String>,
    argv: Vec<String>,
    image_env: Vec<String>,
    image: Option<ImageRef>,
    /// A native image: its unpacked layers and its run config.
    native: Option<(PathBuf, Option<oci_spec::image::Config>)>,
}

impl RunCommand {
    /// The module, image or command: the first word of the positional arguments.
    fn target(&self) -> &str {
        self.command.first().map_or("", String::as_str)
    }

    /// The guest's arguments: every word after the target, less one leading `--` (still
    /// accepted, as before everything after the target was the guest's).
    fn args(&self) -> &[String] {
        let rest = self.command.get(1..).unwrap_or_default();
        rest.strip_prefix(&["--".to_string()]).unwrap_or(rest)
    }

    pub fn execute(
        self,
        state: &StateRoot,
        engine: &EngineSettings,
        registries: &RegistrySettings,
    ) -> Result<i32, Failure> {
        let container = self.detach || self.name.is_some();
        let (detach, auto_remove, name) = (self.detach, self.rm, self.name.clone());
        let id = self.id.clone().unwrap_or_else(wrun::sandbox::new_run_id);
        let handoff = self.handoff.clone();
        let labels = labels_of(&self.label_files, &self.labels)?;
        let self_restart = self.restart;
        if self_restart != RestartPolicy::No && !self.detach {
            return Err(Failure::runtime(anyhow::anyhow!(
                "--restart {}: a restart policy is for detached containers (-d)",
                self_restart.name()
            )));
        }
        let (spec, image) = self.into_spec(state, &id, engine, registries)?;
        let spec = if detach { spec.for_service() } else { spec };
        if !container {
            return run_attached(&spec, state, &id, handoff);
        }
        if detach {
            check_can_listen(&spec, state)?;
        }
        let containers = Containers::open(state).map_err(|e| Failure::runtime(e.into()))?;
        let config = ContainerConfig {
            name: name.unwrap_or_else(|| record::random_name(&id)),
            id,
            created: record::created_now(),
            image,
            spec,
            auto_remove,
            labels,
            restart: self_restart,
        };
        let created = containers
            .create(config)
            .map_err(|e| Failure::runtime(e.into()))?;
        if detach {
            monitor::start_detached(&containers, &created, state)?;
            wrun::out_line!("{}", created.id());
            return Ok(0);
        }
        let report = monitor::supervise(&containers, &created, state, true, None)?;
        if let Some(note) = &report.note {
            wrun::err_line!("wrun: {note}");
        }
        Ok(report.code)
    }

    fn into_spec(
        self,
        state: &StateRoot,
        id: &str,
        engine: &EngineSettings,
        registries: &RegistrySettings,
    ) -> Result<(RunSpec, Option<ImageRef>), Failure> {
        if let Some(bundle) = &self.bundle {
            let mut spec =
                oci::load(bundle, &self.cgroup_parent).map_err(|e| Failure::runtime(e.into()))?;
            if let Payload::Native(native) = &mut spec.payload {
                native.init = self.init;
            }
            return Ok((spec.with_engine(engine).for_service(), None));
        }
        let text = self.target().to_string();
        if let Some(rootfs) = self.rootfs.clone() {
            let argv: Vec<String> = std::iter::once(text).chain(self.args().to_vec()).collect();
            let target = Target {
                module: PathBuf::new(),
                module_digest: None,
                argv,
                image_env: Vec::new(),
                image: None,
                native: None,
            };
            return self.native_spec(target, RootfsSource::Directory(rootfs), None, id, engine);
        }
        let target = resolve_target(&text, self.args(), state, (engine, registries))?;
        if let Some((layers, config)) = target.native.clone() {
            let work = state.overlays_dir().join(id);
            return self.native_spec(
                target,
                RootfsSource::Image { layers, work },
                config,
                id,
                engine,
            );
        }
        let limits = self.limits();
        let env = resolve_env(&target.image_env, &self.env_files, self.env)?;
        let mut preopens = self.dirs;
        preopens.extend(self.volumes);
        let mut engine = engine.clone();
        if self.shared_memory {
            engine.features.shared_memory = Some(true);
        }
        let spec = RunSpec {
            sandbox: SandboxSpec::new(limits, self.cgroup_parent),
            payload: Payload::Wasm(WasmPayload {
                module: target.module,
                args: target.argv,
                env,
                preopens,
                module_digest: target.module_digest,
                ports: self.publish,
                request_timeout: self.request_timeout,
                allow_outbound: self.allow_outbound,
                resolver: Default::default(),
            }),
        };
        Ok((spec.with_engine(&engine), target.image))
    }

    /// The limits the flags ask for.
    fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            cpu_quota_us: self.cpus,
            pids: self.pids,
            timeout: self.timeout,
            ..Limits::default()
        }
    }

    /// A native run: the spec wrun writes for the image (or directory) and the flags.
    fn native_spec(
        self,
        target: Target,
        rootfs: RootfsSource,
        config: Option<oci_spec::image::Config>,
        id: &str,
        engine: &EngineSettings,
    ) -> Result<(RunSpec, Option<ImageRef>), Failure> {
        if !self.publish.is_empty() {
            return Err(Failure::runtime(anyhow::anyhow!(
                "-p serves HTTP from a Wasm component; a native workload has no network to publish"
            )));
        }
        if self.shared_memory {
            return Err(Failure::runtime(anyhow::anyhow!(
                "--shared-memory is for Wasm modules; `{}` is a native workload",
                target.argv.first().map_or("", String::as_str)
            )));
        }
        let limits = self.limits();
        let env = resolve_env(&target.image_env, &self.env_files, self.env)?;
        let users_from = match &rootfs {
            RootfsSource::Image { layers, .. } => layers.clone(),
            RootfsSource::Directory(dir) => dir.clone(),
        };
        let mut volumes = self.dirs;
        volumes.extend(self.volumes);
        let options = NativeOptions {
            args: target.argv,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: self
                .workdir
                .or_else(|| config.as_ref().and_then(|c| c.working_dir().clone()))
                .filter(|w| !w.is_empty()),
            user: self
                .user
                .or_else(|| config.as_ref().and_then(|c| c.user().clone())),
            volumes,
            read_only: self.read_only,
            hostname: wrun::sandbox::short_id(id).to_string(),
            init: self.init,
        };
        let oci = wrun::spec::native::spec_for(&users_from, &options)
            .map_err(|e| Failure::runtime(e.into()))?;
        let spec = RunSpec {
            sandbox: SandboxSpec {
                engine: engine.clone(),
                ..SandboxSpec::new(limits, self.cgroup_parent)
            },
            payload: Payload::Native(Box::new(NativeSpec {
                spec: oci,
                rootfs,
                init: self.init,
                bundle: None,
            })),
        };
        Ok((spec, target.image))
    }
}

/// An attached run without a record; a native image's writable layer goes with it.
fn run_attached(
    spec: &RunSpec,
    state: &StateRoot,
    id: &str,
    handoff: Handoff,
) -> Result<i32, Failure> {
    let options = wrun::sandbox::Options {
        id: Some(id.to_string()),
        stdio: handoff.open_stdio().map_err(Failure::runtime)?,
        gate: handoff.gate(),
        // In the cgroup the standalone path would use: the supervising program looks there.
        own_cgroup: !handoff.is_plain(),
        ..Default::default()
    };
    let report = wrun::launch::launch(spec, state, options)?;
    if let Some(note) = &report.note {
        wrun::err_line!("wrun: {note}");
    }
    Ok(report.code)
}

/// A file that exists, or anything written as a path, is a module; anything else is looked
/// up as an image.
/// `-d -p`: a module that cannot listen is refused before an ID is printed, as an
/// attached run refuses it before the guest starts. Loading it also fills the AOT cache
/// for the container's own start. On one thread: the monitor is forked next.
fn check_can_listen(spec: &RunSpec, state: &StateRoot) -> Result<(), Failure> {
    use wrun::wasm::{self, exec::ExecError, source::ModuleFile};
    let Payload::Wasm(payload) = &spec.payload else {
        return Ok(());
    };
    if payload.ports.is_empty() {
        return Ok(());
    }
    state.ensure().map_err(|e| Failure::runtime(e.into()))?;
    let cannot_execute = |error: anyhow::Error| Failure {
        error,
        code: exit::CANNOT_EXECUTE,
    };
    let engine = wasm::engine::new_engine(false, &spec.sandbox.engine).map_err(|e| {
        Failure::runtime(anyhow::anyhow!("failed to create the wasm engine: {e:#}"))
    })?;
    let path = &payload.module;
    let file = std::fs::File::open(path)
        .with_context(|| format!("failed to open module `{}`", path.display()))
        .map_err(cannot_execute)?;
    let module =
        ModuleFile::new(file, path).map_err(|e| cannot_execute(wasm::LoadError::from(e).into()))?;
    let cache = wasm::cache::AotCache::new(state.cache_dir());
    let (program, _) = wasm::load(&engine, &module, &cache, payload.module_digest.as_deref())
        .map_err(|e| cannot_execute(e.into()))?;
    wasm::serve::serves_http(&engine, &program, path, true)
        .map(drop)
        .map_err(|e: ExecError| cannot_execute(e.into()))
}

/// What the positional argument names: a module file, or an image in the store.
fn resolve_target(
    text: &str,
    args: &[String],
    state: &StateRoot,
    (engine, registries): (&EngineSettings, &RegistrySettings),
) -> Result<Target, Failure> {
    let path = PathBuf::from(text);
    let looks_like_path = text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || [".wasm", ".wat"].iter().any(|ext| text.ends_with(ext));
    if path.exists() || looks_like_path {
        return Ok(Target {
            argv: std::iter::once(text.to_string())
                .chain(args.iter().cloned())
                .collect(),
            module: path,
            module_digest: None,
            image_env: Vec::new(),
            image: None,
            native: None,
        });
    }
    let not_found = || Failure {
        code: exit::NOT_FOUND,
        error: anyhow::anyhow!("module or image `{text}` not found"),
    };
    let store = image::open_store(state).map_err(|e| Failure::runtime(e.into()))?;
    let entry = match store.resolve(text) {
        Ok(entry) => entry,
        // As `docker run`: an image that is not here is pulled, then run.
        Err(image::store::StoreError::NoSuchImage(_)) => {
            let pulled =
                super::registry::pull(state, engine, registries, text, true).map_err(|f| {
                    Failure {
                        code: exit::NOT_FOUND,
                        error: f
                            .error
                            .context(format!("module or image `{text}` not found")),
                    }
                })?;
            pulled.into_iter().next().ok_or_else(not_found)?
        }
        Err(e) => return Err(Failure::runtime(e.into())),
    };
    let image = ImageRef {
        reference: entry.reference.to_string(),
        digest: entry.digest(),
    };
    match image::runnable(&store, &entry).map_err(|e| Failure::runtime(e.into()))? {
        Runnable::Wasm {
            module,
            module_digest,
            argv0,
            entry_args,
            default_args,
            env,
        } => {
            let guest_args = if args.is_empty() {
                default_args
            } else {
                args.to_vec()
            };
            Ok(Target {
                argv: std::iter::once(argv0)
                    .chain(entry_args)
                    .chain(guest_args)
                    .collect(),
                module,
                module_digest: Some(module_digest),
                image_env: env,
                image: Some(image),
                native: None,
            })
        }
        Runnable::Native { rootfs, config } => {
            // Docker's rule: arguments replace CMD, the entrypoint stays.
            let entrypoint = config
                .as_ref()
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default();
            let cmd = if args.is_empty() {
                config
                    .as_ref()
                    .and_then(|c| c.cmd().clone())
                    .unwrap_or_default()
            } else {
                args.to_vec()
            };
            let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
            if argv.is_empty() {
                return Err(Failure::runtime(anyhow::anyhow!(
                    "image `{text}` has no command: give one after the image"
                )));
            }
            Ok(Target {
                module: PathBuf::new(),
                module_digest: None,
                argv,
                image_env: config
                    .as_ref()
                    .and_then(|c| c.env().clone())
                    .unwrap_or_default(),
                image: Some(image),
                native: Some((rootfs, config)),
            })
        }
    }
}

/// Image env first, then env files, then `--env`, later values replacing earlier ones
/// (Docker's order); `NAME` alone takes the caller's value and is dropped when the caller
/// has none.
/// Labels from `--label-file`s, then `--label`s (a later one wins), as Docker merges them.
fn labels_of(files: &[PathBuf], flags: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut pairs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read label file `{}`", file.display()))
            .map_err(Failure::runtime)?;
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        pairs.extend(lines.map(String::from));
    }
    pairs.extend(flags.iter().cloned());
    let mut labels = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
        if key.is_empty() {
            return Err(Failure::runtime(anyhow::anyhow!(
                "invalid label `{pair}`: expected KEY=VALUE"
            )));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

fn resolve_env(
    image: &[String],
    files: &[PathBuf],
    flags: Vec<EnvEntry>,
) -> Result<Vec<(String, String)>, Failure> {
    let mut entries: Vec<EnvEntry> = image
        .iter()
        .filter_map(|pair| spec::parse_env(pair).ok())
        .collect();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read env file `{}`", file.display()))
            .map_err(Failure::runtime)?;
        let parsed = spec::parse_env_file(&file.display().to_string(), &text);
        entries.extend(parsed.map_err(|e| Failure::runtime(e.into()))?);
    }
    entries.extend(flags);
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let (name, value) = match entry {
            EnvEntry::Set(name, value) => (name, value),
            EnvEntry::Inherit(name) => match std::env::var(&name) {
                Ok(value) => (name, value),
                Err(_) => continue,
            },
        };
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    }
    Ok(env)
}
