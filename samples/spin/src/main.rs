//! Burns CPU in a loop that never calls the host: forever, or for the seconds given as its
//! first argument (then prints how many rounds it ran).

use std::time::{Duration, Instant};

fn main() {
    let limit = std::env::args()
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let start = Instant::now();
    let mut rounds: u64 = 0;
    let mut x: u64 = 1;
    loop {
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        rounds += 1;
        if limit.is_some_and(|limit| start.elapsed() >= limit) {
            println!("spin: {rounds} rounds");
            return;
        }
    }
}
