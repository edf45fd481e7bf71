//! wasi:filesystem/types on one file: open flags, read/write, stat, set-size, sync, times, hashes.

use wasip2::clocks::wall_clock;
use wasip2::filesystem::types::{
    Advice, Descriptor, DescriptorFlags as DF, DescriptorType as DT, ErrorCode as FE, NewTimestamp,
    OpenFlags as OF, PathFlags as PF,
};

use crate::report::{ensure, ok, show, want_err, Checker};

use super::{open, same_hash, want_content, want_type, FS};

pub fn check(c: &mut Checker, root: &Descriptor) {
    let rw = DF::READ | DF::WRITE;

    c.check(
        FS,
        "preopen get-type directory",
        ok(root.get_type()).and_then(|t| want_type(t, DT::Directory)),
    );
    // A read-write preopen reports read + mutate-directory (wasmtime-wasi Descriptor::get_flags).
    c.run(FS, "preopen get-flags", || {
        ok(root.get_flags()).and_then(|f| {
            ensure(f == DF::READ | DF::MUTATE_DIRECTORY, || {
                format!("flags {f:?}")
            })
        })
    });
    c.check(
        FS,
        "preopen stat directory",
        ok(root.stat()).and_then(|s| want_type(s.type_, DT::Directory)),
    );
    c.run(FS, "read-directory empty", || {
        ok(root.read_directory()).and_then(|entries| {
            let first = ok(entries.read_directory_entry())?;
            ensure(first.is_none(), || {
                format!("found {:?}", first.map(|e| e.name))
            })
        })
    });
    c.check(
        FS,
        "open-at missing no-entry",
        want_err(
            open(root, "missing.txt", OF::empty(), DF::READ),
            FE::NoEntry,
        ),
    );

    let Some(a) = c.checked(
        FS,
        "open-at create",
        ok(open(root, "a.txt", OF::CREATE, rw)),
    ) else {
        return;
    };
    c.check(
        FS,
        "open-at create exclusive exist",
        want_err(
            open(root, "a.txt", OF::CREATE | OF::EXCLUSIVE, rw),
            FE::Exist,
        ),
    );
    c.check(
        FS,
        "file get-type regular-file",
        ok(a.get_type()).and_then(|t| want_type(t, DT::RegularFile)),
    );
    c.run(FS, "file get-flags read write", || {
        ok(a.get_flags()).and_then(|f| ensure(f == rw, || format!("flags {f:?}")))
    });
    c.run(FS, "write at offsets", || {
        ok(a.write(b"hello world", 0)).and_then(|n| {
            ensure(n == 11, || format!("wrote {n}"))?;
            let n = ok(a.write(b"WASI", 6))?;
            ensure(n == 4, || format!("wrote {n}"))
        })
    });
    c.run(FS, "read at offset", || {
        ok(a.read(5, 6)).and_then(|(data, end)| {
            ensure(data == b"WASId" && !end, || {
                format!("read {} end {end}", show(&data))
            })
        })
    });
    c.run(FS, "read whole", || {
        ok(a.read(100, 0)).and_then(|(data, end)| {
            ensure(data == b"hello WASId" && !end, || {
                format!("read {} end {end}", show(&data))
            })
        })
    });
    c.run(FS, "read at eof end", || {
        ok(a.read(100, 11)).and_then(|(data, end)| {
            ensure(data.is_empty() && end, || {
                format!("read {} end {end}", data.len())
            })
        })
    });
    c.run(FS, "stat", || {
        ok(a.stat()).and_then(|s| {
            want_type(s.type_, DT::RegularFile)?;
            ensure(s.size == 11 && s.link_count == 1, || {
                format!("size {} link-count {}", s.size, s.link_count)
            })
        })
    });
    c.run(FS, "set-size shrink", || {
        ok(a.set_size(5)).and_then(|()| want_content(&a, b"hello"))
    });
    c.run(FS, "set-size grow zero-fills", || {
        ok(a.set_size(8)).and_then(|()| want_content(&a, b"hello\0\0\0"))
    });
    ok(a.set_size(5)).ok();
    c.check(FS, "sync", ok(a.sync()));
    c.check(FS, "sync-data", ok(a.sync_data()));
    c.check(FS, "advise", ok(a.advise(0, 5, Advice::Sequential)));
    // File-only calls on a directory are bad-descriptor in wasmtime-wasi (Descriptor::file()).
    c.check(
        FS,
        "advise on directory bad-descriptor",
        want_err(root.advise(0, 0, Advice::Normal), FE::BadDescriptor),
    );
    c.check(
        FS,
        "set-size on directory bad-descriptor",
        want_err(root.set_size(0), FE::BadDescriptor),
    );
    c.check(FS, "sync directory", ok(root.sync()));

    let atime = wall_clock::Datetime {
        seconds: 1_200_000_000,
        nanoseconds: 0,
    };
    let mtime = wall_clock::Datetime {
        seconds: 1_300_000_000,
        nanoseconds: 250_000_000,
    };
    c.run(FS, "set-times timestamps", || {
        ok(a.set_times(
            NewTimestamp::Timestamp(atime),
            NewTimestamp::Timestamp(mtime),
        ))
        .and_then(|()| {
            let s = ok(a.stat())?;
            let m = s.data_modification_timestamp;
            let at = s.data_access_timestamp;
            ensure(
                m.is_some_and(|m| m.seconds == mtime.seconds && m.nanoseconds == mtime.nanoseconds),
                || "modification time not as set".to_string(),
            )?;
            ensure(at.is_some_and(|t| t.seconds == atime.seconds), || {
                "access time not as set".to_string()
            })
        })
    });
    c.run(FS, "set-times-at no-change keeps", || {
        let later = wall_clock::Datetime {
            seconds: 1_400_000_000,
            nanoseconds: 0,
        };
        ok(root.set_times_at(
            PF::empty(),
            "a.txt",
            NewTimestamp::NoChange,
            NewTimestamp::Timestamp(later),
        ))
        .and_then(|()| {
            let s = ok(root.stat_at(PF::empty(), "a.txt"))?;
            ensure(
                s.data_modification_timestamp
                    .is_some_and(|m| m.seconds == later.seconds),
                || "modification time not as set".to_string(),
            )?;
            ensure(
                s.data_access_timestamp
                    .is_some_and(|t| t.seconds == atime.seconds),
                || "access time changed".to_string(),
            )
        })
    });
    c.run(FS, "set-times now", || {
        let before = wall_clock::now().seconds;
        ok(a.set_times(NewTimestamp::Now, NewTimestamp::Now)).and_then(|()| {
            let s = ok(a.stat())?;
            // Filesystem timestamps come from a coarse clock: allow it to lag a little.
            ensure(
                s.data_modification_timestamp
                    .is_some_and(|m| m.seconds + 2 >= before),
                || "modification time not now".to_string(),
            )
        })
    });
    // Leave a fixed modification time on the file that stays.
    ok(a.set_times(
        NewTimestamp::Timestamp(atime),
        NewTimestamp::Timestamp(mtime),
    ))
    .ok();

    c.run(FS, "metadata-hash equals metadata-hash-at", || {
        let h = ok(a.metadata_hash())?;
        let h_at = ok(root.metadata_hash_at(PF::empty(), "a.txt"))?;
        ensure(same_hash(h, h_at), || "hashes differ".to_string())
    });
    c.run(FS, "is-same-object two opens", || {
        let again = ok(open(root, "a.txt", OF::empty(), DF::READ))?;
        ensure(a.is_same_object(&again), || {
            "not the same object".to_string()
        })
    });
    c.run(FS, "is-same-object file and directory", || {
        ensure(!a.is_same_object(root), || {
            "file and directory the same".to_string()
        })
    });
    c.run(FS, "metadata-hash differs for others", || {
        let h = ok(a.metadata_hash())?;
        let h_root = ok(root.metadata_hash())?;
        ensure(!same_hash(h, h_root), || {
            "file and directory hash the same".to_string()
        })
    });

    // A descriptor opened without write: the host's pwrite fails with EBADF.
    c.run(FS, "write on read-only descriptor bad-descriptor", || {
        let ro = ok(open(root, "a.txt", OF::empty(), DF::READ))?;
        want_err(ro.write(b"x", 0), FE::BadDescriptor)
    });
    c.run(FS, "open-at truncate", || {
        let t = ok(open(root, "trunc.txt", OF::CREATE, DF::WRITE))?;
        ok(t.write(b"to be truncated", 0))?;
        drop(t);
        let t = ok(open(root, "trunc.txt", OF::TRUNCATE, rw))?;
        let s = ok(t.stat())?;
        ensure(s.size == 0, || format!("size {} after truncate", s.size))?;
        ok(t.write(b"short", 0)).map(drop)
    });
}
