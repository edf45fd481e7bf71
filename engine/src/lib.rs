//! wrun: WebAssembly workloads in wasmtime inside a namespaced, cgroup-limited Linux sandbox.

pub mod allocator;
pub mod code_pages;
pub mod config;
pub mod container;
pub mod exit;
pub mod handoff;
pub mod idle_memory;
pub mod image;
pub mod launch;
pub mod net;
pub mod pool;
pub mod progress;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod sys;
pub mod timeline;
pub mod wasm;

/// `eprintln!` that never panics: with stderr closed or a reader gone (`wrun run … 2>&1 |
/// head -1`) the line is lost, not the run (std's macro panics, and wrun would exit 101 with
/// its workload still to supervise).
#[macro_export]
macro_rules! err_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` that never panics, as [`out_line!`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that never panics: a reader that went away (`wrun ps | head -1`) is not an
/// error, as in ripgrep and coreutils.
#[macro_export]
macro_rules! out_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
