//! Directories: create, open, remove, unlink, rename, read-directory, and the final /data listing.

use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags as DF, DescriptorType as DT, ErrorCode as FE, OpenFlags as OF,
    PathFlags as PF,
};

use crate::report::{ensure, ok, want_err, Checker};

use super::{open, type_name, want_content, want_type, FS};

pub fn check(c: &mut Checker, root: &Descriptor) {
    c.check(
        FS,
        "create-directory-at",
        ok(root.create_directory_at("sub")),
    );
    c.check(
        FS,
        "create-directory-at exist",
        want_err(root.create_directory_at("sub"), FE::Exist),
    );
    c.check(
        FS,
        "create-directory-at missing parent no-entry",
        want_err(root.create_directory_at("nope/deeper"), FE::NoEntry),
    );
    let sub_flags = DF::READ | DF::MUTATE_DIRECTORY;
    let opened = ok(root.open_at(PF::empty(), "sub", OF::DIRECTORY, sub_flags));
    let Some(sub) = c.checked(FS, "open-at directory", opened) else {
        return;
    };
    c.check(
        FS,
        "subdirectory get-type",
        ok(sub.get_type()).and_then(|t| want_type(t, DT::Directory)),
    );
    c.run(FS, "open-at nested path create", || {
        let f = ok(open(root, "sub/inner.txt", OF::CREATE, DF::WRITE))?;
        ok(f.write(b"inner\n", 0)).map(drop)
    });
    c.run(FS, "open-at relative to subdirectory", || {
        let f = ok(open(&sub, "inner.txt", OF::empty(), DF::READ))?;
        want_content(&f, b"inner\n")
    });
    c.check(
        FS,
        "open-at directory flag on file not-directory",
        want_err(
            open(root, "a.txt", OF::DIRECTORY, DF::READ),
            FE::NotDirectory,
        ),
    );
    c.check(
        FS,
        "open-at trailing slash on file not-directory",
        want_err(
            open(root, "a.txt/", OF::empty(), DF::READ),
            FE::NotDirectory,
        ),
    );
    // wasmtime-wasi rejects directory together with create/exclusive/truncate itself.
    c.check(
        FS,
        "open-at directory with create invalid",
        want_err(
            open(root, "newdir", OF::DIRECTORY | OF::CREATE, DF::READ),
            FE::Invalid,
        ),
    );
    // POSIX open(2) on a directory for writing: EISDIR.
    c.check(
        FS,
        "open-at directory for write is-directory",
        want_err(open(root, "sub", OF::empty(), DF::WRITE), FE::IsDirectory),
    );
    c.check(
        FS,
        "remove-directory-at not-empty",
        want_err(root.remove_directory_at("sub"), FE::NotEmpty),
    );
    c.check(
        FS,
        "remove-directory-at on file not-directory",
        want_err(root.remove_directory_at("a.txt"), FE::NotDirectory),
    );
    // Linux unlinkat(2) without AT_REMOVEDIR on a directory: EISDIR.
    c.check(
        FS,
        "unlink-file-at on directory is-directory",
        want_err(root.unlink_file_at("sub"), FE::IsDirectory),
    );
    c.run(FS, "remove-directory-at", || {
        ok(root.create_directory_at("empty-dir"))?;
        ok(root.remove_directory_at("empty-dir"))?;
        want_err(root.stat_at(PF::empty(), "empty-dir"), FE::NoEntry)
    });
    c.check(
        FS,
        "remove-directory-at missing no-entry",
        want_err(root.remove_directory_at("empty-dir"), FE::NoEntry),
    );
    c.run(FS, "unlink-file-at", || {
        ok(root.unlink_file_at("trunc.txt"))?;
        want_err(root.stat_at(PF::empty(), "trunc.txt"), FE::NoEntry)
    });
    c.check(
        FS,
        "unlink-file-at missing no-entry",
        want_err(root.unlink_file_at("trunc.txt"), FE::NoEntry),
    );
    c.run(FS, "rename-at into subdirectory", || {
        ok(root.rename_at("copy.txt", &sub, "copy.txt"))?;
        want_err(root.stat_at(PF::empty(), "copy.txt"), FE::NoEntry)?;
        let s = ok(sub.stat_at(PF::empty(), "copy.txt"))?;
        ensure(s.size == 33, || format!("moved file size {}", s.size))
    });
    c.run(FS, "rename-at replaces file", || {
        let f = ok(open(root, "old.txt", OF::CREATE, DF::WRITE))?;
        ok(f.write(b"old\n", 0))?;
        let g = ok(open(root, "renamed.txt", OF::CREATE, DF::WRITE))?;
        ok(g.write(b"to be replaced\n", 0))?;
        drop((f, g));
        ok(root.rename_at("old.txt", root, "renamed.txt"))?;
        want_err(root.stat_at(PF::empty(), "old.txt"), FE::NoEntry)?;
        let r = ok(open(root, "renamed.txt", OF::empty(), DF::READ))?;
        want_content(&r, b"old\n")
    });
    c.check(
        FS,
        "rename-at missing no-entry",
        want_err(root.rename_at("old.txt", root, "x.txt"), FE::NoEntry),
    );
    c.run(FS, "rename-at directory", || {
        ok(root.create_directory_at("dir-a"))?;
        ok(root.rename_at("dir-a", root, "dir-b"))?;
        let s = ok(root.stat_at(PF::empty(), "dir-b"))?;
        want_type(s.type_, DT::Directory)?;
        ok(root.remove_directory_at("dir-b"))
    });
    c.run(FS, "read-directory subdirectory", || {
        let entries = ok(sub.read_directory())?;
        let mut names = Vec::new();
        while let Some(e) = ok(entries.read_directory_entry())? {
            names.push((e.name, type_name(e.type_)));
        }
        names.sort();
        ensure(
            names
                == [
                    ("copy.txt".to_string(), "regular-file"),
                    ("inner.txt".to_string(), "regular-file"),
                ],
            || format!("entries {names:?}"),
        )
    });
    c.check(FS, "sync-data directory", ok(sub.sync_data()));
    c.run(FS, "stat-at nested", || {
        ok(root.stat_at(PF::empty(), "sub/inner.txt")).and_then(|s| {
            want_type(s.type_, DT::RegularFile)?;
            ensure(s.size == 6, || format!("size {}", s.size))
        })
    });
}

pub fn final_listing(c: &mut Checker, root: &Descriptor) {
    // What stays in /data for the tree comparison.
    c.run(FS, "read-directory entries and types", || {
        let entries = ok(root.read_directory())?;
        let mut names = Vec::new();
        while let Some(e) = ok(entries.read_directory_entry())? {
            names.push((e.name, type_name(e.type_)));
        }
        names.sort();
        let want = [
            ("a-sym", "symbolic-link"),
            ("a.txt", "regular-file"),
            ("renamed.txt", "regular-file"),
            ("stream.txt", "regular-file"),
            ("sub", "directory"),
        ];
        let got: Vec<(&str, &str)> = names.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        ensure(got == want, || format!("entries {got:?}"))
    });
    c.run(FS, "read-directory-entry after end none", || {
        let entries = ok(root.read_directory())?;
        while ok(entries.read_directory_entry())?.is_some() {}
        let again = ok(entries.read_directory_entry())?;
        ensure(again.is_none(), || "an entry after the end".to_string())
    });
}
