//! Polling, with a deadline, for what a run does in the background.

use std::time::{Duration, Instant};

/// Polls `poll` every 20 ms until it gives a value; fails with `failure` after `secs` seconds.
#[track_caller]
pub fn wait_for<T>(secs: u64, failure: &str, mut poll: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = poll() {
            return value;
        }
        assert!(Instant::now() < deadline, "{failure} (waited {secs} s)");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 20 ms until it is true; fails with `failure` after `secs` seconds.
#[track_caller]
pub fn wait_until(secs: u64, failure: &str, mut done: impl FnMut() -> bool) {
    wait_for(secs, failure, || done().then_some(()))
}
