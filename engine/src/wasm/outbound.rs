//! Where a guest may connect (`--allow-outbound`): outgoing HTTP from a served guest, and the
//! TCP connections and name lookups of a guest's sockets, refused unless a rule names the host,
//! and then made by the supervisor's broker in the host's network namespace (the sandbox has
//! neither a route nor the system calls to open a connection itself).

use super::connect::{Broker, Refusal};
use crate::net::broker;
use crate::spec::OutboundRule;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// The addresses the guest's name lookups got, and the host each is an address of.
    looked_up: Arc<Mutex<HashMap<std::net::IpAddr, String>>>,
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
            looked_up: Arc::default(),
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
        let asked = broker::request(&host, port, connect_timeout);
        let stream = Broker::connect(broker.clone(), asked)
            .await
            .map_err(http_error)?;
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
    /// `wasi:sockets` connect): a rule naming the IP address, or one naming a host this run
    /// looked up and got that address for. `None` when none does.
    pub fn connect_tcp(
        &self,
        address: std::net::SocketAddr,
    ) -> Option<impl Future<Output = Result<tokio::net::TcpStream, ErrorCode>> + Send + 'static>
    {
        let (ip, port) = (address.ip(), address.port());
        let allows = |host: &str| {
            self.rules
                .iter()
                .any(|r| r.allows(host, port, broker::HTTP_PORT))
        };
        let request = if allows(&ip.to_string()) {
            broker::request(&ip.to_string(), port, CONNECT_TIMEOUT)
        } else {
            let looked_up = self.looked_up.lock().ok()?.get(&ip).cloned();
            let host = looked_up.filter(|host| allows(host))?;
            broker::connect_ip_request(&host, ip, port, CONNECT_TIMEOUT)
        };
        let broker = self.broker.clone()?;
        Some(async move {
            Broker::connect(broker, request)
                .await
                .map_err(Refusal::into_error_code)
        })
    }

    /// The addresses of `host` through the broker, if a rule names it (a guest's
    /// `ip-name-lookup`); they are remembered as `host`'s for [`Outbound::connect_tcp`].
    pub fn lookup(
        &self,
        host: &str,
    ) -> Option<impl Future<Output = Result<Vec<std::net::IpAddr>, ErrorCode>> + Send + 'static>
    {
        if !self.rules.iter().any(|rule| rule.names(host)) {
            return None;
        }
        let (broker, looked_up) = (self.broker.clone()?, self.looked_up.clone());
        let host = host.to_ascii_lowercase();
        Some(async move {
            let ips = Broker::lookup(broker, &host, CONNECT_TIMEOUT)
                .await
                .map_err(Refusal::into_error_code)?;
            if let Ok(mut looked_up) = looked_up.lock() {
                looked_up.extend(ips.iter().map(|ip| (*ip, host.clone())));
            }
            Ok(ips)
        })
    }
}

/// The wasi:http error for a refusal.
fn http_error(refusal: Refusal) -> Error {
    let (kind, reason) = match refusal {
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
