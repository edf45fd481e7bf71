//! The `wrun` command line: parses and validates, then hands a checked spec to the library.

// An explicit path, so that src/bin/wrun-hooked.rs can include this file as a module.
#[path = "cli/mod.rs"]
mod cli;

use std::process::ExitCode;
use wrun::container::hand_over;

/// musl's allocator is several times slower than glibc's on wasmtime's many small
/// allocations; mimalloc makes the static musl build faster than the glibc one (musl's is
/// kept for small blocks of a process that sets up and waits, see the module).
#[global_allocator]
static ALLOCATOR: wrun::allocator::Allocator = wrun::allocator::Allocator;

pub fn main() -> ExitCode {
    wrun::code_pages::hint_huge_pages();
    wrun::timeline::enable_from_env();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|flag| flag == hand_over::RESUME_FLAG)
    {
        exit_now(hand_over::resume(args.get(2).map(|fd| fd.as_os_str())));
    }
    let args = match cli::with_default_subcommand(args) {
        Ok(args) => args,
        Err(message) => {
            wrun::err_line!("wrun: {message}");
            return exit_code(wrun::exit::RUNTIME_ERROR);
        }
    };
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(code) => return exit_code(code),
    };
    cli::init_logging(cli.verbosity());
    wrun::timeline::mark("logging");
    let error_log = cli.error_log();
    let code = match cli.execute() {
        Ok(code) => code,
        Err(failure) => {
            if !failure.is_silent() {
                wrun::err_line!("wrun: {:#}", failure.error);
                if let Some((path, json)) = &error_log {
                    cli::log_error(path, *json, &format!("{:#}", failure.error));
                }
            }
            tracing::debug!("exit {}: wrun failed, not the workload", failure.code);
            failure.code
        }
    };
    exit_now(code)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(u8::MAX))
}

/// Ends the process once the command is done, without the allocator's and the runtime's
/// teardown (≈0.1–0.3 ms): on `wrun run` that time sits between the workload's end and the
/// caller's prompt, and the kernel frees the memory anyway.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Every command has finished its work and dropped its guards (state, cgroups, mounts)
    // before returning here.
    wrun::sys::exit_now(code & 0xff)
}
