//! One guest TCP socket and its state machine, as `wasi:sockets/tcp` describes it, without an
//! operating-system socket of its own until it is connected: binding takes a port published
//! with `-p` (the listener wrun opened), connecting asks the broker.

use super::stream;
use super::ConnectFuture;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::net::{TcpListener, TcpStream};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::Pollable;

/// A port published for the guest: the port the guest binds, and the listener behind it.
pub struct Port {
    pub guest: u16,
    pub listener: TcpListener,
    taken: AtomicBool,
}

impl Port {
    pub fn new(guest: u16, listener: TcpListener) -> Port {
        Port {
            guest,
            listener,
            taken: AtomicBool::new(false),
        }
    }

    /// The port for one socket at a time, given back when the socket is dropped.
    pub fn take(self: &Arc<Port>) -> Option<Claim> {
        let free = self
            .taken
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        free.then(|| Claim(self.clone()))
    }
}

/// A socket's hold on a published port.
pub struct Claim(Arc<Port>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.taken.store(false, Ordering::Release);
    }
}

/// The operation started and not yet finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Bind,
    Listen,
    Connect,
}

/// What a bound socket's port is.
pub enum Hold {
    /// A port published with `-p`, with the listener behind it.
    Published(Claim),
    /// A socket of its own in a pod's network namespace, not listening yet.
    Own(socket2::Socket),
}

/// A bound socket: its port and the address the guest asked for (or got, for port 0).
pub struct Bound {
    hold: Hold,
    local: SocketAddr,
}

/// A listening socket: its port, with the listener, and its address.
pub struct Listener {
    claim: Claim,
    local: SocketAddr,
}

/// An accepted or connected socket.
pub struct Connection {
    pub stream: Arc<TcpStream>,
    local: SocketAddr,
    remote: SocketAddr,
}

enum State {
    Unbound,
    Bound(Bound),
    Listening {
        bound: Listener,
        /// A connection taken off the queue while the guest waited for one.
        accepted: Option<io::Result<(TcpStream, SocketAddr)>>,
    },
    Connecting(ConnectFuture),
    Connected(Connection),
    /// Connecting failed, or the connection was handed on: nothing more can be done.
    Closed,
}

/// Values the guest set that have no socket to go to yet, and are reported back as set.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub keep_alive: bool,
    pub keep_alive_idle_ns: u64,
    pub keep_alive_interval_ns: u64,
    pub keep_alive_count: u32,
    pub hop_limit: u8,
    pub receive_buffer: u64,
    pub send_buffer: u64,
    pub backlog: u64,
}

impl Default for Options {
    /// Linux's defaults.
    fn default() -> Options {
        const SECOND: u64 = 1_000_000_000;
        Options {
            keep_alive: false,
            keep_alive_idle_ns: 7200 * SECOND,
            keep_alive_interval_ns: 75 * SECOND,
            keep_alive_count: 9,
            hop_limit: 64,
            receive_buffer: 131_072,
            send_buffer: 16_384,
            backlog: 128,
        }
    }
}

/// The guest's TCP socket resource.
pub struct TcpSocket {
    family: IpAddressFamily,
    state: State,
    pub step: Option<Step>,
    pub options: Options,
}

type Result<T> = std::result::Result<T, ErrorCode>;

impl TcpSocket {
    pub fn new(family: IpAddressFamily) -> TcpSocket {
        TcpSocket {
            family,
            state: State::Unbound,
            step: None,
            options: Options::default(),
        }
    }

    pub fn family(&self) -> IpAddressFamily {
        self.family
    }

    /// Starts `step`, refused while another is in progress.
    pub fn begin(&mut self, step: Step) -> Result<()> {
        if self.step.is_some() {
            return Err(ErrorCode::ConcurrencyConflict);
        }
        self.step = Some(step);
        Ok(())
    }

    /// Finishes `step`, refused unless it is the one in progress.
    pub fn finish(&mut self, step: Step) -> Result<()> {
        if self.step != Some(step) {
            return Err(ErrorCode::NotInProgress);
        }
        self.step = None;
        Ok(())
    }

    /// Checks `address` as this socket's peer or own address: its family, and unicast.
    pub fn check_address(&self, address: SocketAddr) -> Result<()> {
        let unicast = match address.ip() {
            IpAddr::V4(ip) => !ip.is_multicast() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_multicast() && ip.to_ipv4_mapped().is_none(),
        };
        let same_family = matches!(
            (address, self.family),
            (SocketAddr::V4(_), IpAddressFamily::Ipv4) | (SocketAddr::V6(_), IpAddressFamily::Ipv6)
        );
        if !unicast || !same_family {
            return Err(ErrorCode::InvalidArgument);
        }
        Ok(())
    }

    /// Binds to `local`, holding its port with `hold`.
    pub fn bind(&mut self, hold: Hold, local: SocketAddr) -> Result<()> {
        match self.state {
            State::Unbound => {
                self.state = State::Bound(Bound { hold, local });
                Ok(())
            }
            _ => Err(ErrorCode::InvalidState),
        }
    }

    pub fn is_unbound(&self) -> bool {
        matches!(self.state, State::Unbound)
    }

    pub fn listen(&mut self) -> Result<()> {
        let bound = match std::mem::replace(&mut self.state, State::Closed) {
            State::Bound(bound) => bound,
            other => {
                self.state = other;
                return Err(ErrorCode::InvalidState);
            }
        };
        let claim = match bound.hold {
            Hold::Published(claim) => claim,
            // A failed listen leaves the socket closed, as the kernel's own would be unusable.
            Hold::Own(socket) => listen_on(socket, bound.local.port(), self.options.backlog)?,
        };
        let bound = Listener {
            claim,
            local: bound.local,
        };
        self.state = State::Listening {
            bound,
            accepted: None,
        };
        Ok(())
    }

    pub fn is_listening(&self) -> bool {
        matches!(self.state, State::Listening { .. })
    }

    /// The next connection waiting on the listener, without waiting: its socket and stream.
    pub fn accept(&mut self) -> Result<(TcpSocket, Arc<TcpStream>)> {
        let State::Listening { bound, accepted } = &mut self.state else {
            return Err(ErrorCode::InvalidState);
        };
        let next = match accepted.take() {
            Some(next) => next,
            None => match bound.claim.0.listener.poll_accept(&mut noop_context()) {
                Poll::Ready(next) => next,
                Poll::Pending => return Err(ErrorCode::WouldBlock),
            },
        };
        let (stream, peer) = next.map_err(|e| error_code(&e))?;
        // The guest is told the port it listens on, not the host's.
        let own = stream.local_addr().map_err(|e| error_code(&e))?;
        let local = SocketAddr::new(own.ip(), bound.claim.0.guest);
        let stream = Arc::new(stream);
        let accepted = TcpSocket {
            family: self.family,
            state: State::Connected(Connection {
                stream: stream.clone(),
                local: in_family(local, self.family),
                remote: in_family(peer, self.family),
            }),
            step: None,
            options: self.options,
        };
        accepted.apply_options();
        Ok((accepted, stream))
    }

    /// Starts connecting with `connecting`.
    pub fn connect(&mut self, connecting: ConnectFuture) -> Result<()> {
        match self.state {
            State::Unbound => {
                self.state = State::Connecting(connecting);
                Ok(())
            }
            // A published port is for listening; a connection gets its own from the broker.
            State::Bound(_) => Err(ErrorCode::NotSupported),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    /// The connection, once made.
    pub fn poll_connected(&mut self) -> Result<Arc<TcpStream>> {
        let State::Connecting(connecting) = &mut self.state else {
            return Err(ErrorCode::InvalidState);
        };
        let made = match connecting.as_mut().poll(&mut noop_context()) {
            Poll::Pending => return Err(ErrorCode::WouldBlock),
            Poll::Ready(made) => made,
        };
        let stream = made.inspect_err(|_| self.state = State::Closed)?;
        let addresses = stream
            .local_addr()
            .and_then(|l| Ok((l, stream.peer_addr()?)));
        let (local, remote) = addresses.map_err(|e| error_code(&e))?;
        let stream = Arc::new(stream);
        self.state = State::Connected(Connection {
            stream: stream.clone(),
            local: in_family(local, self.family),
            remote: in_family(remote, self.family),
        });
        self.apply_options();
        Ok(stream)
    }

    pub fn connection(&self) -> Result<&Connection> {
        match &self.state {
            State::Connected(connection) => Ok(connection),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    pub fn local_address(&self) -> Result<SocketAddr> {
        match &self.state {
            State::Bound(bound) => Ok(bound.local),
            State::Listening { bound, .. } => Ok(bound.local),
            State::Connected(connection) => Ok(connection.local),
            _ => Err(ErrorCode::InvalidState),
        }
    }

    pub fn remote_address(&self) -> Result<SocketAddr> {
        Ok(self.connection()?.remote)
    }

    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        stream::shutdown(&self.connection()?.stream, how).map_err(|e| error_code(&e))
    }

    /// Sends the options to the connected socket, if there is one.
    pub fn apply_options(&self) {
        let Ok(connection) = self.connection() else {
            return;
        };
        let socket = socket2::SockRef::from(&*connection.stream);
        let options = &self.options;
        let keep_alive = socket2::TcpKeepalive::new()
            .with_time(seconds(options.keep_alive_idle_ns))
            .with_interval(seconds(options.keep_alive_interval_ns))
            .with_retries(options.keep_alive_count);
        // Best effort, as a listening socket's options are for its connections: the guest
        // asked for values a socket may refuse (wasi allows rounding them).
        let _ = socket.set_keepalive(options.keep_alive);
        let _ = socket.set_tcp_keepalive(&keep_alive);
        let _ = match self.family {
            IpAddressFamily::Ipv4 => socket.set_ttl_v4(options.hop_limit.into()),
            IpAddressFamily::Ipv6 => socket.set_unicast_hops_v6(options.hop_limit.into()),
        };
    }
}

/// Makes a socket of the guest's own listen: a port of its own, claimed by it.
fn listen_on(socket: socket2::Socket, port: u16, backlog: u64) -> Result<Claim> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    let listening = socket
        .listen(backlog)
        .and_then(|()| tokio::net::TcpListener::from_std(std::net::TcpListener::from(socket)));
    let listener = listening.map_err(|e| error_code(&e))?;
    let port = Arc::new(Port::new(port, listener));
    Ok(port.take().expect("a new port is free"))
}

/// A socket of the guest's own bound to `address`, in a pod's network namespace.
pub fn bind_own(address: SocketAddr) -> Result<(Hold, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let code = |e: io::Error| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => ErrorCode::AddressInUse,
        Some(libc::EADDRNOTAVAIL) => ErrorCode::AddressNotBindable,
        _ => error_code(&e),
    };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).map_err(code)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).map_err(code)?;
    }
    // As wasmtime's: a restarted server rebinds its port at once.
    socket.set_reuse_address(true).map_err(code)?;
    socket.set_nonblocking(true).map_err(code)?;
    socket.bind(&address.into()).map_err(code)?;
    let local = socket.local_addr().ok().and_then(|a| a.as_socket());
    Ok((Hold::Own(socket), local.unwrap_or(address)))
}

/// Whole seconds, at least one: the kernel counts keep-alive times in seconds.
fn seconds(nanos: u64) -> std::time::Duration {
    std::time::Duration::from_secs(nanos.div_ceil(1_000_000_000).max(1))
}

#[async_trait::async_trait]
impl Pollable for TcpSocket {
    async fn ready(&mut self) {
        match &mut self.state {
            State::Listening {
                bound,
                accepted: accepted @ None,
            } => {
                let next = std::future::poll_fn(|cx| bound.claim.0.listener.poll_accept(cx)).await;
                *accepted = Some(next);
            }
            State::Connecting(connecting) => {
                let made = connecting.as_mut().await;
                // Kept for `finish-connect`, which polls it again and gets it at once.
                self.state = State::Connecting(Box::pin(std::future::ready(made)));
            }
            _ => {}
        }
    }
}

/// `address` in `family`: an IPv4 peer of an IPv6 socket is seen as IPv4-mapped.
fn in_family(address: SocketAddr, family: IpAddressFamily) -> SocketAddr {
    match (address.ip(), family) {
        (IpAddr::V4(ip), IpAddressFamily::Ipv6) => {
            SocketAddr::new(ip.to_ipv6_mapped().into(), address.port())
        }
        (IpAddr::V6(ip), IpAddressFamily::Ipv4) => match ip.to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(ip.into(), address.port()),
            None => address,
        },
        _ => address,
    }
}

/// The wasi error code for an I/O error.
pub fn error_code(error: &io::Error) -> ErrorCode {
    match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => ErrorCode::AccessDenied,
        Some(libc::ECONNREFUSED) => ErrorCode::ConnectionRefused,
        Some(libc::ECONNRESET) => ErrorCode::ConnectionReset,
        Some(libc::ECONNABORTED) => ErrorCode::ConnectionAborted,
        Some(libc::ETIMEDOUT) => ErrorCode::Timeout,
        Some(libc::EMFILE | libc::ENFILE) => ErrorCode::NewSocketLimit,
        Some(libc::ENOMEM | libc::ENOBUFS) => ErrorCode::OutOfMemory,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN) => {
            ErrorCode::RemoteUnreachable
        }
        Some(libc::EAGAIN) => ErrorCode::WouldBlock,
        _ => ErrorCode::Unknown,
    }
}

fn noop_context() -> Context<'static> {
    Context::from_waker(Waker::noop())
}
