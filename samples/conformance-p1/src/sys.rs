//! Safe wrappers over the raw preview-1 calls the checks share: buffers as slices instead of
//! iovec pointers, and the rights and flags sets the checks open files with.
//!
//! Calls made only once stay at their call site.

use wasi::{Ciovec, Iovec};
pub use wasi::{Errno, Fd};

pub const STDIN: Fd = 0;
pub const STDOUT: Fd = 1;
pub const STDERR: Fd = 2;
/// Never opened: no check opens anywhere near this many descriptors.
pub const BAD_FD: Fd = 9999;

/// What a file is opened with. wasmtime-wasi 48's path_open looks only at FD_READ and
/// FD_WRITE (to choose the open mode) and enforces no other right, but asking for the full
/// set, as wasi-libc does, keeps a runtime that does check rights from tripping the guest.
pub const RW: wasi::Rights = wasi::RIGHTS_FD_READ
    | wasi::RIGHTS_FD_WRITE
    | wasi::RIGHTS_FD_SEEK
    | wasi::RIGHTS_FD_TELL
    | wasi::RIGHTS_FD_FILESTAT_GET
    | wasi::RIGHTS_FD_FILESTAT_SET_SIZE
    | wasi::RIGHTS_FD_FILESTAT_SET_TIMES
    | wasi::RIGHTS_FD_SYNC
    | wasi::RIGHTS_FD_DATASYNC
    | wasi::RIGHTS_FD_ADVISE
    | wasi::RIGHTS_FD_ALLOCATE
    | wasi::RIGHTS_FD_FDSTAT_SET_FLAGS
    | wasi::RIGHTS_POLL_FD_READWRITE;
pub const RO: wasi::Rights = RW & !wasi::RIGHTS_FD_WRITE & !wasi::RIGHTS_FD_FILESTAT_SET_SIZE;
pub const WO: wasi::Rights = RW & !wasi::RIGHTS_FD_READ;
/// For a directory opened below the preopen.
pub const DIR: wasi::Rights = wasi::RIGHTS_FD_READDIR
    | wasi::RIGHTS_FD_FILESTAT_GET
    | wasi::RIGHTS_FD_FILESTAT_SET_TIMES
    | wasi::RIGHTS_PATH_OPEN
    | wasi::RIGHTS_PATH_CREATE_FILE
    | wasi::RIGHTS_PATH_CREATE_DIRECTORY
    | wasi::RIGHTS_PATH_FILESTAT_GET
    | wasi::RIGHTS_PATH_UNLINK_FILE
    | wasi::RIGHTS_PATH_REMOVE_DIRECTORY;

pub const FOLLOW: wasi::Lookupflags = wasi::LOOKUPFLAGS_SYMLINK_FOLLOW;
pub const NOFOLLOW: wasi::Lookupflags = 0;

pub fn read(fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
    readv(fd, &mut [buf])
}

pub fn readv(fd: Fd, bufs: &mut [&mut [u8]]) -> Result<usize, Errno> {
    let iovs: Vec<Iovec> = bufs.iter_mut().map(|b| iovec(b)).collect();
    // SAFETY: every iovec points into a live, exclusively borrowed slice of its length.
    unsafe { wasi::fd_read(fd, &iovs) }
}

pub fn write(fd: Fd, data: &[u8]) -> Result<usize, Errno> {
    writev(fd, &[data])
}

pub fn writev(fd: Fd, bufs: &[&[u8]]) -> Result<usize, Errno> {
    let iovs: Vec<Ciovec> = bufs.iter().map(|b| ciovec(b)).collect();
    // SAFETY: every ciovec points into a live slice of its length.
    unsafe { wasi::fd_write(fd, &iovs) }
}

/// The iovec of `buf`: valid while `buf` is exclusively borrowed.
pub fn iovec(buf: &mut [u8]) -> Iovec {
    Iovec {
        buf: buf.as_mut_ptr(),
        buf_len: buf.len(),
    }
}

/// The ciovec of `data`: valid while `data` is borrowed.
pub fn ciovec(data: &[u8]) -> Ciovec {
    Ciovec {
        buf: data.as_ptr(),
        buf_len: data.len(),
    }
}

pub fn pread(fd: Fd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let iov = [iovec(buf)];
    // SAFETY: as in `readv`.
    unsafe { wasi::fd_pread(fd, &iov, offset) }
}

pub fn pwrite(fd: Fd, data: &[u8], offset: u64) -> Result<usize, Errno> {
    let iov = [ciovec(data)];
    // SAFETY: as in `writev`.
    unsafe { wasi::fd_pwrite(fd, &iov, offset) }
}

pub fn open(
    dir: Fd,
    lookup: wasi::Lookupflags,
    path: &str,
    oflags: wasi::Oflags,
    rights: wasi::Rights,
    fdflags: wasi::Fdflags,
) -> Result<Fd, Errno> {
    // SAFETY: only passes a &str and integers; the result is written by the crate.
    unsafe { wasi::path_open(dir, lookup, path, oflags, rights, rights, fdflags) }
}

/// Opens an existing file, following symlinks, as wasi-libc's `open` does by default.
pub fn open_file(dir: Fd, path: &str, rights: wasi::Rights) -> Result<Fd, Errno> {
    open(dir, FOLLOW, path, 0, rights, 0)
}

pub fn open_dir(dir: Fd, path: &str) -> Result<Fd, Errno> {
    open(dir, FOLLOW, path, wasi::OFLAGS_DIRECTORY, DIR, 0)
}

pub fn close(fd: Fd) -> Result<(), Errno> {
    // SAFETY: closes only descriptors the checks opened themselves (never 0-3, which std
    // and the checks still use).
    unsafe { wasi::fd_close(fd) }
}

pub fn seek(fd: Fd, offset: i64, whence: wasi::Whence) -> Result<u64, Errno> {
    // SAFETY: integers only.
    unsafe { wasi::fd_seek(fd, offset, whence) }
}

pub fn tell(fd: Fd) -> Result<u64, Errno> {
    // SAFETY: integers only.
    unsafe { wasi::fd_tell(fd) }
}

pub fn fdstat(fd: Fd) -> Result<wasi::Fdstat, Errno> {
    // SAFETY: the result is written by the crate into its own storage.
    unsafe { wasi::fd_fdstat_get(fd) }
}

pub fn fstat(fd: Fd) -> Result<wasi::Filestat, Errno> {
    // SAFETY: as in `fdstat`.
    unsafe { wasi::fd_filestat_get(fd) }
}

pub fn stat(dir: Fd, lookup: wasi::Lookupflags, path: &str) -> Result<wasi::Filestat, Errno> {
    // SAFETY: as in `fdstat`.
    unsafe { wasi::path_filestat_get(dir, lookup, path) }
}

pub fn mkdir(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: a &str and integers only.
    unsafe { wasi::path_create_directory(dir, path) }
}

pub fn rmdir(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: a &str and integers only.
    unsafe { wasi::path_remove_directory(dir, path) }
}

pub fn unlink(dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: a &str and integers only.
    unsafe { wasi::path_unlink_file(dir, path) }
}

pub fn rename(dir: Fd, from: &str, to: &str) -> Result<(), Errno> {
    // SAFETY: &strs and integers only.
    unsafe { wasi::path_rename(dir, from, dir, to) }
}

pub fn link(dir: Fd, lookup: wasi::Lookupflags, from: &str, to: &str) -> Result<(), Errno> {
    // SAFETY: &strs and integers only.
    unsafe { wasi::path_link(dir, lookup, from, dir, to) }
}

pub fn symlink(target: &str, dir: Fd, path: &str) -> Result<(), Errno> {
    // SAFETY: &strs and integers only.
    unsafe { wasi::path_symlink(target, dir, path) }
}

pub fn readlink(dir: Fd, path: &str, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the buffer is live and exclusively borrowed for its length.
    unsafe { wasi::path_readlink(dir, path, buf.as_mut_ptr(), buf.len()) }
}

pub fn readdir(fd: Fd, buf: &mut [u8], cookie: u64) -> Result<usize, Errno> {
    // SAFETY: the buffer is live and exclusively borrowed for its length.
    unsafe { wasi::fd_readdir(fd, buf.as_mut_ptr(), buf.len(), cookie) }
}

pub fn realtime() -> Result<u64, Errno> {
    // SAFETY: integers only.
    unsafe { wasi::clock_time_get(wasi::CLOCKID_REALTIME, 1) }
}

pub fn monotonic() -> Result<u64, Errno> {
    // SAFETY: integers only.
    unsafe { wasi::clock_time_get(wasi::CLOCKID_MONOTONIC, 1) }
}

/// Creates (or truncates) `path` holding `data`.
pub fn put(dir: Fd, path: &str, data: &[u8]) -> Result<(), String> {
    let fd = open(
        dir,
        FOLLOW,
        path,
        wasi::OFLAGS_CREAT | wasi::OFLAGS_TRUNC,
        RW,
        0,
    )
    .map_err(|e| format!("create {path}: {}", crate::report::name(e)))?;
    let r = write_all(fd, data);
    let _ = close(fd);
    r
}

pub fn write_all(fd: Fd, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        match write(fd, data) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => data = &data[n..],
            Err(e) => return Err(format!("write: {}", crate::report::name(e))),
        }
    }
    Ok(())
}

/// Reads `fd` from its current position to end of file.
pub fn read_to_end(fd: Fd) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {}", crate::report::name(e))),
        }
    }
}

/// The whole content of `path`.
pub fn slurp(dir: Fd, path: &str) -> Result<Vec<u8>, String> {
    let fd =
        open_file(dir, path, RO).map_err(|e| format!("open {path}: {}", crate::report::name(e)))?;
    let r = read_to_end(fd);
    let _ = close(fd);
    r
}

/// `path` holds exactly `want` (`what` names it in a failure).
pub fn content_is(what: &str, dir: Fd, path: &str, want: &[u8]) -> Result<(), String> {
    crate::report::eq(what, slurp(dir, path)?, want.to_vec())
}
