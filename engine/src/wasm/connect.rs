//! The sandbox's end of the connect broker (`net::broker`): connections and name lookups,
//! one exchange at a time, for outgoing HTTP and for the guest's sockets.

use crate::net::broker;
use nix::sys::socket::{recvmsg, send, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;

/// Why the broker gave no connection or addresses.
#[derive(Debug)]
pub enum Refusal {
    /// The exchange with the broker failed.
    Broken(std::io::Error),
    /// The broker's answer: its kind and reason.
    Answer(Option<u8>, String),
}

impl Refusal {
    /// The wasi:sockets error for it.
    pub fn into_error_code(self) -> ErrorCode {
        match self {
            Refusal::Answer(Some(broker::DENIED), _) => ErrorCode::AccessDenied,
            Refusal::Answer(Some(broker::NO_ADDRESS), _) => ErrorCode::NameUnresolvable,
            Refusal::Answer(Some(broker::REFUSED), _) => ErrorCode::ConnectionRefused,
            Refusal::Answer(Some(broker::TIMED_OUT), _) => ErrorCode::Timeout,
            _ => ErrorCode::Unknown,
        }
    }
}

/// The sandbox's end of the broker's socket; one request at a time.
pub struct Broker {
    socket: AsyncFd<OwnedFd>,
    turn: tokio::sync::Mutex<()>,
}

impl Broker {
    /// Must be called inside the tokio runtime the guest runs on.
    pub fn new(socket: OwnedFd) -> std::io::Result<Broker> {
        nix::fcntl::fcntl(
            &socket,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(Broker {
            // SAFETY: the socket is owned by the AsyncFd and closed only when it is dropped.
            socket: unsafe { AsyncFd::register(socket)? },
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// A connection through the broker, as `request` (`broker::request` and kin) asks.
    pub async fn connect(
        broker: Arc<Broker>,
        request: String,
    ) -> Result<tokio::net::TcpStream, Refusal> {
        let (answer, fd) = Broker::ask(broker, request).await?;
        let stream = match (answer.first(), fd) {
            (Some(&broker::CONNECTED), Some(fd)) => std::net::TcpStream::from(fd),
            (kind, _) => return Err(refusal(kind.copied(), &answer)),
        };
        stream.set_nonblocking(true).map_err(Refusal::Broken)?;
        tokio::net::TcpStream::from_std(stream).map_err(Refusal::Broken)
    }

    /// The addresses of `host`, which a rule must name.
    pub async fn lookup(
        broker: Arc<Broker>,
        host: &str,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let (answer, _) = Broker::ask(broker, broker::lookup_request(host, timeout)).await?;
        match answer.first() {
            Some(&broker::ADDRESSES) => Ok(String::from_utf8_lossy(&answer[1..])
                .split(' ')
                .filter_map(|ip| ip.parse().ok())
                .collect()),
            kind => Err(refusal(kind.copied(), &answer)),
        }
    }

    /// Sends `request` and waits for its answer, on a task of its own: a request given up
    /// half-way (the guest dropped it, a timeout dropped the store) still reads its answer,
    /// so the next request never gets this one's.
    async fn ask(
        broker: Arc<Broker>,
        request: String,
    ) -> Result<(Vec<u8>, Option<OwnedFd>), Refusal> {
        let exchange = tokio::spawn(async move { broker.exchange(&request).await });
        match exchange.await {
            Ok(answered) => answered.map_err(Refusal::Broken),
            Err(e) => Err(Refusal::Broken(std::io::Error::other(e))),
        }
    }

    async fn exchange(&self, request: &str) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
        let _turn = self.turn.lock().await;
        self.socket
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty())
                    .map_err(std::io::Error::from)
            })
            .await?;
        self.socket
            .async_io(Interest::READABLE, |fd| receive(fd.as_raw_fd()))
            .await
    }
}

fn refusal(kind: Option<u8>, answer: &[u8]) -> Refusal {
    let reason = String::from_utf8_lossy(answer.get(1..).unwrap_or_default());
    Refusal::Answer(kind, reason.into_owned())
}

/// One answer and the socket it carries, if any.
fn receive(fd: RawFd) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut answer = vec![0u8; broker::MAX_MESSAGE];
    let mut space = nix::cmsg_space!(RawFd);
    let mut socket = None;
    let len = {
        let mut iov = [IoSliceMut::new(&mut answer)];
        let message = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: the kernel just installed this descriptor for us; nothing else
                    // owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    socket.get_or_insert(owned);
                }
            }
        }
        message.bytes
    };
    if len == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    answer.truncate(len);
    Ok((answer, socket))
}
