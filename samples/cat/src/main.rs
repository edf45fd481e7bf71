//! `cat [-o OUTPUT] [INPUT...]`: copies the inputs (stdin without any) to OUTPUT (stdout
//! without one), through the preopened directories. Exits 1 with `cat: PATH: ERROR` on failure.

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let output = match args.iter().position(|a| a == "-o") {
        Some(i) if i + 1 < args.len() => {
            let path = args.remove(i + 1);
            args.remove(i);
            Some(path)
        }
        Some(_) => return fail("-o", io::Error::other("needs a path")),
        None => None,
    };
    let mut out: Box<dyn Write> = match &output {
        Some(path) => match File::create(path) {
            Ok(file) => Box::new(file),
            Err(e) => return fail(path, e),
        },
        None => Box::new(io::stdout().lock()),
    };
    if args.is_empty() {
        if let Err(e) = copy(io::stdin().lock(), &mut out) {
            return fail("-", e);
        }
    }
    for path in &args {
        let result = File::open(path).and_then(|file| copy(file, &mut out));
        if let Err(e) = result {
            return fail(path, e);
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(output.as_deref().unwrap_or("-"), e),
    }
}

fn copy(mut from: impl Read, to: &mut dyn Write) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

fn fail(path: &str, error: io::Error) -> ExitCode {
    eprintln!("cat: {path}: {error}");
    ExitCode::FAILURE
}
