//! Opt-in start-path timestamps: with `WRUN_TIMINGS=1` each step prints
//! `wrun-timing <ms since main> <parent|child> <step>` on stderr, for the per-step breakdown
//! that docs/architecture.md and the benchmarks report. A disabled mark is one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static BASE: OnceLock<Instant> = OnceLock::new();
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Turns the timeline on when `WRUN_TIMINGS` is set; call first thing in `main`.
pub fn enable_from_env() {
    if std::env::var_os("WRUN_TIMINGS").is_some() {
        let _ = BASE.set(Instant::now());
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Labels this process's marks as the sandboxed child's.
pub fn in_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
}

/// Records that `step` just finished.
pub fn mark(step: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let Some(base) = BASE.get() else { return };
    let side = if IN_CHILD.load(Ordering::Relaxed) {
        "child"
    } else {
        "parent"
    };
    // One write per line, so the lines of the two processes never interleave.
    let line = format!(
        "wrun-timing {:8.3} {side} {step}\n",
        base.elapsed().as_secs_f64() * 1e3
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}
