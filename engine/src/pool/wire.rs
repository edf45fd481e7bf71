//! The pool's messages: one JSON value per `SOCK_SEQPACKET` datagram, with descriptors
//! attached by `SCM_RIGHTS`.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest message: a run's spec with its arguments and environment.
pub const MAX_MESSAGE: usize = 256 << 10;
/// Most descriptors one message carries (module, stdin, stdout, stderr, directories,
/// listening sockets).
const MAX_FDS: usize =
    9 + crate::sandbox::attach::SPARE_MOUNT_POINTS + crate::sandbox::pooled::MAX_PORTS;

/// From `wrun run` to the pooled sandbox's supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Run this; the module, stdin, stdout, stderr, the write end of a status pipe, each
    /// preopened directory (`O_PATH`), each published port's listening socket, with
    /// `--allow-outbound` the sandbox's end of the caller's connect broker, and each namespace
    /// the spec joins (network, IPC, UTS, as many as it names) are attached in that order.
    /// Unless the claim asks for usage or names a cgroup, the sandbox writes the workload's
    /// exit code (one byte) to the status pipe as soon as it has it, before its teardown; a
    /// pipe that closes empty means the supervisor's `Finished` tells.
    Claim(Box<Claim>),
    /// Let a held claim's workload start (its caller's start gate opened).
    Start,
    /// A stop signal the caller received, for the workload.
    Signal(i32),
}

/// A run handed to the pool.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub spec: crate::spec::RunSpec,
    /// Report the workload's CPU time and memory peak (a container's monitor records them),
    /// which waits for the sandbox to be reaped before answering.
    pub usage: bool,
    /// Hold the workload after `Accepted` until the caller sends `Start` (OCI's create, then
    /// start: the caller hands the PID on and waits at its start gate).
    #[serde(default)]
    pub held: bool,
    /// The cgroup the caller needs the run in (a bundle's `linux.cgroupsPath`, a task's
    /// cgroup): the sandbox is moved there, with the limits, instead of keeping the pool's.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// From the pooled sandbox's supervisor to `wrun run`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The claim was taken: from here on the workload is this sandbox's to run. `pid` is the
    /// sandbox as the host sees it; `cgroup` its cgroup's path.
    Accepted {
        id: String,
        pid: i32,
        cgroup: Option<String>,
    },
    /// This sandbox cannot run it (the caller runs it standalone); nothing was started.
    Refused { reason: String },
    /// The workload ended: the exit code to report and wrun's note about the end, if any;
    /// with `usage` claimed, what it used.
    Finished {
        code: i32,
        note: Option<String>,
        #[serde(default)]
        usage: Option<Usage>,
    },
}

/// What a finished workload used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    pub oom_killed: bool,
    pub memory_peak: Option<u64>,
    pub cpu_time: std::time::Duration,
}

/// From the supervisor to its sandbox, once claimed.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToSandbox {
    /// Join these namespaces (a pod's; their descriptors attached in this order), drop the
    /// capabilities kept for it, and answer one byte. Sent before the caller learns the PID,
    /// as runc's create joins them; the work follows.
    Join(Vec<Joined>),
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
}

/// A kind of namespace a claimed sandbox joins instead of keeping its own.
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
}

/// From a claimed sandbox's supervisor to the daemon: the artifact its claim ran, which the
/// sandboxes made next map ahead.
#[derive(Debug, Serialize, Deserialize)]
pub struct Used {
    pub artifact: crate::sandbox::preload::RecentArtifact,
}

/// From a sandbox to its supervisor: ready, with these artifacts (cache keys) mapped ahead.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub mapped: Vec<String>,
}

/// A connected pair of message sockets.
pub fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends `message` with `fds` attached.
pub fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[RawFd],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(std::io::Error::other("message too long for the pool"));
    }
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives one message and the descriptors attached to it; `None` at end of stream.
pub fn receive<T: DeserializeOwned>(
    socket: BorrowedFd<'_>,
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    // Sized to the message (a peek with MSG_TRUNC tells its length): zeroing a buffer of the
    // largest size faulted in 64 pages, most of a claim's reading time.
    let mut peeked = [0u8; 1];
    let size = loop {
        match nix::sys::socket::recv(
            socket.as_raw_fd(),
            &mut peeked,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECONNRESET) => return Ok(None),
            Ok(0) => return Ok(None),
            other => break other?,
        }
    };
    let mut buffer = vec![0u8; size.min(MAX_MESSAGE)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut fds = Vec::new();
    let len = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECONNRESET) => return Ok(None),
            other => other?,
        };
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel installed these descriptors for this process just now.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        break message.bytes;
    };
    if len == 0 {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[..len]).map_err(std::io::Error::other)?;
    Ok(Some((message, fds)))
}

/// One byte, for the pool's "ready" signals; false if the other end is gone.
pub fn send_byte(socket: BorrowedFd<'_>, byte: u8) -> bool {
    nix::sys::socket::send(socket.as_raw_fd(), &[byte], MsgFlags::MSG_NOSIGNAL).is_ok()
}

/// Waits for one byte; `None` once the other end is gone.
pub fn receive_byte(socket: BorrowedFd<'_>) -> Option<u8> {
    let mut byte = [0u8; 1];
    loop {
        match nix::sys::socket::recv(socket.as_raw_fd(), &mut byte, MsgFlags::empty()) {
            Ok(1) => return Some(byte[0]),
            Err(nix::Error::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Sends a descriptor with a one-byte message (the daemon handing a client to a sandbox).
pub fn send_fd(socket: BorrowedFd<'_>, fd: RawFd) -> bool {
    let iov = [IoSlice::new(b"c")];
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .is_ok()
}

/// Receives a descriptor sent by [`send_fd`]; `None` once the other end is gone.
pub fn receive_fd(socket: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!(RawFd);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
            Ok(message) if message.bytes == 0 => return None,
            Ok(message) => {
                for cmsg in message.cmsgs().ok()? {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        // SAFETY: as in `receive`.
                        return fds.first().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_message_and_its_descriptors_cross_together() {
        let (a, b) = pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed along").unwrap();
        send(a.as_fd(), &Request::Signal(15), &[file.as_raw_fd()]).unwrap();
        let (message, fds) = receive::<Request>(b.as_fd()).unwrap().unwrap();
        assert!(matches!(message, Request::Signal(15)));
        let mut received = std::fs::File::from(fds.into_iter().next().unwrap());
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "passed along");
        drop(a);
        assert!(
            receive::<Request>(b.as_fd()).unwrap().is_none(),
            "end of stream"
        );
    }

    #[test]
    fn a_descriptor_alone_crosses_and_a_closed_peer_reads_as_none() {
        let (a, b) = pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        assert!(send_fd(a.as_fd(), file.as_raw_fd()));
        assert!(receive_fd(b.as_fd()).is_some());
        assert!(send_byte(a.as_fd(), b'R'));
        assert_eq!(receive_byte(b.as_fd()), Some(b'R'));
        drop(a);
        assert_eq!(receive_byte(b.as_fd()), None);
        assert!(receive_fd(b.as_fd()).is_none());
    }
}
