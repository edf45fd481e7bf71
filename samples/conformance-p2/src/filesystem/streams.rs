//! wasi:io/streams over files: write/append/read-via-stream, skip, splice, stream error codes.

use wasip2::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags as DF, ErrorCode as FE, OpenFlags as OF,
};
use wasip2::io::streams::StreamError;

use crate::io::{read_to_end, stream_error, STREAMS};
use crate::report::{ensure, ok, show, want_err, Checker, Code, R};

use super::{open, want_content, FS};

pub fn check(c: &mut Checker, root: &Descriptor) {
    let rw = DF::READ | DF::WRITE;
    let s = match ok(open(root, "stream.txt", OF::CREATE | OF::TRUNCATE, rw)) {
        Ok(fd) => fd,
        Err(e) => {
            c.check(FS, "open stream.txt", Err(e));
            return;
        }
    };
    c.run(STREAMS, "write-via-stream check-write write flush", || {
        let out = ok(s.write_via_stream(0))?;
        let n = out.check_write().map_err(stream_error)?;
        ensure(n >= 9, || format!("check-write permits {n}"))?;
        out.write(b"line one\n").map_err(stream_error)?;
        out.blocking_flush().map_err(stream_error)?;
        out.blocking_write_and_flush(b"line two\n")
            .map_err(stream_error)?;
        // write-zeroes needs a check-write permit like write.
        let n = out.check_write().map_err(stream_error)?;
        ensure(n >= 4, || format!("check-write permits {n}"))?;
        out.write_zeroes(4).map_err(stream_error)?;
        out.blocking_flush().map_err(stream_error)?;
        drop(out);
        want_content(&s, b"line one\nline two\n\0\0\0\0")
    });
    c.run(STREAMS, "write-via-stream at offset", || {
        let out = ok(s.write_via_stream(18))?;
        out.blocking_write_and_flush(b"--").map_err(stream_error)?;
        drop(out);
        want_content(&s, b"line one\nline two\n--\0\0")
    });
    c.run(STREAMS, "blocking-write-zeroes-and-flush", || {
        let out = ok(s.write_via_stream(20))?;
        out.blocking_write_zeroes_and_flush(2)
            .map_err(stream_error)?;
        drop(out);
        want_content(&s, b"line one\nline two\n--\0\0")
    });
    c.run(STREAMS, "append-via-stream", || {
        let again = ok(open(root, "stream.txt", OF::empty(), DF::WRITE))?;
        let out = ok(again.append_via_stream())?;
        out.blocking_write_and_flush(b"line three\n")
            .map_err(stream_error)?;
        drop(out);
        want_content(&s, b"line one\nline two\n--\0\0line three\n")
    });
    let content: &[u8] = b"line one\nline two\n--\0\0line three\n";
    c.run(STREAMS, "read-via-stream blocking-read", || {
        let input = ok(s.read_via_stream(0))?;
        let data = read_to_end(&input, 7)?;
        ensure(data == content, || format!("read {}", show(&data)))
    });
    c.run(STREAMS, "read-via-stream at offset", || {
        let input = ok(s.read_via_stream(9))?;
        let data = input.blocking_read(8).map_err(stream_error)?;
        ensure(data == b"line two", || format!("read {}", show(&data)))
    });
    c.run(STREAMS, "read subscribe then read", || {
        let input = ok(s.read_via_stream(22))?;
        let mut data = Vec::new();
        for _ in 0..100 {
            data = input.read(5).map_err(stream_error)?;
            if !data.is_empty() {
                break;
            }
            input.subscribe().block();
        }
        ensure(data == b"line ", || format!("read {}", show(&data)))
    });
    c.run(STREAMS, "skip", || {
        let input = ok(s.read_via_stream(0))?;
        let skipped = input.blocking_skip(9).map_err(stream_error)?;
        ensure(skipped == 9, || format!("skipped {skipped}"))?;
        let data = input.blocking_read(4).map_err(stream_error)?;
        ensure(data == b"line", || format!("read {}", show(&data)))
    });
    c.run(STREAMS, "read-via-stream at eof closed", || {
        let input = ok(s.read_via_stream(content.len() as u64))?;
        match input.blocking_read(10) {
            Err(StreamError::Closed) => Ok(()),
            Ok(data) => Err(format!("read {} bytes", data.len())),
            Err(e) => Err(stream_error(e)),
        }
    });
    c.run(STREAMS, "splice file to file", || {
        let copy = ok(open(
            root,
            "copy.txt",
            OF::CREATE | OF::EXCLUSIVE,
            DF::READ | DF::WRITE,
        ))?;
        let input = ok(s.read_via_stream(0))?;
        let output = ok(copy.write_via_stream(0))?;
        let mut total = 0u64;
        // One non-blocking splice first (it may move nothing yet), then blocking ones.
        match output.splice(&input, 6) {
            Ok(n) => total += n,
            Err(e) => return Err(stream_error(e)),
        }
        loop {
            match output.blocking_splice(&input, 10) {
                Ok(n) => total += n,
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error(e)),
            }
            if total > 1000 {
                break;
            }
        }
        output.blocking_flush().map_err(stream_error)?;
        drop(output);
        ensure(total == content.len() as u64, || {
            format!("spliced {total} bytes")
        })?;
        want_content(&copy, content)
    });
    // The directory case is is-directory in this wasmtime-wasi (read_via_stream's own check).
    c.check(
        FS,
        "read-via-stream on directory is-directory",
        want_err(root.read_via_stream(0), FE::IsDirectory),
    );
    c.check(
        FS,
        "write-via-stream on directory bad-descriptor",
        want_err(root.write_via_stream(0), FE::BadDescriptor),
    );

    // Stream errors carry a filesystem error code: a write through a descriptor opened for
    // reading only fails in the host's pwrite with EBADF.
    c.run(FS, "filesystem-error-code write stream", || {
        let ro = ok(open(root, "stream.txt", OF::empty(), DF::READ))?;
        let out = ok(ro.write_via_stream(0))?;
        want_bad_descriptor(out.blocking_write_and_flush(b"x"), |()| {
            "write through a read-only descriptor succeeded".to_string()
        })
    });
    c.run(FS, "filesystem-error-code read stream", || {
        let wo = ok(open(root, "stream.txt", OF::empty(), DF::WRITE))?;
        let input = ok(wo.read_via_stream(0))?;
        want_bad_descriptor(input.blocking_read(10), |data| {
            format!("read {} bytes through a write-only descriptor", data.len())
        })
    });
    c.run(STREAMS, "write after stream error closed", || {
        let ro = ok(open(root, "stream.txt", OF::empty(), DF::READ))?;
        let out = ok(ro.write_via_stream(0))?;
        let _ = out.blocking_write_and_flush(b"x");
        match out.check_write() {
            Err(StreamError::Closed) => Ok(()),
            Ok(n) => Err(format!("check-write permits {n} after an error")),
            Err(e) => Err(stream_error(e)),
        }
    });
    c.check(
        FS,
        "content unchanged by failed writes",
        want_content(&s, content),
    );
}

/// A stream call through a descriptor opened the other way must fail with an error whose
/// filesystem code is bad-descriptor; `success` describes what it did instead.
fn want_bad_descriptor<T>(result: Result<T, StreamError>, success: impl FnOnce(T) -> String) -> R {
    match result {
        Ok(value) => Err(success(value)),
        Err(StreamError::Closed) => Err("stream closed instead of an error".to_string()),
        Err(StreamError::LastOperationFailed(e)) => match fs::filesystem_error_code(&e) {
            Some(FE::BadDescriptor) => Ok(()),
            Some(code) => Err(format!("expected bad-descriptor, got {}", code.label())),
            None => Err("no filesystem error code".to_string()),
        },
    }
}
