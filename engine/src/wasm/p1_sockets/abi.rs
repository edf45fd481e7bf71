//! The preview-1 ABI as the socket functions see it: errno values, and reading and writing
//! the guest's memory at the offsets `wasi_snapshot_preview1.witx` lays out.

use std::io;

/// A preview-1 `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    pub const SUCCESS: Errno = Errno(0);
    pub const AGAIN: Errno = Errno(6);
    pub const BADF: Errno = Errno(8);
    pub const CONNRESET: Errno = Errno(15);
    pub const FAULT: Errno = Errno(21);
    pub const INVAL: Errno = Errno(28);
    pub const IO: Errno = Errno(29);
    pub const NOTCONN: Errno = Errno(53);
    pub const NOTDIR: Errno = Errno(54);
    pub const NOTSUP: Errno = Errno(58);
    pub const PIPE: Errno = Errno(64);
    pub const SPIPE: Errno = Errno(70);

    pub fn of(error: &io::Error) -> Errno {
        match error.raw_os_error() {
            Some(libc::EAGAIN) => Errno::AGAIN,
            Some(libc::ECONNRESET) => Errno::CONNRESET,
            Some(libc::ENOTCONN) => Errno::NOTCONN,
            Some(libc::EPIPE) => Errno::PIPE,
            Some(libc::EINVAL) => Errno::INVAL,
            _ => Errno::IO,
        }
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

/// `filetype::socket_stream`.
pub const FILETYPE_SOCKET_STREAM: u8 = 6;
/// `fdflags::nonblock`.
pub const FDFLAGS_NONBLOCK: u16 = 1 << 2;
/// `eventrwflags::fd_readwrite_hangup`.
pub const EVENT_HANGUP: u16 = 1;

/// `len` bytes of `memory` at `at`.
pub fn slice(memory: &[u8], at: u32, len: u32) -> Result<&[u8]> {
    let start = at as usize;
    memory
        .get(start..start.checked_add(len as usize).ok_or(Errno::FAULT)?)
        .ok_or(Errno::FAULT)
}

pub fn slice_mut(memory: &mut [u8], at: u32, len: u32) -> Result<&mut [u8]> {
    let start = at as usize;
    memory
        .get_mut(start..start.checked_add(len as usize).ok_or(Errno::FAULT)?)
        .ok_or(Errno::FAULT)
}

pub fn read_u16(memory: &[u8], at: u32) -> Result<u16> {
    Ok(u16::from_le_bytes(
        slice(memory, at, 2)?.try_into().unwrap_or_default(),
    ))
}

pub fn read_u32(memory: &[u8], at: u32) -> Result<u32> {
    Ok(u32::from_le_bytes(
        slice(memory, at, 4)?.try_into().unwrap_or_default(),
    ))
}

pub fn read_u64(memory: &[u8], at: u32) -> Result<u64> {
    Ok(u64::from_le_bytes(
        slice(memory, at, 8)?.try_into().unwrap_or_default(),
    ))
}

pub fn write(memory: &mut [u8], at: u32, bytes: &[u8]) -> Result<()> {
    slice_mut(memory, at, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

/// The `(buf, buf_len)` pairs of an `iovec`/`ciovec` array.
pub fn iovecs(memory: &[u8], at: u32, count: u32) -> Result<Vec<(u32, u32)>> {
    (0..count)
        .map(|i| {
            let entry = at.checked_add(i.checked_mul(8).ok_or(Errno::FAULT)?);
            let entry = entry.ok_or(Errno::FAULT)?;
            Ok((read_u32(memory, entry)?, read_u32(memory, entry + 4)?))
        })
        .collect()
}

/// The `rights` of what a socket can do: `fd_read`, `fd_fdstat_set_flags`, `fd_write`,
/// `fd_filestat_get`, `poll_fd_readwrite`, `sock_shutdown`, `sock_accept`.
const SOCKET_RIGHTS: u64 = 1 << 1 | 1 << 3 | 1 << 6 | 1 << 21 | 1 << 27 | 1 << 28 | 1 << 29;

/// A `fdstat` (24 bytes) of a socket with `flags`.
pub fn socket_fdstat(flags: u16) -> [u8; 24] {
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_SOCKET_STREAM;
    stat[2..4].copy_from_slice(&flags.to_le_bytes());
    stat[8..16].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
    stat[16..24].copy_from_slice(&SOCKET_RIGHTS.to_le_bytes());
    stat
}

/// A `filestat` (64 bytes) of a socket: its type, and zero for what a socket has not.
pub fn socket_filestat() -> [u8; 64] {
    let mut stat = [0u8; 64];
    stat[16] = FILETYPE_SOCKET_STREAM;
    stat[24..32].copy_from_slice(&1u64.to_le_bytes());
    stat
}
