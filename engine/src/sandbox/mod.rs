//! The kernel sandbox around a run: a child in new PID, mount, UTS, IPC, network and cgroup
//! namespaces, in a cgroup of its own, supervised by the calling process.
//!
//! The parent stays single-threaded until the child exists. Then the two halves overlap on two
//! cores: the parent creates the network namespace (the costliest one, ~0.5 ms) by moving
//! itself into it, and the cgroup; meanwhile the child makes its other namespaces, loads the
//! guest and pivots into its empty root. The child joins the parent's network namespace when
//! the parent says the sandbox is ready.

pub mod attach;
mod bpf;
pub mod broker;
pub mod cgroup;
mod child;
mod cpu_split;
pub mod harden;
pub mod native;
pub mod pooled;
pub mod precompile;
mod prefault;
pub mod preload;
pub mod rootfs;
pub mod runs;
pub mod signals;
pub mod supervise;
#[cfg(feature = "test-hooks")]
mod test_hooks;
pub mod userns;
#[cfg(not(feature = "test-hooks"))]
mod test_hooks {
    //! Without the `test-hooks` feature there are no hooks.
    pub fn after_seccomp() {}
    pub fn pause_at(_stage: &str) {}
}

use crate::exit;
use crate::spec::{Preopen, RunSpec};
use crate::state::StateRoot;
use crate::timeline;
use crate::wasm::cache::AotCache;
use cgroup::{CgroupError, RunCgroup};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use runs::RunRecord;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supervise::{OutputSink, Stream, Waited};

/// Why a run could not be carried out (the guest's own failures are exit codes, not errors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("module `{0}` not found")]
    ModuleNotFound(PathBuf),
    #[error("failed to open module `{path}`")]
    ModuleOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module `{0}` is not a regular file")]
    ModuleNotFile(PathBuf),
    #[error("invalid --dir `{path}`: {reason}")]
    Preopen { path: PathBuf, reason: String },
    #[error("failed to prepare the state root `{path}`")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the sandbox: {what}")]
    Start {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Userns(#[from] userns::UsernsError),
    #[error("failed to wait for the workload")]
    Wait(#[source] nix::Error),
    #[error("the run was abandoned before it started")]
    Gate(#[source] std::io::Error),
    #[error("{0}")]
    Pool(String),
    #[error("failed to listen on {addr} (-p): {reason}")]
    Publish {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

impl RunError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::ModuleNotFound(_) => exit::NOT_FOUND,
            RunError::ModuleOpen { .. } | RunError::ModuleNotFile(_) => exit::CANNOT_EXECUTE,
            _ => exit::RUNTIME_ERROR,
        }
    }
}

/// Time the child gets after its own timeout handling before the parent kills it.
const TIMEOUT_BACKSTOP: Duration = Duration::from_secs(5);

/// How a sandbox's standard streams are connected: a descriptor given here becomes the
/// workload's stdin, stdout or stderr; `None` passes the caller's own.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// What the supervisor learns while a run is under way.
pub trait Observer: OutputSink {
    /// The workload is in its sandbox and cgroup and about to start the guest.
    fn started(&mut self, _started: &Started) {}
}

impl Observer for supervise::NoOutput {}

/// The facts of a started run.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// The workload's PID, as the caller sees it.
    pub pid: i32,
    /// The run's cgroup path under each hierarchy, if it has one.
    pub cgroup: Option<String>,
}

/// Optional parts of a run.
#[derive(Default)]
pub struct Options<'a> {
    /// The run's ID (a container's); a fresh one if `None`.
    pub id: Option<String>,
    pub stdio: Stdio,
    /// Read ends of pipes behind `stdio.stdout`/`stderr`, relayed into the observer.
    pub relay: Vec<(Stream, OwnedFd)>,
    pub observer: Option<&'a mut dyn Observer>,
    /// Keep a native image's writable layer after the run (a container's, until `rm`).
    pub keep_writable_layer: bool,
    /// Called with the sandbox's PID once it is set up and in its cgroup, before the
    /// workload is let go (OCI's create, then start); an error abandons the run.
    pub gate: Option<Gate<'a>>,
}

/// See [`Options::gate`].
pub type Gate<'a> = Box<dyn FnOnce(i32) -> std::io::Result<()> + 'a>;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: String,
    pub code: i32,
    pub oom_killed: bool,
    pub memory_peak: Option<u64>,
    pub cpu_time: Duration,
    /// What wrun itself has to say about the end, if anything (a kill, the OOM killer).
    pub note: Option<String>,
}

/// Runs `spec` in a new sandbox, attached to the caller's stdio, and returns the exit code
/// to report (printing wrun's own note about the end, if any).
pub fn run(spec: &RunSpec, state: &StateRoot) -> Result<i32, RunError> {
    let report = run_with(spec, state, Options::default())?;
    if let Some(note) = &report.note {
        crate::err_line!("wrun: {note}");
    }
    Ok(report.code)
}

/// Runs `spec` in a new sandbox as `options` say.
pub fn run_with(
    spec: &RunSpec,
    state: &StateRoot,
    options: Options<'_>,
) -> Result<Report, RunError> {
    let module_file = match &spec.native {
        None => Some(open_module(spec)?),
        Some(native) => {
            check_image_layers(native)?;
            None
        }
    };
    timeline::mark("module opened");
    let preopens = resolve_preopens(&spec.preopens)?;
    state.ensure().map_err(|source| RunError::State {
        path: state.path().to_path_buf(),
        source,
    })?;
    timeline::mark("state ensured");
    if let Some(module) = &module_file {
        precompile::ensure_compiled(spec, &AotCache::new(state.cache_dir()), module);
    }
    let id = options.id.clone().unwrap_or_else(new_run_id);
    // The child makes a native image's writable layer: its record exists first, so that a
    // sweep can tell a live run's layer from one a dead supervisor left.
    let record = writes_layer(spec)
        .then(|| RunRecord::create(&state.runs_dir(), &id, ""))
        .transpose()
        .map_err(|source| RunError::State {
            path: state.runs_dir(),
            source,
        })?;
    let parent = nix::unistd::getpid();
    // In the host's network namespace, as the caller: the guest only ever accepts on these.
    let listeners = listen(&spec.ports)?;
    let (broker, sandbox_end) = start_broker(spec)?;
    timeline::mark("checked input");
    let start = |what| move |source| RunError::Start { what, source };

    let rootless = !nix::unistd::geteuid().is_root();
    if rootless {
        userns::enter()?;
    }
    let old_mask = signals::block_for_supervision().map_err(start("block signals"))?;
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(start("create a pipe"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(start("create a PID namespace"))?;
    let split = cpu_split::CpuSplit::prepare();
    let Options {
        stdio,
        relay,
        observer,
        keep_writable_layer,
        gate,
        ..
    } = options;
    // SAFETY: the process is single-threaded here (no async runtime, no engine, no compiler
    // threads yet), so the child may run arbitrary code after the fork.
    match unsafe { nix::unistd::fork() }.map_err(start("fork"))? {
        ForkResult::Child => {
            if let Some(split) = &split {
                split.child_side();
            }
            // The supervisor's to kill, not this process's; the record's lock is its too
            // (dropping it here would unlock the parent's: same open file).
            std::mem::forget(broker);
            std::mem::forget(record);
            drop(ready_write);
            drop(relay);
            let local_spec = RunSpec {
                preopens,
                ..spec.clone()
            };
            child::main(child::ChildPlan {
                spec: &local_spec,
                module_file,
                stdio,
                cache: AotCache::new(state.cache_dir()),
                mount_point: state.sandbox_mount_point(),
                hostname: short_id(&id).to_string(),
                listeners,
                broker: sandbox_end,
                parent,
                ready: ready_read,
                old_mask,
            })
        }
        ForkResult::Parent { child } => {
            if let Some(split) = split {
                split.parent_side(child);
            }
            timeline::mark("forked");
            drop(ready_read);
            drop(module_file);
            drop(sandbox_end);
            // Only the child writes to (or reads from) the workload's streams.
            drop(stdio);
            tracing::debug!(id, pid = child.as_raw(), "sandbox started");
            test_hooks::pause_at("forked");
            let mut no_output = supervise::NoOutput;
            let observer: &mut dyn Observer = match observer {
                Some(observer) => observer,
                None => &mut no_output,
            };
            let run = Supervision {
                child,
                spec,
                state,
                id: &id,
                rootless,
                record,
            };
            let report = run.supervise(ready_write, relay, observer, gate);
            if !keep_writable_layer {
                remove_writable_layer(spec);
            }
            report
        }
    }
}

/// `--allow-outbound`: the broker, in the host's network namespace, and the sandbox's end
/// of its socket.
pub fn start_broker(spec: &RunSpec) -> Result<(Option<broker::Broker>, Option<OwnedFd>), RunError> {
    if spec.allow_outbound.is_empty() {
        return Ok((None, None));
    }
    let start = |what| move |source| RunError::Start { what, source };
    let (broker_end, sandbox_end) = broker::pair().map_err(start("create the broker's socket"))?;
    let broker =
        broker::start(broker_end, &spec.allow_outbound).map_err(start("start the broker"))?;
    Ok((Some(broker), Some(sandbox_end)))
}

/// Checks that a native image run's layers are there (its writable layer is the child's).
fn check_image_layers(native: &crate::spec::NativeSpec) -> Result<(), RunError> {
    match &native.rootfs {
        crate::spec::RootfsSource::Image { layers, .. } if !layers.is_dir() => {
            Err(RunError::State {
                path: layers.clone(),
                source: std::io::Error::other("the image's root file system is missing"),
            })
        }
        _ => Ok(()),
    }
}

/// Cleans up after runs whose supervisor died: their cgroups and records, then every
/// writable layer that neither a run record nor a container owns (a supervisor killed
/// between its record's end and its layer's removal leaves one; a live run's record is
/// made before its layer).
pub fn sweep_stale(state: &StateRoot) {
    for stale in runs::sweep(&state.runs_dir()) {
        tracing::debug!(stale, "removed what a dead run left");
    }
    let Ok(layers) = std::fs::read_dir(state.overlays_dir()) else {
        return;
    };
    for layer in layers.flatten() {
        let id = layer.file_name().to_string_lossy().into_owned();
        let owned = state.containers_dir().join(&id).exists()
            || state.runs_dir().join(format!("{id}.lock")).exists();
        if !owned && std::fs::remove_dir_all(layer.path()).is_ok() {
            tracing::debug!(id, "removed an orphaned writable layer");
        }
    }
}

/// Whether the run makes a writable layer (a native image's upper layer).
fn writes_layer(spec: &RunSpec) -> bool {
    matches!(
        spec.native.as_ref().map(|n| &n.rootfs),
        Some(crate::spec::RootfsSource::Image { .. })
    )
}

/// Removes a native image run's writable layer (the upper layer goes with its run).
pub fn remove_writable_layer(spec: &RunSpec) {
    if let Some(crate::spec::RootfsSource::Image { work, .. }) =
        spec.native.as_ref().map(|n| &n.rootfs)
    {
        let _ = std::fs::remove_dir_all(work);
    }
}

fn open_module(spec: &RunSpec) -> Result<File, RunError> {
    let file = File::open(&spec.module).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RunError::ModuleNotFound(spec.module.clone()),
        _ => RunError::ModuleOpen {
            path: spec.module.clone(),
            source,
        },
    })?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(file),
        _ => Err(RunError::ModuleNotFile(spec.module.clone())),
    }
}

/// Checks each `--dir` and makes its host path absolute, before any sandbox exists.
fn resolve_preopens(preopens: &[Preopen]) -> Result<Vec<Preopen>, RunError> {
    preopens
        .iter()
        .map(|p| {
            let fail = |reason: String| RunError::Preopen {
                path: p.host.clone(),
                reason,
            };
            let host = std::fs::canonicalize(&p.host).map_err(|e| fail(lower_io(&e)))?;
            if !host.is_dir() {
                return Err(fail("not a directory".into()));
            }
            nix::unistd::access(
                &host,
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| fail(format!("not readable: {}", e.desc().to_lowercase())))?;
            Ok(Preopen { host, ..p.clone() })
        })
        .collect()
}

fn lower_io(e: &std::io::Error) -> String {
    lower_io_text(&e.to_string())
}

/// The parent's side of one run.
struct Supervision<'a> {
    child: Pid,
    spec: &'a RunSpec,
    state: &'a StateRoot,
    id: &'a str,
    rootless: bool,
    /// The run's record, when it had to exist before the fork.
    record: Option<RunRecord>,
}

impl Supervision<'_> {
    /// Cgroup, go-ahead, waiting, teardown. The child is killed and reaped, and the cgroup
    /// removed, on every path out of here.
    fn supervise(
        self,
        ready: OwnedFd,
        relay: Vec<(Stream, OwnedFd)>,
        observer: &mut dyn Observer,
        gate: Option<Gate<'_>>,
    ) -> Result<Report, RunError> {
        let (spec, state, id) = (self.spec, self.state, self.id);
        let mut guard = ChildGuard {
            child: self.child,
            reaped: false,
            cgroup: None,
            record: None,
        };
        // Someone else's cgroup is refused before anything is made or recorded.
        let planned = plan_cgroup(spec, id, self.rootless)?;
        // Made before the cgroup, so that whatever this run leaves behind has a record. It
        // names only a cgroup this run creates: a sweep kills whatever is in the ones named.
        let ours = match &planned {
            Some(cgroup) if !cgroup.adopted() => cgroup.path(),
            _ => "",
        };
        let record = match self.record {
            Some(mut record) if !ours.is_empty() => record.name_cgroups(&[ours]).map(|()| record),
            Some(record) => Ok(record),
            None => RunRecord::create(&state.runs_dir(), id, ours),
        }
        .map_err(|source| RunError::State {
            path: state.runs_dir(),
            source,
        })?;
        guard.record = Some(record);
        // The child joins this namespace at the go-ahead; the parent itself needs no network.
        let new_network = match &spec.native {
            None => spec.join.network.is_none(),
            Some(n) => native::network_of(&n.spec) == native::Network::New,
        };
        if new_network {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                RunError::Start {
                    what: "create a network namespace",
                    source,
                }
            })?;
            timeline::mark("network namespace");
        }
        if let Some(cgroup) = make_cgroup(planned, spec, self.rootless)? {
            timeline::mark("cgroup created");
            let cgroup = guard.cgroup.insert(cgroup);
            cgroup.join(self.child.as_raw() as u32)?;
            timeline::mark("cgroup joined");
        }
        if let Some(gate) = gate {
            gate(self.child.as_raw()).map_err(RunError::Gate)?;
        }
        // A write error means the child already died; waiting below tells how.
        let _ = nix::unistd::write(&ready, &[1]);
        drop(ready);
        observer.started(&Started {
            id: id.to_string(),
            pid: self.child.as_raw(),
            cgroup: guard.cgroup.as_ref().map(|c| c.path().to_string()),
        });
        // While the child starts the guest, clean up after runs whose supervisor died.
        sweep_stale(state);
        test_hooks::pause_at("running");

        // A Wasm guest interrupts itself at the timeout (the parent is only a backstop); a
        // native workload is stopped by the parent.
        let backstop = if spec.native.is_some() {
            Duration::ZERO
        } else {
            TIMEOUT_BACKSTOP
        };
        let deadline = spec.limits.timeout.map(|t| Instant::now() + t + backstop);
        let waited =
            supervise::wait_for(self.child, deadline, relay, observer).map_err(RunError::Wait)?;
        timeline::mark("child reaped");
        let ended = match waited {
            Waited::Ended(ended) => ended,
            Waited::DeadlinePassed => {
                guard.kill_and_reap();
                let after = spec
                    .limits
                    .timeout
                    .map(|t| humantime::format_duration(t).to_string())
                    .unwrap_or_default();
                return Ok(Report {
                    id: id.to_string(),
                    code: exit::TIMEOUT,
                    oom_killed: false,
                    memory_peak: None,
                    cpu_time: Duration::ZERO,
                    note: Some(format!("timeout: the workload was killed after {after}")),
                });
            }
        };
        guard.reaped = true;
        test_hooks::pause_at("reaped");
        let oom_killed = guard.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        let memory_peak = guard.cgroup.as_ref().and_then(RunCgroup::memory_peak);
        if let Some(cgroup) = guard.cgroup.take() {
            cgroup.remove()?;
        }
        if let Some(record) = guard.record.take() {
            record.finish();
        }
        timeline::mark("cgroup removed");
        let (code, note) = ending(ended.status, oom_killed, spec);
        Ok(Report {
            id: id.to_string(),
            code,
            oom_killed,
            memory_peak,
            cpu_time: ended.cpu_time,
            note,
        })
    }
}

/// The exit code to report for a sandbox that ended with `status`, and wrun's note about it.
fn ending(status: WaitStatus, oom_killed: bool, spec: &RunSpec) -> (i32, Option<String>) {
    match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, signal, _) => {
            let note = (signal == Signal::SIGKILL && oom_killed).then(|| {
                format!(
                    "the workload was killed by the kernel: out of memory (cgroup limit {} bytes)",
                    spec.cgroup_memory().unwrap_or_default()
                )
            });
            (exit::signaled(signal as i32), note)
        }
        other => {
            tracing::warn!(?other, "unexpected wait status");
            (exit::RUNTIME_ERROR, None)
        }
    }
}

/// The run's cgroup, looked at but not made yet. Without root, cgroups can only be made in
/// a subtree delegated to the user: wrun tries only when limits were asked for.
fn plan_cgroup(spec: &RunSpec, id: &str, rootless: bool) -> Result<Option<RunCgroup>, RunError> {
    if rootless && requested_limits(&spec.limits).is_empty() {
        return Ok(None);
    }
    Ok(Some(RunCgroup::plan(&spec.cgroup_path(id), &spec.limits)?))
}

/// Makes the planned cgroup with the run's limits. Rootless, without a delegated subtree,
/// wrun goes on with a one-line warning naming the limits the kernel will not enforce (as
/// rootless podman does on cgroup v1).
fn make_cgroup(
    planned: Option<RunCgroup>,
    spec: &RunSpec,
    rootless: bool,
) -> Result<Option<RunCgroup>, RunError> {
    let Some(mut cgroup) = planned else {
        return Ok(None);
    };
    let made = cgroup
        .make()
        .and_then(|()| cgroup.apply(&spec.limits, spec.memory_headroom()));
    match made {
        Ok(()) => Ok(Some(cgroup)),
        Err(e) if rootless => {
            crate::err_line!(
                "wrun: warning: rootless without a writable delegated cgroup under `{}` ({}); not enforced: {}",
                spec.cgroup_parent,
                root_cause(&e),
                requested_limits(&spec.limits).join(", ")
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The limits asked for, by flag.
fn requested_limits(limits: &crate::spec::Limits) -> Vec<&'static str> {
    [
        (
            limits.memory.is_some(),
            "--memory (the wasm memory limit still holds)",
        ),
        (limits.cpu_quota_us.is_some(), "--cpus"),
        (limits.pids.is_some(), "--pids"),
    ]
    .into_iter()
    .filter_map(|(asked, name)| asked.then_some(name))
    .collect()
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    lower_io_text(&cause.to_string())
}

fn lower_io_text(text: &str) -> String {
    text.split(" (os error")
        .next()
        .unwrap_or(text)
        .to_lowercase()
}

/// Owns the child until it is reaped, its cgroup until removed, and its record until then,
/// in that order.
pub(crate) struct ChildGuard {
    pub(crate) child: Pid,
    pub(crate) reaped: bool,
    pub(crate) cgroup: Option<RunCgroup>,
    pub(crate) record: Option<RunRecord>,
}

impl ChildGuard {
    pub(crate) fn kill_and_reap(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.child, Signal::SIGKILL);
            let _ = waitpid(self.child, None);
            self.reaped = true;
        }
    }
}

impl ChildGuard {
    /// Kills what is left, removes the cgroup and, once it is gone, the record.
    pub(crate) fn release(&mut self) {
        self.kill_and_reap();
        let removed = self.cgroup.take().map_or(Ok(()), RunCgroup::remove);
        match (removed, self.record.take()) {
            (Ok(()), Some(record)) => record.finish(),
            // Kept: the next sweep retries the removal.
            (Err(e), _) => tracing::warn!("{e:#}"),
            (Ok(()), None) => {}
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Binds each published address (with SO_REUSEADDR, as servers do).
pub(crate) fn listen(
    ports: &[crate::spec::PublishedPort],
) -> Result<Vec<std::net::TcpListener>, RunError> {
    ports
        .iter()
        .map(|port| {
            let failed = |source: std::io::Error| RunError::Publish {
                addr: port.host,
                reason: listen_failure(&source, port.host.port()),
            };
            let domain = socket2::Domain::for_address(port.host);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(failed)?;
            socket.set_reuse_address(true).map_err(failed)?;
            socket.bind(&port.host.into()).map_err(failed)?;
            socket.listen(1024).map_err(failed)?;
            Ok(socket.into())
        })
        .collect()
}

/// Why a bind failed, with the rule behind a refused low port.
fn listen_failure(error: &std::io::Error, port: u16) -> String {
    let reason = lower_io(error);
    let lowest_unprivileged =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .unwrap_or(1024);
    if error.kind() == std::io::ErrorKind::PermissionDenied && port < lowest_unprivileged {
        format!("{reason} (ports below {lowest_unprivileged} need root here: net.ipv4.ip_unprivileged_port_start)")
    } else {
        reason
    }
}

/// The first 12 characters of an ID, as Docker shows it (the whole ID if it is shorter).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A fresh 64-hex-digit run ID (Docker's container ID format).
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n > 0 {
            filled += n as usize;
        }
    }
    hex::encode(bytes)
}
