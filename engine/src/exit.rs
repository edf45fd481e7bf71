//! The exit codes wrun reports, kept apart from the guest's own codes (WASI allows 0..=125).

/// wrun itself failed: bad flags, a missing `--dir`, a sandbox that could not be set up.
pub const RUNTIME_ERROR: i32 = 125;
/// The module exists but cannot be run: not wasm, invalid, unsatisfied imports, not a command.
pub const CANNOT_EXECUTE: i32 = 126;
/// The module file does not exist.
pub const NOT_FOUND: i32 = 127;
/// `--timeout` expired and the guest was interrupted.
pub const TIMEOUT: i32 = 124;
/// The guest trapped (128 + SIGABRT, as the wasmtime CLI reports it).
pub const TRAP: i32 = 134;

/// The exit code for a workload ended by `signal` (the shell's convention).
pub fn signaled(signal: i32) -> i32 {
    128 + signal
}
