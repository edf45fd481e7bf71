//! wasi:clocks: monotonic-clock (now, resolution, subscribe-duration/-instant) and wall-clock.

use wasip2::clocks::{monotonic_clock, wall_clock};

use crate::report::{ensure, Checker};

const MONO: &str = "wasi:clocks/monotonic-clock";
const WALL: &str = "wasi:clocks/wall-clock";

/// A millisecond in monotonic-clock nanoseconds.
pub const MS: u64 = 1_000_000;

pub fn check(c: &mut Checker) {
    c.run(MONO, "now monotonic", || {
        let a = monotonic_clock::now();
        let b = monotonic_clock::now();
        ensure(b >= a, || {
            "second reading earlier than the first".to_string()
        })
    });
    c.run(MONO, "resolution nonzero", || {
        ensure(monotonic_clock::resolution() > 0, || {
            "resolution is 0".to_string()
        })
    });
    c.run(MONO, "subscribe-duration block waits", || {
        let start = monotonic_clock::now();
        let p = monotonic_clock::subscribe_duration(5 * MS);
        p.block();
        let elapsed = monotonic_clock::now().saturating_sub(start);
        ensure(elapsed >= 5 * MS, || "woke before 5 ms".to_string())
            .and_then(|()| ensure(p.ready(), || "not ready after block".to_string()))
    });
    c.run(MONO, "subscribe-duration long not ready", || {
        let p = monotonic_clock::subscribe_duration(60_000 * MS);
        ensure(!p.ready(), || "a 60 s timer is ready at once".to_string())
    });
    // A deadline already reached may still report not-ready on the very first ready() call
    // (wasmtime-wasi's Deadline::Past yields once), so only its state after block is checked.
    c.run(MONO, "subscribe-duration zero block", || {
        let p = monotonic_clock::subscribe_duration(0);
        p.block();
        ensure(p.ready(), || {
            "a 0 ns timer is not ready after block".to_string()
        })
    });
    c.run(MONO, "subscribe-instant past block", || {
        let p = monotonic_clock::subscribe_instant(monotonic_clock::now().saturating_sub(1));
        p.block();
        ensure(p.ready(), || {
            "a past instant is not ready after block".to_string()
        })
    });

    c.run(WALL, "now after 2020", || {
        let now = wall_clock::now();
        ensure(
            now.seconds > 1_577_836_800 && now.nanoseconds < 1_000_000_000,
            || "wall clock before 2020 or nanoseconds out of range".to_string(),
        )
    });
    c.run(WALL, "resolution nonzero", || {
        let r = wall_clock::resolution();
        ensure(r.seconds > 0 || r.nanoseconds > 0, || {
            "resolution is 0".to_string()
        })
    });
}
