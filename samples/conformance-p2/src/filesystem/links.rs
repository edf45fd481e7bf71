//! Hard and symbolic links: link-at, symlink-at, readlink-at, following or not following them.

use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags as DF, DescriptorType as DT, ErrorCode as FE, OpenFlags as OF,
    PathFlags as PF,
};

use crate::report::{ensure, ok, want_err, Checker};

use super::{open, same_hash, want_content, want_type, FS};

pub fn check(c: &mut Checker, root: &Descriptor) {
    c.run(FS, "link-at", || {
        ok(root.link_at(PF::empty(), "a.txt", root, "a-hard.txt"))?;
        let s = ok(root.stat_at(PF::empty(), "a.txt"))?;
        ensure(s.link_count == 2, || format!("link-count {}", s.link_count))
    });
    c.run(FS, "link-at same object", || {
        let a = ok(open(root, "a.txt", OF::empty(), DF::READ))?;
        let h = ok(open(root, "a-hard.txt", OF::empty(), DF::READ))?;
        ensure(a.is_same_object(&h), || {
            "hard link is not the same object".to_string()
        })?;
        let ha = ok(a.metadata_hash())?;
        let hh = ok(root.metadata_hash_at(PF::empty(), "a-hard.txt"))?;
        ensure(same_hash(ha, hh), || "hard link hashes differ".to_string())
    });
    c.check(
        FS,
        "link-at exist",
        want_err(
            root.link_at(PF::empty(), "a.txt", root, "a-hard.txt"),
            FE::Exist,
        ),
    );
    // wasmtime-wasi refuses symlink-follow on link-at's old path (Dir::link_at).
    c.check(
        FS,
        "link-at symlink-follow invalid",
        want_err(
            root.link_at(PF::SYMLINK_FOLLOW, "a.txt", root, "a-hard2.txt"),
            FE::Invalid,
        ),
    );
    c.check(
        FS,
        "link-at missing no-entry",
        want_err(
            root.link_at(PF::empty(), "nothing.txt", root, "n2.txt"),
            FE::NoEntry,
        ),
    );
    c.run(FS, "unlink-file-at hard link", || {
        ok(root.unlink_file_at("a-hard.txt"))?;
        let s = ok(root.stat_at(PF::empty(), "a.txt"))?;
        ensure(s.link_count == 1, || format!("link-count {}", s.link_count))
    });

    c.check(FS, "symlink-at", ok(root.symlink_at("a.txt", "a-sym")));
    c.check(
        FS,
        "symlink-at exist",
        want_err(root.symlink_at("a.txt", "a-sym"), FE::Exist),
    );
    c.run(FS, "readlink-at", || {
        ok(root.readlink_at("a-sym")).and_then(|t| ensure(t == "a.txt", || format!("target {t:?}")))
    });
    c.check(
        FS,
        "readlink-at on file invalid",
        want_err(root.readlink_at("a.txt"), FE::Invalid),
    );
    c.run(FS, "stat-at no follow symbolic-link", || {
        ok(root.stat_at(PF::empty(), "a-sym")).and_then(|s| want_type(s.type_, DT::SymbolicLink))
    });
    c.run(FS, "stat-at follow regular-file", || {
        ok(root.stat_at(PF::SYMLINK_FOLLOW, "a-sym")).and_then(|s| {
            want_type(s.type_, DT::RegularFile)?;
            ensure(s.size == 5, || format!("size {}", s.size))
        })
    });
    c.run(FS, "metadata-hash-at follow equals target", || {
        let t = ok(root.metadata_hash_at(PF::empty(), "a.txt"))?;
        let f = ok(root.metadata_hash_at(PF::SYMLINK_FOLLOW, "a-sym"))?;
        let n = ok(root.metadata_hash_at(PF::empty(), "a-sym"))?;
        ensure(same_hash(t, f), || {
            "followed hash differs from the target's".to_string()
        })?;
        ensure(!same_hash(t, n), || {
            "the link's own hash equals the target's".to_string()
        })
    });
    c.run(FS, "open-at symlink follow", || {
        let f = ok(root.open_at(PF::SYMLINK_FOLLOW, "a-sym", OF::empty(), DF::READ))?;
        want_content(&f, b"hello")
    });
    // O_NOFOLLOW on a symlink: ELOOP.
    c.check(
        FS,
        "open-at symlink no follow loop",
        want_err(open(root, "a-sym", OF::empty(), DF::READ), FE::Loop),
    );
    c.run(FS, "unlink-file-at symlink keeps target", || {
        ok(root.symlink_at("a.txt", "b-sym"))?;
        ok(root.unlink_file_at("b-sym"))?;
        want_err(root.stat_at(PF::empty(), "b-sym"), FE::NoEntry)?;
        ok(root.stat_at(PF::empty(), "a.txt")).map(drop)
    });
}
