//! `wrun daemon`: keeps `--pool` sandboxes ready (see [`super::supervisor`]), lends its
//! listening socket to the longest-ready one, whose supervisor accepts the next client itself,
//! and makes a new one in place of each claimed. It never reads a claim, nor is it between a
//! client and its sandbox: a start waits on no wake-up of the daemon.

use super::shape::Shape;
use super::supervisor::{self, Pooled};
use super::{socket_path, wire};
use crate::net::packet;
use crate::sandbox::preload::Recent;
use crate::sandbox::{self, claimed::PoolKit};
use crate::state::StateRoot;
use anyhow::{bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    accept4, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Serves the pool until SIGINT or SIGTERM; then ends every unclaimed sandbox and leaves.
pub fn run(state: &StateRoot, shape: &Shape, size: usize) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("wrun daemon needs root: every pooled sandbox gets a cgroup of its own");
    }
    state.ensure().with_context(|| {
        format!(
            "failed to prepare the state root {}",
            state.path().display()
        )
    })?;
    // Its sandboxes, forked from it, warm up and run guests: they allocate for speed.
    crate::allocator::allocate_for_speed();
    let path = socket_path(state);
    let listener = listen_at(&path)?;
    let signals = watch_signals()?;
    let pool_kit = PoolKit::new(&shape.settings)
        .map_err(|e| anyhow::anyhow!("failed to create the wasm engine: {e:#}"))?;
    sandbox::sweep_stale(state);
    crate::err_line!(
        "wrun: daemon serving {} with a pool of {size}",
        path.display()
    );
    let served = serve(state, shape, &pool_kit, size, &listener, &signals);
    let _ = std::fs::remove_file(&path);
    served
}

/// The pool's sandboxes: those getting ready, those ready in the order they became so, and
/// those claimed that have yet to say which artifact they ran; and whether the first ready
/// one holds the listening socket.
struct Pool {
    starting: Vec<Pooled>,
    ready: VecDeque<Pooled>,
    claimed: Vec<Pooled>,
    recent: Recent,
    lent: bool,
    slots: Slots,
}

/// Which reusable run record each live supervisor holds (`RunRecord::take_slot`): a slot is
/// given again once its supervisor has been reaped, so no two live supervisors of this
/// daemon are given the same.
#[derive(Default)]
struct Slots {
    by_supervisor: HashMap<Pid, usize>,
    held: BTreeSet<usize>,
}

impl Slots {
    /// The lowest slot no live supervisor holds.
    fn lowest_free(&self) -> usize {
        let mut free = 0;
        for &slot in &self.held {
            if slot != free {
                break;
            }
            free += 1;
        }
        free
    }

    fn hold(&mut self, supervisor: Pid, slot: usize) {
        self.by_supervisor.insert(supervisor, slot);
        self.held.insert(slot);
    }

    fn release(&mut self, supervisor: Pid) {
        if let Some(slot) = self.by_supervisor.remove(&supervisor) {
            self.held.remove(&slot);
        }
    }
}

fn serve(
    state: &StateRoot,
    shape: &Shape,
    pool_kit: &PoolKit,
    size: usize,
    listener: &OwnedFd,
    signals: &SignalFd,
) -> anyhow::Result<()> {
    let mut pool = Pool {
        starting: Vec::new(),
        ready: VecDeque::new(),
        claimed: Vec::new(),
        recent: Recent::default(),
        lent: false,
        slots: Slots::default(),
    };
    let mut refill_at = Some(Instant::now());
    loop {
        if refill_at.is_none() && pool.starting.len() + pool.ready.len() < size {
            // One died: replace it now.
            refill_at = Some(Instant::now());
        }
        if refill_at.is_some_and(|at| Instant::now() >= at)
            || pool.ready.is_empty() && pool.starting.is_empty()
        {
            refill_at = refill(&mut pool, state, shape, pool_kit, size);
        }
        lend(&mut pool, listener);
        // Watched only while no sandbox holds it: with none ready, a client is turned away.
        let listening = if pool.lent {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        let mut fds = vec![
            PollFd::new(listener.as_fd(), listening),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        let watched: Vec<_> = pool
            .starting
            .iter()
            .chain(&pool.ready)
            .chain(&pool.claimed)
            .map(|p| p.control.as_fd())
            .collect();
        fds.extend(watched.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        let timeout = match refill_at {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.max(Duration::from_millis(1)))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e).context("failed to wait for clients"),
        }
        let fired = crate::sandbox::supervise::fired(&fds);
        drop((fds, watched));
        if fired[1] && stop_requested(signals, &mut pool.slots) {
            shut_down(pool);
            sandbox::sweep_stale(state);
            return Ok(());
        }
        let changes = update(&mut pool, &fired[2..]);
        if changes.failed > 0 {
            // Sandboxes that die while getting ready would die again at once: pause.
            refill_at = Some(Instant::now() + Duration::from_secs(1));
        }
        if changes.taken {
            // Refilled a moment later, off the CPUs the claimed run starts on.
            refill_at = Some(Instant::now() + REFILL_DELAY);
        }
        // A sandbox ready meanwhile takes the client instead, once it holds the socket.
        if fired[0] && pool.ready.is_empty() {
            turn_away(listener);
        }
    }
}

/// Starts sandboxes until the pool is full; the time to try again if one could not start.
fn refill(
    pool: &mut Pool,
    state: &StateRoot,
    shape: &Shape,
    pool_kit: &PoolKit,
    size: usize,
) -> Option<Instant> {
    while pool.starting.len() + pool.ready.len() < size {
        let slot = pool.slots.lowest_free();
        match supervisor::spawn(state, shape, pool_kit, &pool.recent.artifacts(), slot) {
            Ok(pooled) => {
                pool.slots.hold(pooled.supervisor, slot);
                pool.starting.push(pooled);
            }
            Err(e) => {
                crate::err_line!("wrun: failed to start a pooled sandbox: {e}");
                return Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
    None
}

/// What [`update`] saw: how many sandboxes died before they were ready, and whether the one
/// holding the listening socket took a client.
struct Changes {
    failed: usize,
    taken: bool,
}

/// Moves the sandboxes that said so to ready, and the one that took a client to claimed;
/// drops those that died (their supervisor has cleaned up, or the next sweep will), and the
/// claimed ones once they said what they ran. A ready sandbox that does not hold the listening
/// socket only ever speaks by closing.
fn update(pool: &mut Pool, fired: &[bool]) -> Changes {
    let (starting_fired, rest) = fired.split_at(pool.starting.len());
    let (ready_fired, claimed_fired) = rest.split_at(pool.ready.len());
    let claimed = std::mem::take(&mut pool.claimed);
    for (pooled, fired) in claimed.into_iter().zip(claimed_fired) {
        if !fired {
            pool.claimed.push(pooled);
        } else if let Ok(Some((used, _))) = packet::receive::<wire::Used>(pooled.control.as_fd()) {
            pool.recent.used(used.artifact);
        }
    }
    let holder_fired = pool.lent && ready_fired.first() == Some(&true);
    let ready = std::mem::take(&mut pool.ready);
    let mut taken = false;
    for (index, (pooled, fired)) in ready.into_iter().zip(ready_fired).enumerate() {
        if !fired {
            pool.ready.push_back(pooled);
        } else if index == 0
            && holder_fired
            && packet::receive_byte(pooled.control.as_fd()) == Some(supervisor::TAKEN)
        {
            pool.claimed.push(pooled);
            taken = true;
        }
    }
    if holder_fired {
        pool.lent = false;
    }
    let starting = std::mem::take(&mut pool.starting);
    let mut failed = 0;
    for (pooled, fired) in starting.into_iter().zip(starting_fired) {
        if !fired {
            pool.starting.push(pooled);
        } else if packet::receive_byte(pooled.control.as_fd()).is_some() {
            pool.ready.push_back(pooled);
        } else {
            failed += 1;
        }
    }
    Changes { failed, taken }
}

/// How long after a claim the pool starts refilling: long enough for the claimed run to have
/// started (about 0.3 ms to its guest), short enough to keep up with 200 claims a second (at
/// 5 ms, 5–20% of them found the pool empty; `wrun-bench refill`).
const REFILL_DELAY: Duration = Duration::from_millis(1);

/// Lends the listening socket to the longest-ready sandbox, unless one holds it: its
/// supervisor accepts the next client and says so. Handing each client over instead put a
/// wake-up of this process on every start's path (≈0.07 ms back to back, ≈0.13 ms after a
/// pause). A sandbox that cannot be reached is dropped (its supervisor is gone).
fn lend(pool: &mut Pool, listener: &OwnedFd) {
    while !pool.lent {
        let Some(first) = pool.ready.front() else {
            return;
        };
        if packet::send_fd(first.control.as_fd(), listener.as_raw_fd()) {
            pool.lent = true;
        } else {
            pool.ready.pop_front();
        }
    }
}

/// With no sandbox ready, closing the connection tells the client to run standalone.
fn turn_away(listener: &OwnedFd) {
    if let Ok(raw) = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }
}

fn stop_requested(signals: &SignalFd, slots: &mut Slots) -> bool {
    let mut stop = false;
    while let Ok(Some(info)) = signals.read_signal() {
        if info.ssi_signo as i32 == libc::SIGCHLD {
            reap_children(slots);
        } else {
            stop = true;
        }
    }
    stop
}

/// Reaps the supervisors that have ended, freeing their slots.
fn reap_children(slots: &mut Slots) {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        match status.pid() {
            Some(supervisor) => slots.release(supervisor),
            None => break,
        }
    }
}

/// Closing their sockets tells unclaimed sandboxes to clean up and exit; what has not gone
/// within two seconds is killed (the sweep then removes what it left).
fn shut_down(pool: Pool) {
    let supervisors: Vec<_> = pool
        .starting
        .iter()
        .chain(&pool.ready)
        .map(|p| p.supervisor)
        .collect();
    drop(pool);
    let deadline = Instant::now() + Duration::from_secs(2);
    for pid in supervisors {
        while Instant::now() < deadline {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
                _ => break,
            }
        }
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
    reap_children(&mut Slots::default());
}

/// Binds the socket, refusing to take over from a daemon that still answers; only the
/// owner may connect (mode 0600).
fn listen_at(path: &Path) -> anyhow::Result<OwnedFd> {
    if path.exists() {
        if super::client::connect(path).is_ok() {
            bail!("a wrun daemon is already serving {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("failed to remove the stale socket {}", path.display()))?;
    }
    // Not blocking: the daemon and the sandbox it lends the socket to each accept only after
    // a poll, and neither may wait on a client the other took.
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let address = UnixAddr::new(path)?;
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = bind(listener.as_raw_fd(), &address);
    nix::sys::stat::umask(old_umask);
    bound.with_context(|| format!("failed to listen on {}", path.display()))?;
    listen(&listener, Backlog::MAXCONN).context("failed to listen for clients")?;
    Ok(listener)
}

fn watch_signals() -> anyhow::Result<SignalFd> {
    // The stop signals a supervisor forwards, and SIGCHLD.
    let set = crate::sandbox::signals::supervision_set();
    set.thread_block()?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?)
}
