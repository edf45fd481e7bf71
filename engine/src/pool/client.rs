//! `wrun run`'s side of the pool: hands a run to the daemon's pooled sandbox when a daemon
//! serves the state root and the run suits the pool, and relays stop signals until it ends.
//! `None` from [`try_run`] means: run standalone (nothing was started).

use super::wire::{self, Reply, Request};
use crate::sandbox::{pooled, signals};
use crate::spec::RunSpec;
use crate::state::StateRoot;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigmaskHow;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    connect as connect_socket, socket, AddressFamily, SockFlag, SockType, UnixAddr,
};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The pooled sandbox took the run and then vanished without reporting its end.
#[derive(Debug, thiserror::Error)]
#[error("the pooled sandbox {id} ended without reporting how the workload ended")]
pub struct Lost {
    pub id: String,
}

/// Runs `spec` (with the caller's stdio) in a pooled sandbox: its exit code, or why it was
/// lost after it started, or `None` when there is no pool to take it.
pub fn try_run(spec: &RunSpec, state: &StateRoot) -> Option<Result<i32, Lost>> {
    if pooled::unsuitable(spec).is_some() {
        return None;
    }
    let path = super::socket_path(state);
    let meta = std::fs::metadata(&path).ok()?;
    // Only a daemon of the caller's own user (or root's) is trusted with the run.
    let me = nix::unistd::geteuid().as_raw();
    if !meta.file_type().is_socket() || (meta.uid() != me && meta.uid() != 0) {
        return None;
    }
    let module = File::open(&spec.module).ok()?;
    // Opened as the caller, so the pool can attach only what the caller can reach.
    let dirs = spec
        .preopens
        .iter()
        .map(|p| open_directory(&p.host))
        .collect::<nix::Result<Vec<_>>>()
        .ok()?;
    let socket = connect(&path).ok()?;
    let claim = Request::Claim(Box::new(spec.clone()));
    let mut fds = vec![module.as_raw_fd(), 0, 1, 2];
    fds.extend(dirs.iter().map(AsRawFd::as_raw_fd));
    wire::send(socket.as_fd(), &claim, &fds).ok()?;
    drop(dirs);
    crate::timeline::mark("pool: claim sent");
    drop(module);
    let old_mask = signals::block_for_supervision().ok()?;
    let outcome = follow(&socket);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    outcome
}

/// Waits for the pooled sandbox's replies, passing on the stop signals the caller gets.
fn follow(socket: &OwnedFd) -> Option<Result<i32, Lost>> {
    let signals = SignalFd::with_flags(
        &signals::supervision_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .ok()?;
    let mut accepted: Option<String> = None;
    let mut pending: Vec<i32> = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return lost(accepted),
        }
        let [reply_ready, signal_ready] = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo as i32 != libc::SIGCHLD {
                    pending.push(info.ssi_signo as i32);
                }
            }
        }
        if accepted.is_some() {
            for signo in pending.drain(..) {
                let _ = wire::send(socket.as_fd(), &Request::Signal(signo), &[]);
            }
        }
        if !reply_ready {
            continue;
        }
        match wire::receive::<Reply>(socket.as_fd()) {
            Ok(Some((Reply::Accepted { id }, _))) => {
                tracing::debug!(id, "run taken by a pooled sandbox");
                accepted = Some(id);
                for signo in pending.drain(..) {
                    let _ = wire::send(socket.as_fd(), &Request::Signal(signo), &[]);
                }
            }
            Ok(Some((Reply::Refused { reason }, _))) => {
                tracing::debug!(reason, "the pool refused the run");
                return None;
            }
            Ok(Some((Reply::Finished { code, note }, _))) => {
                crate::timeline::mark("pool: finished");
                if let Some(note) = note {
                    eprintln!("wrun: {note}");
                }
                return Some(Ok(code));
            }
            Ok(None) | Err(_) => return lost(accepted),
        }
    }
}

/// The connection ended: before the claim was taken, run standalone; after, report it.
fn lost(accepted: Option<String>) -> Option<Result<i32, Lost>> {
    accepted.map(|id| Err(Lost { id }))
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
