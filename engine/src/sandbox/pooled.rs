//! A pooled sandbox: a supervisor and its sandbox made ahead of any workload (by `wrun
//! daemon`), fully isolated and waiting, then claimed by exactly one `wrun run`, which it runs
//! and reports on before both exit. Never reused: nothing of one workload meets another.
//!
//! Before the claim the sandbox has its own PID, mount, UTS, IPC, network and cgroup
//! namespaces, its own cgroup, an empty read-only root, no capabilities but the two that
//! joining a pod's namespaces needs, `no_new_privs` and an engine. At the claim the supervisor
//! applies the limits (or moves the sandbox into the cgroup the claim names) and hands over the
//! compiled artifact and the caller's stdio; the sandbox joins the namespaces named, drops the
//! last capabilities, installs the seccomp filter, then instantiates and runs the guest.

use super::cgroup::RunCgroup;
use super::child::{self, install_stdio, wait_ready, ChildError, NetworkJoin};
use super::preload::{self, Preloaded, RecentArtifact};
use super::runs::RunRecord;
use super::{attach, harden, rootfs, signals, ChildGuard, Stdio};
use crate::config::EngineSettings;
use crate::exit;
use crate::pool::wire::{self, Reply, Request, ToSandbox, Usage, Work};
use crate::spec::RunSpec;
use crate::state::StateRoot;
use crate::timeline;
use crate::wasm::{self, cache::AotCache, exec, source::ModuleFile};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Most published ports (listening sockets) a claim may pass.
pub const MAX_PORTS: usize = 8;

/// What every sandbox of a pool shares, and so every claim must ask for.
#[derive(Debug, Clone)]
pub struct Shape {
    pub settings: EngineSettings,
    /// Under which the sandboxes' cgroups are made (`run --cgroup-parent`).
    pub cgroup_parent: String,
}

/// The engines the daemon makes once for all its sandboxes, which use them as inherited:
/// the pool's settings, and the same with interruption checks for the claims that need them
/// (`--timeout`, serving HTTP); and wrun's warm-up guest compiled for the first (each sandbox
/// runs it before it is ready).
pub struct PoolEngine {
    pub engine: wasmtime::Engine,
    interruptible: wasmtime::Engine,
    warm_up: wasmtime::Module,
}

impl PoolEngine {
    pub fn new(settings: &EngineSettings) -> wasmtime::Result<PoolEngine> {
        let engine = wasm::engine::new_forking_engine(settings)?;
        // One engine when the settings have the checks already: code mapped for one engine
        // cannot run on another.
        let interruptible = if settings.epoch_interruption {
            engine.clone()
        } else {
            wasm::engine::new_forking_engine(&EngineSettings {
                epoch_interruption: true,
                ..settings.clone()
            })?
        };
        let warm_up = exec::warm_up_module(&engine)?;
        Ok(PoolEngine {
            engine,
            interruptible,
            warm_up,
        })
    }

    /// Whether a run with `settings` (the pool's, checks or not: see [`Shape`]) runs on the
    /// engine with interruption checks rather than on the one sandboxes are made ready with.
    fn interruptible_for(&self, settings: &EngineSettings) -> bool {
        settings.epoch_interruption && !wasmtime::Engine::same(&self.engine, &self.interruptible)
    }

    fn engine(&self, interruptible: bool) -> &wasmtime::Engine {
        if interruptible {
            &self.interruptible
        } else {
            &self.engine
        }
    }
}

/// What the daemon knows of one pooled sandbox: its supervisor, and the socket on which the
/// supervisor says it is ready and receives its client.
pub struct Pooled {
    pub supervisor: Pid,
    pub control: OwnedFd,
}

/// Forks a pooled sandbox's supervisor from the (single-threaded) daemon; supervisor and
/// sandbox use the daemon's engine as inherited, and the sandbox maps the artifacts of
/// `recent` ahead.
pub fn spawn(
    state: &StateRoot,
    shape: &Shape,
    engine: &PoolEngine,
    recent: &[RecentArtifact],
) -> nix::Result<Pooled> {
    let (daemon_end, supervisor_end) = wire::pair()?;
    let daemon = nix::unistd::getpid();
    // SAFETY: the daemon is single-threaded, so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Pooled {
            supervisor: child,
            control: daemon_end,
        }),
        ForkResult::Child => {
            drop(daemon_end);
            let code = match supervise(state, shape, engine, supervisor_end, daemon, recent) {
                Ok(()) => 0,
                Err(e) => {
                    crate::err_line!("wrun: a pooled sandbox failed: {e:#}");
                    1
                }
            };
            // SAFETY: _exit skips destructors of the daemon's state this process copied.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The supervisor: makes the sandbox, says it is ready, serves one claim.
fn supervise(
    state: &StateRoot,
    shape: &Shape,
    engine: &PoolEngine,
    control: OwnedFd,
    daemon: Pid,
    recent: &[RecentArtifact],
) -> anyhow::Result<()> {
    use anyhow::Context;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != daemon {
        return Ok(());
    }
    harden::close_inherited_fds(&[control.as_raw_fd()])?;
    // The daemon blocks the signals it waits for; the sandbox restores this mask, and a
    // workload must get its stop signals as on the standalone path. Its own session keeps
    // the daemon's terminal's Ctrl-C away from it.
    nix::sys::signal::SigSet::empty().thread_set_mask()?;
    nix::unistd::setsid()?;
    let id = super::new_run_id();
    let cgroup_path = if shape.cgroup_parent.is_empty() {
        id.clone()
    } else {
        format!("{}/{id}", shape.cgroup_parent)
    };
    let record = RunRecord::create(&state.runs_dir(), &id, &cgroup_path)
        .context("failed to record a pooled sandbox")?;
    let old_mask = signals::block_for_supervision()?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (supervisor_end, sandbox_end) = wire::pair()?;
    let parent = nix::unistd::getpid();
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
    // SAFETY: single-threaded (nothing here starts a thread before this fork).
    let sandbox = match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop((ready_write, supervisor_end, control));
            let prepared = Prepared {
                mount_point: state.sandbox_mount_point(),
                hostname: super::short_id(&id).to_string(),
                engine: engine.engine.clone(),
                interruptible: engine.interruptible.clone(),
                warm_up: engine.warm_up.clone(),
                cache: AotCache::new(state.cache_dir()),
                recent: recent.to_vec(),
                parent,
                ready: ready_read,
                socket: sandbox_end,
                old_mask,
            };
            wait_and_run(prepared)
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_read, sandbox_end));
    let mut guard = ChildGuard {
        child: sandbox,
        reaped: false,
        cgroup: None,
        record: Some(record),
    };
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    let cgroup = guard
        .cgroup
        .insert(RunCgroup::create_unlimited(&cgroup_path)?);
    cgroup.join(sandbox.as_raw() as u32)?;
    let _ = nix::unistd::write(&ready_write, &[1]);
    drop(ready_write);
    warm_up();
    // Ready once the sandbox is: isolated, locked but for the filter, its engine made.
    let Ok(Some((ready, _))) = wire::receive::<wire::Ready>(supervisor_end.as_fd()) else {
        anyhow::bail!("the pooled sandbox failed while getting ready");
    };
    let mapped: Vec<RecentArtifact> = recent
        .iter()
        .filter(|artifact| ready.mapped.contains(&artifact.key))
        .cloned()
        .collect();
    if !wire::send_byte(control.as_fd(), READY) {
        return Ok(());
    }
    // Waiting for a client, or for the sandbox to die (then this ends, and the daemon, seeing
    // the control socket close, makes another).
    let mut waiting = [
        PollFd::new(control.as_fd(), PollFlags::POLLIN),
        PollFd::new(supervisor_end.as_fd(), PollFlags::POLLIN),
    ];
    while let Err(nix::Error::EINTR) = poll(&mut waiting, PollTimeout::NONE) {}
    if waiting[1].revents().is_some_and(|r| !r.is_empty()) {
        return Ok(());
    }
    let Some(client) = wire::receive_fd(control.as_fd()) else {
        return Ok(());
    };
    // Claimed: the run is the client's now, and outlives a daemon that stops or dies.
    nix::sys::prctl::set_pdeathsig(None)?;
    timeline::mark("pool: client handed over");
    let claim = Claim {
        state,
        shape,
        engines: engine,
        id: &id,
        mapped: &mapped,
    };
    claim.serve(client, control, supervisor_end, &mut guard)
}

const READY: u8 = b'R';

/// Runs the code of a claim's messages once while waiting: a process's first parse costs
/// ≈0.1 ms more (code, allocator and heap pages touched for the first time), on the start
/// path. Cheaper than populating the whole binary's pages, which a supervisor would pay on
/// every refill.
fn warm_up() {
    if let Ok(Request::Claim(claim)) = serde_json::from_str::<Request>(SAMPLE_CLAIM) {
        let work: Result<ToSandbox, _> = serde_json::from_str(SAMPLE_WORK);
        let accepted = Reply::Accepted {
            id: String::new(),
            pid: 0,
            cgroup: Some(claim.spec.cgroup_parent.clone()),
        };
        let finished = Reply::Finished {
            code: 0,
            note: None,
            usage: None,
        };
        let _ = std::hint::black_box((
            serde_json::to_vec(&accepted),
            serde_json::to_vec(&finished),
            work.map(|work| serde_json::to_vec(&work)),
        ));
    }
}

/// Work like most, parsed once by a sandbox while waiting (as [`SAMPLE_CLAIM`]).
const SAMPLE_WORK: &str = r#"{"Work":{"kind":"Module","artifact_key":"k","artifact_attached":false,"module":"/m.wasm","args":["m","a"],"env":[["A","1"]],"memory_limit":null,"timeout":null,"preopens":[],"serve":null,"caller_status":true}}"#;

/// A claim like most, parsed once while waiting: a process's first parse costs ≈0.1 ms more
/// (code, allocator and heap pages touched for the first time), on the start path.
const SAMPLE_CLAIM: &str = r#"{"Claim":{"spec":{"module":"/m.wasm","args":["m","a"],"env":[["A","1"]],"preopens":[],"limits":{"memory":null,"cpu_quota_us":null,"pids":null,"timeout":null},"cgroup_parent":"wrun","module_digest":null,"native":null,"cgroup_name":null,"ports":[],"request_timeout":null,"allow_outbound":[]},"usage":false}}"#;

/// What the supervisor brings to a claim.
struct Claim<'a> {
    state: &'a StateRoot,
    shape: &'a Shape,
    engines: &'a PoolEngine,
    id: &'a str,
    /// What the sandbox has mapped ahead.
    mapped: &'a [RecentArtifact],
}

/// The artifact a claim runs: its descriptor, unless the sandbox has it mapped ahead.
struct Resolved {
    artifact: RecentArtifact,
    file: Option<File>,
}

impl Claim<'_> {
    /// Takes the client's claim and runs it to its end, telling the client how it ended.
    fn serve(
        &self,
        client: OwnedFd,
        control: OwnedFd,
        sandbox_socket: OwnedFd,
        guard: &mut ChildGuard,
    ) -> anyhow::Result<()> {
        if !same_user(&client) {
            return Ok(());
        }
        let Some((Request::Claim(claim), fds)) = wire::receive::<Request>(client.as_fd())? else {
            return Ok(());
        };
        let wire::Claim {
            spec,
            usage,
            held,
            cgroup: placement,
        } = *claim;
        let Some(given) = Given::unpack(&spec, usage, fds) else {
            return Ok(());
        };
        timeline::mark("pool: claim received");
        let refuse = |reason: String| wire::send(client.as_fd(), &Reply::Refused { reason }, &[]);
        let placed = placement.is_some();
        if let Some(reason) = self.refusal(&client, &spec, placement.as_deref(), &given.namespaces)
        {
            refuse(reason)?;
            return Ok(());
        }
        let Given {
            module,
            stdio: [stdin, stdout, stderr],
            status,
            dirs,
            listeners,
            broker,
            namespaces,
        } = given;
        // A held run's module is loaded before its caller is told the PID, as on the
        // standalone path; a failure, or code still to compile (which could outlast the
        // caller's wait for an answer), is the standalone path's to report or do.
        let (early, module) = if held {
            match self.resolve(&spec, File::from(module), false) {
                Ok(Some(resolved)) => (Some(resolved), None),
                Ok(None) => {
                    refuse("the module's compiled code is not cached yet".into())?;
                    return Ok(());
                }
                Err(e) => {
                    refuse(format!("{:#}", anyhow::Error::new(e)))?;
                    return Ok(());
                }
            }
        } else {
            (None, Some(module))
        };
        let dirs: Vec<_> = dirs.into_iter().zip(&spec.preopens).collect();
        let preopens = match attach::attach(guard.child, &dirs) {
            Ok(preopens) => preopens,
            Err(e) => {
                refuse(format!("{:#}", anyhow::Error::new(e)))?;
                return Ok(());
            }
        };
        drop(dirs);
        // Last: a sandbox moved into the run's own cgroup is gone, and the cgroup with it,
        // before its caller falls back to the standalone path on the same cgroup.
        let mut pool_cgroup = match place(&spec, placement.as_deref(), guard) {
            Ok(pool_cgroup) => pool_cgroup,
            Err(e) => {
                guard.release();
                refuse(format!("{e:#}"))?;
                return Ok(());
            }
        };
        if let Err(reason) = join(&sandbox_socket, &client, &spec, namespaces) {
            if let Some(pool_cgroup) = pool_cgroup.take() {
                retire(pool_cgroup, guard);
            }
            guard.release();
            refuse(reason)?;
            return Ok(());
        }
        // A run in a cgroup of its own is answered once that cgroup is gone: its caller may
        // reuse the path at once (containerd does, with a task's ID).
        let status = status.filter(|_| !placed);
        let cgroup = guard.cgroup.as_ref().expect("made before the claim");
        let accepted = Reply::Accepted {
            id: self.id.to_string(),
            pid: guard.child.as_raw(),
            cgroup: Some(cgroup.path().to_string()),
        };
        // Told before the sandbox is: sending to it hands it this CPU at once, and the answer
        // would wait for the workload.
        wire::send(client.as_fd(), &accepted, &[])?;
        timeline::mark("pool: limits applied, accepted");
        if held && !started(&client) {
            // Abandoned at the caller's gate: the guard kills the sandbox before any guest.
            return Ok(());
        }
        let resolved = match (early, module) {
            (Some(resolved), _) => Ok(resolved),
            (None, module) => {
                let module = File::from(module.expect("kept unless held"));
                self.resolve(&spec, module, true)
                    .map(|resolved| resolved.expect("compiled on a miss"))
            }
        };
        let (code, note, usage) = match resolved {
            Ok(Resolved { artifact, file }) => {
                let work = Work {
                    kind: artifact.kind,
                    artifact_key: artifact.key.clone(),
                    artifact_attached: file.is_some(),
                    module: spec.module.clone(),
                    args: spec.args.clone(),
                    env: spec.env.clone(),
                    memory_limit: spec.limits.memory,
                    timeout: spec.limits.timeout,
                    preopens,
                    serve: (!listeners.is_empty()).then(|| wire::Serving {
                        request_timeout: spec.request_timeout,
                        allow_outbound: spec.allow_outbound.clone(),
                    }),
                    caller_status: status.is_some(),
                    interruptible: self.engines.interruptible_for(&spec.engine),
                };
                let interruptible = work.interruptible;
                let mut fds: Vec<_> = file.iter().map(AsRawFd::as_raw_fd).collect();
                fds.extend([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]);
                fds.extend(listeners.iter().map(AsRawFd::as_raw_fd));
                fds.extend(broker.iter().map(AsRawFd::as_raw_fd));
                fds.extend(status.iter().map(AsRawFd::as_raw_fd));
                let work = ToSandbox::Work(Box::new(work));
                wire::send(sandbox_socket.as_fd(), &work, &fds)?;
                drop((listeners, broker, status));
                timeline::mark("pool: work sent");
                drop((file, stdin, stdout, stderr));
                if let Some(pool_cgroup) = pool_cgroup.take() {
                    retire(pool_cgroup, guard);
                }
                // Off the start path: the daemon's next sandboxes map this one ahead (code for
                // the engine they are made ready with only).
                if !interruptible {
                    let _ = wire::send(control.as_fd(), &wire::Used { artifact }, &[]);
                }
                drop(control);
                wait_for_sandbox(guard, &client, &sandbox_socket, &spec, usage)
            }
            Err(e) => {
                let code = match &e {
                    wasm::LoadError::NotCached { .. } => exit::RUNTIME_ERROR,
                    _ => exit::CANNOT_EXECUTE,
                };
                let _ = writeln!(File::from(stderr), "wrun: {:#}", anyhow::Error::new(e));
                guard.kill_and_reap();
                let usage = usage.then(Usage::default);
                (code, None, usage)
            }
        };
        timeline::mark("pool: workload ended");
        if placed {
            guard.release();
        }
        let _ = wire::send(client.as_fd(), &Reply::Finished { code, note, usage }, &[]);
        drop(client);
        guard.release();
        timeline::mark("pool: sandbox reaped, cgroup removed");
        Ok(())
    }

    /// Why this claim is refused, checked before anything changes: what the pool cannot run
    /// as the standalone path would, and what its caller could not have done itself.
    fn refusal(
        &self,
        client: &OwnedFd,
        spec: &RunSpec,
        placement: Option<&str>,
        namespaces: &[OwnedFd],
    ) -> Option<String> {
        let placed = placement.is_some();
        if let Some(reason) = unsuitable(spec, placed).or_else(|| self.shape.mismatch(spec, placed))
        {
            return Some(reason);
        }
        if let Some(path) = placement {
            if crate::spec::parse_cgroup_parent(path).ok().as_deref() != Some(path) {
                return Some(format!("invalid cgroup path `{path}`"));
            }
        }
        // Making a cgroup and joining namespaces is what the caller's own standalone run
        // would do with its own privilege.
        if (placed || !namespaces.is_empty()) && !peer_may_administer(client) {
            return Some("naming a cgroup or namespaces to join needs CAP_SYS_ADMIN".into());
        }
        let joins = wire::Joined::named(&spec.join);
        for ((kind, path), fd) in joins.into_iter().zip(namespaces) {
            if namespace_type(fd) != Some(join_flag(kind)) {
                return Some(format!(
                    "`{}` is not a {} namespace",
                    path.display(),
                    kind.name()
                ));
            }
        }
        None
    }

    /// The compiled artifact for the claimed module: one the sandbox has mapped ahead when the
    /// file is known unchanged since, else from the cache (compiled and stored on a miss),
    /// opened by this supervisor, which can still name paths.
    fn resolve(
        &self,
        spec: &RunSpec,
        module: File,
        compile: bool,
    ) -> Result<Option<Resolved>, wasm::LoadError> {
        let module = ModuleFile::new(module, &spec.module)?;
        let identity = module.identity();
        let expected = spec.module_digest.as_deref();
        let interruptible = self.engines.interruptible_for(&spec.engine);
        let engine = self.engines.engine(interruptible);
        // What the sandbox mapped ahead is code for the engine it was made ready with.
        let mapped = if interruptible { &[] } else { self.mapped };
        if let Some(artifact) = preload::recognise(mapped, &identity, expected) {
            return Ok(Some(Resolved {
                artifact: artifact.clone(),
                file: None,
            }));
        }
        let cache = AotCache::new(self.state.cache_dir());
        let found = if compile {
            Some(wasm::artifact(engine, &module, &cache, expected)?)
        } else {
            wasm::cached_artifact(engine, &module, &cache, expected)?
        };
        let Some((entry, digest)) = found else {
            return Ok(None);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let artifact = RecentArtifact {
            key: entry.key(),
            kind: entry.kind,
            digest,
            identity: identity.settled(now).then_some(identity),
        };
        Ok(Some(Resolved {
            artifact,
            file: Some(entry.file),
        }))
    }
}

/// The descriptors a claim brought, in the order they came (see [`Request::Claim`]).
struct Given {
    module: OwnedFd,
    stdio: [OwnedFd; 3],
    /// The caller's status pipe, unless it asked for usage (then the answer waits for the
    /// reaping anyway).
    status: Option<OwnedFd>,
    dirs: Vec<OwnedFd>,
    listeners: Vec<OwnedFd>,
    broker: Option<OwnedFd>,
    namespaces: Vec<OwnedFd>,
}

impl Given {
    /// `None` when the count does not match what `spec` says came.
    fn unpack(spec: &RunSpec, usage: bool, fds: Vec<OwnedFd>) -> Option<Given> {
        let outbound = !spec.allow_outbound.is_empty();
        let joins = wire::Joined::named(&spec.join).len();
        let expected = 5 + spec.preopens.len() + spec.ports.len() + usize::from(outbound) + joins;
        if fds.len() != expected {
            return None;
        }
        let mut fds = fds.into_iter();
        let mut next = || fds.next().expect("counted above");
        Some(Given {
            module: next(),
            stdio: [next(), next(), next()],
            status: Some(next()).filter(|_| !usage),
            dirs: spec.preopens.iter().map(|_| next()).collect(),
            listeners: spec.ports.iter().map(|_| next()).collect(),
            broker: outbound.then(&mut next),
            namespaces: (0..joins).map(|_| next()).collect(),
        })
    }
}

/// Whether the peer on `client` holds CAP_SYS_ADMIN (its effective set, as `/proc` shows it)
/// in this process's user namespace: one it made for itself gives it every capability there,
/// and nothing over cgroups or other namespaces.
fn peer_may_administer(client: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    const CAP_SYS_ADMIN: u32 = 21;
    let Ok(peer) = nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::PeerCredentials)
    else {
        return false;
    };
    let user_namespace =
        |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/user")).map(|m| (m.dev(), m.ino()));
    match (
        user_namespace("self"),
        user_namespace(&peer.pid().to_string()),
    ) {
        (Ok(mine), Ok(theirs)) if mine == theirs => {}
        _ => return false,
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", peer.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|effective| effective & (1 << CAP_SYS_ADMIN) != 0)
}

/// The kind of namespace `fd` refers to (`NS_GET_NSTYPE`), or `None` if it is none.
fn namespace_type(fd: &OwnedFd) -> Option<CloneFlags> {
    // _IO(0xb7, 0x3), from linux/nsfs.h.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without an argument on a descriptor this function borrows.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    (kind > 0).then(|| CloneFlags::from_bits_truncate(kind))
}

/// Removes the pool's cgroup once the sandbox has left it for its run's, and from then on
/// the record names only the run's.
fn retire(pool_cgroup: RunCgroup, guard: &mut ChildGuard) {
    if let Err(e) = pool_cgroup.remove() {
        tracing::warn!("{e:#}");
        // Left locked until this process exits, the record then leads the next sweep to it.
        std::mem::forget(guard.record.take());
        return;
    }
    let run_cgroup = guard.cgroup.as_ref().map(|c| c.path().to_string());
    if let (Some(record), Some(run_cgroup)) = (guard.record.as_mut(), run_cgroup) {
        let _ = record.name_cgroups(&[&run_cgroup]);
    }
}

/// Only the daemon's own user (or root) may hand it work.
fn same_user(client: &OwnedFd) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    nix::sys::socket::getsockopt(client, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|peer| peer.uid() == me || peer.uid() == 0)
}

/// Puts a claimed sandbox where its run needs it, with the run's limits: in the pool's own
/// cgroup, or in `placement`, made now and the sandbox moved into it. Returns the pool's
/// cgroup when the sandbox left it, for removal off the start path.
fn place(
    spec: &RunSpec,
    placement: Option<&str>,
    guard: &mut ChildGuard,
) -> anyhow::Result<Option<RunCgroup>> {
    use anyhow::Context;
    let limit = |cgroup: &RunCgroup| {
        // Unlimited is how a cgroup is made: writing it again would cost 0.4 ms on v1.
        if spec.limits == crate::spec::Limits::default() {
            return Ok(());
        }
        cgroup.apply(&spec.limits, spec.memory_headroom())
    };
    let pool_cgroup = guard.cgroup.as_ref().expect("made before the claim");
    let Some(target) = placement else {
        limit(pool_cgroup)?;
        return Ok(None);
    };
    // In every hierarchy the pool's cgroup is in, so that the sandbox leaves all of them.
    // Someone else's (a slice, a running task's) is refused: never limited, joined or
    // removed by a claim; an empty one is joined but not named for a sweep, nor removed.
    let mut placed = RunCgroup::plan(target, &RunCgroup::unlimited())?;
    // Recorded first: a sweep after a crash from here on removes either.
    if let Some(record) = guard.record.as_mut().filter(|_| !placed.adopted()) {
        record
            .name_cgroups(&[target, pool_cgroup.path()])
            .with_context(|| format!("failed to record the cgroup {target}"))?;
    }
    placed.make()?;
    limit(&placed)?;
    if let Err(e) = placed.join(guard.child.as_raw() as u32) {
        // Maybe moved in some hierarchies only (v1 joins one by one): never run like that.
        guard.kill_and_reap();
        return Err(e.into());
    }
    Ok(guard.cgroup.replace(placed))
}

/// Has the sandbox join the namespaces the claim names and drop the capabilities it kept for
/// that, and waits for it to confirm — within a bound well inside the client's own wait, and
/// only while the client is there; a failure is the standalone path's to report.
fn join(
    sandbox: &OwnedFd,
    client: &OwnedFd,
    spec: &RunSpec,
    namespaces: Vec<OwnedFd>,
) -> Result<(), String> {
    const JOIN_LIMIT_MS: u16 = 2000;
    if namespaces.is_empty() {
        return Ok(());
    }
    let failed = || Err("the pooled sandbox failed to join the run's namespaces".to_string());
    let kinds = wire::Joined::named(&spec.join)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    let fds: Vec<_> = namespaces.iter().map(AsRawFd::as_raw_fd).collect();
    if wire::send(sandbox.as_fd(), &ToSandbox::Join(kinds), &fds).is_err() {
        return failed();
    }
    // The client sends nothing before `Accepted`: anything readable there is its leaving.
    let mut watched = [
        PollFd::new(sandbox.as_fd(), PollFlags::POLLIN),
        PollFd::new(client.as_fd(), PollFlags::POLLIN),
    ];
    let ready = poll(&mut watched, PollTimeout::from(JOIN_LIMIT_MS)).unwrap_or(0);
    let answered = watched[0].revents().is_some_and(|r| !r.is_empty());
    if ready == 0 || !answered {
        return failed();
    }
    match wire::receive_byte(sandbox.as_fd()) {
        Some(JOINED) => Ok(()),
        _ => failed(),
    }
}

const JOINED: u8 = b'J';

fn join_flag(kind: wire::Joined) -> CloneFlags {
    match kind {
        wire::Joined::Network => CloneFlags::CLONE_NEWNET,
        wire::Joined::Ipc => CloneFlags::CLONE_NEWIPC,
        wire::Joined::Uts => CloneFlags::CLONE_NEWUTS,
    }
}

/// Waits for a held claim's `Start`; anything else, or the caller leaving, abandons it.
fn started(client: &OwnedFd) -> bool {
    matches!(
        wire::receive::<Request>(client.as_fd()),
        Ok(Some((Request::Start, _)))
    )
}

/// Why no pooled sandbox can run `spec` as the standalone path would, if none can; `placed`
/// when the claim names the cgroup to move the sandbox to.
pub fn unsuitable(spec: &RunSpec, placed: bool) -> Option<String> {
    let why = if spec.native.is_some() {
        "a native workload"
    } else if spec.ports.len() > MAX_PORTS {
        "more published ports than the pool passes"
    } else if spec.preopens.len() > attach::SPARE_MOUNT_POINTS {
        "more preopened directories than a pooled sandbox has mount points for"
    } else if spec.cgroup_name.is_some() && !placed {
        "a cgroup name of its own"
    } else {
        return None;
    };
    Some(format!("the pool does not take runs with {why}"))
}

impl Shape {
    /// Why this pool's sandboxes differ from what `spec` asks for, if they do; the cgroup
    /// parent does not matter to a run `placed` in a cgroup of its own.
    fn mismatch(&self, spec: &RunSpec, placed: bool) -> Option<String> {
        if spec.cgroup_parent != self.cgroup_parent && !placed {
            Some(format!(
                "the pool's cgroup parent is `{}`",
                self.cgroup_parent
            ))
        } else if !self.settings.same_but_interruption(&spec.engine) {
            Some("the pool's engine settings differ".to_string())
        } else {
            None
        }
    }
}

/// What the supervisor waits on while the workload runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Exit,
    Sandbox,
    Client,
}

/// How a claimed workload ended: its exit code, wrun's note, and what it used if asked.
type Ending = (i32, Option<String>, Option<Usage>);

/// Waits for the sandbox to end, relaying the client's signals, killing the workload if the
/// client goes away or the timeout's backstop passes. Without `usage` wanted, the guest's own
/// report of its code ends the wait before the process is gone.
fn wait_for_sandbox(
    guard: &mut ChildGuard,
    client: &OwnedFd,
    sandbox: &OwnedFd,
    spec: &RunSpec,
    usage: bool,
) -> Ending {
    let unused = || usage.then(Usage::default);
    let pidfd = match pidfd_open(guard.child) {
        Ok(fd) => fd,
        Err(_) => {
            guard.kill_and_reap();
            return (exit::RUNTIME_ERROR, None, unused());
        }
    };
    let mut sandbox_open = true;
    let deadline = spec
        .limits
        .timeout
        .map(|t| Instant::now() + t + super::TIMEOUT_BACKSTOP);
    let mut client_open = true;
    loop {
        let timeout = match deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                None => {
                    guard.kill_and_reap();
                    return (exit::TIMEOUT, Some(timeout_note(spec)), unused());
                }
            },
            None => PollTimeout::NONE,
        };
        let mut watched = vec![(Source::Exit, pidfd.as_fd())];
        if sandbox_open {
            watched.push((Source::Sandbox, sandbox.as_fd()));
        }
        if client_open {
            watched.push((Source::Client, client.as_fd()));
        }
        let mut fds: Vec<_> = watched
            .iter()
            .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => break,
        }
        let fired = |source: Source| {
            watched
                .iter()
                .zip(&fds)
                .any(|((s, _), f)| *s == source && f.revents().is_some_and(|r| !r.is_empty()))
        };
        let (exited, from_sandbox, from_client) = (
            fired(Source::Exit),
            fired(Source::Sandbox),
            fired(Source::Client),
        );
        drop(fds);
        if from_sandbox {
            // The guest's own end, reported before the process exits; the reaping and the
            // cgroup's removal follow after the caller has its answer.
            match wire::receive_byte(sandbox.as_fd()) {
                Some(code) if !usage => return (i32::from(code), None, None),
                _ => sandbox_open = false,
            }
        }
        if exited {
            break;
        }
        if from_client {
            match wire::receive::<Request>(client.as_fd()) {
                Ok(Some((Request::Signal(signo), _))) => {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(guard.child.as_raw(), signo) };
                }
                Ok(Some(_)) => {}
                // The caller is gone: so is the reason to run.
                Ok(None) | Err(_) => {
                    client_open = false;
                    let _ = nix::sys::signal::kill(guard.child, Signal::SIGKILL);
                }
            }
        }
    }
    let ended = loop {
        match super::supervise::reap(guard.child) {
            Ok(Some(ended)) => break Some(ended),
            Ok(None) => std::thread::sleep(Duration::from_micros(100)),
            Err(_) => break None,
        }
    };
    guard.reaped = true;
    let oom_killed = guard.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
    let Some(ended) = ended else {
        return (exit::RUNTIME_ERROR, None, unused());
    };
    let (code, note) = super::ending(ended.status, oom_killed, spec);
    let usage = usage.then(|| Usage {
        oom_killed,
        memory_peak: guard.cgroup.as_ref().and_then(RunCgroup::memory_peak),
        cpu_time: ended.cpu_time,
    });
    (code, note, usage)
}

fn timeout_note(spec: &RunSpec) -> String {
    let after = spec
        .limits
        .timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_default();
    format!("timeout: the workload was killed after {after}")
}

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just created for this process.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// What the sandbox needs to get ready.
struct Prepared {
    mount_point: std::path::PathBuf,
    hostname: String,
    engine: wasmtime::Engine,
    interruptible: wasmtime::Engine,
    warm_up: wasmtime::Module,
    cache: AotCache,
    /// The artifacts to map ahead.
    recent: Vec<RecentArtifact>,
    parent: Pid,
    ready: OwnedFd,
    socket: OwnedFd,
    old_mask: nix::sys::signal::SigSet,
}

/// The sandbox: gets ready, waits for its one workload, runs it, exits with its code.
/// The claim's work, after joining the namespaces the supervisor first sends, if any. No
/// capability is left when this returns with work.
fn receive_work(socket: &OwnedFd) -> Result<Option<(Work, Vec<OwnedFd>)>, ChildError> {
    let mut capabilities_kept = true;
    loop {
        let Ok(Some((message, fds))) = wire::receive::<ToSandbox>(socket.as_fd()) else {
            return Ok(None);
        };
        match message {
            ToSandbox::Join(kinds) => {
                if fds.len() != kinds.len() {
                    return Err(ChildError::ParentGone);
                }
                for (kind, namespace) in kinds.into_iter().zip(fds) {
                    nix::sched::setns(namespace, join_flag(kind))
                        .map_err(ChildError::Namespaces)?;
                }
                harden::drop_kept_capabilities()?;
                capabilities_kept = false;
                if !wire::send_byte(socket.as_fd(), JOINED) {
                    return Err(ChildError::ParentGone);
                }
            }
            ToSandbox::Work(work) => {
                // Before anything else of the workload's.
                if capabilities_kept {
                    harden::drop_kept_capabilities()?;
                }
                return Ok(Some((*work, fds)));
            }
        }
    }
}

fn wait_and_run(prepared: Prepared) -> ! {
    child::exit_with(get_ready_and_run(prepared))
}

fn get_ready_and_run(prepared: Prepared) -> Result<i32, ChildError> {
    signals::init_child(&prepared.old_mask).map_err(ChildError::Signals)?;
    // The guest's new files get the caller's umask, as under wasmtime; wrun's own is 077.
    nix::sys::stat::umask(crate::state::caller_umask());
    harden::close_inherited_fds(&[prepared.ready.as_raw_fd(), prepared.socket.as_raw_fd()])?;
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(ChildError::Namespaces)?;
    nix::unistd::sethostname(&prepared.hostname).map_err(ChildError::Hostname)?;
    let engine = prepared.engine;
    let network = NetworkJoin::of_parent(prepared.parent)?;
    let mut preloaded = Preloaded::load(&engine, &prepared.cache, &prepared.recent);
    rootfs::enter_root_with_spares(&prepared.mount_point, &[], attach::SPARE_MOUNT_POINTS)?;
    wait_ready(prepared.ready)?;
    network.join()?;
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    harden::limit_resources()?;
    harden::drop_capabilities_until_claim()?;
    harden::set_no_new_privs()?;
    let filter = harden::wasm_filter();
    let kit = exec::HostKit::new(&engine)?;
    kit.warm_up(&engine, &prepared.warm_up)
        .map_err(ChildError::WarmUp)?;
    // The module and the memory image made for it go too: nothing of the warm-up is left.
    drop(prepared.warm_up);
    let _ = std::hint::black_box(serde_json::from_str::<ToSandbox>(SAMPLE_WORK));
    let ready = wire::Ready {
        mapped: preloaded.keys(),
    };
    if wire::send(prepared.socket.as_fd(), &ready, &[]).is_err() {
        return Err(ChildError::ParentGone);
    }
    let Some((work, fds)) = receive_work(&prepared.socket)? else {
        // Never claimed: the pool is shutting down.
        return Ok(0);
    };
    timeline::mark("pool: work received");
    if fds.len() < 3 + usize::from(work.artifact_attached) {
        return Err(ChildError::ParentGone);
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("counted above");
    let artifact = work.artifact_attached.then(&mut next);
    let (stdin, stdout, stderr) = (next(), next(), next());
    let status = work.caller_status.then(|| fds.next_back()).flatten();
    let outbound = work
        .serve
        .as_ref()
        .is_some_and(|s| !s.allow_outbound.is_empty());
    let broker = outbound.then(|| fds.next_back()).flatten();
    let listeners: Vec<std::net::TcpListener> = fds.map(std::net::TcpListener::from).collect();
    let report = |code: i32| {
        // write(2), which the filter allows, where send(2) is refused: the caller first.
        if let Some(status) = &status {
            let _ = nix::unistd::write(status, &[code as u8]);
        }
        let _ = nix::unistd::write(&prepared.socket, &[code as u8]);
    };
    install_stdio(Stdio {
        stdin: Some(stdin),
        stdout: Some(stdout),
        stderr: Some(stderr),
    })
    .map_err(ChildError::Stdio)?;
    // On the engine the supervisor chose: the one with interruption checks has its host
    // made now (≈1 ms, those runs only).
    let (engine, kit) = if work.interruptible {
        let kit = exec::HostKit::new(&prepared.interruptible)?;
        (prepared.interruptible, kit)
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
            let artifact = artifact.ok_or(ChildError::ParentGone)?;
            let program = wasm::deserialize_artifact(&engine, work.kind, File::from(artifact))
                .map_err(|source| wasm::LoadError::Compile {
                    path: work.module.clone(),
                    source,
                })?;
            timeline::mark("pool: module mapped");
            program
        }
    };
    // Freed before the guest runs: what was mapped for other modules is not this run's.
    drop(preloaded);
    if let Some(serving) = work.serve {
        let server = child::Server::prepare(&engine, &program, &work.module)?;
        let options = wasm::serve::ServeOptions {
            stop_requested: signals::stop_requested,
            preopens: work.preopens,
            args: work.args,
            env: work.env,
            memory_limit: work.memory_limit,
            request_timeout: serving.request_timeout,
            allow_outbound: serving.allow_outbound,
            broker,
        };
        let code = server.serve(&engine, work.timeout, listeners, options, true)?;
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let _ = std::io::Write::flush(&mut std::io::stderr());
        let_go_of_stdio();
        report(code);
        return Ok(code);
    }
    let mut host = kit.host(program.kind(), &work.args, &work.env);
    host.preopen(&work.preopens)?;
    harden::install_seccomp(&filter)?;
    timeline::mark("pool: host ready, filter on");
    signals::arm(
        (work.interruptible || work.timeout.is_some()).then_some(&engine),
        work.timeout,
    );
    let outcome = exec::run(&engine, &program, &work.module, host, work.memory_limit)?;
    timeline::mark("pool: guest returned");
    let code = child::exit_code_of(outcome, work.timeout);
    // The output is complete once flushed: the caller may have its answer before this
    // process and its namespaces are torn down.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Write::flush(&mut std::io::stderr());
    let_go_of_stdio();
    report(code);
    Ok(code)
}

/// Closes the caller's streams once the output is complete, before the code is reported:
/// whoever reads the output through a pipe (a shell's `$(wrun run …)`, `wrun-bench`) then has
/// its end of file when the caller exits, not only once this process and its namespaces are
/// torn down (≈0.3 ms later). Nothing is written to them afterwards; the code goes to the
/// status pipe and the supervisor.
fn let_go_of_stdio() {
    for fd in 0..=2 {
        // SAFETY: the descriptors are this process's own; nothing uses them after this.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        let mut spec: RunSpec = serde_json::from_str(
            r#"{"module":"/m.wasm","args":["m"],"env":[],"preopens":[],"limits":{},"cgroup_parent":"wrun"}"#,
        )
        .unwrap();
        spec.limits = crate::spec::Limits::default();
        spec
    }

    #[test]
    fn namespace_descriptors_are_told_by_kind() {
        let net = File::open("/proc/self/ns/net").unwrap();
        assert_eq!(namespace_type(&net.into()), Some(CloneFlags::CLONE_NEWNET));
        let uts = File::open("/proc/self/ns/uts").unwrap();
        assert_eq!(namespace_type(&uts.into()), Some(CloneFlags::CLONE_NEWUTS));
        let plain = File::open("/proc/self/status").unwrap();
        assert_eq!(namespace_type(&plain.into()), None);
    }

    #[test]
    fn a_peers_capabilities_are_read_from_its_process() {
        let (one, _other) = wire::pair().unwrap();
        // The peer is this test process: it may administer exactly when it has the capability.
        let has = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        )
        .unwrap();
        assert_eq!(peer_may_administer(&one), has);
    }

    #[test]
    fn the_warm_up_samples_parse() {
        assert!(matches!(
            serde_json::from_str::<Request>(SAMPLE_CLAIM),
            Ok(Request::Claim(_))
        ));
        assert!(matches!(
            serde_json::from_str::<ToSandbox>(SAMPLE_WORK),
            Ok(ToSandbox::Work(_))
        ));
    }

    #[test]
    fn the_pool_takes_plain_runs_of_its_own_shape_only() {
        let shape = Shape {
            settings: EngineSettings::default(),
            cgroup_parent: "wrun".into(),
        };
        let plain = spec();
        assert_eq!(unsuitable(&plain, false), None);
        assert_eq!(shape.mismatch(&plain, false), None);
        let mut other_parent = spec();
        other_parent.cgroup_parent = "elsewhere".into();
        assert!(shape
            .mismatch(&other_parent, false)
            .unwrap()
            .contains("cgroup parent"));
        // A bundle's cgroup: taken only when the claim has the sandbox moved there.
        let mut named = other_parent.clone();
        named.cgroup_name = Some("task-1".into());
        assert!(unsuitable(&named, false).unwrap().contains("cgroup name"));
        assert_eq!(unsuitable(&named, true), None);
        assert_eq!(shape.mismatch(&named, true), None);
        let mut other_engine = spec();
        other_engine.engine.pooling_allocator = true;
        assert!(shape.mismatch(&other_engine, true).is_some());
        // Interruption checks: the pool has an engine with them and one without.
        let mut interrupting = spec();
        interrupting.engine.epoch_interruption = true;
        assert_eq!(shape.mismatch(&interrupting, false), None);
        let mut with_dirs = spec();
        let dir = crate::spec::Preopen::parse("/tmp").unwrap();
        with_dirs.preopens.push(dir.clone());
        assert_eq!(unsuitable(&with_dirs, false), None);
        with_dirs
            .preopens
            .extend(std::iter::repeat_n(dir, attach::SPARE_MOUNT_POINTS));
        assert!(unsuitable(&with_dirs, false).unwrap().contains("preopened"));
        let mut published = spec();
        let port = crate::spec::PublishedPort::parse("8080:80").unwrap();
        published.ports.push(port.clone());
        assert_eq!(unsuitable(&published, false), None);
        published.ports.extend(std::iter::repeat_n(port, MAX_PORTS));
        assert!(unsuitable(&published, false).unwrap().contains("ports"));
        let mut outbound = spec();
        outbound
            .allow_outbound
            .push(crate::spec::OutboundRule::parse("example.com").unwrap());
        assert_eq!(unsuitable(&outbound, false), None);
    }
}
