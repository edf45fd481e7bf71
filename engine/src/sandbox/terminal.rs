//! Terminals for workloads, as runc's callers expect them: a pseudo-terminal whose master
//! goes to the caller over `--console-socket` (SCM_RIGHTS) or is relayed by `wrun exec -t`,
//! and whose replica becomes the process's standard streams and controlling terminal.
//!
//! The pair is opened in the host's devpts instance, before the sandbox exists: the
//! workload's streams are a terminal, but its name (`/dev/pts/N` of the host) does not
//! resolve inside the container's own `/dev/pts`, so `tty` prints "not a tty".

use super::Stdio;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("failed to open a pseudo-terminal")]
    Open(#[source] nix::Error),
    #[error("failed to connect to the console socket `{path}`")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to send the terminal to the console socket `{path}`")]
    Send {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// A pseudo-terminal: `master` for the caller, `replica` for the workload.
pub struct Pty {
    pub master: OwnedFd,
    pub replica: OwnedFd,
}

impl Pty {
    /// Opens a pair sized as `like` is (the caller's terminal), if it is one.
    pub fn open(like: Option<std::os::fd::BorrowedFd<'_>>) -> Result<Pty, TerminalError> {
        let size = like.and_then(window_size);
        let pair = nix::pty::openpty(size.as_ref(), None).map_err(TerminalError::Open)?;
        for fd in [&pair.master, &pair.slave] {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
        Ok(Pty {
            master: pair.master,
            replica: pair.slave,
        })
    }

    /// Sends the master to the console socket at `path`, as runc does (the file's name as
    /// the message, the descriptor as SCM_RIGHTS); the replica remains, as streams.
    pub fn send_master(self, path: &Path) -> Result<Stdio, TerminalError> {
        let shown = path.display().to_string();
        let socket = UnixStream::connect(path).map_err(|source| TerminalError::Connect {
            path: shown.clone(),
            source,
        })?;
        let fds = [self.master.as_raw_fd()];
        let name = b"/dev/ptmx";
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(name)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(|source| TerminalError::Send {
            path: shown,
            source,
        })?;
        Ok(streams(self.replica))
    }
}

/// Receives a terminal's master as [`Pty::send_master`] sends it (the console socket's
/// other end, as the runc shim and conmon read it).
pub fn receive_master(socket: &UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    let mut name = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for this process; nothing
                // else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other(
        "no terminal descriptor in the console socket's message",
    ))
}

/// Sets the terminal's window size (a caller's resize).
pub fn resize(master: &OwnedFd, rows: u16, columns: u16) -> nix::Result<()> {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `struct winsize` from the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// The replica as stdin, stdout and stderr.
pub fn streams(replica: OwnedFd) -> Stdio {
    let copy = || replica.try_clone().ok();
    Stdio {
        stdin: copy(),
        stdout: copy(),
        stderr: Some(replica),
    }
}

/// In the workload's process, before it becomes the workload: a session of its own whose
/// controlling terminal is its stdin.
pub fn take_controlling_terminal() -> nix::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal a terminal another session
    // controls) on a descriptor this process holds.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

fn window_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `struct winsize` to the pointer, which is valid for it.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}
