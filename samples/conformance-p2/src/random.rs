//! wasi:random: random, insecure and insecure-seed.

use wasip2::random::{insecure, insecure_seed, random};

use crate::report::{ensure, Checker, R};

const RANDOM: &str = "wasi:random/random";
const INSECURE: &str = "wasi:random/insecure";
const SEED: &str = "wasi:random/insecure-seed";

pub fn check(c: &mut Checker) {
    let bytes = random::get_random_bytes;
    c.run(RANDOM, "get-random-bytes length", || length(32, bytes));
    c.run(RANDOM, "get-random-bytes differ", || {
        differ("bytes", || bytes(32))
    });
    c.run(RANDOM, "get-random-bytes zero", || length(0, bytes));
    let u64 = random::get_random_u64;
    c.run(RANDOM, "get-random-u64 differ", || differ("value", u64));
    let bytes = insecure::get_insecure_random_bytes;
    c.run(INSECURE, "get-insecure-random-bytes length", || {
        length(100, bytes)
    });
    c.run(INSECURE, "get-insecure-random-bytes differ", || {
        differ("bytes", || bytes(16))
    });
    let u64 = insecure::get_insecure_random_u64;
    c.run(INSECURE, "get-insecure-random-u64 differ", || {
        differ("value", u64)
    });
    // The seed is fixed for an instance (wasmtime-wasi keeps one per context).
    c.run(SEED, "insecure-seed stable", || {
        let a = insecure_seed::insecure_seed();
        let b = insecure_seed::insecure_seed();
        ensure(a == b, || "two calls gave different seeds".to_string())
            .and_then(|()| ensure(a != (0, 0), || "seed is zero".to_string()))
    });
}

/// `get(len)` must give `len` bytes.
fn length(len: u64, get: fn(u64) -> Vec<u8>) -> R {
    let n = get(len).len();
    ensure(n as u64 == len, || format!("got {n} bytes"))
}

/// Two calls of `get` must give different results (`what` says what they give).
fn differ<T: PartialEq>(what: &str, get: impl Fn() -> T) -> R {
    let (a, b) = (get(), get());
    ensure(a != b, || format!("two calls gave the same {what}"))
}
