//! Preopens and path-based calls: open, directories, rename, links, symlinks, path stat and
//! times, readdir.
//!
//! Escapes from the preopen are refused by wasmtime-wasi 48's sandboxed lookup
//! (cap-primitives) with an io::ErrorKind::PermissionDenied that has no OS errno, which p1
//! maps to EPERM (not ENOTCAPABLE): the checks assert EPERM.

use crate::fdio::FIXED_TIME;
use crate::report::{ensure, eq, fails, fails_at, ok, Outcome, Report};
use crate::sys::{self, Fd, BAD_FD, FOLLOW, NOFOLLOW, RO, RW, STDOUT};

/// Finds the `/data` preopen and checks the prestat calls. Returns its descriptor (fd 3 by
/// the test's contract, used even when the checks fail so the rest can still run).
pub fn prestat(r: &mut Report) -> Fd {
    r.family("prestat");
    let dir_name = |fd: Fd, len: usize| -> Result<Vec<u8>, wasi::Errno> {
        let mut buf = vec![0u8; len];
        // SAFETY: the buffer is live for `len` bytes.
        unsafe { wasi::fd_prestat_dir_name(fd, buf.as_mut_ptr(), len) }.map(|_| buf)
    };
    // SAFETY (fd_prestat_get): the result is written into the crate's own storage.
    let prestat = |fd: Fd| unsafe { wasi::fd_prestat_get(fd) };

    // Preopens are numbered from 3 without gaps; the scan ends at the first EBADF.
    let mut found = None;
    let mut scan = Ok(());
    for fd in 3..64 {
        match prestat(fd) {
            Ok(p) if p.tag == wasi::PREOPENTYPE_DIR.raw() => {
                // SAFETY: tag DIR selects the `dir` member.
                let len = unsafe { p.u.dir.pr_name_len };
                if dir_name(fd, len).as_deref() == Ok(b"/data") && found.is_none() {
                    found = Some(fd);
                }
            }
            Ok(_) => {
                scan = Err(format!("fd {fd}: a prestat tag other than DIR"));
                break;
            }
            Err(e) if e == wasi::ERRNO_BADF => break,
            Err(e) => {
                scan = Err(format!("fd {fd}: {}", crate::report::name(e)));
                break;
            }
        }
    }
    r.check("/data is fd 3, the scan ends at EBADF", || {
        scan.clone()?;
        eq("fd", found, Some(3))
    });
    let data = found.unwrap_or(3);
    r.check("prestat and dir_name of /data", || {
        let p = ok("fd_prestat_get", prestat(data))?;
        eq("tag", p.tag, wasi::PREOPENTYPE_DIR.raw())?;
        // SAFETY: tag DIR (checked above) selects the `dir` member.
        eq("pr_name_len", unsafe { p.u.dir.pr_name_len }, 5)?;
        let buf = ok("fd_prestat_dir_name", dir_name(data, 8))?;
        eq("name", &buf[..], &b"/data\0\0\0"[..])
    });
    // wasmtime-wasi 48 (legacy behaviour): a buffer shorter than the name is ENAMETOOLONG,
    // and dir_name of a descriptor that is not a preopen is ENOTDIR, while prestat_get of one
    // is EBADF.
    r.check("dir_name too short is ENAMETOOLONG", || {
        fails(dir_name(data, 2), wasi::ERRNO_NAMETOOLONG)
    });
    r.check("dir_name of stdout is ENOTDIR", || {
        fails(dir_name(STDOUT, 8), wasi::ERRNO_NOTDIR)
    });
    r.check("prestat of a non-preopen is EBADF", || {
        for fd in 0..3 {
            fails_at(&format!("fd {fd}"), prestat(fd), wasi::ERRNO_BADF)?;
        }
        fails_at("bad fd", prestat(BAD_FD), wasi::ERRNO_BADF)?;
        let d = ok("open", sys::open_dir(data, "."))?;
        let res = fails_at("opened directory", prestat(d), wasi::ERRNO_BADF);
        let _ = sys::close(d);
        res
    });
    data
}

/// Opens, expecting success, and closes again.
fn opens(
    dir: Fd,
    path: &str,
    oflags: wasi::Oflags,
    rights: wasi::Rights,
) -> Result<wasi::Fdstat, String> {
    let fd = ok("path_open", sys::open(dir, FOLLOW, path, oflags, rights, 0))?;
    let st = sys::fdstat(fd);
    let _ = sys::close(fd);
    ok("fdstat", st)
}

pub fn path_open(r: &mut Report, data: Fd) {
    r.family("path_open");
    let creat = wasi::OFLAGS_CREAT;
    r.check("CREAT creates an empty file", || {
        opens(data, "open.txt", creat, RW)?;
        let st = ok("stat", sys::stat(data, NOFOLLOW, "open.txt"))?;
        eq(
            "filetype, size",
            (st.filetype, st.size),
            (wasi::FILETYPE_REGULAR_FILE, 0),
        )
    });
    r.check("opens an existing file, CREAT keeps it", || {
        sys::put(data, "open.txt", b"content")?;
        eq(
            "filetype",
            opens(data, "open.txt", 0, RO)?.fs_filetype,
            wasi::FILETYPE_REGULAR_FILE,
        )?;
        opens(data, "open.txt", creat, RW)?;
        sys::content_is("content", data, "open.txt", b"content")
    });
    r.check(
        "CREAT|EXCL creates, and is EEXIST on an existing file",
        || {
            opens(data, "open-excl.txt", creat | wasi::OFLAGS_EXCL, RW)?;
            ok("unlink", sys::unlink(data, "open-excl.txt"))?;
            fails(
                sys::open(data, FOLLOW, "open.txt", creat | wasi::OFLAGS_EXCL, RW, 0),
                wasi::ERRNO_EXIST,
            )
        },
    );
    r.check("TRUNC empties", || {
        opens(data, "open.txt", wasi::OFLAGS_TRUNC, RW)?;
        eq(
            "size",
            ok("stat", sys::stat(data, NOFOLLOW, "open.txt"))?.size,
            0,
        )
    });
    r.check("missing is ENOENT", || {
        fails_at(
            "file",
            sys::open_file(data, "missing.txt", RO),
            wasi::ERRNO_NOENT,
        )?;
        fails_at(
            "CREAT in a missing directory",
            sys::open(data, FOLLOW, "missing/new.txt", creat, RW, 0),
            wasi::ERRNO_NOENT,
        )
    });
    r.check("a file where a directory is needed is ENOTDIR", || {
        let dir = wasi::OFLAGS_DIRECTORY;
        fails_at(
            "DIRECTORY",
            sys::open(data, FOLLOW, "open.txt", dir, RO, 0),
            wasi::ERRNO_NOTDIR,
        )?;
        fails_at(
            "path component",
            sys::open_file(data, "open.txt/child", RO),
            wasi::ERRNO_NOTDIR,
        )
    });
    r.check("opens a directory with and without DIRECTORY", || {
        ok("mkdir", sys::mkdir(data, "open-dir"))?;
        eq(
            "filetype",
            opens(data, "open-dir", wasi::OFLAGS_DIRECTORY, RO)?.fs_filetype,
            wasi::FILETYPE_DIRECTORY,
        )?;
        eq(
            "filetype",
            opens(data, ".", 0, RO)?.fs_filetype,
            wasi::FILETYPE_DIRECTORY,
        )
    });
    r.check("dot-dot inside the preopen", || {
        eq(
            "filetype",
            opens(data, "open-dir/../open.txt", 0, RO)?.fs_filetype,
            wasi::FILETYPE_REGULAR_FILE,
        )
    });
    r.check(
        "dot-dot out of the preopen or an absolute path is EPERM",
        || {
            fails_at(
                "..",
                sys::open_file(data, "../escape.txt", RO),
                wasi::ERRNO_PERM,
            )?;
            let deep = "open-dir/../../escape.txt";
            fails_at(
                "dir/../..",
                sys::open(data, FOLLOW, deep, creat, RW, 0),
                wasi::ERRNO_PERM,
            )?;
            fails_at(
                "absolute",
                sys::open_file(data, "/etc/passwd", RO),
                wasi::ERRNO_PERM,
            )
        },
    );
    // wasmtime-wasi 48 rejects CREAT/EXCL/TRUNC with DIRECTORY itself: EINVAL.
    r.check("DIRECTORY|CREAT is EINVAL and creates nothing", || {
        fails(
            sys::open(
                data,
                FOLLOW,
                "open-new-dir",
                wasi::OFLAGS_DIRECTORY | creat,
                RW,
                0,
            ),
            wasi::ERRNO_INVAL,
        )?;
        fails_at(
            "after",
            sys::stat(data, NOFOLLOW, "open-new-dir"),
            wasi::ERRNO_NOENT,
        )
    });
    // The OS refuses a directory opened for writing: EISDIR.
    r.check("a directory with FD_WRITE is EISDIR", || {
        fails(
            sys::open(data, FOLLOW, "open-dir", 0, RW, 0),
            wasi::ERRNO_ISDIR,
        )
    });
    // wasmtime-wasi 48: a file as the base descriptor is ENOTDIR, stdio is EBADF, and the
    // sync fdflags are not supported (ENOTSUP).
    r.check(
        "a file as the base fd is ENOTDIR, stdout or a bad fd EBADF",
        || {
            let fd = ok("open", sys::open_file(data, "open.txt", RO))?;
            let res = fails(sys::open_file(fd, "x", RO), wasi::ERRNO_NOTDIR);
            let _ = sys::close(fd);
            res?;
            fails_at("stdout", sys::open_file(STDOUT, "x", RO), wasi::ERRNO_BADF)?;
            fails_at("bad fd", sys::open_file(BAD_FD, "x", RO), wasi::ERRNO_BADF)
        },
    );
    r.check("FDFLAGS_SYNC is ENOTSUP", || {
        fails(
            sys::open(data, FOLLOW, "open.txt", 0, RW, wasi::FDFLAGS_SYNC),
            wasi::ERRNO_NOTSUP,
        )
    });
    let _ = sys::unlink(data, "open.txt");
    let _ = sys::rmdir(data, "open-dir");
}

/// create_directory at `create`, then remove_directory and unlink_file at `path`: each
/// fails with `want`.
fn dir_calls_fail(data: Fd, create: &str, path: &str, want: wasi::Errno) -> Outcome {
    fails_at("create_directory", sys::mkdir(data, create), want)?;
    fails_at("remove_directory", sys::rmdir(data, path), want)?;
    fails_at("unlink_file", sys::unlink(data, path), want)
}

pub fn dirs(r: &mut Report, data: Fd) {
    r.family("dirs");
    r.check("create_directory, then EEXIST on an existing name", || {
        ok("mkdir", sys::mkdir(data, "dirs"))?;
        eq(
            "filetype",
            ok("stat", sys::stat(data, NOFOLLOW, "dirs"))?.filetype,
            wasi::FILETYPE_DIRECTORY,
        )?;
        fails_at("directory", sys::mkdir(data, "dirs"), wasi::ERRNO_EXIST)?;
        sys::put(data, "dirs/f", b"f")?;
        fails_at("file", sys::mkdir(data, "dirs/f"), wasi::ERRNO_EXIST)
    });
    r.check(
        "remove_directory non-empty is ENOTEMPTY, on a file ENOTDIR",
        || {
            fails(sys::rmdir(data, "dirs"), wasi::ERRNO_NOTEMPTY)?;
            fails(sys::rmdir(data, "dirs/f"), wasi::ERRNO_NOTDIR)
        },
    );
    // Linux unlinkat(2) without AT_REMOVEDIR on a directory: EISDIR (POSIX allows EPERM).
    r.check("unlink_file on a directory is EISDIR", || {
        fails(sys::unlink(data, "dirs"), wasi::ERRNO_ISDIR)
    });
    r.check("missing is ENOENT", || {
        dir_calls_fail(data, "missing/child", "dirs/none", wasi::ERRNO_NOENT)
    });
    r.check("outside the preopen is EPERM", || {
        dir_calls_fail(data, "../outside", "../outside", wasi::ERRNO_PERM)
    });
    r.check("unlink_file and remove_directory remove", || {
        ok("unlink", sys::unlink(data, "dirs/f"))?;
        fails_at(
            "file after",
            sys::stat(data, NOFOLLOW, "dirs/f"),
            wasi::ERRNO_NOENT,
        )?;
        ok("rmdir", sys::rmdir(data, "dirs"))?;
        fails_at(
            "directory after",
            sys::stat(data, NOFOLLOW, "dirs"),
            wasi::ERRNO_NOENT,
        )
    });
    r.check("nested create_directory", || {
        ok("mkdir", sys::mkdir(data, "dirs"))?;
        ok("mkdir", sys::mkdir(data, "dirs/kept"))?;
        eq(
            "filetype",
            ok("stat", sys::stat(data, NOFOLLOW, "dirs/kept"))?.filetype,
            wasi::FILETYPE_DIRECTORY,
        )
    });
}

pub fn rename(r: &mut Report, data: Fd) {
    r.family("rename");
    r.check("renames a file, a missing one is ENOENT", || {
        sys::put(data, "to-rename.txt", b"rename me\n")?;
        ok("rename", sys::rename(data, "to-rename.txt", "renamed.txt"))?;
        fails(
            sys::stat(data, NOFOLLOW, "to-rename.txt"),
            wasi::ERRNO_NOENT,
        )?;
        sys::content_is("content", data, "renamed.txt", b"rename me\n")?;
        fails(sys::rename(data, "none.txt", "x.txt"), wasi::ERRNO_NOENT)
    });
    r.check("replaces an existing file", || {
        sys::put(data, "victim.txt", b"old")?;
        sys::put(data, "src.txt", b"new")?;
        ok("rename", sys::rename(data, "src.txt", "victim.txt"))?;
        fails(sys::stat(data, NOFOLLOW, "src.txt"), wasi::ERRNO_NOENT)?;
        sys::content_is("content", data, "victim.txt", b"new")
    });
    let _ = sys::unlink(data, "victim.txt");
    r.check(
        "file onto a directory is EISDIR, directory onto a file ENOTDIR",
        || {
            ok("mkdir", sys::mkdir(data, "rdir"))?;
            fails(sys::rename(data, "renamed.txt", "rdir"), wasi::ERRNO_ISDIR)?;
            fails(sys::rename(data, "rdir", "renamed.txt"), wasi::ERRNO_NOTDIR)
        },
    );
    r.check("directory onto a non-empty one is ENOTEMPTY", || {
        ok("mkdir", sys::mkdir(data, "rdir2"))?;
        sys::put(data, "rdir2/x", b"x")?;
        fails(sys::rename(data, "rdir", "rdir2"), wasi::ERRNO_NOTEMPTY)
    });
    r.check("directory into itself is EINVAL", || {
        fails(sys::rename(data, "rdir", "rdir/sub"), wasi::ERRNO_INVAL)
    });
    r.check("out of the preopen is EPERM", || {
        fails(
            sys::rename(data, "renamed.txt", "../out.txt"),
            wasi::ERRNO_PERM,
        )
    });
    r.check("renames a directory, replacing an empty one", || {
        ok("rename", sys::rename(data, "rdir", "rdir3"))?;
        fails(sys::stat(data, NOFOLLOW, "rdir"), wasi::ERRNO_NOENT)?;
        eq(
            "filetype",
            ok("stat", sys::stat(data, NOFOLLOW, "rdir3"))?.filetype,
            wasi::FILETYPE_DIRECTORY,
        )?;
        ok("mkdir", sys::mkdir(data, "rdir4"))?;
        ok("rename", sys::rename(data, "rdir3", "rdir4"))?;
        fails(sys::stat(data, NOFOLLOW, "rdir3"), wasi::ERRNO_NOENT)
    });
    let _ = sys::rmdir(data, "rdir4");
    let _ = sys::unlink(data, "rdir2/x");
    let _ = sys::rmdir(data, "rdir2");
}

pub fn link(r: &mut Report, data: Fd) {
    r.family("link");
    let Some(()) = r.setup(
        "tree",
        ok("mkdir", sys::mkdir(data, "tree"))
            .and_then(|_| sys::put(data, "tree/target.txt", b"link target\n")),
    ) else {
        return;
    };
    r.check("path_link", || {
        ok(
            "path_link",
            sys::link(data, NOFOLLOW, "tree/target.txt", "tree/hard.txt"),
        )
    });
    r.check("both names are one file with two links", || {
        let a = ok("stat", sys::stat(data, NOFOLLOW, "tree/target.txt"))?;
        let b = ok("stat", sys::stat(data, NOFOLLOW, "tree/hard.txt"))?;
        eq("nlink", (a.nlink, b.nlink), (2, 2))?;
        ensure(a.dev == b.dev && a.ino == b.ino, "dev/ino differ")?;
        sys::content_is("content", data, "tree/hard.txt", b"link target\n")
    });
    r.check(
        "onto an existing name is EEXIST, from a missing one ENOENT",
        || {
            fails(
                sys::link(data, NOFOLLOW, "tree/target.txt", "tree/hard.txt"),
                wasi::ERRNO_EXIST,
            )?;
            fails(
                sys::link(data, NOFOLLOW, "tree/none.txt", "tree/x.txt"),
                wasi::ERRNO_NOENT,
            )
        },
    );
    // wasmtime-wasi 48 does not follow a symlink source for path_link: EINVAL.
    r.check("SYMLINK_FOLLOW is EINVAL", || {
        fails(
            sys::link(data, FOLLOW, "tree/target.txt", "tree/x.txt"),
            wasi::ERRNO_INVAL,
        )
    });
    // Linux linkat(2) refuses directories with EPERM, and so does the sandbox a target
    // outside the preopen.
    r.check("a directory or a target outside is EPERM", || {
        fails_at(
            "directory",
            sys::link(data, NOFOLLOW, "tree", "tree2"),
            wasi::ERRNO_PERM,
        )?;
        fails_at(
            "outside",
            sys::link(data, NOFOLLOW, "tree/target.txt", "../hard.txt"),
            wasi::ERRNO_PERM,
        )
    });
}

pub fn symlink(r: &mut Report, data: Fd) {
    r.family("symlink");
    r.check("path_symlink and readlink", || {
        ok(
            "path_symlink",
            sys::symlink("target.txt", data, "tree/link"),
        )?;
        let mut buf = [0u8; 64];
        let n = ok("readlink", sys::readlink(data, "tree/link", &mut buf))?;
        eq("target", &buf[..n], b"target.txt")
    });
    // wasmtime-wasi 48 truncates to the buffer and returns its length (like readlink(2)).
    r.check("readlink into a short buffer truncates", || {
        let mut buf = [0u8; 4];
        eq(
            "readlink",
            sys::readlink(data, "tree/link", &mut buf),
            Ok(4),
        )?;
        eq("bytes", &buf, b"targ")
    });
    r.check("readlink of a file is EINVAL, of nothing ENOENT", || {
        fails_at(
            "file",
            sys::readlink(data, "tree/target.txt", &mut [0u8; 16]),
            wasi::ERRNO_INVAL,
        )?;
        fails_at(
            "missing",
            sys::readlink(data, "tree/none", &mut [0u8; 16]),
            wasi::ERRNO_NOENT,
        )
    });
    r.check("stat sees the link, or with follow the target", || {
        let st = ok("stat", sys::stat(data, NOFOLLOW, "tree/link"))?;
        eq(
            "filetype, size",
            (st.filetype, st.size),
            (wasi::FILETYPE_SYMBOLIC_LINK, 10),
        )?;
        let st = ok("stat", sys::stat(data, FOLLOW, "tree/link"))?;
        eq(
            "filetype, size with follow",
            (st.filetype, st.size),
            (wasi::FILETYPE_REGULAR_FILE, 12),
        )
    });
    r.check("open follows the link, without follow ELOOP", || {
        sys::content_is("content", data, "tree/link", b"link target\n")?;
        // O_NOFOLLOW on the last component: ELOOP.
        fails(
            sys::open(data, NOFOLLOW, "tree/link", 0, RO, 0),
            wasi::ERRNO_LOOP,
        )
    });
    r.check(
        "onto an existing name is EEXIST, to an absolute target EPERM",
        || {
            fails(
                sys::symlink("target.txt", data, "tree/hard.txt"),
                wasi::ERRNO_EXIST,
            )?;
            // wasmtime-wasi 48 refuses to create a symlink to an absolute path: EPERM.
            fails(
                sys::symlink("/etc/passwd", data, "tree/abs"),
                wasi::ERRNO_PERM,
            )
        },
    );
    r.check(
        "an escaping link is created but not followed (EPERM)",
        || {
            ok(
                "path_symlink",
                sys::symlink("../../outside", data, "tree/escape"),
            )?;
            fails_at(
                "open",
                sys::open_file(data, "tree/escape", RO),
                wasi::ERRNO_PERM,
            )?;
            fails_at(
                "stat",
                sys::stat(data, FOLLOW, "tree/escape"),
                wasi::ERRNO_PERM,
            )
        },
    );
    r.check("unlink removes the link only", || {
        ok("unlink", sys::unlink(data, "tree/escape"))?;
        fails(sys::stat(data, NOFOLLOW, "tree/escape"), wasi::ERRNO_NOENT)?;
        ok(
            "path_symlink",
            sys::symlink("target.txt", data, "tree/link2"),
        )?;
        ok("unlink", sys::unlink(data, "tree/link2"))?;
        sys::content_is("target", data, "tree/target.txt", b"link target\n")
    });
    r.check("dangling link", || {
        ok(
            "path_symlink",
            sys::symlink("nowhere", data, "tree/dangling"),
        )?;
        let res =
            fails(sys::stat(data, FOLLOW, "tree/dangling"), wasi::ERRNO_NOENT).and_then(|_| {
                eq(
                    "filetype",
                    ok("stat", sys::stat(data, NOFOLLOW, "tree/dangling"))?.filetype,
                    wasi::FILETYPE_SYMBOLIC_LINK,
                )
            });
        let _ = sys::unlink(data, "tree/dangling");
        res
    });
    r.check("a link in a path", || {
        ok("path_symlink", sys::symlink("tree", data, "tree-link"))?;
        let res = sys::slurp(data, "tree-link/target.txt");
        let _ = sys::unlink(data, "tree-link");
        eq("content", res?, b"link target\n".to_vec())
    });
}

pub fn pathstat(r: &mut Report, data: Fd) {
    r.family("pathstat");
    let set = |lookup, path: &str, atim, mtim, flags| {
        // SAFETY: a &str and integers only.
        unsafe { wasi::path_filestat_set_times(data, lookup, path, atim, mtim, flags) }
    };
    let mtim_is = |path: &str, want: u64, detail: &str| -> Outcome {
        let mtim = ok("stat", sys::stat(data, NOFOLLOW, path))?.mtim;
        ensure(mtim == want, detail)
    };
    let atim_mtim = wasi::FSTFLAGS_ATIM | wasi::FSTFLAGS_MTIM;
    let Some(()) = r.setup("times.txt", sys::put(data, "times.txt", b"times\n")) else {
        return;
    };
    r.check("stat of a file and of the preopen", || {
        eq(
            "filetype",
            ok("stat", sys::stat(data, NOFOLLOW, "."))?.filetype,
            wasi::FILETYPE_DIRECTORY,
        )?;
        let st = ok("stat", sys::stat(data, NOFOLLOW, "times.txt"))?;
        eq(
            "filetype, size, nlink",
            (st.filetype, st.size, st.nlink),
            (wasi::FILETYPE_REGULAR_FILE, 6, 1),
        )
    });
    r.check(
        "missing ENOENT, through a file ENOTDIR, outside EPERM",
        || {
            fails_at(
                "missing",
                sys::stat(data, NOFOLLOW, "none"),
                wasi::ERRNO_NOENT,
            )?;
            fails_at(
                "through a file",
                sys::stat(data, NOFOLLOW, "times.txt/x"),
                wasi::ERRNO_NOTDIR,
            )?;
            fails_at(
                "outside",
                sys::stat(data, NOFOLLOW, "../x"),
                wasi::ERRNO_PERM,
            )
        },
    );
    r.check("set_times MTIM", || {
        ok(
            "set_times",
            set(FOLLOW, "times.txt", 0, FIXED_TIME, wasi::FSTFLAGS_MTIM),
        )?;
        mtim_is("times.txt", FIXED_TIME, "mtim is not the time set")
    });
    r.check(
        "set_times MTIM with MTIM_NOW is EINVAL, missing ENOENT",
        || {
            let both = wasi::FSTFLAGS_MTIM | wasi::FSTFLAGS_MTIM_NOW;
            fails_at(
                "MTIM|MTIM_NOW",
                set(FOLLOW, "times.txt", 0, 0, both),
                wasi::ERRNO_INVAL,
            )?;
            fails_at(
                "missing",
                set(FOLLOW, "none", 0, FIXED_TIME, wasi::FSTFLAGS_MTIM),
                wasi::ERRNO_NOENT,
            )
        },
    );
    r.check(
        "set_times sets the link without follow, the target with",
        || {
            ok(
                "path_symlink",
                sys::symlink("times.txt", data, "times-link"),
            )?;
            let t = FIXED_TIME + 2_000_000_000;
            ok("set_times", set(NOFOLLOW, "times-link", t, t, atim_mtim))?;
            mtim_is("times-link", t, "link mtim is not the time set")?;
            mtim_is("times.txt", FIXED_TIME, "target mtim changed")?;
            let t = FIXED_TIME + 3_000_000_000;
            ok("set_times", set(FOLLOW, "times-link", t, t, atim_mtim))?;
            mtim_is("times.txt", t, "target mtim is not the time set")?;
            mtim_is(
                "times-link",
                FIXED_TIME + 2_000_000_000,
                "link mtim changed",
            )
        },
    );
    r.check("set_times on a directory fd", || {
        let d = ok("open", sys::open_dir(data, "dirs/kept"))?;
        // SAFETY: integers only.
        let res = unsafe { wasi::fd_filestat_set_times(d, FIXED_TIME, FIXED_TIME, atim_mtim) };
        let _ = sys::close(d);
        ok("fd_filestat_set_times", res)?;
        mtim_is("dirs/kept", FIXED_TIME, "mtim is not the time set")
    });
}

/// One parsed dirent.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    next: u64,
    ino: u64,
    kind: u8,
    name: String,
}

/// Size of the fixed part of a dirent in the buffer (d_next, d_ino, d_namlen, d_type, pad).
const DIRENT: usize = 24;

/// Parses the entries that fit whole in `buf[..len]`; the second value tells whether the
/// buffer ended inside an entry (the caller must go on from the last whole one).
fn parse(buf: &[u8], len: usize) -> Result<(Vec<Entry>, bool), String> {
    let buf = &buf[..len];
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        if buf.len() - at < DIRENT {
            return Ok((out, true));
        }
        let u64_at = |i: usize| u64::from_le_bytes(buf[at + i..at + i + 8].try_into().unwrap());
        let namlen = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
        if buf.len() - at - DIRENT < namlen {
            return Ok((out, true));
        }
        let name = std::str::from_utf8(&buf[at + DIRENT..at + DIRENT + namlen])
            .map_err(|_| "a name that is not UTF-8")?
            .to_string();
        out.push(Entry {
            next: u64_at(0),
            ino: u64_at(8),
            kind: buf[at + 20],
            name,
        });
        at += DIRENT + namlen;
    }
    Ok((out, false))
}

/// Reads the whole directory with `bufsize`-byte calls, restarting after the last whole
/// entry when a call fills its buffer (the usual wasi-libc loop).
fn read_all(fd: Fd, bufsize: usize, cookie: u64) -> Result<Vec<Entry>, String> {
    let mut buf = vec![0u8; bufsize];
    let mut out: Vec<Entry> = Vec::new();
    let mut cookie = cookie;
    for _ in 0..1000 {
        let n = ok("fd_readdir", sys::readdir(fd, &mut buf, cookie))?;
        ensure(n <= bufsize, "fd_readdir returned more than the buffer")?;
        let (entries, _) = parse(&buf, n)?;
        let full = n == bufsize;
        if full && entries.is_empty() {
            return Err(format!("one entry does not fit {bufsize} bytes"));
        }
        if let Some(last) = entries.last() {
            cookie = last.next;
        }
        out.extend(entries);
        if !full {
            return Ok(out);
        }
    }
    Err("fd_readdir never reaches the end".into())
}

pub fn readdir(r: &mut Report, data: Fd) {
    r.family("readdir");
    let made = (|| -> Result<Fd, String> {
        ok("mkdir", sys::mkdir(data, "readdir"))?;
        sys::put(data, "readdir/a", b"a")?;
        sys::put(data, "readdir/bb", b"bb")?;
        ok("mkdir", sys::mkdir(data, "readdir/ccc"))?;
        ok("symlink", sys::symlink("a", data, "readdir/sym"))?;
        ok("open", sys::open_dir(data, "readdir"))
    })();
    let Some(fd) = r.setup("readdir", made) else {
        return;
    };
    let all = read_all(fd, 4096, 0);
    // The order of entries is the host file system's: every comparison sorts by name.
    let sorted = |mut v: Vec<Entry>| {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    // wasmtime-wasi 48 lists "." and ".." first (cookies 1 and 2), then the host entries.
    r.check("names, dot entries first", || {
        let all = all.clone()?;
        eq(
            "first two",
            all.iter()
                .take(2)
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            vec![".", ".."],
        )?;
        let names: Vec<String> = sorted(all).into_iter().map(|e| e.name).collect();
        eq(
            "names",
            names,
            [".", "..", "a", "bb", "ccc", "sym"]
                .map(String::from)
                .to_vec(),
        )
    });
    r.check("d_type", || {
        let kinds: Vec<(String, u8)> = sorted(all.clone()?)
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        let d = wasi::FILETYPE_DIRECTORY.raw();
        let f = wasi::FILETYPE_REGULAR_FILE.raw();
        let l = wasi::FILETYPE_SYMBOLIC_LINK.raw();
        let want = [
            (".", d),
            ("..", d),
            ("a", f),
            ("bb", f),
            ("ccc", d),
            ("sym", l),
        ];
        eq(
            "types",
            kinds,
            want.map(|(n, k)| (n.to_string(), k)).to_vec(),
        )
    });
    r.check("cookies increase", || {
        let all = all.clone()?;
        ensure(
            all.windows(2).all(|w| w[0].next < w[1].next),
            "d_next does not increase",
        )
    });
    r.check("d_ino matches path_filestat_get", || {
        let all = all.clone()?;
        let a = all.iter().find(|e| e.name == "a").ok_or("no entry a")?;
        let st = ok("stat", sys::stat(data, NOFOLLOW, "readdir/a"))?;
        ensure(a.ino == st.ino, "d_ino differs from the file's inode")
    });
    r.check("resuming at a cookie", || {
        let all = all.clone()?;
        let rest = read_all(fd, 4096, all[0].next)?;
        eq("entries after the first", rest, all[1..].to_vec())
    });
    r.check("cookie at the end reads nothing", || {
        let all = all.clone()?;
        let last = all.last().ok_or("no entries")?.next;
        eq("fd_readdir", sys::readdir(fd, &mut [0u8; 256], last), Ok(0))
    });
    // A full buffer means "there may be more": the call fills all of it, cutting the entry.
    r.check("a short buffer is filled to its end", || {
        eq(
            "fd_readdir 30 bytes",
            sys::readdir(fd, &mut [0u8; 30], 0),
            Ok(30),
        )?;
        eq(
            "fd_readdir 10 bytes",
            sys::readdir(fd, &mut [0u8; 10], 0),
            Ok(10),
        )
    });
    r.check("small buffers give the same entries", || {
        eq("entries", read_all(fd, 40, 0)?, all.clone()?)
    });
    r.check("a new entry appears", || {
        sys::put(data, "readdir/dddd", b"d")?;
        let names: Vec<String> = read_all(fd, 4096, 0)?.into_iter().map(|e| e.name).collect();
        ensure(names.iter().any(|n| n == "dddd"), "dddd not listed").and(eq(
            "count",
            names.len(),
            7,
        ))
    });
    // wasmtime-wasi 48: readdir needs a directory descriptor; a file is EBADF (not ENOTDIR).
    r.check("a file is EBADF", || {
        let f = ok("open", sys::open_file(data, "readdir/a", RO))?;
        let res = fails(sys::readdir(f, &mut [0u8; 64], 0), wasi::ERRNO_BADF);
        let _ = sys::close(f);
        res
    });
    r.check("the preopen lists the families' files", || {
        let names: Vec<String> = read_all(data, 4096, 0)?
            .into_iter()
            .map(|e| e.name)
            .collect();
        ensure(
            ["append.log", "readdir", "tree"]
                .iter()
                .all(|w| names.iter().any(|n| n == w)),
            "a file is missing",
        )
    });
    let _ = sys::close(fd);
}
