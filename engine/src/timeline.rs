//! Opt-in start-path timestamps: with `WRUN_TIMINGS=1` each step prints
//! `wrun-timing <ms since main> <parent|child> <step>` on stderr, for the per-step breakdown
//! that docs/architecture.md and the benchmarks report. A disabled mark is one atomic load.
//! `WRUN_TIMINGS=abs` prints CLOCK_MONOTONIC milliseconds instead, so that the marks of
//! separate processes (a client, the daemon's pooled sandbox) line up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static BASE: OnceLock<Instant> = OnceLock::new();
static IN_CHILD: AtomicBool = AtomicBool::new(false);
static ABSOLUTE: AtomicBool = AtomicBool::new(false);

/// Turns the timeline on when `WRUN_TIMINGS` is set; call first thing in `main`.
pub fn enable_from_env() {
    if let Some(mode) = std::env::var_os("WRUN_TIMINGS") {
        let _ = BASE.set(Instant::now());
        ABSOLUTE.store(mode == "abs", Ordering::Relaxed);
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
    let ms = if ABSOLUTE.load(Ordering::Relaxed) {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or(0.0, |t| t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6)
    } else {
        base.elapsed().as_secs_f64() * 1e3
    };
    let line = format!("wrun-timing {ms:8.3} {side} {step}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}
