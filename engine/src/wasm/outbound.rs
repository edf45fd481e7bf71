//! Outgoing HTTP from a served guest: refused unless `--allow-outbound` names the host, and
//! then sent over a connection the supervisor's broker opened in the host's network namespace
//! (the sandbox has neither a route nor the system calls to open one itself).

use crate::net::broker;
use crate::spec::OutboundRule;
use http_body_util::BodyExt;
use nix::sys::socket::{recvmsg, send, ControlMessageOwned, MsgFlags};
use std::future::Future;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a connection may take when the guest sets no `connect-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first byte of a response may take when the guest sets no timeout.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// The store's `wasi:http` hooks: where outgoing requests may go, and how they get there.
#[derive(Clone, Default)]
pub struct Outbound {
    rules: Arc<[OutboundRule]>,
    broker: Option<Arc<Broker>>,
}

impl Outbound {
    /// Requests allowed by `rules` go through the broker at the other end of `socket`.
    /// Must be called inside the tokio runtime that serves.
    pub fn new(rules: Vec<OutboundRule>, socket: Option<OwnedFd>) -> std::io::Result<Outbound> {
        let broker = match socket {
            Some(socket) => Some(Arc::new(Broker::new(socket)?)),
            None => None,
        };
        Ok(Outbound {
            rules: rules.into(),
            broker,
        })
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let outbound = self.clone();
        Box::new(async move { outbound.send(request, options).await })
    }
}

impl Outbound {
    async fn send(
        &self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let uri = request.uri();
        let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
        let port = uri.port_u16().unwrap_or(broker::HTTP_PORT);
        let allowed = self
            .rules
            .iter()
            .any(|rule| rule.allows(&host, port, broker::HTTP_PORT));
        let broker = match &self.broker {
            Some(broker) if allowed => broker,
            _ => return Err(Error::HttpRequestDenied),
        };
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err(Error::InternalError(Some(
                "wrun sends outgoing requests over plain http only".into(),
            )));
        }
        let options = options.unwrap_or_default();
        let connect_timeout = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
        let stream = Broker::connect(broker.clone(), &host, port, connect_timeout)
            .await
            .map_err(Refusal::into_http)?;
        let (mut sender, connection) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        let connection = tokio::spawn(connection);
        // The request line carries the path only: scheme and authority are for proxies.
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT);
        let response = tokio::time::timeout(first_byte, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let io: IoFuture = Box::new(async move {
            match connection.await {
                Ok(ended) => ended.map_err(Error::from),
                Err(_) => Err(Error::ConnectionTerminated),
            }
        });
        Ok((
            response.map(|body| body.map_err(Error::from).boxed_unsync()),
            io,
        ))
    }
}

impl Outbound {
    /// Whether any connection may go out.
    pub fn allows_any(&self) -> bool {
        self.broker.is_some() && !self.rules.is_empty()
    }

    /// A TCP connection to `address` through the broker, if a rule allows it (a guest's
    /// `wasi:sockets` connect): `None` when none does.
    pub fn connect_tcp(
        &self,
        address: std::net::SocketAddr,
    ) -> Option<impl Future<Output = Result<tokio::net::TcpStream, ErrorCode>> + Send + 'static>
    {
        let host = address.ip().to_string();
        let allowed = self
            .rules
            .iter()
            .any(|rule| rule.allows(&host, address.port(), broker::HTTP_PORT));
        let broker = self.broker.clone().filter(|_| allowed)?;
        Some(async move {
            Broker::connect(broker, &host, address.port(), CONNECT_TIMEOUT)
                .await
                .map_err(Refusal::into_error_code)
        })
    }
}

/// Why the broker gave no connection.
#[derive(Debug)]
enum Refusal {
    /// The exchange with the broker failed.
    Broken(std::io::Error),
    /// The broker's answer: its kind and reason.
    Answer(Option<u8>, String),
}

impl Refusal {
    /// The wasi:http error for it.
    fn into_http(self) -> Error {
        let (kind, reason) = match self {
            Refusal::Broken(e) => return Error::Connect(e),
            Refusal::Answer(kind, reason) => (kind, reason),
        };
        match kind {
            Some(broker::DENIED) => Error::HttpRequestDenied,
            Some(broker::NO_ADDRESS) => Error::DnsError {
                rcode: Some(reason),
                info_code: None,
            },
            Some(broker::REFUSED) => Error::ConnectionRefused,
            Some(broker::TIMED_OUT) => Error::ConnectionTimeout,
            _ => Error::Connect(std::io::Error::other(reason)),
        }
    }

    /// The wasi:sockets error for it.
    fn into_error_code(self) -> ErrorCode {
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
struct Broker {
    socket: AsyncFd<OwnedFd>,
    turn: tokio::sync::Mutex<()>,
}

impl Broker {
    fn new(socket: OwnedFd) -> std::io::Result<Broker> {
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

    /// A connection to `host:port` through the broker. The exchange runs on a task of its
    /// own: a request given up half-way (the guest dropped it, a timeout dropped the store)
    /// still reads its answer, so the next request never gets this one's socket.
    async fn connect(
        broker: Arc<Broker>,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, Refusal> {
        let host = host.to_string();
        let exchange = tokio::spawn(async move { broker.exchange(&host, port, timeout).await });
        match exchange.await {
            Ok(connected) => connected,
            Err(e) => Err(Refusal::Broken(std::io::Error::other(e))),
        }
    }

    async fn exchange(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, Refusal> {
        let _turn = self.turn.lock().await;
        let request = broker::request(host, port, timeout);
        let broken = Refusal::Broken;
        self.socket
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty())
                    .map_err(std::io::Error::from)
            })
            .await
            .map_err(broken)?;
        let (answer, fd) = self
            .socket
            .async_io(Interest::READABLE, |fd| receive(fd.as_raw_fd()))
            .await
            .map_err(broken)?;
        let stream = match (answer.first(), fd) {
            (Some(&broker::CONNECTED), Some(fd)) => std::net::TcpStream::from(fd),
            (kind, _) => {
                let reason = String::from_utf8_lossy(answer.get(1..).unwrap_or_default());
                return Err(Refusal::Answer(kind.copied(), reason.into_owned()));
            }
        };
        stream.set_nonblocking(true).map_err(Refusal::Broken)?;
        tokio::net::TcpStream::from_std(stream).map_err(Refusal::Broken)
    }
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
