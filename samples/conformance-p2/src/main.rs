//! A WASI 0.2 conformance guest: calls the wasi:* interfaces directly (through the `wasip2`
//! bindings, so that error codes can be asserted) and prints one line per check.
//!
//! Run under wrun and under the wasmtime reference, its stdout, stderr, exit code and the files
//! it leaves in `/data` must be identical; a check that fails prints a FAIL line, so a broken
//! runtime shows up even without the comparison.
//!
//! Invocation contract (both runtimes start it this way):
//! - args `conformance-p2 alpha "two words"` (only args[1..] are checked);
//! - env CONF_ONE=1 and CONF_TWO=zwei;
//! - stdin `hello from stdin\n` then EOF; stdin and stdout not terminals;
//! - exactly one preopen, an empty read-write directory at `/data`;
//! - the network not granted, as `wasmtime run` leaves it by default: with wasmtime-wasi
//!   48.0.8 no TCP or UDP socket may be created, no address is permitted and there is no
//!   ip-name-lookup.
//!
//! Output: `<interface> <check>: ok` or `<interface> <check>: FAIL <detail>` per check, then
//! `summary: <F> interfaces, <C> checks, <P> passed`. Nothing that varies between runs (times,
//! random bytes, inodes, hashes) is ever printed. stderr gets exactly one line. The exit code
//! (through wasi:cli/exit) is 0 if every check passed, else 1.
//!
//! Where the expected error code is not fixed by the WASI spec but by wasmtime-wasi 48's
//! implementation, a comment says where it comes from.

mod cli;
mod clocks;
mod filesystem;
mod io;
mod random;
mod report;
mod sockets;

use wasip2::cli::exit;

use report::Checker;

fn main() {
    let mut c = Checker::new();

    let interfaces: [fn(&mut Checker); 6] = [
        cli::check,
        clocks::check,
        io::check,
        random::check,
        filesystem::check,
        sockets::check,
    ];
    for check in interfaces {
        check(&mut c);
    }

    let all_passed = c.summary();
    exit::exit(if all_passed { Ok(()) } else { Err(()) });
}
