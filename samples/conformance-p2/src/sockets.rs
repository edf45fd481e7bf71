//! wasi:sockets with the network not granted: instance-network, tcp, udp and ip-name-lookup.

use wasip2::sockets::network::{
    ErrorCode as SE, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Network,
};
use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket, udp_create_socket};

use crate::report::{ok, want_err, Checker};

const NETWORK: &str = "wasi:sockets/instance-network";
const TCP: &str = "wasi:sockets/tcp";
const UDP: &str = "wasi:sockets/udp";
const LOOKUP: &str = "wasi:sockets/ip-name-lookup";

pub fn check(c: &mut Checker) {
    let network: Network = instance_network::instance_network();
    c.check(NETWORK, "instance-network", Ok(()));
    let loopback = |port| {
        IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port,
            address: (127, 0, 0, 1),
        })
    };

    // The network is not granted. In wasmtime-wasi 48.0.8 (the crate both runtimes link)
    // WasiCtxBuilder's allow_tcp / allow_udp are documented "By default this is disabled"
    // (sockets/mod.rs: AllowedNetworkUses derives Default, all false) and `wasmtime run` only
    // changes them when -S tcp / -S udp is given, so creating a socket is already refused:
    // TcpSocket::new / UdpSocket::new fail check_allowed_tcp / check_allowed_udp with an
    // io::ErrorKind::PermissionDenied error, which maps to access-denied.
    let created = tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4);
    if let Some(sock) = refused(c, TCP, "create-tcp-socket ipv4 access-denied", created) {
        // Granted after all: no address may still be used (no inherit-network).
        let bound = want_err(sock.start_bind(&network, loopback(0)), SE::AccessDenied);
        c.check(TCP, "start-bind access-denied", bound);
        c.run(TCP, "connect 127.0.0.1 access-denied", || {
            ok(sock.start_connect(&network, loopback(9)))?;
            sock.subscribe().block();
            want_err(sock.finish_connect(), SE::AccessDenied)
        });
    }
    let created = tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv6);
    let refused_v6 = want_err(created, SE::AccessDenied);
    c.check(TCP, "create-tcp-socket ipv6 access-denied", refused_v6);
    let created = udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4);
    if let Some(sock) = refused(c, UDP, "create-udp-socket ipv4 access-denied", created) {
        let bound = want_err(sock.start_bind(&network, loopback(0)), SE::AccessDenied);
        c.check(UDP, "start-bind access-denied", bound);
    }
    // Without -S allow-ip-name-lookup wasmtime-wasi's resolve_addresses returns
    // permanent-resolver-failure before looking at the name (sockets/ip_name_lookup.rs).
    c.run(LOOKUP, "resolve-addresses localhost not allowed", || {
        want_err(
            ip_name_lookup::resolve_addresses(&network, "localhost"),
            SE::PermanentResolverFailure,
        )
    });
    c.run(LOOKUP, "resolve-addresses literal not allowed", || {
        want_err(
            ip_name_lookup::resolve_addresses(&network, "127.0.0.1"),
            SE::PermanentResolverFailure,
        )
    });
}

/// Creating a socket must be refused with access-denied; a socket created all the same is
/// handed back, so that what it may still do is checked too.
fn refused<T>(
    c: &mut Checker,
    interface: &'static str,
    name: &str,
    created: Result<T, SE>,
) -> Option<T> {
    match created {
        Err(e) => {
            c.check(interface, name, want_err::<(), _>(Err(e), SE::AccessDenied));
            None
        }
        Ok(sock) => {
            c.check(interface, name, Err("socket created".to_string()));
            Some(sock)
        }
    }
}
