//! wasi:random: random, insecure and insecure-seed.

use wasip2::random::{insecure, insecure_seed, random};

use crate::report::{ensure, Checker};

const RANDOM: &str = "wasi:random/random";
const INSECURE: &str = "wasi:random/insecure";
const SEED: &str = "wasi:random/insecure-seed";

pub fn check(c: &mut Checker) {
    c.run(RANDOM, "get-random-bytes length", || {
        let n = random::get_random_bytes(32).len();
        ensure(n == 32, || format!("got {n} bytes"))
    });
    c.run(RANDOM, "get-random-bytes differ", || {
        let a = random::get_random_bytes(32);
        let b = random::get_random_bytes(32);
        ensure(a != b, || "two calls gave the same bytes".to_string())
    });
    c.run(RANDOM, "get-random-bytes zero", || {
        let n = random::get_random_bytes(0).len();
        ensure(n == 0, || format!("got {n} bytes"))
    });
    c.run(RANDOM, "get-random-u64 differ", || {
        let (a, b) = (random::get_random_u64(), random::get_random_u64());
        ensure(a != b, || "two calls gave the same value".to_string())
    });
    c.run(INSECURE, "get-insecure-random-bytes length", || {
        let n = insecure::get_insecure_random_bytes(100).len();
        ensure(n == 100, || format!("got {n} bytes"))
    });
    c.run(INSECURE, "get-insecure-random-bytes differ", || {
        let a = insecure::get_insecure_random_bytes(16);
        let b = insecure::get_insecure_random_bytes(16);
        ensure(a != b, || "two calls gave the same bytes".to_string())
    });
    c.run(INSECURE, "get-insecure-random-u64 differ", || {
        let a = insecure::get_insecure_random_u64();
        let b = insecure::get_insecure_random_u64();
        ensure(a != b, || "two calls gave the same value".to_string())
    });
    // The seed is fixed for an instance (wasmtime-wasi keeps one per context).
    c.run(SEED, "insecure-seed stable", || {
        let a = insecure_seed::insecure_seed();
        let b = insecure_seed::insecure_seed();
        ensure(a == b, || "two calls gave different seeds".to_string())
            .and_then(|()| ensure(a != (0, 0), || "seed is zero".to_string()))
    });
}
