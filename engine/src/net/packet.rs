//! Messages over `SOCK_SEQPACKET` sockets: one JSON value per datagram, with descriptors
//! attached by `SCM_RIGHTS` (the pool's claims, a pooled sandbox's work).

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{de::DeserializeOwned, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest message: a run's spec with its arguments and environment.
pub const MAX_MESSAGE: usize = 256 << 10;
/// Most descriptors one message carries (a claim's module, stdio, directories, listening
/// sockets, namespaces); more are refused by the kernel's truncation flag, not read.
pub const MAX_FDS: usize = 64;

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

/// Sends a descriptor with a one-byte message (the daemon lending its listening socket to a
/// ready sandbox's supervisor).
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
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe(i32);
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_message_and_its_descriptors_cross_together() {
        let (a, b) = pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed along").unwrap();
        send(a.as_fd(), &Probe(15), &[file.as_raw_fd()]).unwrap();
        let (message, fds) = receive::<Probe>(b.as_fd()).unwrap().unwrap();
        assert!(matches!(message, Probe(15)));
        let mut received = std::fs::File::from(fds.into_iter().next().unwrap());
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "passed along");
        drop(a);
        assert!(
            receive::<Probe>(b.as_fd()).unwrap().is_none(),
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
