//! A connected TCP socket's two directions as the guest's `wasi:io` streams, both over one
//! shared socket (so that `shutdown`, addresses and options stay reachable from the socket),
//! reading and writing on the guest's own call without a task or channel in between.

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable, StreamError, StreamResult,
};

/// The most one read hands the guest, and how much a write may leave for the kernel to take.
const CHUNK: usize = 64 * 1024;

/// The input and output streams of `stream`.
pub fn split(stream: &Arc<TcpStream>) -> (DynInputStream, DynOutputStream) {
    let input = Input {
        stream: stream.clone(),
        ahead: None,
    };
    let output = Output {
        stream: stream.clone(),
        pending: Bytes::new(),
        failed: None,
    };
    (Box::new(input), Box::new(output))
}

/// The receiving direction. What a wait for readiness read is kept for the next read: a
/// socket the kernel calls readable may have nothing after all, and a guest told it is ready
/// then blocks in its read while its other connections wait.
struct Input {
    stream: Arc<TcpStream>,
    /// Read and not yet taken, or how the stream ended.
    ahead: Option<StreamResult<Bytes>>,
}

impl Input {
    /// Reads what the kernel has now, if nothing is kept yet.
    fn fill(&mut self) {
        if self.ahead.is_some() {
            return;
        }
        let mut buf = BytesMut::with_capacity(CHUNK);
        self.ahead = match self.stream.try_read_buf(&mut buf) {
            Ok(0) => Some(Err(StreamError::Closed)),
            Ok(_) => Some(Ok(buf.freeze())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(StreamError::LastOperationFailed(e.into()))),
        };
    }
}

impl InputStream for Input {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.fill();
        match self.ahead.take() {
            None => Ok(Bytes::new()),
            Some(Ok(mut bytes)) => {
                let taken = bytes.split_to(size.min(bytes.len()));
                if !bytes.is_empty() {
                    self.ahead = Some(Ok(bytes));
                }
                Ok(taken)
            }
            Some(Err(e)) => {
                // Closed stays closed; a failure is reported once, then the stream is closed.
                self.ahead = Some(Err(StreamError::Closed));
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Input {
    async fn ready(&mut self) {
        while self.ahead.is_none() {
            if let Err(e) = self.stream.readable().await {
                self.ahead = Some(Err(StreamError::LastOperationFailed(e.into())));
            }
            self.fill();
        }
    }
}

/// The sending direction: what the kernel did not take at once waits in `pending`, and the
/// guest may write more only once it is gone.
struct Output {
    stream: Arc<TcpStream>,
    pending: Bytes,
    failed: Option<io::Error>,
}

impl Output {
    /// Hands the kernel as much of `pending` as it takes now.
    fn push(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            match self.stream.try_write(&self.pending) {
                Ok(written) => self.pending.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => self.failed = Some(e),
            }
        }
    }

    fn check(&mut self) -> StreamResult<()> {
        match self.failed.take() {
            Some(e) => {
                self.failed = Some(io::Error::from(e.kind()));
                Err(StreamError::LastOperationFailed(e.into()))
            }
            None => Ok(()),
        }
    }
}

impl OutputStream for Output {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.check()?;
        if !self.pending.is_empty() || bytes.len() > CHUNK {
            return Err(StreamError::trap("write beyond what check-write allowed"));
        }
        self.pending = bytes;
        self.push();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // The kernel has whatever is not pending; `check-write` says when that is all.
        self.push();
        self.check()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.push();
        self.check()?;
        Ok(if self.pending.is_empty() { CHUNK } else { 0 })
    }
}

#[async_trait::async_trait]
impl Pollable for Output {
    async fn ready(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            if let Err(e) = self.stream.writable().await {
                self.failed = Some(e);
            }
            self.push();
        }
    }
}

impl Drop for Output {
    /// What the guest wrote and dropped unflushed still goes out, as a closed socket's would.
    fn drop(&mut self) {
        if self.pending.is_empty() || self.failed.is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stream, mut rest) = (self.stream.clone(), std::mem::take(&mut self.pending));
        runtime.spawn(async move {
            while !rest.is_empty() && stream.writable().await.is_ok() {
                match stream.try_write(&rest) {
                    Ok(written) => rest.advance(written),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        });
    }
}

/// Shuts `stream` down in `how`; a peer already gone is not an error.
pub fn shutdown(stream: &TcpStream, how: Shutdown) -> io::Result<()> {
    match socket2::SockRef::from(stream).shutdown(how) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        done => done,
    }
}
