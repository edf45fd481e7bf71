//! The published addresses (`-p`): bound by the caller in the host's network namespace, and
//! only ever accepted on by the guest.

use crate::spec::PublishedPort;
use std::net::{SocketAddr, TcpListener};

/// A published address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to listen on {addr} (-p): {reason}")]
pub struct PublishError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// Binds each published address (with SO_REUSEADDR, as servers do).
pub fn listen(ports: &[PublishedPort]) -> Result<Vec<TcpListener>, PublishError> {
    ports
        .iter()
        .map(|port| {
            let failed = |source: std::io::Error| PublishError {
                addr: port.host,
                reason: listen_failure(&source, port.host.port()),
            };
            let domain = socket2::Domain::for_address(port.host);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, None).map_err(failed)?;
            socket.set_reuse_address(true).map_err(failed)?;
            socket.bind(&port.host.into()).map_err(failed)?;
            socket.listen(1024).map_err(failed)?;
            Ok(socket.into())
        })
        .collect()
}

/// Why a bind failed, with the rule behind a refused low port.
fn listen_failure(error: &std::io::Error, port: u16) -> String {
    let reason = crate::sys::error_text(&error.to_string());
    let lowest_unprivileged =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
            .unwrap_or(1024);
    if error.kind() == std::io::ErrorKind::PermissionDenied && port < lowest_unprivileged {
        format!("{reason} (ports below {lowest_unprivileged} need root here: net.ipv4.ip_unprivileged_port_start)")
    } else {
        reason
    }
}
