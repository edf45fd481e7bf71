//! Connects to `HOST:PORT` over plain TCP (`std::net::TcpStream`), sends each further
//! argument as a line and prints the line that answers it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next() else {
        eprintln!("usage: tcp-client HOST:PORT [LINE]...");
        std::process::exit(2);
    };
    let stream = match TcpStream::connect(&address) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("tcp-client: cannot connect to {address}: {e}");
            std::process::exit(1);
        }
    };
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    for line in args {
        let mut answer = String::new();
        let exchanged = writeln!(writer, "{line}").and_then(|()| reader.read_line(&mut answer));
        match exchanged {
            Ok(0) => {
                eprintln!("tcp-client: {address} closed the connection");
                std::process::exit(1);
            }
            Ok(_) => print!("{answer}"),
            Err(e) => {
                eprintln!("tcp-client: {address}: {e}");
                std::process::exit(1);
            }
        }
    }
}
