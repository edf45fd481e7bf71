//! The standalone path: a sandbox forked for one run by the process that asked for it, which
//! then supervises it: the cgroup, the go-ahead, the wait, and the teardown on every path.
//!
//! The parent stays single-threaded until the child exists. Then the two halves overlap on two
//! cores: the parent creates the cgroup (on cgroup v2 made before the fork, the child forked
//! into it) and, where the sandbox does not join the shared one, a network namespace, by
//! moving itself into it (the child joins it when the parent says the sandbox is ready);
//! meanwhile the child enters its namespaces, loads the guest and enters its empty root.

use super::cgroup::RunCgroup;
use super::clone_into_cgroup::{self, CloneIntoCgroup};
use super::parent_watch::ParentWatch;
use super::precompile;
use super::runs::RunRecord;
use super::self_join::{self, SelfJoin};
use super::shared_namespaces::Shared;
use super::supervise::{self, NoEvents, Stream, Waited};
use super::waiting::Waiting;
use super::work::Given;
use super::TIMEOUT_BACKSTOP;
use super::{child, claim_filter, cpu_split, filter_pipe, mount_template, native};
use super::{new_run_id, short_id, Gate, Observer, Options, Report, RunError, Started};
use super::{signals, test_hooks, userns};
use crate::exit;
use crate::net::broker::{self, Broker};
use crate::spec::{Limits, NativeSpec, Payload, Preopen, RootfsSource, RunSpec, WasmPayload};
use crate::state::StateRoot;
use crate::timeline;
use crate::wasm::cache::AotCache;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `spec` in a new sandbox as `options` say.
pub fn run(spec: &RunSpec, state: &StateRoot, options: Options<'_>) -> Result<Report, RunError> {
    let module_file = match &spec.payload {
        Payload::Wasm(wasm) => Some(open_module(&wasm.module)?),
        Payload::Native(native) => {
            check_image_layers(native)?;
            None
        }
    };
    timeline::mark("module opened");
    // With each `--dir` checked and its host path made absolute.
    let mut local_spec = match &spec.payload {
        Payload::Wasm(wasm) => RunSpec {
            sandbox: spec.sandbox.clone(),
            payload: Payload::Wasm(WasmPayload {
                preopens: resolve_preopens(&wasm.preopens)?,
                ..wasm.clone()
            }),
        },
        Payload::Native(_) => spec.clone(),
    };
    state.ensure().map_err(|source| RunError::State {
        path: state.path().to_path_buf(),
        source,
    })?;
    timeline::mark("state ensured");
    if let (Some(module), Payload::Wasm(wasm)) = (&module_file, &spec.payload) {
        let cache = AotCache::new(state.cache_dir());
        if let Some(baseline) =
            precompile::ensure_compiled(wasm, &spec.sandbox.engine, &cache, module)
        {
            local_spec.sandbox.engine = baseline;
        }
    }
    let id = options.id.clone().unwrap_or_else(new_run_id);
    if options.id.is_some() && super::runs::sweep_id(&state.runs_dir(), &id) {
        tracing::debug!(id, "removed what a dead run with the same ID left");
    }
    // The child makes a native image's writable layer: its record exists first, so that a
    // sweep can tell a live run's layer from one a dead supervisor left.
    let mut record = writes_layer(spec)
        .then(|| RunRecord::create(&state.runs_dir(), &id, ""))
        .transpose()
        .map_err(|source| RunError::State {
            path: state.runs_dir(),
            source,
        })?;
    let parent = nix::unistd::getpid();
    // In the host's network namespace, as the caller: the guest only ever accepts on these.
    let listeners = crate::net::listen(spec.wasm().map_or(&[], |wasm| &wasm.ports))?;
    let (broker, sandbox_end) = start_broker(spec)?;
    timeline::mark("checked input");
    let start = |what| move |source| RunError::Start { what, source };

    let rootless = !nix::unistd::geteuid().is_root();
    // Before the PID namespace: making them the first time forks a helper.
    let mount_template = (spec.wasm().is_some() && !rootless)
        .then(mount_template::open_or_make)
        .flatten();
    let shared = match spec.wasm().is_some() && !rootless && !spec.sandbox.own_namespaces {
        true => Shared::open_or_make(
            spec.sandbox.join.network.is_none(),
            spec.sandbox.join.ipc.is_none(),
        ),
        false => Shared::default(),
    };
    let shares_network = shared.network.is_some();
    // A command's seccomp programs come from the parent (a run with published ports may
    // serve HTTP instead: known in the sandbox once it has loaded the module).
    let filter_pipe = spec
        .wasm()
        .filter(|wasm| wasm.ports.is_empty())
        .map(|_| filter_pipe::pipe())
        .transpose()
        .map_err(start("create a pipe"))?;
    let (filters_read, filters_write) = filter_pipe.unzip();
    if rootless {
        userns::enter()?;
    }
    let old_mask = signals::block_for_supervision().map_err(start("block signals"))?;
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(start("create a pipe"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(start("create a PID namespace"))?;
    // On cgroup v2 the sandbox is forked into its cgroup, which (and the record naming it)
    // must exist first; on v1 they are made in parallel with the child's work.
    let clone_into = (!rootless).then(CloneIntoCgroup::available).flatten();
    let mut placed = match clone_into {
        Some(_) => Some(Placed::make(
            spec,
            state,
            &id,
            record.take(),
            options.start_fifo.is_some(),
        )?),
        None => None,
    };
    let split = cpu_split::CpuSplit::prepare();
    // A created container outlives the parent that made it: nothing to watch.
    let parent_watch = match options.start_fifo {
        None => ParentWatch::of_self(),
        Some(_) => ParentWatch::default(),
    };
    let Options {
        stdio,
        relay,
        observer,
        keep_writable_layer,
        gate,
        start_fifo,
        ..
    } = options;
    let created = start_fifo
        .map(|fifo| {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok((
                read,
                child::StartGate {
                    created: write,
                    fifo,
                },
            ))
        })
        .transpose()
        .map_err(start("create a pipe"))?;
    let (created, start_gate) = created.unzip();
    // SAFETY: the process is single-threaded here (no async runtime, no engine, no compiler
    // threads yet), so the child may run arbitrary code after the fork.
    let cgroup_dir = placed
        .as_ref()
        .and_then(|placed| placed.cgroup.as_ref())
        .and_then(RunCgroup::open_dir);
    let forked =
        unsafe { clone_into_cgroup::fork_into_or_fork(clone_into.as_ref(), cgroup_dir.as_ref()) };
    let (forked, born_in_cgroup) = match forked {
        Ok(forked) => forked,
        Err(e) => {
            if let Some(placed) = placed.take() {
                placed.release();
            }
            return Err(start("fork")(e));
        }
    };
    match forked {
        ForkResult::Child => {
            if let Some(split) = &split {
                split.child_side();
            }
            // The supervisor's to kill, not this process's; the record's lock is its too
            // (dropping it here would unlock the parent's: same open file).
            std::mem::forget(broker);
            std::mem::forget(record);
            std::mem::forget(placed);
            drop(ready_write);
            drop(relay);
            let mut keep: Vec<_> = module_file.iter().map(AsRawFd::as_raw_fd).collect();
            keep.extend(listeners.iter().map(AsRawFd::as_raw_fd));
            keep.extend(sandbox_end.iter().map(AsRawFd::as_raw_fd));
            keep.extend(filters_read.iter().map(AsRawFd::as_raw_fd));
            drop(filters_write);
            let plan = child::ChildPlan {
                stdio,
                keep,
                cache: AotCache::new(state.cache_dir()),
                mount_point: state.sandbox_mount_point(),
                mount_template,
                shared,
                hostname: short_id(&id).to_string(),
                parent,
                parent_watch,
                ready: ready_read,
                // Rootless, the user namespace has no say over the host's hierarchies.
                self_join: (!rootless).then(SelfJoin::open).flatten(),
                old_mask,
                start: start_gate,
            };
            match (&local_spec.payload, module_file) {
                (Payload::Wasm(wasm), Some(module)) => {
                    let given = Given::new(&local_spec, wasm, module, listeners, sandbox_end)
                        .with_filters_from(filters_read);
                    child::main(plan, given)
                }
                (Payload::Native(native), _) => child::main_native(plan, native),
                (Payload::Wasm(_), None) => unreachable!("a wasm run opens its module first"),
            }
        }
        ForkResult::Parent { child } => {
            if let Some(split) = split {
                split.parent_side(child);
            }
            timeline::mark("forked");
            drop((filters_read, parent_watch));
            if let (Some(to), Some(wasm)) = (filters_write, spec.wasm()) {
                send_filters(to, spec, wasm);
            }
            drop((ready_read, start_gate));
            drop((module_file, shared));
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
                created,
                placed,
                born_in_cgroup,
                shares_network,
            };
            let report = run.supervise(ready_write, relay, observer, gate);
            if !keep_writable_layer {
                remove_writable_layer(spec);
            }
            report
        }
    }
}

/// Compiles the sandbox's two seccomp programs and sends them (`filter_pipe`); a sandbox that
/// died meanwhile is found by the wait.
fn send_filters(to: OwnedFd, spec: &RunSpec, wasm: &WasmPayload) {
    let (set_up, narrowing) = claim_filter::command_filters(spec, wasm);
    let _ = filter_pipe::send(to, &set_up, &narrowing);
}

/// `--allow-outbound`: the broker, in the host's network namespace, and the sandbox's end
/// of its socket.
pub fn start_broker(spec: &RunSpec) -> Result<(Option<Broker>, Option<OwnedFd>), RunError> {
    let rules = spec.wasm().map_or(&[][..], |wasm| &wasm.allow_outbound);
    if rules.is_empty() {
        return Ok((None, None));
    }
    let start = |what| move |source| RunError::Start { what, source };
    let (broker_end, sandbox_end) = broker::pair().map_err(start("create the broker's socket"))?;
    let broker = broker::start(broker_end, rules).map_err(start("start the broker"))?;
    Ok((Some(broker), Some(sandbox_end)))
}

/// Checks that a native image run's layers are there (its writable layer is the child's).
fn check_image_layers(native: &NativeSpec) -> Result<(), RunError> {
    match &native.rootfs {
        RootfsSource::Image { layers, .. } if !layers.is_dir() => Err(RunError::State {
            path: layers.clone(),
            source: std::io::Error::other("the image's root file system is missing"),
        }),
        _ => Ok(()),
    }
}

/// Cleans up after runs whose supervisor died: their cgroups and records, then every
/// writable layer that neither a run record nor a container owns (a supervisor killed
/// between its record's end and its layer's removal leaves one; a live run's record is
/// made before its layer).
pub fn sweep_stale(state: &StateRoot) {
    for stale in super::runs::sweep(&state.runs_dir()) {
        tracing::debug!(stale, "removed what a dead run left");
    }
    let Ok(layers) = std::fs::read_dir(state.overlays_dir()) else {
        return;
    };
    for layer in layers.flatten() {
        let id = layer.file_name().to_string_lossy().into_owned();
        if remove_layer_if_unowned(state, &id) {
            tracing::debug!(id, "removed an orphaned writable layer");
        }
    }
}

/// How many entries of the run records a run's parent sweeps while its sandbox starts
/// (≈0.07 ms, behind the sandbox's own work): where more runs live, each run sweeps the next
/// few, and any other command sweeps them all.
const RECORDS_A_RUN_SWEEPS: usize = 16;

/// Reports the dead runs a sweep of the records cleaned up after, and removes the writable
/// layer each may have left that no container owns.
fn remove_dead_runs_layers(state: &StateRoot, cleaned: Vec<String>) {
    for stale in cleaned {
        tracing::debug!(stale, "removed what a dead run left");
        remove_layer_if_unowned(state, &stale);
    }
}

/// Removes the writable layer `overlays/<id>` if neither a container nor a run record owns
/// it; whether one was removed.
fn remove_layer_if_unowned(state: &StateRoot, id: &str) -> bool {
    let owned = state.containers_dir().join(id).exists()
        || state.runs_dir().join(format!("{id}.lock")).exists();
    !owned && std::fs::remove_dir_all(state.overlays_dir().join(id)).is_ok()
}

/// Whether the run makes a writable layer (a native image's upper layer).
fn writes_layer(spec: &RunSpec) -> bool {
    spec.writable_layer().is_some()
}

/// Removes a native image run's writable layer (the upper layer goes with its run).
pub fn remove_writable_layer(spec: &RunSpec) {
    if let Some(work) = spec.writable_layer() {
        let _ = std::fs::remove_dir_all(work);
    }
}

fn open_module(path: &Path) -> Result<File, RunError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RunError::ModuleNotFound(path.to_path_buf()),
        _ => RunError::ModuleOpen {
            path: path.to_path_buf(),
            source,
        },
    })?;
    match file.metadata() {
        Ok(meta) if meta.is_file() => Ok(file),
        _ => Err(RunError::ModuleNotFile(path.to_path_buf())),
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
    crate::sys::error_text(&e.to_string())
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
    /// An OCI `create`'s: where the sandbox says it is created (see [`Options::start_fifo`]).
    created: Option<OwnedFd>,
    /// The cgroup and record made before the fork (cgroup v2).
    placed: Option<Placed>,
    /// The child was forked into its cgroup: nobody moves it.
    born_in_cgroup: bool,
    /// The child joins the shared network namespace: the parent makes none.
    shares_network: bool,
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
        let planned = match self.placed {
            Some(placed) => {
                guard.record = placed.record;
                guard.cgroup = placed.cgroup;
                Planned::Made
            }
            None => {
                let planned = plan_cgroup(spec, id, self.rootless)?;
                guard.record =
                    record_run(state, id, self.record, self.created.is_some(), &planned)?;
                Planned::Later(planned)
            }
        };
        // The child joins this namespace at the go-ahead; the parent itself needs no network.
        let new_network = match &spec.payload {
            Payload::Wasm(_) => spec.sandbox.join.network.is_none() && !self.shares_network,
            Payload::Native(n) => native::network_of(&n.spec) == native::Network::New,
        };
        if new_network {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
                RunError::Start {
                    what: "create a network namespace",
                    source,
                }
            })?;
            timeline::mark("network namespace");
            // A native container's, as runc's: up, for the pod's other containers. A Wasm
            // sandbox's stays down: nothing in it uses it.
            if spec.native().is_some() {
                crate::net::loopback::bring_up().map_err(|source| RunError::Start {
                    what: "bring up the loopback interface",
                    source: nix::errno::Errno::from_raw(source.raw_os_error().unwrap_or(0)),
                })?;
            }
        }
        if let Planned::Later(planned) = planned {
            guard.cgroup = make_cgroup(planned, spec, self.rootless)?;
        }
        let mut go_ahead = vec![self_join::JOINED];
        if let Some(cgroup) = &guard.cgroup {
            match (!self.rootless && !self.born_in_cgroup)
                .then(|| self_join::go_ahead(cgroup))
                .flatten()
            {
                Some(message) => go_ahead = message,
                None if self.born_in_cgroup => {}
                None => {
                    cgroup.join(self.child.as_raw() as u32)?;
                    timeline::mark("cgroup joined");
                }
            }
        }
        if let Some(gate) = gate {
            gate(self.child.as_raw()).map_err(RunError::Gate)?;
        }
        // A write error means the child already died; waiting below tells how.
        let _ = nix::unistd::write(&ready, &go_ahead);
        drop(ready);
        observer.started(&Started {
            id: id.to_string(),
            pid: self.child.as_raw(),
            cgroup: guard.cgroup.as_ref().map(|c| c.path().to_string()),
        });
        if let Some(created) = self.created {
            return left_created(created, guard, id);
        }
        // While the child starts the guest, clean up after runs whose supervisor died: a
        // share of the records, and the layers of the dead runs among them (listing every
        // layer, as other commands' whole sweeps do, would grow with the native containers).
        let cleaned = super::runs::sweep_some(
            &state.runs_dir(),
            &state.sweep_cursor(),
            RECORDS_A_RUN_SWEEPS,
        );
        remove_dead_runs_layers(state, cleaned);
        test_hooks::pause_at("running");

        // A Wasm guest interrupts itself at the timeout (the parent is only a backstop); a
        // native workload is stopped by the parent.
        let backstop = match spec.payload {
            Payload::Wasm(_) => TIMEOUT_BACKSTOP,
            Payload::Native(_) => Duration::ZERO,
        };
        let timeout = spec.sandbox.limits.timeout;
        let deadline = timeout.map(|t| Instant::now() + t + backstop);
        if observer.takes_waiting() {
            observer.supervising(Waiting {
                id: id.to_string(),
                child: self.child.as_raw(),
                timeout,
                deadline,
                relay: relay.iter().map(|(s, fd)| (*s, fd.as_raw_fd())).collect(),
                cgroup: guard.cgroup.as_ref().map(RunCgroup::held),
                record: guard.record.as_ref().map(RunRecord::held),
            });
        }
        wait_and_end(guard, spec, id, timeout, deadline, relay, observer)
    }
}

/// Waits for the sandbox `guard` holds until it ends or `deadline` passes, relaying its
/// output to `observer`; then reaps it, removes its cgroup and record and reports its end.
pub(super) fn wait_and_end(
    mut guard: ChildGuard,
    spec: &RunSpec,
    id: &str,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    relay: Vec<(Stream, OwnedFd)>,
    observer: &mut dyn Observer,
) -> Result<Report, RunError> {
    let waited = supervise::wait_for(guard.child, deadline, relay, observer, &mut NoEvents)
        .map_err(RunError::Wait)?;
    timeline::mark("child reaped");
    let ended = match waited {
        Waited::Ended(ended) => ended,
        Waited::DeadlinePassed => {
            guard.kill_and_reap();
            return Ok(timeout_report(id, timeout));
        }
        Waited::Reported(_) => unreachable!("a standalone wait watches no other events"),
    };
    guard.reaped = true;
    test_hooks::pause_at("reaped");
    let oom_killed = oom_killed(ended.status, spec, guard.cgroup.as_ref());
    let memory_peak = guard
        .cgroup
        .as_ref()
        .filter(|_| observer.keeps_memory_peak())
        .and_then(RunCgroup::memory_peak);
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

/// Waits for a created sandbox to say so, then leaves it and its cgroup to whoever starts
/// and deletes it.
fn left_created(created: OwnedFd, mut guard: ChildGuard, id: &str) -> Result<Report, RunError> {
    let mut byte = [0u8; 1];
    let said = loop {
        match nix::unistd::read(&created, &mut byte) {
            Err(nix::Error::EINTR) => continue,
            other => break other,
        }
    };
    if said != Ok(1) {
        // The sandbox printed why; the guard reaps it and removes the cgroup.
        return Err(RunError::NotCreated);
    }
    guard.reaped = true;
    std::mem::forget(guard.cgroup.take());
    Ok(Report {
        id: id.to_string(),
        code: 0,
        oom_killed: false,
        memory_peak: None,
        cpu_time: Duration::ZERO,
        note: None,
    })
}

/// The report on a run killed at its timeout's backstop.
pub fn timeout_report(id: &str, timeout: Option<Duration>) -> Report {
    let after = timeout
        .map(|t| humantime::format_duration(t).to_string())
        .unwrap_or_default();
    Report {
        id: id.to_string(),
        code: exit::TIMEOUT,
        oom_killed: false,
        memory_peak: None,
        cpu_time: Duration::ZERO,
        note: Some(format!("timeout: the workload was killed after {after}")),
    }
}

/// Whether the kernel killed a process of the run for memory (its `cgroup`'s OOM kills). A
/// Wasm sandbox is one process: one the kernel killed died of SIGKILL, so one that exited
/// was not, and its cgroup is not read (a file read on the way to the caller's prompt). A
/// native container's other processes may have been killed while its first one exited, as
/// Docker's `OOMKilled` counts.
pub fn oom_killed(status: WaitStatus, spec: &RunSpec, cgroup: Option<&RunCgroup>) -> bool {
    may_have_oom_kills(status, spec.native().is_some()) && cgroup.is_some_and(|c| c.oom_kills() > 0)
}

/// Whether a run that ended with `status` may have had a process killed for memory.
fn may_have_oom_kills(status: WaitStatus, native: bool) -> bool {
    native || matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _))
}

/// The exit code to report for a sandbox that ended with `status`, and wrun's note about it.
pub fn ending(status: WaitStatus, oom_killed: bool, spec: &RunSpec) -> (i32, Option<String>) {
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

/// The run's cgroup: made before the fork (in the guard already) or to be made after it.
enum Planned {
    Made,
    Later(Option<RunCgroup>),
}

/// The run's record (made before its cgroup, so that whatever the run leaves behind has one),
/// naming the cgroup `planned` if this run creates it: a sweep kills whatever is in the
/// cgroups named. `layer_record` is the one a native image's writable layer needed before the
/// fork; a created container (`created`) outlives this process and has none, which a sweep
/// would take for a dead supervisor's. Someone else's cgroup was refused by the plan already.
fn record_run(
    state: &StateRoot,
    id: &str,
    layer_record: Option<RunRecord>,
    created: bool,
    planned: &Option<RunCgroup>,
) -> Result<Option<RunRecord>, RunError> {
    let ours = match planned {
        Some(cgroup) if !cgroup.adopted() => cgroup.path(),
        _ => "",
    };
    match layer_record {
        Some(mut record) if !ours.is_empty() => record.name_cgroups(&[ours]).map(|()| Some(record)),
        Some(record) => Ok(Some(record)),
        None if created => Ok(None),
        None => RunRecord::create(&state.runs_dir(), id, ours).map(Some),
    }
    .map_err(|source| RunError::State {
        path: state.runs_dir(),
        source,
    })
}

/// The cgroup (with its limits) and record of a run whose sandbox is forked into its cgroup.
struct Placed {
    cgroup: Option<RunCgroup>,
    record: Option<RunRecord>,
}

impl Placed {
    fn make(
        spec: &RunSpec,
        state: &StateRoot,
        id: &str,
        layer_record: Option<RunRecord>,
        created: bool,
    ) -> Result<Placed, RunError> {
        let planned = plan_cgroup(spec, id, false)?;
        let record = record_run(state, id, layer_record, created, &planned)?;
        match make_cgroup(planned, spec, false) {
            Ok(cgroup) => Ok(Placed { cgroup, record }),
            Err(e) => {
                if let Some(record) = record {
                    record.finish();
                }
                Err(e)
            }
        }
    }

    /// Removes the cgroup and then the record, when no sandbox was forked after all.
    fn release(self) {
        remove_cgroup_then_record(self.cgroup, self.record);
    }
}

/// Removes `cgroup` and, once it is gone, `record`; a cgroup that stays keeps its record, so
/// that the next sweep retries the removal.
fn remove_cgroup_then_record(cgroup: Option<RunCgroup>, record: Option<RunRecord>) {
    let removed = cgroup.map_or(Ok(()), RunCgroup::remove);
    match (removed, record) {
        (Ok(()), Some(record)) => record.finish(),
        (Err(e), _) => tracing::warn!("{e:#}"),
        (Ok(()), None) => {}
    }
}

/// The run's cgroup, looked at but not made yet. Without root, cgroups can only be made in
/// a subtree delegated to the user: wrun tries only when limits were asked for.
fn plan_cgroup(spec: &RunSpec, id: &str, rootless: bool) -> Result<Option<RunCgroup>, RunError> {
    let limits = &spec.sandbox.limits;
    if rootless && requested_limits(limits).is_empty() {
        return Ok(None);
    }
    Ok(Some(RunCgroup::plan(&spec.cgroup_path(id), limits)?))
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
        .and_then(|()| cgroup.apply(&spec.sandbox.limits, spec.memory_headroom()));
    match made {
        Ok(()) => {
            timeline::mark("cgroup created");
            Ok(Some(cgroup))
        }
        Err(e) if rootless => {
            crate::err_line!(
                "wrun: warning: rootless without a writable delegated cgroup under `{}` ({}); not enforced: {}",
                spec.sandbox.cgroup_parent,
                root_cause(&e),
                requested_limits(&spec.sandbox.limits).join(", ")
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The limits asked for, by flag.
fn requested_limits(limits: &Limits) -> Vec<&'static str> {
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
    crate::sys::error_text(&cause.to_string())
}

/// Owns the child until it is reaped, its cgroup until removed, and its record until then,
/// in that order.
pub struct ChildGuard {
    pub child: Pid,
    pub reaped: bool,
    pub cgroup: Option<RunCgroup>,
    pub record: Option<RunRecord>,
}

impl ChildGuard {
    pub fn kill_and_reap(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.child, Signal::SIGKILL);
            let _ = waitpid(self.child, None);
            self.reaped = true;
        }
    }
}

impl ChildGuard {
    /// Kills what is left, removes the cgroup and, once it is gone, the record.
    pub fn release(&mut self) {
        self.kill_and_reap();
        remove_cgroup_then_record(self.cgroup.take(), self.record.take());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_killed_wasm_sandbox_or_a_native_container_is_asked_about_oom_kills() {
        let pid = Pid::from_raw(1);
        let exited = WaitStatus::Exited(pid, 0);
        let killed = WaitStatus::Signaled(pid, Signal::SIGKILL, false);
        let stopped = WaitStatus::Signaled(pid, Signal::SIGTERM, false);
        assert!(!may_have_oom_kills(exited, false));
        assert!(!may_have_oom_kills(stopped, false));
        assert!(may_have_oom_kills(killed, false));
        assert!(may_have_oom_kills(exited, true));
        assert!(may_have_oom_kills(stopped, true));
    }
}
