//! wasi:filesystem: the /data preopen, the order of the filesystem checks, their shared helpers.

mod basics;
mod directories;
mod escape;
mod links;
mod streams;

use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags as DF, DescriptorType as DT, ErrorCode as FE,
    OpenFlags as OF, PathFlags as PF,
};

use crate::report::{ensure, ok, show, Checker, R};

const PREOPENS: &str = "wasi:filesystem/preopens";
const FS: &str = "wasi:filesystem/types";

pub fn check(c: &mut Checker) {
    let mut dirs = preopens::get_directories();
    c.run(PREOPENS, "get-directories one", || {
        let names: Vec<&str> = dirs.iter().map(|(_, n)| n.as_str()).collect();
        ensure(names == ["/data"], || format!("preopens {names:?}"))
    });
    if dirs.len() != 1 || dirs[0].1 != "/data" {
        c.check(
            FS,
            "preopen /data present",
            Err("no /data: skipping the rest".to_string()),
        );
        return;
    }
    let root = dirs.remove(0).0;
    basics::check(c, &root);
    streams::check(c, &root);
    directories::check(c, &root);
    links::check(c, &root);
    escape::check(c, &root);
    directories::final_listing(c, &root);
}

fn type_name(t: DT) -> &'static str {
    match t {
        DT::Unknown => "unknown",
        DT::BlockDevice => "block-device",
        DT::CharacterDevice => "character-device",
        DT::Directory => "directory",
        DT::Fifo => "fifo",
        DT::SymbolicLink => "symbolic-link",
        DT::RegularFile => "regular-file",
        DT::Socket => "socket",
    }
}

fn want_type(got: DT, want: DT) -> R {
    ensure(got == want, || {
        format!("expected {}, got {}", type_name(want), type_name(got))
    })
}

/// Reads a whole file through `read` at increasing offsets.
fn read_file(fd: &Descriptor) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    loop {
        let (bytes, end) = ok(fd.read(4096, data.len() as u64))?;
        data.extend_from_slice(&bytes);
        if end || bytes.is_empty() {
            return Ok(data);
        }
    }
}

fn want_content(fd: &Descriptor, want: &[u8]) -> R {
    let got = read_file(fd)?;
    ensure(got == want, || {
        format!("content {} expected {}", show(&got), show(want))
    })
}

fn open(dir: &Descriptor, path: &str, oflags: OF, flags: DF) -> Result<Descriptor, FE> {
    dir.open_at(PF::empty(), path, oflags, flags)
}

fn same_hash(a: fs::MetadataHashValue, b: fs::MetadataHashValue) -> bool {
    a.lower == b.lower && a.upper == b.upper
}
