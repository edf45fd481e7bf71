//! Descriptor-level calls: stdio, reads and writes, positions, sync, fdstat, filestat,
//! advice, allocation, close and renumber.
//!
//! Each family works on its own files in the preopen (`data`), so a failure in one leaves the
//! others' expectations intact.

use crate::report::{at, ensure, eq, fails, fails_at, ok, Outcome, Report};
use crate::sys::{self, Fd, BAD_FD, RO, RW, STDERR, STDIN, STDOUT, WO};
use std::io::Write;

const STDIN_CONTENT: &[u8] = b"hello from stdin\n";

/// Creates `path` (truncated) and opens it read-write with `fdflags`.
fn create(data: Fd, path: &str, fdflags: wasi::Fdflags) -> Result<Fd, String> {
    ok(
        &format!("create {path}"),
        sys::open(
            data,
            sys::FOLLOW,
            path,
            wasi::OFLAGS_CREAT | wasi::OFLAGS_TRUNC,
            RW,
            fdflags,
        ),
    )
}

/// Creates `path` holding `content` and opens it read-write.
fn create_with(data: Fd, path: &str, content: &[u8]) -> Result<Fd, String> {
    let fd = create(data, path, 0)?;
    sys::write_all(fd, content)?;
    ok("seek", sys::seek(fd, 0, wasi::WHENCE_SET))?;
    Ok(fd)
}

/// `call` on the directory `data`, then on a descriptor never opened: both are EBADF.
fn badf_on_dir_and_bad_fd<T>(data: Fd, call: impl Fn(Fd) -> Result<T, wasi::Errno>) -> Outcome {
    fails_at("directory", call(data), wasi::ERRNO_BADF)?;
    fails_at("bad fd", call(BAD_FD), wasi::ERRNO_BADF)
}

pub fn stdio(r: &mut Report) {
    r.family("stdio");
    r.check("read stdin to EOF, and it stays there", || {
        // Small reads: a pipe may deliver the bytes in pieces, so only the sum is asserted.
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            match ok("fd_read", sys::read(STDIN, &mut buf))? {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
            ensure(got.len() <= 4096, "stdin never reaches EOF")?;
        }
        eq(
            "stdin",
            String::from_utf8_lossy(&got).into_owned(),
            String::from_utf8_lossy(STDIN_CONTENT).into_owned(),
        )?;
        eq("fd_read", sys::read(STDIN, &mut [0u8; 8]), Ok(0))
    });

    // This check's own line goes out through the call under test: std's stdout is flushed
    // first so the lines stay in order.
    let _ = std::io::stdout().flush();
    let line = b"stdio fd_write stdout: ok\n";
    match sys::write(STDOUT, line) {
        Ok(n) if n == line.len() => r.passed_silently(),
        Ok(n) => r.record(
            "fd_write stdout",
            Err(format!("wrote {n} of {} bytes", line.len())),
        ),
        Err(e) => r.record("fd_write stdout", ok("fd_write", Err::<(), _>(e))),
    }
    r.check("fd_write stderr", || {
        let line = b"conformance-p1: stderr works\n";
        eq(
            "bytes written",
            ok("fd_write", sys::write(STDERR, line))?,
            line.len(),
        )
    });
    r.check("zero-length write to stdout", || {
        eq("fd_write", sys::write(STDOUT, b""), Ok(0))
    });
    // wasmtime-wasi 48: a descriptor used against its direction is EBADF (stdin has no
    // output stream, stdout no input stream).
    r.check("wrong direction or bad fd is EBADF", || {
        fails_at("fd_write stdin", sys::write(STDIN, b"x"), wasi::ERRNO_BADF)?;
        fails_at(
            "fd_read stdout",
            sys::read(STDOUT, &mut [0u8; 4]),
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "fd_read bad fd",
            sys::read(BAD_FD, &mut [0u8; 4]),
            wasi::ERRNO_BADF,
        )
    });
}

pub fn read_write(r: &mut Report, data: Fd) {
    r.family("fd_rw");
    let Some(fd) = r.setup("io.txt", create(data, "io.txt", 0)) else {
        return;
    };
    const CONTENT: &[u8] = b"0123456789abcdefghij";
    r.check("write advances the offset", || {
        eq(
            "bytes written",
            ok("fd_write", sys::write(fd, CONTENT))?,
            20,
        )?;
        eq("fd_tell", sys::tell(fd), Ok(20))?;
        eq("fd_read at EOF", sys::read(fd, &mut [0u8; 8]), Ok(0))
    });
    r.check("read back what was written", || {
        ok("seek", sys::seek(fd, 0, wasi::WHENCE_SET))?;
        eq("content", sys::read_to_end(fd)?, CONTENT.to_vec())
    });
    // wasmtime-wasi 48 reads into the first non-empty iovec only (a legal short read), so a
    // vectored read returns at most that buffer's length.
    r.check(
        "vectored read fills the first non-empty buffer only",
        || {
            ok("seek", sys::seek(fd, 0, wasi::WHENCE_SET))?;
            let (mut a, mut b) = ([0u8; 4], [0u8; 100]);
            let n = ok("fd_read", sys::readv(fd, &mut [&mut a, &mut b]))?;
            eq("bytes read", n, 4)?;
            eq("first buffer", &a, b"0123")?;
            ensure(b.iter().all(|&x| x == 0), "second buffer written")?;
            ok("seek", sys::seek(fd, 0, wasi::WHENCE_SET))?;
            let mut b = [0u8; 8];
            let n = ok("fd_read", sys::readv(fd, &mut [&mut [], &mut b]))?;
            eq("bytes read", n, 8)?;
            eq("buffer", &b, b"01234567")
        },
    );
    // The same for writes: only the first non-empty ciovec is written (wasmtime-wasi 48).
    r.check("vectored write writes the first buffer only", || {
        ok("seek", sys::seek(fd, 0, wasi::WHENCE_END))?;
        eq(
            "bytes written",
            ok("fd_write", sys::writev(fd, &[b"", b"AB", b"CD"]))?,
            2,
        )?;
        eq("fd_tell", sys::tell(fd), Ok(22))
    });
    r.check("zero-length write", || {
        eq("fd_write", sys::write(fd, b""), Ok(0))?;
        eq("size", ok("fstat", sys::fstat(fd))?.size, 22)
    });
    let _ = sys::close(fd);
    r.check("file content", || {
        sys::content_is("io.txt", data, "io.txt", b"0123456789abcdefghijAB")
    });
    // The OS refuses these (the descriptor lacks the access mode): EBADF.
    r.check("against the open mode is EBADF", || {
        let ro = ok("open", sys::open_file(data, "io.txt", RO))?;
        let res = fails_at("fd_write read-only", sys::write(ro, b"x"), wasi::ERRNO_BADF);
        let _ = sys::close(ro);
        res?;
        let wo = ok("open", sys::open_file(data, "io.txt", WO))?;
        let res = fails_at(
            "fd_read write-only",
            sys::read(wo, &mut [0u8; 4]),
            wasi::ERRNO_BADF,
        );
        let _ = sys::close(wo);
        res
    });
    // wasmtime-wasi 48 answers EBADF for reads and writes on directories (POSIX read(2)
    // would say EISDIR).
    r.check("a directory is EBADF", || {
        fails_at("fd_read", sys::read(data, &mut [0u8; 4]), wasi::ERRNO_BADF)?;
        fails_at("fd_write", sys::write(data, b"x"), wasi::ERRNO_BADF)
    });
}

pub fn pread_pwrite(r: &mut Report, data: Fd) {
    r.family("fd_prw");
    let Some(fd) = r.setup("pwrite.bin", create(data, "pwrite.bin", 0)) else {
        return;
    };
    r.check("pwrite leaves the offset", || {
        eq("fd_pwrite", sys::pwrite(fd, b"HELLO", 0), Ok(5))?;
        eq("fd_tell", sys::tell(fd), Ok(0))
    });
    r.check("pwrite past the end leaves a zero gap", || {
        eq("fd_pwrite", sys::pwrite(fd, b"X", 10), Ok(1))?;
        eq("size", ok("fstat", sys::fstat(fd))?.size, 11)?;
        let mut b = [0xFFu8; 5];
        eq("fd_pread", sys::pread(fd, &mut b, 5), Ok(5))?;
        eq("gap", b, [0u8; 5])
    });
    r.check("pread at an offset leaves the offset", || {
        let mut b = [0u8; 3];
        eq("fd_pread", sys::pread(fd, &mut b, 1), Ok(3))?;
        eq("bytes", &b, b"ELL")?;
        eq("fd_tell", sys::tell(fd), Ok(0))
    });
    r.check("pread at the end is short, past it 0", || {
        let mut b = [0u8; 8];
        eq("fd_pread", sys::pread(fd, &mut b, 9), Ok(2))?;
        eq("bytes", &b[..2], b"\0X")?;
        eq(
            "fd_pread past the end",
            sys::pread(fd, &mut [0u8; 4], 100),
            Ok(0),
        )
    });
    r.check("fd_read still starts at 0", || {
        let mut b = [0u8; 5];
        eq("fd_read", sys::read(fd, &mut b), Ok(5))?;
        eq("bytes", &b, b"HELLO")
    });
    let _ = sys::close(fd);
    // wasmtime-wasi 48 implements Linux pwrite(2) semantics: on a descriptor in append mode
    // the offset is ignored and the bytes land at the end.
    r.check("pwrite in append mode appends", || {
        let fd = ok(
            "open",
            sys::open(data, sys::FOLLOW, "pwrite.bin", 0, RW, wasi::FDFLAGS_APPEND),
        )?;
        let res = eq("fd_pwrite", sys::pwrite(fd, b"Z", 0), Ok(1));
        let _ = sys::close(fd);
        res?;
        sys::content_is("pwrite.bin", data, "pwrite.bin", b"HELLO\0\0\0\0\0XZ")
    });
    // Not seekable: ESPIPE, as POSIX gives for pipes.
    r.check("stdio is ESPIPE", || {
        fails_at(
            "fd_pwrite stdout",
            sys::pwrite(STDOUT, b"x", 0),
            wasi::ERRNO_SPIPE,
        )?;
        fails_at(
            "fd_pread stdin",
            sys::pread(STDIN, &mut [0u8; 4], 0),
            wasi::ERRNO_SPIPE,
        )
    });
    r.check("a directory or bad fd is EBADF", || {
        fails_at(
            "fd_pread directory",
            sys::pread(data, &mut [0u8; 4], 0),
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "fd_pwrite bad fd",
            sys::pwrite(BAD_FD, b"x", 0),
            wasi::ERRNO_BADF,
        )
    });
}

pub fn append(r: &mut Report, data: Fd) {
    r.family("append");
    let Some(fd) = r.setup(
        "append.log",
        create(data, "append.log", wasi::FDFLAGS_APPEND),
    ) else {
        return;
    };
    r.check("fdstat shows APPEND", || {
        eq(
            "APPEND",
            ok("fdstat", sys::fdstat(fd))?.fs_flags & wasi::FDFLAGS_APPEND,
            wasi::FDFLAGS_APPEND,
        )
    });
    r.check("write after seek 0 lands at the end", || {
        sys::write_all(fd, b"first\n")?;
        eq("fd_seek", sys::seek(fd, 0, wasi::WHENCE_SET), Ok(0))?;
        sys::write_all(fd, b"second\n")?;
        sys::content_is("append.log", data, "append.log", b"first\nsecond\n")
    });
    r.check("offset is the end after an append", || {
        eq("fd_tell", sys::tell(fd), Ok(13))
    });
    let _ = sys::close(fd);
    let Some(fd) = r.setup(
        "reopen append.log",
        ok("open", sys::open_file(data, "append.log", RW)),
    ) else {
        return;
    };
    r.check("set APPEND on an open file", || {
        ok("fd_fdstat_set_flags", unsafe {
            wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_APPEND)
        })?;
        eq("fd_tell", sys::tell(fd), Ok(0))?;
        sys::write_all(fd, b"third\n")?;
        sys::content_is("append.log", data, "append.log", b"first\nsecond\nthird\n")
    });
    r.check("clearing APPEND writes at the offset again", || {
        // SAFETY (fd_fdstat_set_flags here and below): integers only.
        ok("fd_fdstat_set_flags", unsafe {
            wasi::fd_fdstat_set_flags(fd, 0)
        })?;
        eq("fd_seek", sys::seek(fd, 0, wasi::WHENCE_SET), Ok(0))?;
        sys::write_all(fd, b"F")?;
        sys::content_is("append.log", data, "append.log", b"First\nsecond\nthird\n")
    });
    let _ = sys::close(fd);
}

pub fn seek(r: &mut Report, data: Fd) {
    r.family("seek");
    let Some(fd) = r.setup("seek.txt", create_with(data, "seek.txt", b"0123456789")) else {
        return;
    };
    r.check("SET, and read moves the offset", || {
        eq("fd_seek", sys::seek(fd, 3, wasi::WHENCE_SET), Ok(3))?;
        eq("fd_tell", sys::tell(fd), Ok(3))?;
        let mut b = [0u8; 2];
        eq("fd_read", sys::read(fd, &mut b), Ok(2))?;
        eq("bytes", &b, b"34")?;
        eq("fd_tell", sys::tell(fd), Ok(5))
    });
    r.check("CUR", || {
        eq("fd_seek forward", sys::seek(fd, 2, wasi::WHENCE_CUR), Ok(7))?;
        eq(
            "fd_seek backward",
            sys::seek(fd, -1, wasi::WHENCE_CUR),
            Ok(6),
        )
    });
    r.check("END, and past the end is allowed", || {
        eq("fd_seek", sys::seek(fd, -1, wasi::WHENCE_END), Ok(9))?;
        let mut b = [0u8; 4];
        eq("fd_read", sys::read(fd, &mut b), Ok(1))?;
        eq("byte", b[0], b'9')?;
        eq("fd_seek", sys::seek(fd, 5, wasi::WHENCE_END), Ok(15))?;
        eq("fd_read", sys::read(fd, &mut [0u8; 4]), Ok(0))
    });
    r.check("before 0 is EINVAL and keeps the offset", || {
        fails_at(
            "SET -1",
            sys::seek(fd, -1, wasi::WHENCE_SET),
            wasi::ERRNO_INVAL,
        )?;
        fails_at(
            "CUR -100",
            sys::seek(fd, -100, wasi::WHENCE_CUR),
            wasi::ERRNO_INVAL,
        )?;
        eq("fd_tell", sys::tell(fd), Ok(15))
    });
    // An unknown whence (like any out-of-range enum argument) traps in wasmtime-wasi 48
    // instead of failing with EINVAL: not checked.
    let _ = sys::close(fd);
    let _ = sys::unlink(data, "seek.txt");
    r.check("stdio is ESPIPE", || {
        let spipe = wasi::ERRNO_SPIPE;
        let seek = sys::seek(STDIN, 0, wasi::WHENCE_CUR);
        fails_at("fd_seek stdin", seek, spipe)?;
        fails_at("fd_tell stdout", sys::tell(STDOUT), spipe)
    });
    // wasmtime-wasi 48: a directory has no offset for p1: EBADF.
    r.check("a directory or bad fd is EBADF", || {
        let badf = wasi::ERRNO_BADF;
        let seek = sys::seek(data, 0, wasi::WHENCE_SET);
        fails_at("fd_seek directory", seek, badf)?;
        fails_at("fd_tell bad fd", sys::tell(BAD_FD), badf)
    });
}

pub fn sync(r: &mut Report, data: Fd) {
    r.family("sync");
    let Some(fd) = r.setup("sync.txt", create_with(data, "sync.txt", b"synced\n")) else {
        return;
    };
    // SAFETY (all calls in this family): integers only.
    r.check("fd_sync and fd_datasync a file", || {
        ok("fd_sync", unsafe { wasi::fd_sync(fd) })?;
        ok("fd_datasync", unsafe { wasi::fd_datasync(fd) })
    });
    let _ = sys::close(fd);
    r.check("fd_sync a read-only file", || {
        let fd = ok("open", sys::open_file(data, "sync.txt", RO))?;
        let res = ok("fd_sync", unsafe { wasi::fd_sync(fd) });
        let _ = sys::close(fd);
        res
    });
    // wasmtime-wasi 48's p1 syncs files only: a directory is EBADF.
    r.check("a directory, stdout or bad fd is EBADF", || {
        fails_at(
            "fd_sync directory",
            unsafe { wasi::fd_sync(data) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "fd_datasync stdout",
            unsafe { wasi::fd_datasync(STDOUT) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "fd_sync bad fd",
            unsafe { wasi::fd_sync(BAD_FD) },
            wasi::ERRNO_BADF,
        )
    });
}

/// The rights wasmtime-wasi 48 reports for a preopened directory (a fixed set "expected by
/// many userlands").
const PREOPEN_BASE: wasi::Rights = wasi::RIGHTS_PATH_CREATE_DIRECTORY
    | wasi::RIGHTS_PATH_CREATE_FILE
    | wasi::RIGHTS_PATH_LINK_SOURCE
    | wasi::RIGHTS_PATH_LINK_TARGET
    | wasi::RIGHTS_PATH_OPEN
    | wasi::RIGHTS_FD_READDIR
    | wasi::RIGHTS_PATH_READLINK
    | wasi::RIGHTS_PATH_RENAME_SOURCE
    | wasi::RIGHTS_PATH_RENAME_TARGET
    | wasi::RIGHTS_PATH_SYMLINK
    | wasi::RIGHTS_PATH_REMOVE_DIRECTORY
    | wasi::RIGHTS_PATH_UNLINK_FILE
    | wasi::RIGHTS_PATH_FILESTAT_GET
    | wasi::RIGHTS_PATH_FILESTAT_SET_TIMES
    | wasi::RIGHTS_FD_FILESTAT_GET
    | wasi::RIGHTS_FD_FILESTAT_SET_TIMES;
const PREOPEN_INHERITING: wasi::Rights = PREOPEN_BASE
    | wasi::RIGHTS_FD_DATASYNC
    | wasi::RIGHTS_FD_READ
    | wasi::RIGHTS_FD_SEEK
    | wasi::RIGHTS_FD_FDSTAT_SET_FLAGS
    | wasi::RIGHTS_FD_SYNC
    | wasi::RIGHTS_FD_TELL
    | wasi::RIGHTS_FD_WRITE
    | wasi::RIGHTS_FD_ADVISE
    | wasi::RIGHTS_FD_ALLOCATE
    | wasi::RIGHTS_FD_FILESTAT_SET_SIZE
    | wasi::RIGHTS_POLL_FD_READWRITE;

pub fn fdstat(r: &mut Report, data: Fd) {
    r.family("fdstat");
    // stdin is a pipe by the test's contract: wasmtime-wasi 48 reports a non-terminal stdio
    // stream as UNKNOWN with exactly its one right, FD_READ or FD_WRITE.
    r.check("stdin", || {
        let st = ok("fdstat", sys::fdstat(STDIN))?;
        eq("filetype", st.fs_filetype, wasi::FILETYPE_UNKNOWN)?;
        eq("flags", st.fs_flags, 0)?;
        eq(
            "rights",
            (st.fs_rights_base, st.fs_rights_inheriting),
            (wasi::RIGHTS_FD_READ, wasi::RIGHTS_FD_READ),
        )
    });
    // stdout/stderr may be a terminal when run by hand: CHARACTER_DEVICE then.
    r.check("stdout and stderr", || {
        for (fd, what) in [(STDOUT, "stdout"), (STDERR, "stderr")] {
            let st = ok(what, sys::fdstat(fd))?;
            ensure(
                st.fs_filetype == wasi::FILETYPE_UNKNOWN
                    || st.fs_filetype == wasi::FILETYPE_CHARACTER_DEVICE,
                format!("{what}: filetype neither UNKNOWN nor CHARACTER_DEVICE"),
            )?;
            at(what, eq("flags", st.fs_flags, 0))?;
            let rights = (st.fs_rights_base, st.fs_rights_inheriting);
            at(
                what,
                eq(
                    "rights",
                    rights,
                    (wasi::RIGHTS_FD_WRITE, wasi::RIGHTS_FD_WRITE),
                ),
            )?;
        }
        Ok(())
    });
    r.check("preopen", || {
        let st = ok("fdstat", sys::fdstat(data))?;
        eq("filetype", st.fs_filetype, wasi::FILETYPE_DIRECTORY)?;
        eq("flags", st.fs_flags, 0)?;
        eq("base rights", st.fs_rights_base, PREOPEN_BASE)?;
        eq(
            "inheriting rights",
            st.fs_rights_inheriting,
            PREOPEN_INHERITING,
        )
    });
    let Some(fd) = r.setup("fdstat.txt", create(data, "fdstat.txt", 0)) else {
        return;
    };
    r.check("files, rights following the open mode", || {
        let st = ok("fdstat", sys::fdstat(fd))?;
        eq("filetype", st.fs_filetype, wasi::FILETYPE_REGULAR_FILE)?;
        eq("flags", st.fs_flags, 0)?;
        let want = wasi::RIGHTS_FD_READ
            | wasi::RIGHTS_FD_WRITE
            | wasi::RIGHTS_FD_SEEK
            | wasi::RIGHTS_FD_TELL;
        eq(
            "read/write/seek/tell rights",
            st.fs_rights_base & want,
            want,
        )?;
        let rw = wasi::RIGHTS_FD_READ | wasi::RIGHTS_FD_WRITE;
        for (rights, want, what) in [
            (RO, wasi::RIGHTS_FD_READ, "read-only"),
            (WO, wasi::RIGHTS_FD_WRITE, "write-only"),
        ] {
            let f = ok("open", sys::open_file(data, "fdstat.txt", rights))?;
            let st = sys::fdstat(f);
            let _ = sys::close(f);
            at(
                what,
                eq(
                    "FD_READ|FD_WRITE rights",
                    ok("fdstat", st)?.fs_rights_base & rw,
                    want,
                ),
            )?;
        }
        Ok(())
    });
    // wasmtime-wasi 48 drops FD_SEEK from an opened directory's rights.
    r.check("opened directory", || {
        let d = ok("open", sys::open_dir(data, "."))?;
        let st = sys::fdstat(d);
        let _ = sys::close(d);
        let st = ok("fdstat", st)?;
        eq("filetype", st.fs_filetype, wasi::FILETYPE_DIRECTORY)?;
        eq("FD_SEEK", st.fs_rights_base & wasi::RIGHTS_FD_SEEK, 0)
    });
    // SAFETY (fd_fdstat_set_flags, fd_fdstat_set_rights): integers only.
    r.check("set_flags APPEND, NONBLOCK, 0 read back", || {
        for flag in [wasi::FDFLAGS_APPEND, wasi::FDFLAGS_NONBLOCK, 0] {
            ok("set_flags", unsafe { wasi::fd_fdstat_set_flags(fd, flag) })?;
            eq("flags", ok("fdstat", sys::fdstat(fd))?.fs_flags, flag)?;
        }
        Ok(())
    });
    // wasmtime-wasi 48 changes only APPEND and NONBLOCK: the sync flags are EINVAL, and only
    // files (not stdio, not directories) take flags at all: EBADF.
    r.check("set_flags DSYNC is EINVAL", || {
        fails(
            unsafe { wasi::fd_fdstat_set_flags(fd, wasi::FDFLAGS_DSYNC) },
            wasi::ERRNO_INVAL,
        )
    });
    r.check("set_flags on stdout or a directory is EBADF", || {
        let set_flags = |fd, flags| unsafe { wasi::fd_fdstat_set_flags(fd, flags) };
        let badf = wasi::ERRNO_BADF;
        fails_at("stdout", set_flags(STDOUT, wasi::FDFLAGS_APPEND), badf)?;
        fails_at("directory", set_flags(data, 0), badf)
    });
    // Rights can no longer be changed in wasmtime-wasi 48: ENOTSUP (EBADF for a bad fd).
    r.check("set_rights is ENOTSUP, a bad fd EBADF", || {
        fails(
            unsafe { wasi::fd_fdstat_set_rights(fd, RO, RO) },
            wasi::ERRNO_NOTSUP,
        )?;
        fails_at("fd_fdstat_get", sys::fdstat(BAD_FD), wasi::ERRNO_BADF)?;
        fails_at(
            "fd_fdstat_set_rights",
            unsafe { wasi::fd_fdstat_set_rights(BAD_FD, RO, RO) },
            wasi::ERRNO_BADF,
        )
    });
    let _ = sys::close(fd);
    let _ = sys::unlink(data, "fdstat.txt");
}

/// 2020-09-13T12:26:40.5Z: fixed times set on files, so the host trees of two runs match.
pub const FIXED_TIME: u64 = 1_600_000_000_500_000_000;

pub fn filestat(r: &mut Report, data: Fd) {
    r.family("filestat");
    let Some(fd) = r.setup("stat.txt", create_with(data, "stat.txt", b"hello world")) else {
        return;
    };
    r.check("regular file, as path_filestat_get sees it", || {
        let a = ok("fstat", sys::fstat(fd))?;
        eq(
            "filetype, size, nlink",
            (a.filetype, a.size, a.nlink),
            (wasi::FILETYPE_REGULAR_FILE, 11, 1),
        )?;
        let b = ok(
            "path_filestat_get",
            sys::stat(data, sys::NOFOLLOW, "stat.txt"),
        )?;
        ensure(a.dev == b.dev && a.ino == b.ino, "dev/ino differ")?;
        eq("size", b.size, a.size)
    });
    // SAFETY (fd_filestat_set_size, fd_filestat_set_times): integers only.
    r.check("set_size grows with zeros", || {
        ok("set_size", unsafe { wasi::fd_filestat_set_size(fd, 100) })?;
        eq("size", ok("fstat", sys::fstat(fd))?.size, 100)?;
        let mut b = [0xFFu8; 89];
        eq("fd_pread", sys::pread(fd, &mut b, 11), Ok(89))?;
        ensure(b.iter().all(|&x| x == 0), "grown bytes are not zero")
    });
    r.check("set_size shrinks and leaves the offset", || {
        ok("set_size", unsafe { wasi::fd_filestat_set_size(fd, 5) })?;
        eq("size", ok("fstat", sys::fstat(fd))?.size, 5)?;
        sys::content_is("content", data, "stat.txt", b"hello")?;
        eq("fd_tell", sys::tell(fd), Ok(0))
    });
    // wasmtime-wasi 48 resizes files only: a directory is EBADF.
    r.check("set_size on a directory or bad fd is EBADF", || {
        badf_on_dir_and_bad_fd(data, |fd| unsafe { wasi::fd_filestat_set_size(fd, 0) })
    });
    r.check("set_times sets both", || {
        let flags = wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_MTIM;
        ok("set_times", unsafe {
            wasi::fd_filestat_set_times(fd, FIXED_TIME, FIXED_TIME + 1_000_000_000, flags)
        })?;
        let st = ok("fstat", sys::fstat(fd))?;
        ensure(st.atim == FIXED_TIME, "atim is not the time set")?;
        ensure(
            st.mtim == FIXED_TIME + 1_000_000_000,
            "mtim is not the time set",
        )
    });
    r.check(
        "set_times ATIM with ATIM_NOW is EINVAL and changes nothing",
        || {
            let flags = wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_ATIM_NOW;
            fails(
                unsafe { wasi::fd_filestat_set_times(fd, FIXED_TIME + 7, 0, flags) },
                wasi::ERRNO_INVAL,
            )?;
            ensure(
                ok("fstat", sys::fstat(fd))?.atim == FIXED_TIME,
                "atim changed",
            )
        },
    );
    let _ = sys::close(fd);
    r.check("set_times MTIM_NOW is now and leaves atim", || {
        let fd = create_with(data, "now.txt", b"now")?;
        let set = unsafe { wasi::fd_filestat_set_times(fd, FIXED_TIME, 0, wasi::FSTFLAGS_ATIM) }
            .and_then(|_| unsafe {
                wasi::fd_filestat_set_times(fd, 0, 0, wasi::FSTFLAGS_MTIM_NOW)
            });
        let st = sys::fstat(fd);
        let _ = sys::close(fd);
        let _ = sys::unlink(data, "now.txt");
        ok("set_times", set)?;
        let st = ok("fstat", st)?;
        let now = ok("clock_time_get", sys::realtime())?;
        // Within 10 s of the realtime clock: file systems store coarser times than the clock.
        ensure(
            st.mtim.abs_diff(now) < 10_000_000_000,
            "mtim is not near the realtime clock",
        )?;
        ensure(st.atim == FIXED_TIME, "atim changed")
    });
    r.check("a directory, and stdin", || {
        eq(
            "filetype",
            ok("fstat", sys::fstat(data))?.filetype,
            wasi::FILETYPE_DIRECTORY,
        )?;
        // wasmtime-wasi 48 reports stdio as an all-zero stat of type UNKNOWN (stdin is a pipe).
        let st = ok("fstat", sys::fstat(STDIN))?;
        eq("filetype", st.filetype, wasi::FILETYPE_UNKNOWN)?;
        eq(
            "dev, ino, nlink, size, atim, mtim, ctim",
            [st.dev, st.ino, st.nlink, st.size, st.atim, st.mtim, st.ctim],
            [0; 7],
        )
    });
    r.check("bad fd is EBADF", || {
        fails_at("fd_filestat_get", sys::fstat(BAD_FD), wasi::ERRNO_BADF)?;
        let flags = wasi::FSTFLAGS_MTIM_NOW;
        fails_at(
            "fd_filestat_set_times",
            unsafe { wasi::fd_filestat_set_times(BAD_FD, 0, 0, flags) },
            wasi::ERRNO_BADF,
        )
    });
}

pub fn advise(r: &mut Report, data: Fd) {
    r.family("advise");
    let Some(fd) = r.setup("advise.txt", create_with(data, "advise.txt", b"advice\n")) else {
        return;
    };
    // SAFETY (fd_advise, fd_allocate): integers only.
    r.check("every advice value", || {
        for a in [
            wasi::ADVICE_NORMAL,
            wasi::ADVICE_SEQUENTIAL,
            wasi::ADVICE_RANDOM,
            wasi::ADVICE_WILLNEED,
            wasi::ADVICE_DONTNEED,
            wasi::ADVICE_NOREUSE,
        ] {
            ok(&format!("fd_advise {}", a.name()), unsafe {
                wasi::fd_advise(fd, 0, 7, a)
            })?;
        }
        Ok(())
    });
    // wasmtime-wasi 48 advises files only: a directory is EBADF.
    r.check("a directory or bad fd is EBADF", || {
        badf_on_dir_and_bad_fd(data, |fd| unsafe {
            wasi::fd_advise(fd, 0, 0, wasi::ADVICE_NORMAL)
        })
    });

    r.family("allocate");
    // wasmtime-wasi 48 does not implement fd_allocate: ENOTSUP for any file, after checking
    // that the descriptor is a file (EBADF otherwise).
    r.check("a file is ENOTSUP and keeps its size", || {
        fails(
            unsafe { wasi::fd_allocate(fd, 0, 4096) },
            wasi::ERRNO_NOTSUP,
        )?;
        eq("size", ok("fstat", sys::fstat(fd))?.size, 7)
    });
    r.check("a directory or bad fd is EBADF", || {
        badf_on_dir_and_bad_fd(data, |fd| unsafe { wasi::fd_allocate(fd, 0, 1) })
    });
    let _ = sys::close(fd);
}

pub fn close_renumber(r: &mut Report, data: Fd) {
    r.family("close");
    let Some(fd) = r.setup("close.txt", create_with(data, "close.txt", b"close me")) else {
        return;
    };
    r.check("fd_close", || ok("fd_close", sys::close(fd)));
    r.check("a closed fd is EBADF", || {
        fails_at("fd_read", sys::read(fd, &mut [0u8; 4]), wasi::ERRNO_BADF)?;
        fails_at("fd_fdstat_get", sys::fdstat(fd), wasi::ERRNO_BADF)?;
        fails_at("fd_close again", sys::close(fd), wasi::ERRNO_BADF)?;
        fails_at("fd_close bad fd", sys::close(BAD_FD), wasi::ERRNO_BADF)
    });
    let _ = sys::unlink(data, "close.txt");

    r.family("renumber");
    let (Some(a), Some(b)) = (
        r.setup("ren-a.txt", create_with(data, "ren-a.txt", b"from a")),
        r.setup("ren-b.txt", create_with(data, "ren-b.txt", b"from b")),
    ) else {
        return;
    };
    // SAFETY (fd_renumber): integers only.
    r.check("onto itself", || {
        ok("fd_renumber", unsafe { wasi::fd_renumber(a, a) })?;
        eq(
            "fdstat",
            sys::fdstat(a).map(|s| s.fs_filetype),
            Ok(wasi::FILETYPE_REGULAR_FILE),
        )
    });
    r.check("replaces the target and closes the source", || {
        ok("fd_renumber", unsafe { wasi::fd_renumber(a, b) })?;
        eq(
            "content read through the target",
            sys::read_to_end(b)?,
            b"from a".to_vec(),
        )?;
        fails_at("source", sys::fdstat(a), wasi::ERRNO_BADF)
    });
    // wasmtime-wasi 48 requires both descriptors to be open (unlike dup2): EBADF.
    r.check("a closed fd on either side is EBADF", || {
        fails_at(
            "onto closed",
            unsafe { wasi::fd_renumber(b, BAD_FD) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "from closed",
            unsafe { wasi::fd_renumber(a, b) },
            wasi::ERRNO_BADF,
        )?;
        eq(
            "target after",
            sys::fdstat(b).map(|s| s.fs_filetype),
            Ok(wasi::FILETYPE_REGULAR_FILE),
        )
    });
    let _ = sys::close(b);
    let _ = sys::unlink(data, "ren-a.txt");
    let _ = sys::unlink(data, "ren-b.txt");
}
