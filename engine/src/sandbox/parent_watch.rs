//! The parent a sandbox dies with, watched through a pidfd: the parent-death signal is only
//! sent by a parent that dies after the child asked for it.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// A pidfd of the parent, opened by the parent before it forks. A child in a PID namespace of
/// its own cannot tell its parent's death from `getppid` (0 before and after), and a child the
/// scheduler leaves waiting may only ask for the signal once its parent is already gone.
#[derive(Default)]
pub struct ParentWatch(Option<OwnedFd>);

impl ParentWatch {
    /// The calling process, as the parent of the child it is about to fork; where the kernel
    /// has no pidfds (before 5.3) the parent-death signal alone.
    pub fn of_self() -> Self {
        let me = rustix::process::getpid();
        Self(rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).ok())
    }

    /// In the child, after asking for the parent-death signal: ends at once, as that signal
    /// would have ended it, if the parent has already died.
    pub fn end_if_parent_died(&self) {
        let Some(pidfd) = &self.0 else {
            return;
        };
        // A pidfd polls readable once its process has ended.
        let mut ended = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut ended, PollTimeout::ZERO).is_ok_and(|ready| ready > 0) {
            crate::sys::exit_now(128 + libc::SIGKILL)
        }
    }

    /// The descriptor, for the list of those the child keeps while it sets up.
    pub fn fd(&self) -> Option<RawFd> {
        self.0.as_ref().map(AsRawFd::as_raw_fd)
    }
}
