//! UDP over `std::net::UdpSocket` (wasi:sockets/udp): `udp-echo serve PORT` answers every
//! datagram with itself; `udp-echo send HOST:PORT LINE...` sends each line as a datagram and
//! prints the answer.

use std::net::UdpSocket;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", port] => serve(port),
        ["send", address, ref lines @ ..] => send(address, lines),
        _ => Err("usage: udp-echo serve PORT | udp-echo send HOST:PORT [LINE]...".into()),
    };
    if let Err(e) = outcome {
        eprintln!("udp-echo: {e}");
        std::process::exit(1);
    }
}

fn serve(port: &str) -> Result<(), String> {
    let socket = UdpSocket::bind(format!("0.0.0.0:{port}"))
        .map_err(|e| format!("cannot bind port {port}: {e}"))?;
    println!("udp-echo: listening on {port}");
    let mut buffer = [0u8; 65536];
    loop {
        let (length, peer) = socket
            .recv_from(&mut buffer)
            .map_err(|e| format!("receive: {e}"))?;
        socket
            .send_to(&buffer[..length], peer)
            .map_err(|e| format!("answer {peer}: {e}"))?;
    }
}

fn send(address: &str, lines: &[&str]) -> Result<(), String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("cannot make a socket: {e}"))?;
    socket
        .connect(address)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    // Datagrams may be lost: a line unanswered within the timeout is sent again, thrice.
    let timeout = socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok();
    let mut buffer = [0u8; 65536];
    for line in lines {
        let mut answer = None;
        for _ in 0..3 {
            socket
                .send(line.as_bytes())
                .map_err(|e| format!("send to {address}: {e}"))?;
            match socket.recv(&mut buffer) {
                Ok(length) => {
                    answer = Some(String::from_utf8_lossy(&buffer[..length]).into_owned());
                    break;
                }
                Err(e) if timeout && is_timeout(&e) => continue,
                Err(e) => return Err(format!("receive from {address}: {e}")),
            }
        }
        match answer {
            Some(answer) => println!("{answer}"),
            None => return Err(format!("{address} did not answer `{line}`")),
        }
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
