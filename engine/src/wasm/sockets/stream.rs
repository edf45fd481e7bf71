//! A connected TCP socket's two directions as the guest's `wasi:io` streams, both over one
//! shared socket so that `shutdown`, addresses and options stay reachable from the socket.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

/// How much a write may hand the host before the guest has to wait for it to drain.
const WRITE_BUDGET: usize = 64 * 1024;

/// The input and output streams of `stream`.
pub fn split(stream: &Arc<TcpStream>) -> (DynInputStream, DynOutputStream) {
    let input: DynInputStream = Box::new(AsyncReadStream::new(Shared(stream.clone())));
    let output: DynOutputStream =
        Box::new(AsyncWriteStream::new(WRITE_BUDGET, Shared(stream.clone())));
    (input, output)
}

/// One direction of a shared socket.
struct Shared(Arc<TcpStream>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was cleared: the next poll waits for more.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown(&self.0, Shutdown::Write))
    }
}

/// Shuts `stream` down in `how`; a peer already gone is not an error.
pub fn shutdown(stream: &TcpStream, how: Shutdown) -> io::Result<()> {
    match socket2::SockRef::from(stream).shutdown(how) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        done => done,
    }
}
