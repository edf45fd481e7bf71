//! The outbound connect broker: a small process forked from the supervisor while it is still
//! in the host's network namespace, that opens the TCP connections `--allow-outbound` permits
//! and hands them to the sandbox with `SCM_RIGHTS`. The sandbox keeps no route and no
//! `socket`/`connect`. (A thread would not do: the supervisor's PID namespace for children is
//! the sandbox's by then, and the kernel refuses new threads in that state.)
//!
//! One request per datagram, `<timeout-ms> <host> <port>`; one answer per request: `+` with the
//! connected socket attached, or a failure kind (below) and a reason.

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
            Ok(stream) => {
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

/// A connected stream, or the failure kind and why.
fn answer(request: &[u8], rules: &[OutboundRule]) -> Result<TcpStream, (u8, String)> {
    let (timeout, host, port) =
        parse_request(request).ok_or((FAILED, "malformed broker request".to_string()))?;
    if !rules.iter().any(|rule| rule.allows(host, port, HTTP_PORT)) {
        return Err((DENIED, format!("{host}:{port} is not allowed")));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| (NO_ADDRESS, format!("{host}: {e}")))?
        .collect();
    let mut last = (NO_ADDRESS, format!("{host} has no address"));
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
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

/// `<timeout-ms> <host> <port>`.
fn parse_request(request: &[u8]) -> Option<(Duration, &str, u16)> {
    let text = std::str::from_utf8(request).ok()?;
    let mut words = text.split(' ');
    let millis: u64 = words.next()?.parse().ok()?;
    let host = words.next()?;
    let port: u16 = words.next()?.parse().ok()?;
    if words.next().is_some() || host.is_empty() {
        return None;
    }
    Some((Duration::from_millis(millis.max(1)), host, port))
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
        let stream = answer(ask.as_bytes(), &allowed).expect("an allowed connection");
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
}
