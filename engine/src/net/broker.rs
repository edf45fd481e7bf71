//! The outbound connect broker: a small process forked from the supervisor while it is still
//! in the host's network namespace, that opens the TCP connections `--allow-outbound` permits
//! and hands them to the sandbox with `SCM_RIGHTS`. The sandbox keeps no route and no
//! `socket`/`connect`. (A thread would not do: the supervisor's PID namespace for children is
//! the sandbox's by then, and the kernel refuses new threads in that state.)
//!
//! One request per datagram; one answer per request:
//! - `<timeout-ms> <host> <port> [<ip>]`: connect, to `<ip>` if given (which must be one of
//!   `<host>`'s addresses); `+` with the connected socket attached;
//! - `<timeout-ms> <host>`: look `<host>` up (a guest's name lookup); `A` and its addresses,
//!   space-separated, allowed only when a rule names the host;
//!
//! or a failure kind (below) and a reason.

use crate::spec::OutboundRule;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::sys::socket::{recv, sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{ForkResult, Pid};
use std::io::IoSlice;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// Answer kinds, the first byte of an answer.
pub const CONNECTED: u8 = b'+';
pub const ADDRESSES: u8 = b'A';
pub const DENIED: u8 = b'D';
pub const NO_ADDRESS: u8 = b'N';
pub const REFUSED: u8 = b'R';
pub const TIMED_OUT: u8 = b'T';
pub const FAILED: u8 = b'E';

/// Longest request or answer.
pub const MAX_MESSAGE: usize = 512;

/// The port an outgoing request over plain HTTP defaults to.
pub const HTTP_PORT: u16 = 80;

/// A connected pair: the broker's end and the sandbox's end.
pub fn pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    super::packet::pair()
}

/// The broker process; killed and reaped when dropped.
pub struct Broker {
    pid: Pid,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Forks the broker, which serves requests on `socket` until the sandbox's end closes or the
/// caller dies. The caller must be single-threaded and in the network namespace to connect
/// from.
pub fn start(socket: OwnedFd, rules: &[OutboundRule]) -> nix::Result<Broker> {
    let parent = nix::unistd::getpid();
    // SAFETY: the caller is single-threaded, so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Broker { pid: child }),
        ForkResult::Child => {
            if prepare_process(&socket, parent).is_err() {
                crate::sys::exit_now(1)
            }
            serve(socket, rules);
            // Without the destructors of state that belongs to the supervisor.
            crate::sys::exit_now(0)
        }
    }
}

/// Dies with the supervisor, ignores the terminal's signals (the supervisor relays those to
/// the sandbox, which then closes its end), holds no descriptor but its socket and stderr.
fn prepare_process(socket: &OwnedFd, parent: Pid) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid() != parent {
        crate::sys::exit_now(0)
    }
    // First, so that nothing inherited (listeners, the sandbox's end) outlives a failure.
    crate::sandbox::harden::close_inherited_fds(&[socket.as_raw_fd()])
        .map_err(|_| nix::Error::EBADF)?;
    crate::sandbox::signals::supervision_set().thread_block()?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    drop(null);
    Ok(())
}

fn serve(socket: OwnedFd, rules: &[OutboundRule]) {
    let mut request = [0u8; MAX_MESSAGE];
    loop {
        let len = match recv(socket.as_raw_fd(), &mut request, MsgFlags::empty()) {
            Ok(0) | Err(nix::errno::Errno::ECONNRESET) => return,
            Ok(len) => len,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                crate::err_line!("wrun: the outbound broker stopped: {e}");
                return;
            }
        };
        let answer = answer(&request[..len], rules);
        let sent = match &answer {
            Ok(Answer::Addresses(addresses)) => {
                let text: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                let mut bytes = format!("{}{}", ADDRESSES as char, text.join(" ")).into_bytes();
                bytes.truncate(MAX_MESSAGE);
                let iov = [IoSlice::new(&bytes)];
                sendmsg::<()>(socket.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
            }
            Ok(Answer::Connected(stream)) => {
                let fds = [stream.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let iov = [IoSlice::new(&[CONNECTED])];
                sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            }
            Err((kind, reason)) => {
                let text = format!("{}{reason}", *kind as char);
                let mut bytes = text.into_bytes();
                bytes.truncate(MAX_MESSAGE);
                let iov = [IoSlice::new(&bytes)];
                sendmsg::<()>(socket.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// What the broker answers, short of a failure.
#[derive(Debug)]
enum Answer {
    Connected(TcpStream),
    Addresses(Vec<std::net::IpAddr>),
}

/// A request, parsed.
struct Request<'a> {
    timeout: Duration,
    host: &'a str,
    /// `None` for a lookup.
    port: Option<u16>,
    /// The address of `host` to connect to, if the sandbox chose one.
    ip: Option<std::net::IpAddr>,
}

/// The answer, or the failure kind and why.
fn answer(request: &[u8], rules: &[OutboundRule]) -> Result<Answer, (u8, String)> {
    let Request {
        timeout,
        host,
        port,
        ip,
    } = parse_request(request).ok_or((FAILED, "malformed broker request".to_string()))?;
    let allowed = |port| rules.iter().any(|rule| rule.allows(host, port, HTTP_PORT));
    let named = rules.iter().any(|rule| rule.names(host));
    match port {
        Some(port) if !allowed(port) => Err((DENIED, format!("{host}:{port} is not allowed"))),
        None if !named => Err((DENIED, format!("{host} is not allowed"))),
        _ => Ok(()),
    }?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<_> = (host, port.unwrap_or(0))
        .to_socket_addrs()
        .map_err(|e| (NO_ADDRESS, format!("{host}: {e}")))?
        .collect();
    let Some(port) = port else {
        let mut ips: Vec<_> = addresses.iter().map(|a| a.ip()).collect();
        ips.dedup();
        return Ok(Answer::Addresses(ips));
    };
    let addresses = match ip {
        Some(ip) if addresses.iter().any(|a| a.ip() == ip) => {
            vec![std::net::SocketAddr::new(ip, port)]
        }
        Some(ip) => return Err((DENIED, format!("{ip} is not an address of {host}"))),
        None => addresses,
    };
    let mut last = (NO_ADDRESS, format!("{host} has no address"));
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(Answer::Connected(stream)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = (REFUSED, format!("{address}: {e}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = (TIMED_OUT, format!("{address}: {e}"));
            }
            Err(e) => last = (FAILED, format!("{address}: {e}")),
        }
    }
    Err(last)
}

/// `<timeout-ms> <host> [<port> [<ip>]]`.
fn parse_request(request: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(request).ok()?;
    let mut words = text.split(' ');
    let millis: u64 = words.next()?.parse().ok()?;
    let host = words.next().filter(|h| !h.is_empty())?;
    let port = words.next().map(str::parse::<u16>).transpose().ok()?;
    let ip = words.next().map(str::parse).transpose().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(Request {
        timeout: Duration::from_millis(millis.max(1)),
        host,
        port,
        ip,
    })
}

/// The request for `host`'s addresses, given up after `timeout`.
pub fn lookup_request(host: &str, timeout: Duration) -> String {
    format!("{} {host}", timeout.as_millis())
}

/// The request for a connection to `ip:port`, an address of `host`, given up after `timeout`.
pub fn connect_ip_request(
    host: &str,
    ip: std::net::IpAddr,
    port: u16,
    timeout: Duration,
) -> String {
    format!("{} {host} {port} {ip}", timeout.as_millis())
}

/// The request for a connection to `host:port`, given up after `timeout`.
pub fn request(host: &str, port: u16, timeout: Duration) -> String {
    format!("{} {host} {port}", timeout.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &[&str]) -> Vec<OutboundRule> {
        text.iter()
            .map(|t| OutboundRule::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn connects_only_where_a_rule_allows() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowed = rules(&[&format!("127.0.0.1:{port}")]);
        let ask = request("127.0.0.1", port, Duration::from_secs(1));
        let Ok(Answer::Connected(stream)) = answer(ask.as_bytes(), &allowed) else {
            panic!("no connection where one is allowed");
        };
        assert_eq!(stream.peer_addr().unwrap().port(), port);
        let other = request(
            "127.0.0.1",
            port.wrapping_add(1).max(1),
            Duration::from_secs(1),
        );
        assert_eq!(answer(other.as_bytes(), &allowed).unwrap_err().0, DENIED);
        assert_eq!(answer(ask.as_bytes(), &[]).unwrap_err().0, DENIED);
        assert_eq!(answer(b"nonsense", &allowed).unwrap_err().0, FAILED);
    }

    #[test]
    fn a_closed_port_is_refused_not_denied() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let allowed = rules(&[&format!("127.0.0.1:{port}")]);
        let ask = request("127.0.0.1", port, Duration::from_secs(1));
        assert_eq!(answer(ask.as_bytes(), &allowed).unwrap_err().0, REFUSED);
    }

    #[test]
    fn looks_up_only_named_hosts_and_connects_only_to_their_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowed = rules(&[&format!("localhost:{port}")]);
        let second = Duration::from_secs(1);
        let Ok(Answer::Addresses(ips)) =
            answer(lookup_request("localhost", second).as_bytes(), &allowed)
        else {
            panic!("no addresses for an allowed name");
        };
        let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert!(ips.contains(&loopback), "{ips:?}");
        let other = lookup_request("example.invalid", second);
        assert_eq!(answer(other.as_bytes(), &allowed).unwrap_err().0, DENIED);
        let ask = connect_ip_request("localhost", loopback, port, second);
        assert!(matches!(
            answer(ask.as_bytes(), &allowed),
            Ok(Answer::Connected(_))
        ));
        let elsewhere = connect_ip_request("localhost", "10.0.0.1".parse().unwrap(), port, second);
        assert_eq!(
            answer(elsewhere.as_bytes(), &allowed).unwrap_err().0,
            DENIED
        );
    }
}
