//! wasi:io: poll over timers and a stream, and the stream helpers shared by the other checks.

use wasip2::cli::stdout;
use wasip2::clocks::monotonic_clock;
use wasip2::filesystem::types as fs;
use wasip2::io::poll;
use wasip2::io::streams::{InputStream, StreamError};

use crate::clocks::MS;
use crate::report::{ensure, Checker, Code};

const POLL: &str = "wasi:io/poll";
pub const STREAMS: &str = "wasi:io/streams";

pub fn check(c: &mut Checker) {
    c.run(POLL, "poll returns the ready one", || {
        let long = monotonic_clock::subscribe_duration(60_000 * MS);
        let short = monotonic_clock::subscribe_duration(2 * MS);
        let ready = poll::poll(&[&long, &short]);
        ensure(ready == [1], || format!("poll returned {ready:?}"))
    });
    c.run(POLL, "poll several ready", || {
        let a = monotonic_clock::subscribe_duration(0);
        let long = monotonic_clock::subscribe_duration(60_000 * MS);
        let b = monotonic_clock::subscribe_instant(0);
        let mut ready = poll::poll(&[&a, &long, &b]);
        ready.sort();
        ensure(ready == [0, 2], || format!("poll returned {ready:?}"))
    });
    c.run(POLL, "poll stream and timer", || {
        let out = stdout::get_stdout();
        let writable = out.subscribe();
        let long = monotonic_clock::subscribe_duration(60_000 * MS);
        let ready = poll::poll(&[&long, &writable]);
        ensure(ready == [1], || format!("poll returned {ready:?}"))
    });
}

pub fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(err) => match fs::filesystem_error_code(&err) {
            Some(code) => format!("stream error {}", code.label()),
            None => "stream error (no filesystem error code)".to_string(),
        },
    }
}

/// Reads an input stream to its end with blocking-read, `chunk` bytes at a time.
pub fn read_to_end(stream: &InputStream, chunk: u64) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(chunk) {
            Ok(bytes) => {
                if bytes.len() as u64 > chunk {
                    return Err(format!("blocking-read returned more than {chunk} bytes"));
                }
                data.extend_from_slice(&bytes);
            }
            Err(StreamError::Closed) => return Ok(data),
            Err(e) => return Err(stream_error(e)),
        }
        if data.len() > 1 << 20 {
            return Err("stream does not end".to_string());
        }
    }
}
