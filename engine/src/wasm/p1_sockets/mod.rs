//! Published ports for preview-1 modules: each listener published with `-p` pre-opened at
//! fds 3, 4, … (in `-p` order, as `wasmtime --tcplisten` numbered them and as systemd's
//! `LISTEN_FDS` does), with `sock_accept`, reads, writes, `sock_shutdown` and `poll_oneoff`
//! on them, over wasmtime-wasi's preview 1, which has no sockets, for everything else.
//!
//! Numbering: wasmtime-wasi hands out descriptor numbers from its own table, which wrun
//! cannot add to. So that it never hands out a socket's number, it holds a directory under
//! each: the listeners' are pre-opened before the guest's directories, and a last one (the
//! reserve) is opened again (`path_open(reserve, ".")`) for each accepted connection, which
//! then gets the number the guest's next `open` would have. Every function that takes a
//! descriptor is defined here over wasmtime-wasi's, so those directories are never reached:
//! on a socket it acts on the socket or fails as a socket would, and the reserve is, to the
//! guest, a closed descriptor (which also ends libc's scan for pre-opened directories).

mod abi;
mod fds;
mod poll;

use abi::{Errno, FDFLAGS_NONBLOCK};
use fds::Socket;
pub use fds::SocketFds;
use std::net::Shutdown;
use wasmtime::{AsContextMut, Caller, Extern, Linker};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1};
use wasmtime_wasi::p1::WasiP1Ctx;
use wiggle::GuestMemory;

const MODULE: &str = "wasi_snapshot_preview1";
/// The first pre-opened socket's descriptor: the first after stdin, stdout and stderr.
pub const FIRST_FD: u32 = 3;
/// `oflags::directory`.
const OFLAGS_DIRECTORY: i32 = 1 << 1;
/// `prestat`'s tag for a pre-open that is not a directory: libc skips it and reads on.
const PREOPENTYPE_SOCKET: u8 = 1;

/// Access to the preview-1 context and the sockets beside it.
pub trait SocketsView: Send + 'static {
    fn p1_parts(&mut self) -> (&mut WasiP1Ctx, &mut SocketFds);
}

/// The guest's memory, its preview-1 context (with the hostcall fuel the store allows, as
/// wasmtime-wasi's own bindings set it) and its sockets.
fn parts<'a, T: SocketsView>(
    caller: &'a mut Caller<'_, T>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut WasiP1Ctx, &'a mut SocketFds)> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let (memory, state) = memory.data_and_store_mut(caller);
    let (wasi, fds) = state.p1_parts();
    wasi.set_hostcall_fuel(fuel);
    Ok((memory, wasi, fds))
}

fn errno(result: abi::Result<()>) -> i32 {
    result.err().unwrap_or(Errno::SUCCESS).0 as i32
}

/// Defines, over wasmtime-wasi's, a function that takes descriptors `$fd…` and that a
/// socket refuses with `$refusal`: wasmtime-wasi's runs for any other descriptor.
macro_rules! guarded {
    (
        $linker:ident,
        $name:ident($($arg:ident: $ty:ty),*),
        [$($fd:ident),+],
        $refusal:expr
        $(, $await:ident)?
    ) => {
        $linker.func_wrap_async(
            MODULE,
            stringify!($name),
            |mut caller: Caller<'_, T>, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    let (memory, wasi, fds) = parts(&mut caller)?;
                    for fd in [$($fd),+] {
                        if let Some(errno) = fds.refusal(fd as u32, $refusal) {
                            return Ok(errno.0 as i32);
                        }
                    }
                    let mut memory = GuestMemory::Unshared(memory);
                    p1::$name(wasi, &mut memory, $($arg),*)$(.$await)?
                })
            },
        )?;
    };
}

/// Calls wasmtime-wasi's own `$name`.
macro_rules! theirs {
    ($name:ident, $wasi:ident, $memory:ident, $($arg:expr),*) => {
        p1::$name($wasi, &mut GuestMemory::Unshared($memory), $($arg),*)
    };
}

/// Defines `$name` over wasmtime-wasi's: on a descriptor `fd` of the sockets the body runs,
/// with the guest's memory, the preview-1 context and the sockets bound to the names given;
/// on any other descriptor, wasmtime-wasi's own `$name` (awaited when `$await` is given).
macro_rules! shadowed {
    (
        $linker:ident,
        $name:ident($fd:ident: i32 $(, $arg:ident: $ty:ty)*) $(.$await:ident)?,
        |$memory:tt, $wasi:tt, $fds:ident| $ours:expr
    ) => {
        $linker.func_wrap_async(
            MODULE,
            stringify!($name),
            |mut caller: Caller<'_, T>, ($fd, $($arg,)*): (i32, $($ty,)*)| {
                Box::new(async move {
                    let (memory, wasi, fds) = parts(&mut caller)?;
                    if !fds.holds($fd as u32) {
                        return theirs!($name, wasi, memory, $fd $(, $arg)*)$(.$await)?;
                    }
                    let ($memory, $wasi, $fds) = (memory, wasi, fds);
                    let $fd = $fd as u32;
                    $ours
                })
            },
        )?;
    };
}

impl SocketFds {
    /// What a function that a socket cannot do returns for `fd`: `refusal` on a socket,
    /// `BADF` on the reserve, `None` when wasmtime-wasi is to act.
    fn refusal(&self, fd: u32, refusal: Errno) -> Option<Errno> {
        match self.holds(fd) {
            true if self.reserve() == Some(fd) => Some(Errno::BADF),
            true => Some(refusal),
            false => None,
        }
    }
}

/// Shadows wasmtime-wasi's preview-1 functions in `linker` with the socket-aware ones.
pub fn add_to_linker<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    add_refusing(linker)?;
    add_io(linker)?;
    add_descriptor_state(linker)?;
    add_sockets(linker)?;
    linker.func_wrap_async(
        MODULE,
        "poll_oneoff",
        |mut caller: Caller<'_, T>, (subs, out, count, nevents): (i32, i32, i32, i32)| {
            Box::new(async move { poll_oneoff(&mut caller, subs, out, count, nevents).await })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What no socket can do: seeking, positional I/O, syncing, sizes and times, directories
/// and paths, renumbering.
fn add_refusing<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    guarded!(
        linker,
        fd_advise(fd: i32, offset: i64, len: i64, advice: i32),
        [fd],
        Errno::SPIPE,
        await
    );
    guarded!(linker, fd_allocate(fd: i32, offset: i64, len: i64), [fd], Errno::SPIPE);
    guarded!(linker, fd_datasync(fd: i32), [fd], Errno::INVAL, await);
    guarded!(linker, fd_sync(fd: i32), [fd], Errno::INVAL, await);
    guarded!(
        linker,
        fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64),
        [fd],
        Errno::NOTSUP
    );
    guarded!(linker, fd_filestat_set_size(fd: i32, size: i64), [fd], Errno::INVAL, await);
    guarded!(
        linker,
        fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32),
        [fd],
        Errno::NOTSUP,
        await
    );
    guarded!(
        linker,
        fd_pread(fd: i32, iovs: i32, len: i32, offset: i64, nread: i32),
        [fd],
        Errno::SPIPE,
        await
    );
    guarded!(
        linker,
        fd_pwrite(fd: i32, iovs: i32, len: i32, offset: i64, nwritten: i32),
        [fd],
        Errno::SPIPE,
        await
    );
    guarded!(
        linker,
        fd_seek(fd: i32, offset: i64, whence: i32, new_offset: i32),
        [fd],
        Errno::SPIPE,
        await
    );
    guarded!(linker, fd_tell(fd: i32, offset: i32), [fd], Errno::SPIPE);
    guarded!(
        linker,
        fd_readdir(fd: i32, buf: i32, len: i32, cookie: i64, used: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(linker, fd_renumber(fd: i32, to: i32), [fd, to], Errno::NOTSUP, await);
    guarded!(linker, fd_prestat_dir_name(fd: i32, path: i32, len: i32), [fd], Errno::NOTDIR);
    guarded!(
        linker,
        path_create_directory(fd: i32, path: i32, len: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_filestat_get(fd: i32, flags: i32, path: i32, len: i32, buf: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_filestat_set_times(
            fd: i32, flags: i32, path: i32, len: i32, atim: i64, mtim: i64, fst: i32
        ),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_link(fd: i32, flags: i32, path: i32, len: i32, to_fd: i32, to: i32, to_len: i32),
        [fd, to_fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_open(
            fd: i32, dirflags: i32, path: i32, len: i32, oflags: i32, base: i64,
            inheriting: i64, fdflags: i32, opened: i32
        ),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_readlink(fd: i32, path: i32, len: i32, buf: i32, buf_len: i32, used: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_remove_directory(fd: i32, path: i32, len: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_rename(fd: i32, path: i32, len: i32, to_fd: i32, to: i32, to_len: i32),
        [fd, to_fd],
        Errno::NOTDIR,
        await
    );
    guarded!(
        linker,
        path_symlink(target: i32, target_len: i32, fd: i32, path: i32, len: i32),
        [fd],
        Errno::NOTDIR,
        await
    );
    guarded!(linker, path_unlink_file(fd: i32, path: i32, len: i32), [fd], Errno::NOTDIR, await);
    Ok(())
}

/// Reading and writing: on a socket, its stream; elsewhere, wasmtime-wasi's.
fn add_io<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    shadowed!(
        linker,
        fd_read(fd: i32, iovs: i32, len: i32, nread: i32).await,
        |memory, _, fds| {
            let into = Transfer { iovs: iovs as u32, count: len as u32, done: nread as u32 };
            Ok(errno(receive(memory, fds, fd, into, 0, None).await))
        }
    );
    shadowed!(
        linker,
        fd_write(fd: i32, iovs: i32, len: i32, nwritten: i32).await,
        |memory, _, fds| {
            let from = Transfer { iovs: iovs as u32, count: len as u32, done: nwritten as u32 };
            Ok(errno(send(memory, fds, fd, from).await))
        }
    );
    shadowed!(
        linker,
        sock_recv(fd: i32, iovs: i32, len: i32, flags: i32, nread: i32, out_flags: i32),
        |memory, _, fds| {
            let into = Transfer { iovs: iovs as u32, count: len as u32, done: nread as u32 };
            let out_flags = Some(out_flags as u32);
            Ok(errno(receive(memory, fds, fd, into, flags as u16, out_flags).await))
        }
    );
    shadowed!(
        linker,
        sock_send(fd: i32, iovs: i32, len: i32, _flags: i32, nwritten: i32),
        |memory, _, fds| {
            let from = Transfer { iovs: iovs as u32, count: len as u32, done: nwritten as u32 };
            Ok(errno(send(memory, fds, fd, from).await))
        }
    );
    Ok(())
}

/// A transfer's buffers (the `count` `iovec`s at `iovs`) and where its byte count goes.
struct Transfer {
    iovs: u32,
    count: u32,
    done: u32,
}

/// `riflags::recv_peek` and `riflags::recv_waitall`.
const RIFLAGS_PEEK: u16 = 1;
const RIFLAGS_WAITALL: u16 = 2;

/// Reads from socket `fd` into the buffers of `into` and stores how much (and no flags at
/// `out_flags`, for `sock_recv`).
async fn receive(
    memory: &mut [u8],
    fds: &mut SocketFds,
    fd: u32,
    into: Transfer,
    flags: u16,
    out_flags: Option<u32>,
) -> abi::Result<()> {
    let Socket::Stream(stream) = fds.get(fd)? else {
        return Err(Errno::NOTCONN);
    };
    let buffers = abi::iovecs(memory, into.iovs, into.count)?;
    let wanted: usize = buffers.iter().map(|(_, len)| *len as usize).sum();
    let peek = flags & RIFLAGS_PEEK != 0;
    let mut received = Vec::new();
    loop {
        let bytes = stream.read(wanted - received.len(), peek).await?;
        let ended = bytes.is_empty();
        received.extend_from_slice(&bytes);
        if ended || peek || flags & RIFLAGS_WAITALL == 0 || received.len() == wanted {
            break;
        }
    }
    let mut rest = &received[..];
    for (at, len) in buffers {
        let take = rest.len().min(len as usize);
        abi::write(memory, at, &rest[..take])?;
        rest = &rest[take..];
    }
    abi::write(memory, into.done, &(received.len() as u32).to_le_bytes())?;
    if let Some(out_flags) = out_flags {
        abi::write(memory, out_flags, &0u16.to_le_bytes())?;
    }
    Ok(())
}

/// Writes the buffers of `from` to socket `fd` and stores how much was written.
async fn send(memory: &mut [u8], fds: &mut SocketFds, fd: u32, from: Transfer) -> abi::Result<()> {
    let Socket::Stream(stream) = fds.get(fd)? else {
        return Err(Errno::NOTCONN);
    };
    let mut bytes = Vec::new();
    for (at, len) in abi::iovecs(memory, from.iovs, from.count)? {
        bytes.extend_from_slice(abi::slice(memory, at, len)?);
    }
    let written = stream.write(&bytes).await?;
    abi::write(memory, from.done, &(written as u32).to_le_bytes())
}

/// A descriptor's state: closing it, its flags, its type, whether it is pre-opened.
fn add_descriptor_state<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        MODULE,
        "fd_close",
        |mut caller: Caller<'_, T>, (fd,): (i32,)| {
            Box::new(async move {
                let (memory, wasi, fds) = parts(&mut caller)?;
                if fds.reserve() == Some(fd as u32) {
                    return Ok(Errno::BADF.0 as i32);
                }
                // A socket's number goes back to wasmtime-wasi with the directory under it.
                fds.remove(fd as u32);
                theirs!(fd_close, wasi, memory, fd).await
            })
        },
    )?;
    shadowed!(linker, fd_fdstat_get(fd: i32, buf: i32).await, |memory, _, fds| {
        Ok(errno(fds.get(fd).and_then(|socket| {
            let flags = if socket.nonblocking() { FDFLAGS_NONBLOCK } else { 0 };
            abi::write(memory, buf as u32, &abi::socket_fdstat(flags))
        })))
    });
    shadowed!(linker, fd_fdstat_set_flags(fd: i32, flags: i32), |_, _, fds| {
        Ok(errno(fds.get(fd).and_then(|socket| {
            if flags as u16 & !FDFLAGS_NONBLOCK != 0 {
                return Err(Errno::NOTSUP);
            }
            socket.set_nonblocking(flags as u16 & FDFLAGS_NONBLOCK != 0);
            Ok(())
        })))
    });
    shadowed!(linker, fd_filestat_get(fd: i32, buf: i32).await, |memory, _, fds| {
        Ok(errno(fds.get(fd).and_then(|_| {
            abi::write(memory, buf as u32, &abi::socket_filestat())
        })))
    });
    // A pre-opened listener is a pre-open, of a kind that is not a directory: libc skips it
    // and goes on to the directories after it (where `BADF` would end its scan, as it did
    // under wasmtime's `--tcplisten`).
    shadowed!(linker, fd_prestat_get(fd: i32, buf: i32), |memory, _, fds| {
        Ok(errno(match fds.get(fd) {
            Ok(Socket::Listener(_)) => {
                let mut prestat = [0u8; 8];
                prestat[0] = PREOPENTYPE_SOCKET;
                abi::write(memory, buf as u32, &prestat)
            }
            _ => Err(Errno::BADF),
        }))
    });
    Ok(())
}

/// `sock_accept` and `sock_shutdown`.
fn add_sockets<T: SocketsView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    shadowed!(linker, sock_accept(fd: i32, flags: i32, accepted: i32), |memory, wasi, fds| {
        accept(memory, wasi, fds, fd, flags as u16, accepted as u32).await
    });
    shadowed!(linker, sock_shutdown(fd: i32, how: i32), |_, _, fds| {
        let how = match how {
            1 => Shutdown::Read,
            2 => Shutdown::Write,
            3 => Shutdown::Both,
            _ => return Ok(Errno::INVAL.0 as i32),
        };
        Ok(errno(match fds.get(fd) {
            Ok(Socket::Stream(stream)) => stream.shutdown(how),
            Ok(Socket::Listener(_)) => Err(Errno::NOTCONN),
            Err(errno) => Err(errno),
        }))
    });
    Ok(())
}

/// Accepts the next connection on listener `fd` and stores its new descriptor at `out`.
async fn accept(
    memory: &mut [u8],
    wasi: &mut WasiP1Ctx,
    fds: &mut SocketFds,
    fd: u32,
    flags: u16,
    out: u32,
) -> wasmtime::Result<i32> {
    let Some(reserve) = fds.reserve() else {
        return Ok(Errno::BADF.0 as i32);
    };
    let stream = match fds.get(fd) {
        Ok(Socket::Listener(listener)) => listener.accept().await,
        Ok(Socket::Stream(_)) => Err(Errno::INVAL),
        Err(errno) => Err(errno),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(errno) => return Ok(errno.0 as i32),
    };
    // The new number: wasmtime-wasi's next, for the reserve opened once more. The path it
    // opens, ".", is written where the number goes, the only guest memory given to us.
    if let Err(errno) = abi::write(memory, out, b".") {
        return Ok(errno.0 as i32);
    }
    let (path, path_len) = (out as i32, 1);
    let opened = theirs!(
        path_open,
        wasi,
        memory,
        reserve as i32,
        0,
        path,
        path_len,
        OFLAGS_DIRECTORY,
        0,
        0,
        0,
        out as i32
    )
    .await?;
    if opened != 0 {
        return Ok(opened);
    }
    let number =
        abi::read_u32(memory, out).map_err(|_| wasmtime::format_err!("path_open wrote no fd"))?;
    let mut socket = Socket::Stream(stream);
    socket.set_nonblocking(flags & FDFLAGS_NONBLOCK != 0);
    fds.insert(number, socket);
    Ok(0)
}

async fn poll_oneoff<T: SocketsView>(
    caller: &mut Caller<'_, T>,
    subs: i32,
    out: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let (memory, wasi, fds) = parts(caller)?;
    let subscriptions = match poll::subscriptions(memory, subs as u32, count as u32) {
        Ok(subscriptions) if poll::names_socket(fds, &subscriptions) => subscriptions,
        _ => return theirs!(poll_oneoff, wasi, memory, subs, out, count, nevents).await,
    };
    // The guest's monotonic clock is wasmtime-wasi's; read through it, into `out`, which is
    // the guest's to be overwritten by the events anyway.
    let monotonic_now = match poll::needs_monotonic(&subscriptions) {
        true => {
            let read = theirs!(clock_time_get, wasi, memory, 1, 0, out)?;
            if read != 0 {
                return Ok(read);
            }
            abi::read_u64(memory, out as u32).ok()
        }
        false => None,
    };
    let written = poll::poll(memory, fds, &subscriptions, out as u32, monotonic_now).await;
    Ok(errno(written.and_then(|n| {
        abi::write(memory, nevents as u32, &n.to_le_bytes())
    })))
}

#[cfg(test)]
mod tests {
    use crate::wasm::exec::{self, GuestDir, Network, Outcome};
    use crate::wasm::source::Kind;
    use crate::wasm::Program;
    use std::io::{Read, Write};

    /// A guest checking, call by call, what it sees of one published listener (fd 3), the
    /// reserve after a directory (fd 5) and a connection the test opened before it ran; it
    /// exits with the number of the first check that failed, 0 when none did.
    const GUEST: &str = r#"(module
      (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $set_flags (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) ".")
      (func $expect (param $got i32) (param $want i32) (param $check i32)
        (if (i32.ne (local.get $got) (local.get $want)) (then (call $exit (local.get $check)))))
      (func (export "_start")
        ;; fd 3: a stream socket, a pre-open that is not a directory, no directory to open in.
        (call $expect (call $fdstat (i32.const 3) (i32.const 64)) (i32.const 0) (i32.const 1))
        (call $expect (i32.load8_u (i32.const 64)) (i32.const 6) (i32.const 2))
        (call $expect (call $prestat (i32.const 3) (i32.const 96)) (i32.const 0) (i32.const 3))
        (call $expect (i32.load8_u (i32.const 96)) (i32.const 1) (i32.const 4))
        (call $expect (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 128)) (i32.const 54) (i32.const 5))
        ;; fd 4: the directory, wasmtime-wasi's as ever; fd 5: the reserve, closed to the guest.
        (call $expect (call $prestat (i32.const 4) (i32.const 96)) (i32.const 0) (i32.const 6))
        (call $expect (i32.load8_u (i32.const 96)) (i32.const 0) (i32.const 7))
        (call $expect (call $prestat (i32.const 5) (i32.const 96)) (i32.const 8) (i32.const 8))
        (call $expect (call $close (i32.const 5)) (i32.const 8) (i32.const 9))
        ;; Non-blocking: the waiting connection (fd 6, the next number), then nothing more.
        (call $expect (call $set_flags (i32.const 3) (i32.const 4)) (i32.const 0) (i32.const 10))
        (call $expect (call $accept (i32.const 3) (i32.const 0) (i32.const 128)) (i32.const 0) (i32.const 11))
        (call $expect (i32.load (i32.const 128)) (i32.const 6) (i32.const 12))
        (call $expect (call $accept (i32.const 3) (i32.const 0) (i32.const 128)) (i32.const 6) (i32.const 13))
        ;; Read the connection's 4 bytes (blocking) and write them back.
        (i32.store (i32.const 160) (i32.const 192))
        (i32.store (i32.const 164) (i32.const 4))
        (call $expect (call $read (i32.const 6) (i32.const 160) (i32.const 1) (i32.const 168)) (i32.const 0) (i32.const 14))
        (call $expect (i32.load (i32.const 168)) (i32.const 4) (i32.const 15))
        (call $expect (call $write (i32.const 6) (i32.const 160) (i32.const 1) (i32.const 168)) (i32.const 0) (i32.const 16))
        ;; Closed, its number is wasmtime-wasi's next again: "." under the directory gets 6.
        (call $expect (call $close (i32.const 6)) (i32.const 0) (i32.const 17))
        (call $expect (call $open (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.const 2) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 128)) (i32.const 0) (i32.const 18))
        (call $expect (i32.load (i32.const 128)) (i32.const 6) (i32.const 19))))"#;

    #[test]
    fn a_guest_sees_its_listener_as_a_socket_and_its_numbers_stay_wasmtime_wasis() {
        let settings = crate::config::EngineSettings::default();
        let engine = crate::wasm::engine::new_forking_engine(&settings).unwrap();
        let module = wasmtime::Module::new(&engine, GUEST).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.write_all(b"ping").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut host = exec::prepare_host(&engine, Kind::Module, &["guest".into()], &[]).unwrap();
        host.connect(Network {
            published: vec![(7000, listener)],
            ..Default::default()
        })
        .unwrap();
        let guest_dir = GuestDir {
            path: dir.path().to_path_buf(),
            guest: "/data".into(),
            read_only: true,
        };
        host.preopen(&[guest_dir]).unwrap();
        let program = Program::Module(module);
        let outcome = exec::run(&engine, &program, "guest.wat".as_ref(), host, None).unwrap();
        assert!(matches!(outcome, Outcome::Exited(0)), "{outcome:?}");
        let mut echoed = [0u8; 4];
        peer.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"ping");
    }
}
