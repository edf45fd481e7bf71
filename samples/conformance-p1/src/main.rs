//! A WASI preview-1 conformance guest.
//!
//! The test runs this module under wrun and under a reference wasmtime (the wasmtime 48
//! crate with wasmtime-wasi, configured like `wasmtime run`) and compares stdout, stderr, the
//! exit code and the files left in the preopen. The guest also asserts what each call
//! returns, so a broken runtime shows up as FAIL lines even without the comparison.
//!
//! Contract (the test starts both runtimes this way):
//! - args `alpha "two words"` after argv[0]; env CONF_ONE=1 and CONF_TWO=zwei;
//! - stdin `hello from stdin\n` then EOF (a pipe);
//! - fd 3: an empty read-write directory preopened as `/data`.
//!
//! Output: one stdout line per check, `<family> <check>: ok` or `... : FAIL <detail>`, then
//! `summary: ...`; on stderr exactly `conformance-p1: stderr works`. Exit 0 if every check
//! passed, else 1, through proc_exit. Nothing printed varies between runs (times, inodes and
//! random bytes are only compared inside the guest).
//!
//! The calls go through the raw `wasi` 0.11 bindings, so each errno can be asserted. Where
//! the expected errno is wasmtime-wasi 48's choice rather than the spec's, a comment at the
//! check says so.
//!
//! Files left in /data (the host tree the test compares):
//!   append.log  "First\nsecond\nthird\n"       dirs/kept/      (empty directory)
//!   advise.txt  "advice\n"                     io.txt          "0123456789abcdefghijAB"
//!   pwrite.bin  "HELLO" 5×NUL "XZ"             readdir/{a,bb,ccc/,dddd,sym -> a}
//!   renamed.txt "rename me\n"                  stat.txt        "hello" (fixed atime, mtime)
//!   sync.txt    "synced\n"                     times.txt, times-link -> times.txt (fixed times)
//!   tree/{target.txt, hard.txt (hard link), link -> target.txt}

mod fdio;
mod paths;
mod poll;
mod process;
mod report;
mod sys;

use std::io::Write;

fn main() {
    let mut r = report::Report::new();

    process::args(&mut r);
    process::environ(&mut r);
    process::clocks(&mut r);
    process::random(&mut r);
    process::sched(&mut r);
    // Before anything else touches stdin.
    fdio::stdio(&mut r);

    let data = paths::prestat(&mut r);
    fdio::read_write(&mut r, data);
    fdio::pread_pwrite(&mut r, data);
    fdio::append(&mut r, data);
    fdio::seek(&mut r, data);
    fdio::sync(&mut r, data);
    fdio::fdstat(&mut r, data);
    fdio::filestat(&mut r, data);
    fdio::advise(&mut r, data);
    fdio::close_renumber(&mut r, data);
    paths::path_open(&mut r, data);
    paths::dirs(&mut r, data);
    paths::rename(&mut r, data);
    paths::link(&mut r, data);
    paths::symlink(&mut r, data);
    paths::pathstat(&mut r, data);
    paths::readdir(&mut r, data);
    poll::poll_oneoff(&mut r, data);
    poll::sock(&mut r, data);

    println!("{}", r.summary());
    let _ = std::io::stdout().flush();
    let code = if r.all_passed() { 0 } else { 1 };
    // SAFETY: ends the process; nothing is left to run or flush.
    unsafe { wasi::proc_exit(code) }
}
