//! Paths that leave the /data preopen (.., absolute paths, escaping symlinks) are not-permitted.

use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags as DF, ErrorCode as FE, OpenFlags as OF, PathFlags as PF,
};

use crate::report::{ok, want_err, Checker};

use super::{open, want_content, FS};

pub fn check(c: &mut Checker, root: &Descriptor) {
    // Paths that leave the preopen: wasmtime-wasi's sandboxed path resolution fails them with an
    // io::ErrorKind::PermissionDenied error without an errno ("a path led outside of the
    // filesystem"), which From<io::Error> maps to not-permitted.
    c.check(
        FS,
        "open-at dotdot not-permitted",
        want_err(open(root, "..", OF::empty(), DF::READ), FE::NotPermitted),
    );
    c.check(
        FS,
        "open-at absolute not-permitted",
        want_err(
            open(root, "/etc/passwd", OF::empty(), DF::READ),
            FE::NotPermitted,
        ),
    );
    c.check(
        FS,
        "open-at nested dotdot escape not-permitted",
        want_err(
            open(root, "sub/../../x", OF::empty(), DF::READ),
            FE::NotPermitted,
        ),
    );
    c.run(FS, "open-at dotdot inside ok", || {
        let f = ok(open(root, "sub/../a.txt", OF::empty(), DF::READ))?;
        want_content(&f, b"hello")
    });
    c.check(
        FS,
        "stat-at dotdot not-permitted",
        want_err(root.stat_at(PF::empty(), ".."), FE::NotPermitted),
    );
    c.check(
        FS,
        "create-directory-at escape not-permitted",
        want_err(root.create_directory_at("../escaped"), FE::NotPermitted),
    );
    c.check(
        FS,
        "open-at create escape not-permitted",
        want_err(
            open(root, "../escaped.txt", OF::CREATE, DF::WRITE),
            FE::NotPermitted,
        ),
    );
    // An absolute symlink target is refused when the link is made (primitives::symlink).
    c.check(
        FS,
        "symlink-at absolute target not-permitted",
        want_err(root.symlink_at("/etc/passwd", "abs-sym"), FE::NotPermitted),
    );
    c.run(FS, "open-at follow escaping symlink not-permitted", || {
        ok(root.symlink_at("../outside", "esc-sym"))?;
        let r = want_err(
            root.open_at(PF::SYMLINK_FOLLOW, "esc-sym", OF::empty(), DF::READ),
            FE::NotPermitted,
        );
        ok(root.unlink_file_at("esc-sym"))?;
        r
    });
}
