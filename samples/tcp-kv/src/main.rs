//! A small key-value server over plain TCP, written the ordinary way: `std::net::TcpListener`
//! bound to `0.0.0.0:7000` (or the address given) or, when `LISTEN_FDS` says a listener was
//! handed over, the one at fd 3; connections served together with `poll`.
//! One command per line: `SET key value`, `GET key`, `DEL key`, `PING`, `ECHO text`, `QUIT`.
//!
//! Built for wasm32-wasip2 it binds (wasi:sockets); for wasm32-wasip1, which has no `bind`,
//! it serves the listener wrun pre-opens for `-p` (systemd's socket activation natively).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    open: bool,
}

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:7000".to_string());
    let listener = match listener(&address) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("tcp-kv: cannot listen on {address}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(local) => println!("tcp-kv: listening on {local}"),
        Err(_) => println!("tcp-kv: listening on fd {}", listener.as_raw_fd()),
    }
    let mut store: HashMap<String, String> = HashMap::new();
    let mut clients: Vec<Client> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(clients.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, -1) };
        if ready < 0 {
            eprintln!("tcp-kv: poll: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
        for (client, fd) in clients.iter_mut().zip(&fds[1..]) {
            if fd.revents != 0 {
                serve(client, &mut store);
            }
        }
        clients.retain(|c| c.open);
        if fds[0].revents != 0 {
            match listener.accept() {
                Ok((stream, _)) => clients.push(Client {
                    stream,
                    pending: Vec::new(),
                    open: true,
                }),
                Err(e) => eprintln!("tcp-kv: accept: {e}"),
            }
        }
    }
}

/// The first listener handed over (`LISTEN_FDS`, counted from fd 3), else one bound to
/// `address`.
fn listener(address: &str) -> std::io::Result<TcpListener> {
    if std::env::var("LISTEN_FDS").is_ok_and(|count| count != "0") {
        // SAFETY: fd 3 is the listener handed over to this process, which owns it from now.
        return Ok(unsafe { TcpListener::from_raw_fd(3) });
    }
    TcpListener::bind(address)
}

/// Reads what `client` sent (poll said it would not block) and answers each whole line.
fn serve(client: &mut Client, store: &mut HashMap<String, String>) {
    let mut buf = [0u8; 4096];
    match client.stream.read(&mut buf) {
        Ok(0) | Err(_) => {
            client.open = false;
            return;
        }
        Ok(read) => client.pending.extend_from_slice(&buf[..read]),
    }
    let whole = match client.pending.iter().rposition(|&b| b == b'\n') {
        Some(end) => client.pending.drain(..=end).collect::<Vec<u8>>(),
        None => return,
    };
    let mut answers = String::new();
    for line in whole.lines() {
        let line = line.unwrap_or_default();
        match answer(line.trim_end_matches('\r'), store) {
            Some(reply) => {
                answers.push_str(&reply);
                answers.push('\n');
            }
            None => client.open = false,
        }
    }
    if client.stream.write_all(answers.as_bytes()).is_err() {
        client.open = false;
    }
}

/// The reply to one command; `None` to close the connection.
fn answer(line: &str, store: &mut HashMap<String, String>) -> Option<String> {
    let mut words = line.splitn(3, ' ');
    let command = words.next().unwrap_or_default().to_ascii_uppercase();
    let (key, rest) = (words.next(), words.next());
    Some(match (command.as_str(), key, rest) {
        ("PING", None, None) => "PONG".to_string(),
        ("ECHO", _, _) => line.get(5..).unwrap_or_default().to_string(),
        ("SET", Some(key), Some(value)) => {
            store.insert(key.to_string(), value.to_string());
            "OK".to_string()
        }
        ("GET", Some(key), None) => store.get(key).cloned().unwrap_or("(nil)".to_string()),
        ("DEL", Some(key), None) => (store.remove(key).is_some() as u8).to_string(),
        ("QUIT", None, None) => return None,
        _ => format!("ERR unknown command `{line}`"),
    })
}
