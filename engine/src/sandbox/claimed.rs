//! A pooled sandbox's side of its claim: made ready before any run exists (isolated, locked
//! down but for the filter and the two capabilities joining a pod needs, its engine warmed
//! up), it says so to its supervisor and waits for the one run it will ever get: the
//! namespaces to join, then the work, as messages with their descriptors.

use super::child::{self, ChildError};
use super::guest::{GuestRun, GuestWork, Lock, Reporter, Server};
use super::harden::{self, GuestFilter};
use super::preload::{Preloaded, RecentArtifact};
use super::self_join::SelfJoin;
use super::work::{install_stdio, WorkSource};
use super::{attach, claim_filter, Stdio};
use crate::config::EngineSettings;
use crate::net::packet;
use crate::spec::{JoinedNamespaces, Preopen};
use crate::timeline;
use crate::wasm::cache::AotCache;
use crate::wasm::exec::{self, GuestDir};
use crate::wasm::{self, LoadError};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

/// From the supervisor to its sandbox, once claimed.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToSandbox {
    /// Make new namespaces of the kinds `new` (instead of the shared ones: a bundle's run,
    /// `SandboxSpec::own_namespaces`), join the `named` ones (a pod's; their descriptors
    /// attached in this order), drop the capabilities kept for it, and answer one byte. Sent
    /// before the caller learns the PID, as runc's create makes and joins them; the work
    /// follows.
    Join {
        new: Vec<Joined>,
        named: Vec<Joined>,
    },
    /// Move into the run's own cgroup (a claim's placement, cgroup v1): write `0` to these
    /// `tasks` files, one a line, relative to `/sys/fs/cgroup`, and answer one byte. The
    /// sandbox moving itself spares the kernel's global lock ([`super::self_join`]).
    JoinCgroup {
        tasks: String,
    },
    Work(Box<Work>),
}

/// What to run. The artifact (unless mapped ahead), stdin, stdout, stderr, the listening
/// sockets, the broker's socket (with outbound rules) and the caller's status pipe (when
/// `caller_status`) are attached in that order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Work {
    pub kind: crate::wasm::source::Kind,
    /// The artifact's cache key: the sandbox may have it mapped already.
    pub artifact_key: String,
    /// Whether the artifact's descriptor comes first; without it, the sandbox said it has
    /// the artifact mapped ahead.
    pub artifact_attached: bool,
    pub module: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub memory_limit: Option<u64>,
    pub timeout: Option<std::time::Duration>,
    /// The directories attached to the sandbox's root, where they are and what the guest sees.
    pub preopens: Vec<crate::wasm::exec::GuestDir>,
    /// Serve HTTP (`-p`) on the listening sockets attached after stderr.
    #[serde(default)]
    pub serve: Option<Serving>,
    /// The caller's status pipe comes last: the exit code goes there first.
    #[serde(default)]
    pub caller_status: bool,
    /// Run on the pool's engine with interruption checks: the supervisor chose it (and the
    /// artifact for it) from the run's settings; the sandbox only follows.
    #[serde(default)]
    pub interruptible: bool,
    /// The run joined a pod's network namespace: its sockets are the pod's to use.
    #[serde(default)]
    pub pod_network: bool,
    /// What the pod gave the run to look names up with.
    #[serde(default)]
    pub resolver: crate::spec::PodResolver,
}

/// A kind of namespace a claimed sandbox joins (a pod's) or makes new (a bundle's) instead of
/// keeping the one it waited in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Joined {
    Network,
    Ipc,
    Uts,
}

impl Joined {
    /// As the OCI spec names the kind.
    pub fn name(self) -> &'static str {
        match self {
            Joined::Network => "network",
            Joined::Ipc => "ipc",
            Joined::Uts => "uts",
        }
    }

    /// The `setns` flag for the kind.
    pub fn flag(self) -> CloneFlags {
        match self {
            Joined::Network => CloneFlags::CLONE_NEWNET,
            Joined::Ipc => CloneFlags::CLONE_NEWIPC,
            Joined::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }

    /// The kinds `join` names, each with its path, in the order their descriptors travel.
    pub fn named(join: &crate::spec::JoinedNamespaces) -> Vec<(Joined, &std::path::Path)> {
        [
            (Joined::Network, &join.network),
            (Joined::Ipc, &join.ipc),
            (Joined::Uts, &join.uts),
        ]
        .into_iter()
        .filter_map(|(kind, path)| Some((kind, path.as_deref()?)))
        .collect()
    }
}

/// How a pooled sandbox serves HTTP.
#[derive(Debug, Serialize, Deserialize)]
pub struct Serving {
    pub request_timeout: Option<std::time::Duration>,
    /// `--allow-outbound`: the rules, and the caller's broker's socket comes after the
    /// listening sockets.
    #[serde(default)]
    pub allow_outbound: Vec<crate::spec::OutboundRule>,
    /// The port the guest binds for each listening socket, in their order.
    #[serde(default)]
    pub guest_ports: Vec<u16>,
}

/// From a sandbox to its supervisor: ready, with these artifacts (cache keys) mapped ahead.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub mapped: Vec<String>,
}

/// The answer to a [`ToSandbox::Join`] or a [`ToSandbox::JoinCgroup`].
pub const JOINED: u8 = b'J';

/// What a pool makes once for all its sandboxes, which use it as inherited: two engines, the
/// pool's settings and the same with interruption checks for the claims that need them
/// (`--timeout`, serving HTTP); wrun's warm-up guest compiled for the first (each sandbox
/// runs it before it is ready); each engine's host linkers; a plain claim's seccomp program.
#[derive(Clone)]
pub struct PoolKit {
    pub plain: wasmtime::Engine,
    interruptible: wasmtime::Engine,
    warm_up: wasmtime::Module,
    /// Each engine's host linkers, made once in the pool (the plain engine's first): a
    /// sandbox, a forked process, takes its engine's from its own copy of them and so leaves
    /// the pool's. Inherited, they cost a sandbox ≈0.6 ms less to make ready, and their pages
    /// stay shared with the pool's until written.
    linkers: std::sync::Arc<std::sync::Mutex<[Option<exec::Linkers>; 2]>>,
    /// The seccomp programs of a waiting sandbox and of its claim, compiled once.
    claim_filters: std::sync::Arc<claim_filter::ClaimFilters>,
}

impl PoolKit {
    pub fn new(settings: &EngineSettings) -> wasmtime::Result<PoolKit> {
        let plain = wasm::engine::new_forking_engine(settings)?;
        // One engine when the settings have the checks already: code mapped for one engine
        // cannot run on another.
        let interruptible = if settings.epoch_interruption {
            plain.clone()
        } else {
            wasm::engine::new_forking_engine(&EngineSettings {
                epoch_interruption: true,
                ..settings.clone()
            })?
        };
        let warm_up = exec::warm_up_module(&plain)?;
        let linkers_of = |engine: &wasmtime::Engine| {
            exec::Linkers::new(engine).map_err(|e| wasmtime::Error::msg(e.to_string()))
        };
        let plain_linkers = linkers_of(&plain)?;
        let interruptible_linkers = match wasmtime::Engine::same(&plain, &interruptible) {
            true => None,
            false => Some(linkers_of(&interruptible)?),
        };
        Ok(PoolKit {
            linkers: std::sync::Arc::new(std::sync::Mutex::new([
                Some(plain_linkers),
                interruptible_linkers,
            ])),
            plain,
            interruptible,
            warm_up,
            claim_filters: std::sync::Arc::new(claim_filter::ClaimFilters::new()),
        })
    }

    /// The host linkers for the engine [`PoolKit::engine`] gives: the pool's, the first time
    /// (in a sandbox, which is single-use), else made now.
    fn take_linkers(&self, interruptible: bool) -> Result<exec::Linkers, exec::ExecError> {
        let inherited = match self.linkers.lock() {
            Ok(mut linkers) => linkers[usize::from(interruptible)].take(),
            Err(_) => None,
        };
        match inherited {
            Some(linkers) => Ok(linkers),
            None => exec::Linkers::new(self.engine(interruptible)),
        }
    }

    /// Whether a run with `settings` (the pool's, checks or not) runs on the engine with
    /// interruption checks rather than on the one sandboxes are made ready with.
    pub fn interruptible_for(&self, settings: &EngineSettings) -> bool {
        settings.epoch_interruption && !wasmtime::Engine::same(&self.plain, &self.interruptible)
    }

    pub fn engine(&self, interruptible: bool) -> &wasmtime::Engine {
        if interruptible {
            &self.interruptible
        } else {
            &self.plain
        }
    }
}

/// A pooled sandbox's work source: the socket its supervisor sends the claim on.
pub struct Claimed {
    socket: OwnedFd,
    pool_kit: PoolKit,
    /// The artifacts to map ahead, then those mapped.
    recent: Vec<RecentArtifact>,
    preloaded: Preloaded,
    /// `/sys/fs/cgroup`, for a claim that places the run in a cgroup of its own; closed
    /// once the work comes, before anything of the guest's.
    cgroup_root: Option<SelfJoin>,
}

impl Claimed {
    pub fn new(socket: OwnedFd, pool_kit: PoolKit, recent: Vec<RecentArtifact>) -> Claimed {
        Claimed {
            socket,
            pool_kit,
            recent,
            preloaded: Preloaded::default(),
            cgroup_root: None,
        }
    }
}

impl WorkSource for Claimed {
    fn joins(&self) -> JoinedNamespaces {
        // A claim's namespaces are joined when it comes ([`ToSandbox::Join`]).
        JoinedNamespaces::default()
    }

    fn root(&self) -> (&[Preopen], usize) {
        (&[], attach::SPARE_MOUNT_POINTS)
    }

    fn keep_cgroup_root(&mut self, cgroup_root: Option<SelfJoin>) {
        self.cgroup_root = cgroup_root;
    }

    fn prepare(&mut self, cache: &AotCache) -> Result<wasmtime::Engine, ChildError> {
        let engine = self.pool_kit.plain.clone();
        self.preloaded = Preloaded::load(&engine, cache, &self.recent);
        Ok(engine)
    }

    fn work(
        self,
        engine: wasmtime::Engine,
        _dirs: Vec<GuestDir>,
    ) -> Result<Option<GuestWork>, ChildError> {
        let Claimed {
            socket,
            pool_kit,
            mut preloaded,
            mut cgroup_root,
            ..
        } = self;
        harden::limit_resources()?;
        harden::drop_capabilities_until_claim()?;
        harden::set_no_new_privs()?;
        let filters = std::sync::Arc::clone(&pool_kit.claim_filters);
        // Copied before the claim: a plain claim takes it as it is.
        let plain_filter = filters.narrowing(GuestFilter::Wasm);
        let kit = exec::HostKit::new(pool_kit.take_linkers(false)?)?;
        kit.warm_up(&engine, &pool_kit.warm_up)
            .map_err(ChildError::WarmUp)?;
        let _ = std::hint::black_box(serde_json::from_str::<ToSandbox>(SAMPLE_WORK));
        // Now rather than between the claim and its guest (≈0.07 ms there): the claim
        // allocates little.
        crate::idle_memory::free_heap_pages();
        // The claim then installs only the narrow filter that makes it its guest's.
        harden::install_seccomp(&filters.waiting)?;
        let ready = Ready {
            mapped: preloaded.keys(),
        };
        if packet::send(socket.as_fd(), &ready, &[]).is_err() {
            return Err(ChildError::ParentGone);
        }
        let Some((work, fds)) = receive_work(&socket, &mut cgroup_root)? else {
            return Ok(None);
        };
        timeline::mark("pool: work received");
        let mut given = Attached::unpack(&work, fds).ok_or(ChildError::ParentGone)?;
        install_stdio(std::mem::take(&mut given.stdio)).map_err(child::setup(child::STDIO))?;
        // On the engine the supervisor chose: the one with interruption checks has its host
        // made now, around the pool's linkers for it (those runs only).
        let (engine, kit) = if work.interruptible {
            let engine = pool_kit.engine(true).clone();
            let kit = exec::HostKit::new(pool_kit.take_linkers(true)?)?;
            (engine, kit)
        } else {
            (engine, kit)
        };
        let program = match preloaded.take(&work.artifact_key) {
            Some(program) if work.artifact_attached => {
                timeline::mark("pool: module mapped ahead");
                program
            }
            Some(program) => {
                timeline::mark("pool: module mapped ahead, file recognised");
                program
            }
            None => {
                let artifact = given.artifact.take().ok_or(ChildError::ParentGone)?;
                let program = wasm::deserialize_artifact(&engine, work.kind, File::from(artifact))
                    .map_err(|source| LoadError::Compile {
                        path: work.module.clone(),
                        source,
                    })?;
                timeline::mark("pool: module mapped");
                program
            }
        };
        // Freed before the guest runs: what was mapped for other modules is not this run's.
        drop(preloaded);
        let serves_http = match &work.serve {
            Some(serving) => {
                let publishes = !serving.guest_ports.is_empty();
                wasm::serve::serves_http(&engine, &program, &work.module, publishes)?
            }
            None => false,
        };
        let run = match work.serve {
            Some(serving) if serves_http => GuestRun::Serve {
                server: Server::prepare(
                    &engine,
                    &program,
                    &work.module,
                    filters.narrowing(GuestFilter::HttpServer),
                )?,
                listeners: given.listeners,
                options: wasm::serve::ServeOptions {
                    stop_requested: super::signals::stop_requested,
                    preopens: work.preopens,
                    args: work.args,
                    env: work.env,
                    memory_limit: work.memory_limit,
                    request_timeout: serving.request_timeout,
                    allow_outbound: serving.allow_outbound,
                    broker: given.broker,
                },
            },
            Some(serving) => {
                let mut host = kit.host(program.kind(), &work.args, &work.env);
                host.connect(exec::Network {
                    published: serving
                        .guest_ports
                        .into_iter()
                        .zip(given.listeners)
                        .collect(),
                    allow_outbound: serving.allow_outbound,
                    broker: given.broker,
                    pod: work.pod_network.then(|| work.resolver.clone()),
                })?;
                let filter = match work.pod_network {
                    true => filters.narrowing(GuestFilter::Pod),
                    false => filters.narrowing(GuestFilter::Socket),
                };
                GuestRun::Command {
                    host,
                    preopens: work.preopens,
                    filter,
                }
            }
            None if work.pod_network => {
                let mut host = kit.host(program.kind(), &work.args, &work.env);
                host.connect(exec::Network {
                    pod: Some(work.resolver.clone()),
                    ..Default::default()
                })?;
                GuestRun::Command {
                    host,
                    preopens: work.preopens,
                    filter: filters.narrowing(GuestFilter::Pod),
                }
            }
            None => GuestRun::Command {
                host: kit.host(program.kind(), &work.args, &work.env),
                preopens: work.preopens,
                filter: plain_filter,
            },
        };
        timeline::mark("pool: host ready");
        Ok(Some(GuestWork {
            engine,
            checks: work.interruptible || work.timeout.is_some(),
            program,
            module: work.module,
            memory_limit: work.memory_limit,
            timeout: work.timeout,
            run,
            lock: Lock::FilterOnly,
            heap_given_back: true,
            report: Some(Reporter {
                status: given.status,
                supervisor: socket,
            }),
        }))
    }
}

/// The descriptors attached to the work, in the order [`Work`] names.
struct Attached {
    artifact: Option<OwnedFd>,
    stdio: Stdio,
    listeners: Vec<std::net::TcpListener>,
    broker: Option<OwnedFd>,
    status: Option<OwnedFd>,
}

impl Attached {
    /// `None` when fewer came than `work` says.
    fn unpack(work: &Work, fds: Vec<OwnedFd>) -> Option<Attached> {
        if fds.len() < 3 + usize::from(work.artifact_attached) {
            return None;
        }
        let mut fds = fds.into_iter();
        let artifact = if work.artifact_attached {
            fds.next()
        } else {
            None
        };
        let stdio = Stdio {
            stdin: fds.next(),
            stdout: fds.next(),
            stderr: fds.next(),
        };
        let status = work.caller_status.then(|| fds.next_back()).flatten();
        let outbound = work
            .serve
            .as_ref()
            .is_some_and(|s| !s.allow_outbound.is_empty());
        let broker = outbound.then(|| fds.next_back()).flatten();
        Some(Attached {
            artifact,
            stdio,
            listeners: fds.map(std::net::TcpListener::from).collect(),
            broker,
            status,
        })
    }
}

/// The claim's work, after joining the namespaces the supervisor first sends, if any. No
/// capability is left when this returns with work.
fn receive_work(
    socket: &OwnedFd,
    cgroup_root: &mut Option<SelfJoin>,
) -> Result<Option<(Work, Vec<OwnedFd>)>, ChildError> {
    let mut capabilities_kept = true;
    loop {
        let Ok(Some((message, fds))) = packet::receive::<ToSandbox>(socket.as_fd()) else {
            return Ok(None);
        };
        match message {
            ToSandbox::Join { new, named } => {
                if fds.len() != named.len() {
                    return Err(ChildError::ParentGone);
                }
                let flags = new
                    .into_iter()
                    .fold(CloneFlags::empty(), |flags, kind| flags | kind.flag());
                if !flags.is_empty() {
                    nix::sched::unshare(flags).map_err(ChildError::Namespaces)?;
                }
                for (kind, namespace) in named.into_iter().zip(fds) {
                    nix::sched::setns(namespace, kind.flag()).map_err(ChildError::Namespaces)?;
                }
                harden::drop_kept_capabilities()?;
                capabilities_kept = false;
                if !packet::send_byte(socket.as_fd(), JOINED) {
                    return Err(ChildError::ParentGone);
                }
            }
            ToSandbox::JoinCgroup { tasks } => {
                cgroup_root
                    .as_ref()
                    .ok_or(nix::Error::ENOENT)
                    .and_then(|root| root.join(tasks.as_bytes()))
                    .map_err(child::setup("move the sandbox into its run's cgroup"))?;
                if !packet::send_byte(socket.as_fd(), JOINED) {
                    return Err(ChildError::ParentGone);
                }
            }
            ToSandbox::Work(work) => {
                // Before anything else of the workload's.
                drop(cgroup_root.take());
                if capabilities_kept {
                    harden::drop_kept_capabilities()?;
                }
                return Ok(Some((*work, fds)));
            }
        }
    }
}

/// Work like most, parsed once by a sandbox while waiting: a process's first parse costs
/// ≈0.1 ms more (code, allocator and heap pages touched for the first time), on the start
/// path.
pub const SAMPLE_WORK: &str = r#"{"Work":{"kind":"Module","artifact_key":"k","artifact_attached":false,"module":"/m.wasm","args":["m","a"],"env":[["A","1"]],"memory_limit":null,"timeout":null,"preopens":[],"serve":null,"caller_status":true}}"#;
