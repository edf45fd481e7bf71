//! The guest's socket descriptors: the listeners published with `-p`, pre-opened from fd 3,
//! and the connections accepted on them, each reading and writing on the guest's own call.
//!
//! Every attempt is the system call itself, and only a wait goes through the reactor: a
//! reactor's cached readiness is stale until it turns, and a non-blocking accept or read
//! must not say "try again" when the kernel has a connection or bytes.

use super::abi::{Errno, Result};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;

/// The most one read takes from the kernel.
const CHUNK: usize = 64 * 1024;

/// Socket descriptors by number, and the number wasmtime-wasi holds for them (see
/// `p1_sockets` on numbering).
#[derive(Default)]
pub struct SocketFds {
    entries: HashMap<u32, Socket>,
    reserve: Option<u32>,
}

pub enum Socket {
    Listener(Listener),
    Stream(Stream),
}

impl SocketFds {
    /// `listeners` at fds `first..`, with `reserve` the descriptor kept for numbering.
    /// Must be called inside the tokio runtime the guest runs on.
    pub fn new(listeners: Vec<TcpListener>, first: u32, reserve: u32) -> io::Result<SocketFds> {
        let mut entries = HashMap::new();
        for (fd, listener) in (first..).zip(listeners) {
            listener.set_nonblocking(true)?;
            let listener = Listener {
                listener: register(listener)?,
                accepted: None,
                nonblocking: false,
            };
            entries.insert(fd, Socket::Listener(listener));
        }
        Ok(SocketFds {
            entries,
            reserve: Some(reserve),
        })
    }

    /// Whether `fd` is a socket, or the reserved number: either way not wasmtime-wasi's to
    /// act on.
    pub fn holds(&self, fd: u32) -> bool {
        self.reserve == Some(fd) || self.entries.contains_key(&fd)
    }

    pub fn reserve(&self) -> Option<u32> {
        self.reserve
    }

    /// The socket at `fd`; the reserved number is no descriptor the guest has.
    pub fn get(&mut self, fd: u32) -> Result<&mut Socket> {
        self.entries.get_mut(&fd).ok_or(Errno::BADF)
    }

    pub fn insert(&mut self, fd: u32, socket: Socket) {
        self.entries.insert(fd, socket);
    }

    pub fn remove(&mut self, fd: u32) -> Option<Socket> {
        self.entries.remove(&fd)
    }
}

impl Socket {
    pub fn nonblocking(&self) -> bool {
        match self {
            Socket::Listener(l) => l.nonblocking,
            Socket::Stream(s) => s.nonblocking,
        }
    }

    pub fn set_nonblocking(&mut self, on: bool) {
        match self {
            Socket::Listener(l) => l.nonblocking = on,
            Socket::Stream(s) => s.nonblocking = on,
        }
    }

    /// Whether a read (an accept, on a listener) would not block, waking `cx` when that
    /// may change.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Socket::Listener(l) => l.poll_pending(cx),
            Socket::Stream(s) => s.poll_readable(cx),
        }
    }

    /// Whether a write would not block.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> bool {
        match self {
            Socket::Listener(_) => false,
            Socket::Stream(s) => s.stream.poll_write_ready(cx).is_ready(),
        }
    }

    /// Bytes ready to read, and whether the peer is gone, for a poll event.
    pub fn readable_bytes(&self) -> (u64, bool) {
        match self {
            Socket::Listener(_) => (1, false),
            Socket::Stream(s) => match &s.ahead {
                Some(Ahead::Data(bytes)) => (bytes.len() as u64, false),
                _ => (0, true),
            },
        }
    }
}

/// `io` watched by the runtime's reactor.
fn register<T: std::os::fd::AsRawFd>(io: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: the socket owns its descriptor, and nothing replaces or closes it while the
    // AsyncFd holds it.
    Ok(unsafe { AsyncFd::register(io)? })
}

pub struct Listener {
    listener: AsyncFd<TcpListener>,
    /// A connection a wait for readiness took, for the next accept.
    accepted: Option<io::Result<TcpStream>>,
    nonblocking: bool,
}

impl Listener {
    /// Whether a connection is taken, waking `cx` when one may come.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> bool {
        while self.accepted.is_none() {
            match self.listener.get_ref().accept() {
                Ok((stream, _)) => self.accepted = Some(Ok(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.listener.poll_read_ready(cx) {
                        Poll::Pending => return false,
                        Poll::Ready(Ok(mut stale)) => stale.clear_ready(),
                        Poll::Ready(Err(e)) => self.accepted = Some(Err(e)),
                    }
                }
                Err(e) => self.accepted = Some(Err(e)),
            }
        }
        true
    }

    /// The next connection, waiting for one unless the listener is non-blocking.
    pub async fn accept(&mut self) -> Result<Stream> {
        if self.nonblocking {
            self.poll_pending(&mut Context::from_waker(std::task::Waker::noop()));
        } else {
            std::future::poll_fn(|cx| match self.poll_pending(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
            .await;
        }
        let stream = self.accepted.take().ok_or(Errno::AGAIN)?;
        let stream = stream.map_err(|e| Errno::of(&e))?;
        // accept(2) does not pass the listener's O_NONBLOCK on.
        stream.set_nonblocking(true).map_err(|e| Errno::of(&e))?;
        Ok(Stream {
            stream: register(stream).map_err(|e| Errno::of(&e))?,
            ahead: None,
            nonblocking: false,
        })
    }
}

/// What a wait for readiness read from a stream and the guest has not taken yet: a socket
/// the kernel calls readable may have nothing after all, and a guest told it is ready would
/// then block in its read while its other connections wait.
enum Ahead {
    Data(Bytes),
    End,
    Failed(Errno),
}

pub struct Stream {
    stream: AsyncFd<TcpStream>,
    ahead: Option<Ahead>,
    nonblocking: bool,
}

impl Stream {
    fn fill(&mut self) {
        if self.ahead.is_some() {
            return;
        }
        let mut buf = BytesMut::zeroed(CHUNK);
        self.ahead = match self.stream.get_ref().read(&mut buf) {
            Ok(0) => Some(Ahead::End),
            Ok(read) => {
                buf.truncate(read);
                Some(Ahead::Data(buf.freeze()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Ahead::Failed(Errno::of(&e))),
        };
    }

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            self.fill();
            if self.ahead.is_some() {
                return true;
            }
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(mut stale)) => stale.clear_ready(),
                Poll::Ready(Err(e)) => self.ahead = Some(Ahead::Failed(Errno::of(&e))),
            }
        }
    }

    /// Up to `max` bytes of what has arrived, waiting for something unless non-blocking
    /// (none at the end of the stream); with `peek`, left to be read again.
    pub async fn read(&mut self, max: usize, peek: bool) -> Result<Bytes> {
        if !self.nonblocking {
            std::future::poll_fn(|cx| match self.poll_readable(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
            .await;
        }
        self.fill();
        match self.ahead.take() {
            None => Err(Errno::AGAIN),
            Some(Ahead::End) => {
                self.ahead = Some(Ahead::End);
                Ok(Bytes::new())
            }
            Some(Ahead::Failed(errno)) => {
                self.ahead = Some(Ahead::End);
                Err(errno)
            }
            Some(Ahead::Data(mut bytes)) => {
                let taken = match peek {
                    true => bytes.slice(..max.min(bytes.len())),
                    false => bytes.split_to(max.min(bytes.len())),
                };
                if !bytes.is_empty() {
                    self.ahead = Some(Ahead::Data(bytes));
                }
                Ok(taken)
            }
        }
    }

    /// Writes `bytes`: all of them, waiting for the kernel to take them, unless non-blocking,
    /// when as much as it takes now.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<usize> {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.get_ref().write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.nonblocking {
                        return if written > 0 {
                            Ok(written)
                        } else {
                            Err(Errno::AGAIN)
                        };
                    }
                    let mut stale = self.stream.writable().await.map_err(|e| Errno::of(&e))?;
                    stale.clear_ready();
                }
                Err(e) if written > 0 => {
                    tracing::debug!("socket write ended early: {e}");
                    return Ok(written);
                }
                Err(e) => return Err(Errno::of(&e)),
            }
        }
        Ok(written)
    }

    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        match self.stream.get_ref().shutdown(how) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
            done => done.map_err(|e| Errno::of(&e)),
        }
    }
}
