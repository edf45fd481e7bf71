//! The guest's `wasi:sockets` TCP, in place of wasmtime-wasi's: the sandbox may not open a
//! socket, so a guest listens only on the ports published for it with `-p` (on the listeners
//! wrun opened in the host's network namespace before the sandbox existed) and connects only
//! where `--allow-outbound` allows, over a connection the broker opens and passes in.

mod lookup;
mod pod_names;
mod stream;
mod tcp;

use super::outbound::Outbound;
use lookup::ResolveStream;
use pod_names::PodNames;
use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use tcp::{Port, Step, TcpSocket};
use tokio::net::TcpStream;
use wasmtime::component::{
    ComponentNamedList, Lift, Linker, LinkerInstance, Lower, Resource, ResourceTable, ResourceType,
};
use wasmtime::StoreContextMut;
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::ShutdownType;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, Network};

/// A connection being made for the guest.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<TcpStream, ErrorCode>> + Send>>;

/// What a run's sockets may reach: the published ports and the outbound rules; in a pod's
/// network namespace, also that namespace as the pod has it, and the pod's names.
#[derive(Default)]
pub struct Sockets {
    ports: Vec<Arc<Port>>,
    outbound: Outbound,
    pod: Option<PodNames>,
}

impl Sockets {
    /// Sockets over `published` (each guest port and the listener opened for it) and
    /// `outbound`. Must be called inside the tokio runtime the guest runs on.
    pub fn new(
        published: Vec<(u16, std::net::TcpListener)>,
        outbound: Outbound,
        pod: Option<crate::spec::PodResolver>,
    ) -> std::io::Result<Sockets> {
        let ports = published
            .into_iter()
            .map(|(guest, listener)| {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                Ok(Arc::new(Port::new(guest, listener)))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Sockets {
            ports,
            outbound,
            pod: pod.map(PodNames::new),
        })
    }

    fn bind(&self, socket: &mut TcpSocket, address: SocketAddr) -> Result<(), ErrorCode> {
        if socket.step.is_some() {
            return Err(ErrorCode::ConcurrencyConflict);
        }
        socket.check_address(address)?;
        if !socket.is_unbound() {
            return Err(ErrorCode::InvalidState);
        }
        let published = self.ports.iter().find(|p| p.guest == address.port());
        if let (None, true) = (published, self.pod.is_some()) {
            let (hold, local) = tcp::bind_own(address)?;
            socket.bind(hold, local)?;
            return socket.begin(Step::Bind);
        }
        let Some(port) = published else {
            tracing::debug!(
                "the guest's bind to port {} was refused: publish it with -p HOST_PORT:{}",
                address.port(),
                address.port()
            );
            return Err(ErrorCode::AccessDenied);
        };
        let claim = port.take().ok_or(ErrorCode::AddressInUse)?;
        socket.bind(tcp::Hold::Published(claim), address)?;
        socket.begin(Step::Bind)
    }

    fn connect(&self, socket: &mut TcpSocket, address: SocketAddr) -> Result<(), ErrorCode> {
        if socket.step.is_some() {
            return Err(ErrorCode::ConcurrencyConflict);
        }
        socket.check_address(address)?;
        if address.port() == 0 || address.ip().is_unspecified() {
            return Err(ErrorCode::InvalidArgument);
        }
        let connecting: ConnectFuture = match self.outbound.connect_tcp(address) {
            Some(through_broker) => Box::pin(through_broker),
            None if self.pod.is_some() => Box::pin(connect_own(address)?),
            None => {
                tracing::debug!("the guest's connection to {address} was refused: allow it with --allow-outbound {address}");
                return Err(ErrorCode::AccessDenied);
            }
        };
        socket.connect(connecting)?;
        socket.begin(Step::Connect)
    }
}

/// A connection of the guest's own, in a pod's network namespace.
fn connect_own(
    address: SocketAddr,
) -> Result<impl Future<Output = Result<TcpStream, ErrorCode>> + Send + 'static, ErrorCode> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let socket = socket.map_err(|e| tcp::error_code(&e))?;
    Ok(async move {
        socket
            .connect(address)
            .await
            .map_err(|e| tcp::error_code(&e))
    })
}

/// A store whose data holds its guest's sockets.
pub trait SocketsView: Send + 'static {
    fn sockets(&mut self) -> (&mut ResourceTable, &mut Sockets);
}

/// Defines `wasi:sockets/tcp`, `tcp-create-socket` and `ip-name-lookup` over wrun's sockets
/// in `linker`, which already has wasmtime-wasi's: every function of each is replaced, with
/// its resource.
pub fn add_to_linker<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = define_all(linker);
    linker.allow_shadowing(false);
    defined
}

fn define_all<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    define_tcp(&mut linker.instance("wasi:sockets/tcp@0.2.12")?)?;
    let mut create = linker.instance("wasi:sockets/tcp-create-socket@0.2.12")?;
    define(&mut create, "create-tcp-socket", create_tcp_socket)?;
    define_lookup(&mut linker.instance("wasi:sockets/ip-name-lookup@0.2.12")?)
}

fn define_lookup<T: SocketsView>(lookup: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    type Stream = Resource<ResolveStream>;
    lookup.resource(
        "resolve-address-stream",
        ResourceType::host::<ResolveStream>(),
        |mut store: StoreContextMut<'_, T>, rep| {
            let (table, _) = store.data_mut().sockets();
            table.delete(Stream::new_own(rep))?;
            Ok(())
        },
    )?;
    define(
        lookup,
        "resolve-addresses",
        |t, sockets, (network, name): (Resource<Network>, String)| -> Outcome<Stream> {
            t.get(&network)?;
            // As wasmtime's: an error known at once is returned at once.
            match ResolveStream::start(sockets, &name) {
                ResolveStream::Done(Err(code)) => Ok(Err(code)),
                stream => Ok(Ok(t.push(stream)?)),
            }
        },
    )?;
    define(
        lookup,
        "[method]resolve-address-stream.resolve-next-address",
        |t, _, (this,): (Stream,)| -> Outcome<Option<IpAddress>> {
            Ok(t.get_mut(&this)?.next().map(|ip| ip.map(Into::into)))
        },
    )?;
    define(
        lookup,
        "[method]resolve-address-stream.subscribe",
        |t, _, (this,): (Stream,)| wasmtime_wasi::p2::subscribe::<ResolveStream>(t, this),
    )
}

type Outcome<T> = wasmtime::Result<Result<T, ErrorCode>>;
type This = Resource<TcpSocket>;
type Streams = (Resource<DynInputStream>, Resource<DynOutputStream>);

/// Defines `name` as `body`, which gets the store's table and sockets.
fn define<T, P, R>(
    instance: &mut LinkerInstance<'_, T>,
    name: &str,
    body: fn(&mut ResourceTable, &mut Sockets, P) -> wasmtime::Result<R>,
) -> wasmtime::Result<()>
where
    T: SocketsView,
    P: ComponentNamedList + Lift + 'static,
    (R,): ComponentNamedList + Lower + 'static,
{
    instance.func_wrap(name, move |mut store: StoreContextMut<'_, T>, params: P| {
        let (table, sockets) = store.data_mut().sockets();
        Ok((body(table, sockets, params)?,))
    })
}

fn define_tcp<T: SocketsView>(tcp: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    tcp.resource(
        "tcp-socket",
        ResourceType::host::<TcpSocket>(),
        |mut store: StoreContextMut<'_, T>, rep| {
            let (table, _) = store.data_mut().sockets();
            table.delete(Resource::<TcpSocket>::new_own(rep))?;
            Ok(())
        },
    )?;
    define(tcp, "[method]tcp-socket.start-bind", |t, s, at| {
        at_address(t, s, at, Sockets::bind)
    })?;
    define(tcp, "[method]tcp-socket.finish-bind", |t, _, (this,)| {
        finish(t, this, Step::Bind)
    })?;
    define(tcp, "[method]tcp-socket.start-connect", |t, s, at| {
        at_address(t, s, at, Sockets::connect)
    })?;
    define(tcp, "[method]tcp-socket.finish-connect", finish_connect)?;
    define(tcp, "[method]tcp-socket.start-listen", start_listen)?;
    define(tcp, "[method]tcp-socket.finish-listen", |t, _, (this,)| {
        finish(t, this, Step::Listen)
    })?;
    define(tcp, "[method]tcp-socket.accept", accept)?;
    type Address = Outcome<IpSocketAddress>;
    define(
        tcp,
        "[method]tcp-socket.local-address",
        |t, _, (this,): (This,)| -> Address { Ok(t.get(&this)?.local_address().map(Into::into)) },
    )?;
    define(
        tcp,
        "[method]tcp-socket.remote-address",
        |t, _, (this,): (This,)| -> Address { Ok(t.get(&this)?.remote_address().map(Into::into)) },
    )?;
    define(
        tcp,
        "[method]tcp-socket.is-listening",
        |t, _, (this,): (This,)| Ok(t.get(&this)?.is_listening()),
    )?;
    define(
        tcp,
        "[method]tcp-socket.address-family",
        |t, _, (this,): (This,)| Ok(t.get(&this)?.family()),
    )?;
    define(
        tcp,
        "[method]tcp-socket.set-listen-backlog-size",
        set_backlog,
    )?;
    define_options(tcp)?;
    define(
        tcp,
        "[method]tcp-socket.subscribe",
        |t, _, (this,): (This,)| wasmtime_wasi::p2::subscribe::<TcpSocket>(t, this),
    )?;
    define(tcp, "[method]tcp-socket.shutdown", shutdown)
}

/// Refused outright, as wasmtime's own refuses it when TCP is not granted, for a run with
/// neither a published port nor an outbound rule: nothing a socket could do would be allowed.
fn create_tcp_socket(
    table: &mut ResourceTable,
    sockets: &mut Sockets,
    (family,): (IpAddressFamily,),
) -> Outcome<This> {
    if sockets.ports.is_empty() && !sockets.outbound.allows_any() && sockets.pod.is_none() {
        tracing::debug!("the guest's TCP socket was refused: it has no published port (-p HOST_PORT:GUEST_PORT) and no outbound rule (--allow-outbound HOST:PORT)");
        return Ok(Err(ErrorCode::AccessDenied));
    }
    Ok(Ok(table.push(TcpSocket::new(family))?))
}

/// `start-bind` and `start-connect`: `step` to `address`, once the network resource (the
/// capability to use it) is checked to be a live one.
fn at_address(
    table: &mut ResourceTable,
    sockets: &mut Sockets,
    (this, network, address): (This, Resource<Network>, IpSocketAddress),
    step: fn(&Sockets, &mut TcpSocket, SocketAddr) -> Result<(), ErrorCode>,
) -> Outcome<()> {
    table.get(&network)?;
    let socket = table.get_mut(&this)?;
    Ok(step(sockets, socket, address.into()))
}

fn start_listen(table: &mut ResourceTable, _: &mut Sockets, (this,): (This,)) -> Outcome<()> {
    let socket = table.get_mut(&this)?;
    if socket.step.is_some() {
        return Ok(Err(ErrorCode::ConcurrencyConflict));
    }
    Ok(socket.listen().and_then(|()| socket.begin(Step::Listen)))
}

fn finish(table: &mut ResourceTable, this: This, step: Step) -> Outcome<()> {
    Ok(table.get_mut(&this)?.finish(step))
}

fn finish_connect(
    table: &mut ResourceTable,
    _: &mut Sockets,
    (this,): (This,),
) -> Outcome<Streams> {
    let socket = table.get_mut(&this)?;
    if socket.step != Some(Step::Connect) {
        return Ok(Err(ErrorCode::NotInProgress));
    }
    let stream = match socket.poll_connected() {
        Err(ErrorCode::WouldBlock) => return Ok(Err(ErrorCode::WouldBlock)),
        connected => {
            socket.step = None;
            match connected {
                Ok(stream) => stream,
                Err(code) => return Ok(Err(code)),
            }
        }
    };
    let (input, output) = stream::split(&stream);
    let input = table.push_child(input, &this)?;
    let output = table.push_child(output, &this)?;
    Ok(Ok((input, output)))
}

fn accept(
    table: &mut ResourceTable,
    _: &mut Sockets,
    (this,): (This,),
) -> Outcome<(This, Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let (accepted, stream) = match table.get_mut(&this)?.accept() {
        Ok(accepted) => accepted,
        Err(code) => return Ok(Err(code)),
    };
    let (input, output) = stream::split(&stream);
    let accepted = table.push(accepted)?;
    let input = table.push_child(input, &accepted)?;
    let output = table.push_child(output, &accepted)?;
    Ok(Ok((accepted, input, output)))
}

fn set_backlog(
    table: &mut ResourceTable,
    _: &mut Sockets,
    (this, size): (This, u64),
) -> Outcome<()> {
    let socket = table.get_mut(&this)?;
    if size == 0 {
        return Ok(Err(ErrorCode::InvalidArgument));
    }
    if socket.connection().is_ok() {
        return Ok(Err(ErrorCode::InvalidState));
    }
    // The listener was opened with its own backlog before the guest existed; the value is
    // kept for the guest to see, as wasi allows.
    socket.options.backlog = size;
    Ok(Ok(()))
}

fn shutdown(
    table: &mut ResourceTable,
    _: &mut Sockets,
    (this, how): (This, ShutdownType),
) -> Outcome<()> {
    let how = match how {
        ShutdownType::Receive => Shutdown::Read,
        ShutdownType::Send => Shutdown::Write,
        ShutdownType::Both => Shutdown::Both,
    };
    Ok(table.get(&this)?.shutdown(how))
}

/// The getters and setters of socket options: values kept on the socket, sent to its
/// connection when it has one.
fn define_options<T: SocketsView>(tcp: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    macro_rules! option {
        ($get:literal, $set:literal, $field:ident: $ty:ty, $valid:expr) => {
            define(tcp, $get, |t, _, (this,): (This,)| -> Outcome<$ty> {
                Ok(Ok(t.get(&this)?.options.$field))
            })?;
            define(
                tcp,
                $set,
                |t, _, (this, value): (This, $ty)| -> Outcome<()> {
                    let valid: fn($ty) -> bool = $valid;
                    if !valid(value) {
                        return Ok(Err(ErrorCode::InvalidArgument));
                    }
                    let socket = t.get_mut(&this)?;
                    socket.options.$field = value;
                    socket.apply_options();
                    Ok(Ok(()))
                },
            )?;
        };
    }
    option!(
        "[method]tcp-socket.keep-alive-enabled",
        "[method]tcp-socket.set-keep-alive-enabled",
        keep_alive: bool,
        |_| true
    );
    option!(
        "[method]tcp-socket.keep-alive-idle-time",
        "[method]tcp-socket.set-keep-alive-idle-time",
        keep_alive_idle_ns: u64,
        |v| v > 0
    );
    option!(
        "[method]tcp-socket.keep-alive-interval",
        "[method]tcp-socket.set-keep-alive-interval",
        keep_alive_interval_ns: u64,
        |v| v > 0
    );
    option!(
        "[method]tcp-socket.keep-alive-count",
        "[method]tcp-socket.set-keep-alive-count",
        keep_alive_count: u32,
        |v| v > 0
    );
    option!(
        "[method]tcp-socket.hop-limit",
        "[method]tcp-socket.set-hop-limit",
        hop_limit: u8,
        |v| v > 0
    );
    option!(
        "[method]tcp-socket.receive-buffer-size",
        "[method]tcp-socket.set-receive-buffer-size",
        receive_buffer: u64,
        |v| v > 0
    );
    option!(
        "[method]tcp-socket.send-buffer-size",
        "[method]tcp-socket.set-send-buffer-size",
        send_buffer: u64,
        |v| v > 0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::p2::Pollable;
    use ErrorCode::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_socket_binds_only_a_published_port_one_socket_at_a_time() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap();
        let sockets = Sockets::new(vec![(7000, listener)], Outbound::default(), None).unwrap();
        let mut first = TcpSocket::new(IpAddressFamily::Ipv4);
        for (address, refusal) in [
            ("0.0.0.0:7001", AccessDenied),
            ("0.0.0.0:0", AccessDenied),
            ("[::]:7000", InvalidArgument),
            ("224.0.0.1:7000", InvalidArgument),
        ] {
            assert_eq!(
                sockets.bind(&mut first, at(address)),
                Err(refusal),
                "{address}"
            );
        }
        assert!(first.is_unbound());
        sockets.bind(&mut first, at("0.0.0.0:7000")).unwrap();
        assert_eq!(first.finish(Step::Bind), Ok(()));
        assert_eq!(first.local_address(), Ok(at("0.0.0.0:7000")));
        let mut second = TcpSocket::new(IpAddressFamily::Ipv6);
        assert_eq!(
            sockets.bind(&mut second, at("[::]:7000")),
            Err(AddressInUse)
        );
        assert_eq!(
            first.accept().err(),
            Some(InvalidState),
            "not listening yet"
        );
        first.listen().unwrap();
        assert_eq!(first.accept().err(), Some(WouldBlock));

        // A connection to the host's port is the guest's, on the port the guest bound.
        let client = std::net::TcpStream::connect(host).unwrap();
        runtime.block_on(first.ready());
        let (accepted, _) = first.accept().unwrap();
        assert_eq!(accepted.local_address(), Ok(at("127.0.0.1:7000")));
        assert_eq!(accepted.remote_address(), Ok(client.local_addr().unwrap()));

        // The port is free again once its socket is gone.
        drop(first);
        sockets.bind(&mut second, at("[::]:7000")).unwrap();
        assert_eq!(second.local_address(), Ok(at("[::]:7000")));
    }

    #[test]
    fn a_connection_needs_an_outbound_rule_and_a_real_address() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let sockets = Sockets::default();
        let mut socket = TcpSocket::new(IpAddressFamily::Ipv4);
        assert_eq!(
            sockets.connect(&mut socket, at("127.0.0.1:0")),
            Err(InvalidArgument)
        );
        assert_eq!(
            sockets.connect(&mut socket, at("0.0.0.0:80")),
            Err(InvalidArgument)
        );
        assert_eq!(
            sockets.connect(&mut socket, at("127.0.0.1:80")),
            Err(AccessDenied)
        );
        assert_eq!(socket.step, None, "nothing started");
    }
}
