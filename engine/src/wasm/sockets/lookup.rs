//! The guest's `wasi:sockets/ip-name-lookup`: an IP address is itself; a name is looked up
//! only when an `--allow-outbound` rule names it, by the broker in the host's network
//! namespace (the sandbox has no resolver, no `/etc/resolv.conf` and no socket to ask with);
//! in a pod, as the pod's files say, over the pod's network (`pod_names`).

use super::Sockets;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::p2::Pollable;

type Lookup = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, ErrorCode>> + Send>>;

/// The guest's `resolve-address-stream`.
pub enum ResolveStream {
    Resolving(Lookup),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl ResolveStream {
    /// The stream of `name`'s addresses, as far as `sockets` may know them.
    pub fn start(sockets: &Sockets, name: &str) -> ResolveStream {
        let done = |addresses: Result<Vec<IpAddr>, ErrorCode>| {
            ResolveStream::Done(addresses.map(Vec::into_iter))
        };
        // Without a rule, as wasmtime's own when lookups are not allowed: nothing is parsed.
        if !sockets.outbound.allows_any() && sockets.pod.is_none() {
            return done(Err(ErrorCode::PermanentResolverFailure));
        }
        // As wasmtime's: validated (and made punycode) by `url`, bare IPv6 allowed.
        let domain = match url::Host::parse(name) {
            Ok(url::Host::Domain(domain)) => domain,
            Ok(url::Host::Ipv4(ip)) => return done(Ok(vec![ip.into()])),
            Ok(url::Host::Ipv6(ip)) => return done(Ok(vec![ip.into()])),
            Err(_) => match name.parse::<std::net::Ipv6Addr>() {
                Ok(ip) => return done(Ok(vec![ip.into()])),
                Err(_) => return done(Err(ErrorCode::InvalidArgument)),
            },
        };
        if let Some(pod) = &sockets.pod {
            return ResolveStream::Resolving(Box::pin(pod.lookup(&domain)));
        }
        match sockets.outbound.lookup(&domain) {
            Some(lookup) => ResolveStream::Resolving(Box::pin(lookup)),
            None => {
                tracing::debug!("the guest's lookup of `{domain}` was refused: allow it with --allow-outbound {domain}:PORT");
                done(Err(ErrorCode::NameUnresolvable))
            }
        }
    }

    /// The next address; `would-block` while the lookup runs.
    pub fn next(&mut self) -> Result<Option<IpAddr>, ErrorCode> {
        if let ResolveStream::Resolving(lookup) = self {
            let mut cx = Context::from_waker(Waker::noop());
            match lookup.as_mut().poll(&mut cx) {
                Poll::Pending => return Err(ErrorCode::WouldBlock),
                Poll::Ready(found) => *self = ResolveStream::Done(found.map(Vec::into_iter)),
            }
        }
        match self {
            ResolveStream::Done(Ok(addresses)) => Ok(addresses.next()),
            ResolveStream::Done(Err(code)) => Err(*code),
            ResolveStream::Resolving(_) => unreachable!("polled to its end above"),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for ResolveStream {
    async fn ready(&mut self) {
        if let ResolveStream::Resolving(lookup) = self {
            let found = lookup.as_mut().await;
            *self = ResolveStream::Done(found.map(Vec::into_iter));
        }
    }
}
