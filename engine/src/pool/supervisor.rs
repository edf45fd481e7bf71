//! A pooled sandbox's supervisor: forked by `wrun daemon` ahead of any workload, it makes
//! the sandbox (the one child body, its work to come by claim), says when it is ready, accepts
//! one client on the pool's socket once the daemon lends it, then serves that client's claim
//! ([`super::claim`]) and waits for its end. Never reused: nothing of one workload meets
//! another.
//!
//! Before the claim the sandbox has its own PID, mount, UTS and cgroup namespaces, the shared
//! network and IPC namespaces (or its own where they could not be pinned), its own cgroup, an
//! empty read-only root, no capabilities but the two that joining a pod's namespaces or making
//! a bundle's own needs, `no_new_privs` and an engine.

use super::claim::Claim;
use super::shape::Shape;
use super::wire::{Reply, Request, Usage};
use crate::exit;
use crate::net::packet;
use crate::sandbox::cgroup::RunCgroup;
use crate::sandbox::child::{self, ChildPlan};
use crate::sandbox::claimed::{Claimed, PoolKit, Ready, ToSandbox, SAMPLE_WORK};
use crate::sandbox::clone_into_cgroup::{self, CloneIntoCgroup};
use crate::sandbox::mount_template;
use crate::sandbox::parent_watch::ParentWatch;
use crate::sandbox::preload::RecentArtifact;
use crate::sandbox::runs::RunRecord;
use crate::sandbox::self_join::{self, SelfJoin};
use crate::sandbox::shared_namespaces::Shared;
use crate::sandbox::supervise::{self, Events, NoOutput, Waited};
use crate::sandbox::{self, harden, signals, ChildGuard, Stdio, TIMEOUT_BACKSTOP};
use crate::spec::RunSpec;
use crate::state::StateRoot;
use crate::timeline;
use crate::wasm::cache::AotCache;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::socket::SockFlag;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// What the daemon knows of one pooled sandbox: its supervisor, and the socket on which the
/// supervisor says it is ready, is lent the listening socket and says it took a client.
pub struct Pooled {
    pub supervisor: Pid,
    pub control: OwnedFd,
}

/// Forks a pooled sandbox's supervisor from the (single-threaded) daemon; supervisor and
/// sandbox use the daemon's engine as inherited, and the sandbox maps the artifacts of
/// `recent` ahead. The supervisor records its run in the reusable record `slot`, which no
/// other live supervisor of this daemon holds.
pub fn spawn(
    state: &StateRoot,
    shape: &Shape,
    pool_kit: &PoolKit,
    recent: &[RecentArtifact],
    slot: usize,
) -> nix::Result<Pooled> {
    let (daemon_end, supervisor_end) = packet::pair()?;
    let daemon = nix::unistd::getpid();
    // SAFETY: the daemon is single-threaded, so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Pooled {
            supervisor: child,
            control: daemon_end,
        }),
        ForkResult::Child => {
            drop(daemon_end);
            let made = supervise(state, shape, pool_kit, supervisor_end, daemon, recent, slot);
            let code = match made {
                Ok(()) => 0,
                Err(e) => {
                    crate::err_line!("wrun: a pooled sandbox failed: {e:#}");
                    1
                }
            };
            // Without the destructors of the daemon's state this process copied.
            crate::sys::exit_now(code)
        }
    }
}

/// The supervisor: makes the sandbox, says it is ready, serves one claim.
fn supervise(
    state: &StateRoot,
    shape: &Shape,
    pool_kit: &PoolKit,
    control: OwnedFd,
    daemon: Pid,
    recent: &[RecentArtifact],
    slot: usize,
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
    let id = sandbox::new_run_id();
    let cgroup_path = if shape.cgroup_parent.is_empty() {
        id.clone()
    } else {
        format!("{}/{id}", shape.cgroup_parent)
    };
    // A record of its own where the slot is held (by a run of an earlier daemon).
    let record = RunRecord::take_slot(&state.runs_dir(), slot, &cgroup_path)
        .or_else(|_| RunRecord::create(&state.runs_dir(), &id, &cgroup_path))
        .context("failed to record a pooled sandbox")?;
    let old_mask = signals::block_for_supervision()?;
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (supervisor_end, sandbox_end) = packet::pair()?;
    let parent = nix::unistd::getpid();
    // Before the PID namespace: making it the first time forks a helper.
    let mount_template = mount_template::open_or_make();
    // A claim into a pod joins the pod's namespaces over these, and a bundle's claim makes new
    // ones of its own (`SandboxSpec::own_namespaces`), as a standalone run of either would.
    let shared = Shared::open_or_make(true, true);
    let shares_network = shared.network.is_some();
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
    // On cgroup v2 the sandbox is forked into its cgroup, made first: a move there waits for
    // the kernel's global lock (off the start path, but it would slow the refill).
    let clone_into = CloneIntoCgroup::available();
    let early_cgroup = clone_into
        .as_ref()
        .map(|_| RunCgroup::create_unlimited(&cgroup_path))
        .transpose()?;
    let cgroup_dir = early_cgroup.as_ref().and_then(RunCgroup::open_dir);
    let parent_watch = ParentWatch::of_self();
    // SAFETY: single-threaded (nothing here starts a thread before this fork).
    let (forked, born_in_cgroup) =
        unsafe { clone_into_cgroup::fork_into_or_fork(clone_into.as_ref(), cgroup_dir.as_ref()) }?;
    let sandbox = match forked {
        ForkResult::Child => {
            // The supervisor's to remove.
            std::mem::forget(early_cgroup);
            drop((ready_write, supervisor_end, control));
            let plan = ChildPlan {
                stdio: Stdio::default(),
                keep: vec![sandbox_end.as_raw_fd()],
                cache: AotCache::new(state.cache_dir()),
                mount_point: state.sandbox_mount_point(),
                mount_template,
                shared,
                hostname: sandbox::short_id(&id).to_string(),
                parent,
                parent_watch,
                ready: ready_read,
                self_join: (!born_in_cgroup).then(SelfJoin::open).flatten(),
                old_mask,
                start: None,
            };
            child::main(
                plan,
                Claimed::new(sandbox_end, pool_kit.clone(), recent.to_vec()),
            )
        }
        ForkResult::Parent { child } => child,
    };
    // From here on it sets up and waits: mimalloc's blocks would land on pages the daemon
    // and the sandbox share with it, each written a copy (≈57 page faults a run, ≈48 so).
    crate::allocator::allocate_compactly();
    drop((ready_read, sandbox_end, shared, parent_watch));
    let mut guard = ChildGuard {
        child: sandbox,
        reaped: false,
        cgroup: early_cgroup,
        record: Some(record),
    };
    if born_in_cgroup {
        timeline::mark("sandbox forked into its cgroup");
    }
    if !shares_network {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    }
    if guard.cgroup.is_none() {
        guard.cgroup = Some(RunCgroup::create_unlimited(&cgroup_path)?);
    }
    // On cgroup v1 the sandbox moves itself in: a move by this process would hold the
    // kernel's cgroup lock through an RCU grace period, stalling every cgroup made or
    // removed meanwhile, the runs' included (`self_join`).
    let mut go_ahead = vec![self_join::JOINED];
    if !born_in_cgroup {
        let cgroup = guard.cgroup.as_ref().expect("made above");
        match self_join::go_ahead(cgroup) {
            Some(message) => go_ahead = message,
            None => cgroup.join(sandbox.as_raw() as u32)?,
        }
    }
    let _ = nix::unistd::write(&ready_write, &go_ahead);
    drop(ready_write);
    warm_up();
    // Ready once the sandbox is: isolated, locked but for the filter, its engine made.
    let Ok(Some((ready, _))) = packet::receive::<Ready>(supervisor_end.as_fd()) else {
        anyhow::bail!("the pooled sandbox failed while getting ready");
    };
    let mapped: Vec<RecentArtifact> = recent
        .iter()
        .filter(|artifact| ready.mapped.contains(&artifact.key))
        .cloned()
        .collect();
    if !packet::send_byte(control.as_fd(), READY) {
        return Ok(());
    }
    let Some(client) = accept_client(&control, &supervisor_end) else {
        return Ok(());
    };
    // Claimed: the run is the client's now, and outlives a daemon that stops or dies.
    nix::sys::prctl::set_pdeathsig(None)?;
    timeline::mark("pool: client accepted");
    let claim = Claim {
        state,
        shape,
        pool_kit,
        id: &id,
        mapped: &mapped,
    };
    claim.serve(client, control, supervisor_end, &mut guard)
}

const READY: u8 = b'R';

/// What a supervisor tells the daemon when it has taken a client off the pool's socket.
pub const TAKEN: u8 = b'T';

/// Waits for the daemon to lend the pool's listening socket, then accepts a client on it and
/// gives the socket back (tells the daemon, which lends it to the next sandbox). `None` when
/// the daemon or the sandbox ended first (then this ends, and the daemon, seeing the control
/// socket close, makes another).
fn accept_client(control: &OwnedFd, sandbox: &OwnedFd) -> Option<OwnedFd> {
    let mut listener: Option<OwnedFd> = None;
    loop {
        let watched = [Some(control), Some(sandbox), listener.as_ref()];
        let mut waiting: Vec<PollFd> = watched
            .into_iter()
            .flatten()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut waiting, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return None,
        }
        let fired = supervise::fired(&waiting);
        drop(waiting);
        if fired[1] {
            return None;
        }
        if fired[0] {
            // The daemon lends the socket once; anything else is its end.
            match packet::receive_fd(control.as_fd()) {
                Some(socket) if listener.is_none() => listener = Some(socket),
                _ => return None,
            }
        }
        let Some(socket) = listener.as_ref().filter(|_| fired.get(2) == Some(&true)) else {
            continue;
        };
        match nix::sys::socket::accept4(socket.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                let client = unsafe { OwnedFd::from_raw_fd(raw) };
                drop(listener);
                // A daemon gone meanwhile does not stop the run: it is the client's now.
                let _ = packet::send_byte(control.as_fd(), TAKEN);
                return Some(client);
            }
            // The socket does not block: a connection that went away before it was taken.
            Err(nix::Error::EAGAIN | nix::Error::EINTR | nix::Error::ECONNABORTED) => {}
            Err(_) => return None,
        }
    }
}

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
            cgroup: Some(claim.spec.sandbox.cgroup_parent.clone()),
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

/// A claim like most, parsed once while waiting: a process's first parse costs ≈0.1 ms more
/// (code, allocator and heap pages touched for the first time), on the start path.
const SAMPLE_CLAIM: &str = r#"{"Claim":{"spec":{"sandbox":{"limits":{"memory":null,"cpu_quota_us":null,"pids":null,"timeout":null},"cgroup_parent":"wrun","cgroup_name":null},"payload":{"Wasm":{"module":"/m.wasm","args":["m","a"],"env":[["A","1"]],"preopens":[],"module_digest":null,"ports":[],"request_timeout":null,"allow_outbound":[]}}},"usage":false}}"#;

/// How a claimed workload ended: its exit code, wrun's note, and what it used if asked.
pub(super) type Ending = (i32, Option<String>, Option<Usage>);

/// Waits for the sandbox to end, relaying the client's signals, killing the workload if the
/// client goes away or the timeout's backstop passes. Without `usage` wanted, the guest's own
/// report of its code ends the wait before the process is gone.
pub(super) fn wait_for_sandbox(
    guard: &mut ChildGuard,
    client: &OwnedFd,
    sandbox: &OwnedFd,
    spec: &RunSpec,
    usage: bool,
) -> Ending {
    let unused = || usage.then(Usage::default);
    let timeout = spec.sandbox.limits.timeout;
    let deadline = timeout.map(|t| Instant::now() + t + TIMEOUT_BACKSTOP);
    let mut events = ClaimEvents {
        client: Some(client.as_fd()),
        sandbox: Some(sandbox.as_fd()),
        usage,
    };
    let waited = supervise::wait_for(
        guard.child,
        deadline,
        Vec::new(),
        &mut NoOutput,
        &mut events,
    );
    let ended = match waited {
        Ok(Waited::Ended(ended)) => ended,
        Ok(Waited::Reported(code)) => return (code, None, None),
        Ok(Waited::DeadlinePassed) => {
            guard.kill_and_reap();
            let report = sandbox::timeout_report("", timeout);
            return (report.code, report.note, unused());
        }
        Err(_) => {
            guard.kill_and_reap();
            return (exit::RUNTIME_ERROR, None, unused());
        }
    };
    guard.reaped = true;
    let oom_killed = sandbox::oom_killed(ended.status, spec, guard.cgroup.as_ref());
    let (code, note) = sandbox::ending(ended.status, oom_killed, spec);
    let usage = usage.then(|| Usage {
        oom_killed,
        memory_peak: guard.cgroup.as_ref().and_then(RunCgroup::memory_peak),
        cpu_time: ended.cpu_time,
    });
    (code, note, usage)
}

/// What a claimed run's wait watches besides the sandbox: the client (its stop signals, its
/// leaving) and the sandbox's own report of the guest's code.
struct ClaimEvents<'a> {
    client: Option<BorrowedFd<'a>>,
    sandbox: Option<BorrowedFd<'a>>,
    usage: bool,
}

impl Events for ClaimEvents<'_> {
    fn forwards_signals(&self) -> bool {
        // Left blocked, as before the claim: the client relays its caller's as `Signal`.
        false
    }

    fn watched(&self) -> Vec<BorrowedFd<'_>> {
        self.sandbox.iter().chain(&self.client).copied().collect()
    }

    fn fired(&mut self, index: usize, child: Pid) -> Option<i32> {
        let sandbox_first = usize::from(self.sandbox.is_some());
        if index < sandbox_first {
            // The guest's own end, reported before the process exits; the reaping and the
            // cgroup's removal follow after the caller has its answer.
            match packet::receive_byte(self.sandbox?) {
                Some(code) if !self.usage => return Some(i32::from(code)),
                _ => self.sandbox = None,
            }
            return None;
        }
        match packet::receive::<Request>(self.client?) {
            Ok(Some((Request::Signal(signo), _))) => {
                if let Ok(signal) = Signal::try_from(signo) {
                    let _ = nix::sys::signal::kill(child, signal);
                }
            }
            Ok(Some(_)) => {}
            // The caller is gone: so is the reason to run.
            Ok(None) | Err(_) => {
                self.client = None;
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_samples_parse() {
        let claim = serde_json::from_str::<Request>(SAMPLE_CLAIM);
        assert!(matches!(claim, Ok(Request::Claim(_))), "{claim:?}");
        let work = serde_json::from_str::<ToSandbox>(SAMPLE_WORK);
        assert!(matches!(work, Ok(ToSandbox::Work(_))), "{work:?}");
    }
}
