//! The process's view of its surroundings: arguments, environment, clocks, randomness and
//! scheduling.

use crate::report::{ensure, eq, fails_at, ok, Outcome, Report};
use crate::sys;
use std::ptr;

/// What the `*_get` calls wrote: the strings (without their NULs), or why they are wrong.
type Strings = Result<Vec<Vec<u8>>, String>;

/// Fills a buffer sized as `sizes` said through `get`, and checks what a caller relying on
/// those sizes relies on: nothing written past either buffer, every pointer inside the string
/// buffer, every string NUL-terminated, and the strings filling the buffer exactly.
fn strings(
    sizes: unsafe fn() -> Result<(usize, usize), wasi::Errno>,
    get: unsafe fn(*mut *mut u8, *mut u8) -> Result<(), wasi::Errno>,
) -> Strings {
    // SAFETY: returns two integers.
    let (count, size) = ok("sizes_get", unsafe { sizes() })?;
    const GUARD: usize = 16;
    let mut ptrs = vec![ptr::null_mut::<u8>(); count + GUARD];
    let mut buf = vec![0xAAu8; size + GUARD];
    // SAFETY: both buffers are at least as large as the sizes the runtime just reported.
    ok("get", unsafe { get(ptrs.as_mut_ptr(), buf.as_mut_ptr()) })?;
    if ptrs[count..].iter().any(|p| !p.is_null()) {
        return Err("pointers written past the reported count".into());
    }
    if buf[size..].iter().any(|&b| b != 0xAA) {
        return Err("bytes written past the reported buffer size".into());
    }
    let base = buf.as_ptr() as usize;
    let mut out = Vec::with_capacity(count);
    let mut total = 0;
    for &p in &ptrs[..count] {
        let off = (p as usize).wrapping_sub(base);
        if off >= size {
            return Err("a pointer outside the string buffer".into());
        }
        let len = buf[off..size]
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string without its NUL")?;
        total += len + 1;
        out.push(buf[off..off + len].to_vec());
    }
    ensure(
        total == size,
        format!("strings fill {total} of {size} bytes"),
    )?;
    Ok(out)
}

pub fn args(r: &mut Report) {
    r.family("args");
    let args = strings(wasi::args_sizes_get, wasi::args_get);
    r.check("sizes and buffers agree", || {
        args.as_ref().map(|_| ()).map_err(Clone::clone)
    });
    let args: Vec<String> = args
        .unwrap_or_default()
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let want = ["alpha".to_string(), "two words".to_string()];
    // argv[0] is whatever the runtime passes (a path, a name): only its presence is checked.
    r.check("argv[1..] is alpha, \"two words\", as std sees it", || {
        eq("argc", args.len(), 3)?;
        eq("argv[1..]", &args[1..], &want[..])?;
        let std_args: Vec<String> = std::env::args().skip(1).collect();
        eq("std::env::args()[1..]", &std_args[..], &want[..])
    });
}

pub fn environ(r: &mut Report) {
    r.family("environ");
    let env = strings(wasi::environ_sizes_get, wasi::environ_get);
    r.check("sizes and buffers agree", || {
        env.as_ref().map(|_| ()).map_err(Clone::clone)
    });
    let env = env.unwrap_or_default();
    // The runtime may add variables of its own: only the two given ones are asserted.
    let find = |key: &[u8]| {
        env.iter()
            .filter(|e| e.len() > key.len() && e.starts_with(key) && e[key.len()] == b'=')
            .map(|e| String::from_utf8_lossy(&e[key.len() + 1..]).into_owned())
            .collect::<Vec<_>>()
    };
    r.check("CONF_ONE=1 and CONF_TWO=zwei, once each", || {
        eq("CONF_ONE values", find(b"CONF_ONE"), vec!["1".to_string()])?;
        eq(
            "CONF_TWO values",
            find(b"CONF_TWO"),
            vec!["zwei".to_string()],
        )?;
        ensure(
            env.iter()
                .all(|e| e.iter().position(|&b| b == b'=').is_some_and(|i| i > 0)),
            "an entry without a key or '='",
        )
    });
    r.check("std::env::var agrees", || {
        eq(
            "CONF_TWO",
            std::env::var("CONF_TWO").ok(),
            Some("zwei".to_string()),
        )
    });
}

pub fn clocks(r: &mut Report) {
    r.family("clocks");
    // SAFETY (all clock calls): integers only.
    r.check("realtime and monotonic resolutions", || {
        [wasi::CLOCKID_REALTIME, wasi::CLOCKID_MONOTONIC]
            .into_iter()
            .try_for_each(|clock| {
                let res = ok("clock_res_get", unsafe { wasi::clock_res_get(clock) })?;
                ensure(
                    res > 0 && res <= 1_000_000_000,
                    "resolution not in (0, 1 s]",
                )
            })
    });
    // wasmtime-wasi 48 defines these: p1's CPU-time clocks have no preview-2 counterpart and
    // both calls answer EBADF for them (not EINVAL/ENOTSUP).
    r.check("cputime resolutions and times are EBADF", || {
        fails_at(
            "process res",
            unsafe { wasi::clock_res_get(wasi::CLOCKID_PROCESS_CPUTIME_ID) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "thread res",
            unsafe { wasi::clock_res_get(wasi::CLOCKID_THREAD_CPUTIME_ID) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "process time",
            unsafe { wasi::clock_time_get(wasi::CLOCKID_PROCESS_CPUTIME_ID, 1) },
            wasi::ERRNO_BADF,
        )?;
        fails_at(
            "thread time",
            unsafe { wasi::clock_time_get(wasi::CLOCKID_THREAD_CPUTIME_ID, 1) },
            wasi::ERRNO_BADF,
        )
    });
    // An id outside the enum is not an error but a trap in wasmtime-wasi 48 (wiggle
    // rejects the argument before the call): not checked, it would end the run.
    r.check("realtime is after 2020", || {
        let now = ok("clock_time_get", sys::realtime())?;
        ensure(
            now > 1_577_836_800 * 1_000_000_000,
            "realtime before 2020-01-01",
        )
    });
    r.check("monotonic never decreases", || {
        let mut last = ok("clock_time_get", sys::monotonic())?;
        for _ in 0..1000 {
            let now = ok("clock_time_get", sys::monotonic())?;
            ensure(now >= last, "monotonic went backwards")?;
            last = now;
        }
        Ok(())
    });
}

pub fn random(r: &mut Report) {
    r.family("random");
    let fill = |n: usize| -> Result<Vec<u8>, String> {
        // Two different fill bytes: a runtime that writes nothing is caught whatever the
        // buffer held.
        let mut a = vec![0u8; n];
        let mut b = vec![0xFFu8; n];
        // SAFETY: the buffers are live for their lengths.
        ok("random_get", unsafe { wasi::random_get(a.as_mut_ptr(), n) })?;
        ok("random_get", unsafe { wasi::random_get(b.as_mut_ptr(), n) })?;
        Ok([a, b].concat())
    };
    r.check(
        "two calls differ, a large buffer is filled to its end",
        || {
            let v = fill(32)?;
            ensure(v[..32] != v[32..], "two 32-byte draws are equal")?;
            let v = fill(4096)?;
            ensure(
                v[4096 - 16..4096].iter().any(|&x| x != 0)
                    && v[8192 - 16..].iter().any(|&x| x != 0xFF),
                "the last bytes were not filled",
            )
        },
    );
    r.check("zero length", || {
        let mut b = [0u8; 1];
        // SAFETY: length 0: nothing is written.
        ok("random_get", unsafe { wasi::random_get(b.as_mut_ptr(), 0) })?;
        eq("untouched byte", b[0], 0)
    });
}

pub fn sched(r: &mut Report) {
    r.family("sched");
    // SAFETY: no arguments.
    r.check("sched_yield, 100 times", || -> Outcome {
        for _ in 0..100 {
            ok("sched_yield", unsafe { wasi::sched_yield() })?;
        }
        Ok(())
    });
}
