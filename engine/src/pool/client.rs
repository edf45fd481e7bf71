//! `wrun run`'s side of the pool: hands a run to the daemon's pooled sandbox when a daemon
//! serves the state root and the run suits the pool, and relays stop signals until it ends.
//! [`try_launch`] gives the run back when no pool takes it: then it runs standalone.

use super::shape::unsuitable;
use super::wire::{self, Reply, Request};
use crate::net::packet;
use crate::sandbox::claimed::Joined;
use crate::sandbox::supervise::{self, OutputSink, Stream};
use crate::sandbox::{signals, Gate, Observer, Options, Report, RunError, Started, Stdio};
use crate::spec::{Payload, RunSpec};
use crate::state::StateRoot;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    connect as connect_socket, socket, AddressFamily, SockFlag, SockType, UnixAddr,
};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A run handed to the pool that did not come back with its end.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    #[error("the pooled sandbox {id} ended without reporting how the workload ended")]
    Vanished { id: String },
    /// The connection was made but nothing took or refused the run: a daemon stopped
    /// (SIGSTOP) or wedged, with no sandbox holding its socket. Not run standalone: the pool may still start it later
    /// (it then finds the caller gone and ends it before the guest runs).
    #[error("the wrun daemon did not answer within {} s (is it stopped?)", NO_ANSWER.as_secs())]
    NoAnswer,
    /// The caller's start gate failed or was closed: the sandbox ends before any guest code.
    #[error("the run was abandoned before it started")]
    Abandoned(#[source] std::io::Error),
}

/// How long a claim may wait to be taken or refused.
const NO_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `spec` in a pooled sandbox as `options` say: how it ended, or why it was lost after
/// it started; or the options back, untouched, when there is no pool to take it (nothing was
/// started) for the standalone path.
pub fn try_launch<'a>(
    spec: &RunSpec,
    state: &StateRoot,
    options: Options<'a>,
) -> Result<Result<Report, Lost>, Options<'a>> {
    // A created container outlives its caller: no pooled sandbox is left that way.
    if options.start_fifo.is_some() {
        return Err(options);
    }
    let Options {
        id,
        stdio,
        relay,
        observer,
        keep_writable_layer,
        gate,
        own_cgroup,
        start_fifo,
    } = options;
    let terms = Terms {
        usage: observer.is_some(),
        held: gate.is_some(),
        cgroup: id
            .as_deref()
            .filter(|_| own_cgroup)
            .map(|id| spec.cgroup_path(id)),
    };
    let fds = raw_stdio(&stdio);
    let relay_fds: Vec<_> = relay
        .iter()
        .map(|(stream, fd)| (*stream, fd.as_fd()))
        .collect();
    let mut hooks = LaunchHooks {
        stdio: Some(stdio),
        gate,
        observer,
    };
    match claim(spec, state, fds, terms, relay_fds, &mut hooks) {
        Some(finished) => Ok(finished.map(Finished::into_report)),
        None => Err(Options {
            id,
            stdio: hooks.stdio.take().unwrap_or_default(),
            relay,
            observer: hooks.observer,
            keep_writable_layer,
            gate: hooks.gate,
            own_cgroup,
            start_fifo,
        }),
    }
}

impl From<Lost> for RunError {
    fn from(lost: Lost) -> RunError {
        match lost {
            Lost::Abandoned(gate) => RunError::Gate(gate),
            lost => RunError::Pool(lost.to_string()),
        }
    }
}

/// The descriptors `stdio` gives the sandbox, the caller's own where it gives none.
fn raw_stdio(stdio: &Stdio) -> [RawFd; 3] {
    let raw = |fd: &Option<OwnedFd>, standard| fd.as_ref().map_or(standard, AsRawFd::as_raw_fd);
    [
        raw(&stdio.stdin, 0),
        raw(&stdio.stdout, 1),
        raw(&stdio.stderr, 2),
    ]
}

/// How a pooled run ended.
struct Finished {
    id: String,
    code: i32,
    note: Option<String>,
    usage: Option<wire::Usage>,
}

impl Finished {
    fn into_report(self) -> Report {
        let usage = self.usage.unwrap_or_default();
        Report {
            id: self.id,
            code: self.code,
            oom_killed: usage.oom_killed,
            memory_peak: usage.memory_peak,
            cpu_time: usage.cpu_time,
            note: self.note,
        }
    }
}

/// What a claim asks of the pool besides the spec (see [`wire::Claim`]).
#[derive(Default)]
struct Terms {
    usage: bool,
    held: bool,
    cgroup: Option<String>,
}

/// A claim sent: the connection it went on, the read end of its status pipe, the connect
/// broker (`--allow-outbound`), which lives as long as the claim, and whether the workload
/// waits for a `Start`.
struct Sent {
    socket: OwnedFd,
    status: OwnedFd,
    _broker: Option<crate::net::broker::Broker>,
    held: bool,
}

/// Sends the claim; `None` if there is no daemon to take it (nothing was started).
fn hand_over(spec: &RunSpec, state: &StateRoot, stdio: [i32; 3], terms: Terms) -> Option<Sent> {
    let Payload::Wasm(wasm) = &spec.payload else {
        return None;
    };
    if unsuitable(spec, terms.cgroup.is_some()).is_some() {
        return None;
    }
    let path = super::socket_path(state);
    let meta = std::fs::metadata(&path).ok()?;
    // Only a daemon of the caller's own user (or root's) is trusted with the run.
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() || (meta.uid() != me && meta.uid() != 0) {
        return None;
    }
    let module = File::open(&wasm.module).ok()?;
    // Opened as the caller, so the pool can attach only what the caller can reach.
    let dirs = wasm
        .preopens
        .iter()
        .map(|p| open_directory(&p.host))
        .collect::<nix::Result<Vec<_>>>()
        .ok()?;
    // Bound here, as the caller, in the host's network namespace; a failure is the
    // standalone path's to report.
    let listeners = crate::net::listen(&wasm.ports).ok()?;
    // Opened as the caller (a pod's, from the bundle): the pooled sandbox joins them.
    let namespaces = Joined::named(&spec.sandbox.join)
        .into_iter()
        .map(|(_, path)| File::open(path))
        .collect::<std::io::Result<Vec<_>>>()
        .ok()?;
    let socket = connect(&path).ok()?;
    // Started here, in the host's network namespace, as the standalone path does.
    let (broker, broker_end) = crate::sandbox::start_broker(spec).ok()?;
    let (status, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let held = terms.held;
    let claim = Request::Claim(Box::new(wire::Claim {
        spec: spec.clone(),
        usage: terms.usage,
        held,
        cgroup: terms.cgroup,
    }));
    let mut fds = vec![module.as_raw_fd()];
    fds.extend(stdio);
    fds.push(status_write.as_raw_fd());
    fds.extend(dirs.iter().map(AsRawFd::as_raw_fd));
    fds.extend(listeners.iter().map(AsRawFd::as_raw_fd));
    fds.extend(broker_end.iter().map(AsRawFd::as_raw_fd));
    fds.extend(namespaces.iter().map(AsRawFd::as_raw_fd));
    packet::send(socket.as_fd(), &claim, &fds).ok()?;
    crate::timeline::mark("pool: claim sent");
    Some(Sent {
        socket,
        status,
        _broker: broker,
        held,
    })
}

/// Hands the run to the pool and follows it to its end: `None` if the pool did not take it
/// (nothing was started). Stop signals are blocked from before the claim is sent, so none
/// is lost: they go to the workload once it is taken, or are raised again here if not.
fn claim(
    spec: &RunSpec,
    state: &StateRoot,
    stdio: [i32; 3],
    terms: Terms,
    relay: Vec<(Stream, BorrowedFd<'_>)>,
    hooks: &mut dyn Hooks,
) -> Option<Result<Finished, Lost>> {
    let old_mask = signals::block_for_supervision().ok()?;
    let restore = || {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    };
    let signals = SignalFd::with_flags(
        &signals::supervision_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    );
    let (Ok(signals), Some(sent)) = (signals, hand_over(spec, state, stdio, terms)) else {
        restore();
        return None;
    };
    let (outcome, unsent) = follow(sent, &signals, relay, hooks);
    drop(signals);
    restore();
    for signal in unsent
        .into_iter()
        .filter_map(|signo| Signal::try_from(signo).ok())
    {
        let _ = nix::sys::signal::raise(signal);
    }
    outcome
}

/// Follows a claim: replies, the exit code on the status pipe, stop signals to pass on,
/// output to relay. Also returns the signals not passed on (the pool refused the run before
/// any workload existed).
fn follow(
    sent: Sent,
    signals: &SignalFd,
    mut relay: Vec<(Stream, BorrowedFd<'_>)>,
    hooks: &mut dyn Hooks,
) -> (Option<Result<Finished, Lost>>, Vec<i32>) {
    let (socket, held) = (&sent.socket, sent.held);
    let mut status = Some(sent.status);
    let mut taken: Option<String> = None;
    let mut pending: Vec<i32> = Vec::new();
    let sent = std::time::Instant::now();
    loop {
        let mut fds = vec![
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            relay
                .iter()
                .map(|(_, fd)| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        // Watched once the claim is taken: the code comes after the `Accepted`.
        let status_fd = status.as_ref().filter(|_| taken.is_some());
        fds.extend(status_fd.map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)));
        let timeout = match taken {
            Some(_) => PollTimeout::NONE,
            None => {
                let left = NO_ANSWER.saturating_sub(sent.elapsed());
                PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO)
            }
        };
        match poll(&mut fds, timeout) {
            Ok(0) if taken.is_none() && sent.elapsed() >= NO_ANSWER => {
                return (Some(Err(Lost::NoAnswer)), Vec::new());
            }
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return (lost(taken), Vec::new()),
        }
        let fired = supervise::fired(&fds);
        drop(fds);
        if fired[1] {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    pending.push(info.ssi_signo as i32);
                }
            }
        }
        let mut index = 2;
        relay.retain(|(stream, fd)| {
            let ready = fired[index];
            index += 1;
            !ready || supervise::drain(*stream, fd, hooks)
        });
        if taken.is_some() {
            for signo in pending.drain(..) {
                let _ = packet::send(socket.as_fd(), &Request::Signal(signo), &[]);
            }
        }
        if fired.get(index) == Some(&true) {
            match status.as_ref().map(|fd| read_status(fd.as_fd())) {
                Some(Some(code)) => {
                    crate::timeline::mark("pool: finished (status)");
                    let finished = Finished {
                        id: taken.unwrap_or_default(),
                        code,
                        note: None,
                        usage: None,
                    };
                    return (Some(Ok(finished)), Vec::new());
                }
                // Closed empty: the supervisor's answer tells how it ended.
                _ => status = None,
            }
        }
        if !fired[0] {
            continue;
        }
        match packet::receive::<Reply>(socket.as_fd()) {
            Ok(Some((Reply::Accepted { id, pid, cgroup }, _))) => {
                tracing::debug!(id, "run taken by a pooled sandbox");
                let started = hooks.started(&Started {
                    id: id.clone(),
                    pid,
                    cgroup,
                });
                // Dropping the connection makes the supervisor end the held sandbox.
                if let Err(e) = started {
                    return (Some(Err(Lost::Abandoned(e))), Vec::new());
                }
                if held && packet::send(socket.as_fd(), &Request::Start, &[]).is_err() {
                    return (lost(Some(id)), Vec::new());
                }
                taken = Some(id);
                for signo in pending.drain(..) {
                    let _ = packet::send(socket.as_fd(), &Request::Signal(signo), &[]);
                }
            }
            Ok(Some((Reply::Refused { reason }, _))) => {
                tracing::debug!(reason, "the pool refused the run");
                return (None, pending);
            }
            Ok(Some((Reply::Finished { code, note, usage }, _))) => {
                crate::timeline::mark("pool: finished");
                let finished = Finished {
                    id: taken.unwrap_or_default(),
                    code,
                    note,
                    usage,
                };
                return (Some(Ok(finished)), Vec::new());
            }
            Ok(None) | Err(_) => {
                let unsent = if taken.is_some() { Vec::new() } else { pending };
                return (lost(taken), unsent);
            }
        }
    }
}

/// What following a pooled run tells its caller about.
trait Hooks: OutputSink {
    /// The claim was taken; an error abandons the run before it starts.
    fn started(&mut self, started: &Started) -> std::io::Result<()>;
}

/// What a launched run's caller is told: the start (its gate, its observer), the output.
struct LaunchHooks<'a> {
    /// The streams given to the sandbox, kept until it has its own copies.
    stdio: Option<Stdio>,
    gate: Option<Gate<'a>>,
    observer: Option<&'a mut dyn Observer>,
}

impl OutputSink for LaunchHooks<'_> {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        if let Some(observer) = self.observer.as_mut() {
            observer.output(stream, data);
        }
    }
}

impl Hooks for LaunchHooks<'_> {
    fn started(&mut self, started: &Started) -> std::io::Result<()> {
        // Closed here, the caller's pipes end when the sandbox's copies do.
        self.stdio = None;
        // As on the standalone path: the gate first, then the observer hears of the start.
        self.gate.take().map_or(Ok(()), |gate| gate(started.pid))?;
        if let Some(observer) = self.observer.as_mut() {
            observer.started(started);
        }
        Ok(())
    }
}

/// The exit code on a status pipe, or `None` once it closed without one.
fn read_status(status: BorrowedFd<'_>) -> Option<i32> {
    let mut code = [0u8; 1];
    loop {
        match nix::unistd::read(status, &mut code) {
            Ok(1) => return Some(i32::from(code[0])),
            Err(nix::Error::EINTR) => continue,
            _ => return None,
        }
    }
}

/// The connection ended: before the claim was taken, run standalone; after, report it.
fn lost<T>(taken: Option<String>) -> Option<Result<T, Lost>> {
    taken.map(|id| Err(Lost::Vanished { id }))
}

fn open_directory(path: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Connects to the daemon's socket at `path`.
pub fn connect(path: &Path) -> nix::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect_socket(socket.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(socket)
}
