//! poll_oneoff, and the socket calls on descriptors that are not sockets.

use crate::report::{ensure, eq, fails, fails_at, ok, Report};
use crate::sys::{self, Fd, BAD_FD, RO, STDIN, STDOUT};
use wasi::{
    Event, Subscription, SubscriptionClock, SubscriptionFdReadwrite, SubscriptionU, SubscriptionUU,
};

const MS: u64 = 1_000_000;

fn clock(
    userdata: u64,
    id: wasi::Clockid,
    timeout: u64,
    flags: wasi::Subclockflags,
) -> Subscription {
    Subscription {
        userdata,
        u: SubscriptionU {
            tag: wasi::EVENTTYPE_CLOCK.raw(),
            u: SubscriptionUU {
                clock: SubscriptionClock {
                    id,
                    timeout,
                    precision: 0,
                    flags,
                },
            },
        },
    }
}

fn fd_sub(userdata: u64, kind: wasi::Eventtype, fd: Fd) -> Subscription {
    let rw = SubscriptionFdReadwrite {
        file_descriptor: fd,
    };
    Subscription {
        userdata,
        u: SubscriptionU {
            tag: kind.raw(),
            u: if kind == wasi::EVENTTYPE_FD_READ {
                SubscriptionUU { fd_read: rw }
            } else {
                SubscriptionUU { fd_write: rw }
            },
        },
    }
}

/// Runs poll_oneoff, returning the events written.
fn poll(subs: &[Subscription]) -> Result<Vec<Event>, wasi::Errno> {
    // SAFETY: all-zero is a valid Event (errno SUCCESS, type CLOCK).
    let mut events: Vec<Event> = (0..subs.len().max(1))
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    // SAFETY: `subs` and `events` are live arrays of `subs.len()` elements.
    let n = unsafe { wasi::poll_oneoff(subs.as_ptr(), events.as_mut_ptr(), subs.len()) }?;
    events.truncate(n.min(subs.len()));
    Ok(events)
}

/// The event of one subscription, checked for type and error.
fn event_of(events: &[Event], userdata: u64, kind: wasi::Eventtype) -> Result<Event, String> {
    let e = events
        .iter()
        .find(|e| e.userdata == userdata)
        .ok_or_else(|| format!("no event for subscription {userdata}"))?;
    ensure(
        e.type_ == kind,
        format!("event {userdata} has the wrong type"),
    )?;
    ensure(
        e.error == wasi::ERRNO_SUCCESS,
        format!("event {userdata} has an error"),
    )?;
    Ok(*e)
}

fn elapsed_since(start: u64) -> Result<u64, String> {
    Ok(ok("clock_time_get", sys::monotonic())?.saturating_sub(start))
}

pub fn poll_oneoff(r: &mut Report, data: Fd) {
    r.family("poll");
    r.check("relative clock fires after its timeout", || {
        let start = ok("clock_time_get", sys::monotonic())?;
        let events = ok(
            "poll_oneoff",
            poll(&[clock(7, wasi::CLOCKID_MONOTONIC, 10 * MS, 0)]),
        )?;
        let elapsed = elapsed_since(start)?;
        eq("events", events.len(), 1)?;
        event_of(&events, 7, wasi::EVENTTYPE_CLOCK)?;
        ensure(elapsed >= 10 * MS, "returned before 10 ms")?;
        ensure(elapsed < 5_000 * MS, "took over 5 s")
    });
    r.check("the earlier of two clocks fires alone", || {
        let subs = [
            clock(1, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
            clock(2, wasi::CLOCKID_MONOTONIC, 5 * MS, 0),
        ];
        let start = ok("clock_time_get", sys::monotonic())?;
        let events = ok("poll_oneoff", poll(&subs))?;
        ensure(
            elapsed_since(start)? < 4_000 * MS,
            "waited for the later clock",
        )?;
        eq("events", events.len(), 1)?;
        event_of(&events, 2, wasi::EVENTTYPE_CLOCK).map(|_| ())
    });
    r.check("absolute monotonic clock", || {
        let start = ok("clock_time_get", sys::monotonic())?;
        let subs = [clock(
            3,
            wasi::CLOCKID_MONOTONIC,
            start + 5 * MS,
            wasi::SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME,
        )];
        let events = ok("poll_oneoff", poll(&subs))?;
        ensure(
            elapsed_since(start)? >= 5 * MS,
            "returned before the deadline",
        )?;
        event_of(&events, 3, wasi::EVENTTYPE_CLOCK).map(|_| ())
    });
    r.check("absolute realtime clock in the past fires at once", || {
        let now = ok("clock_time_get", sys::realtime())?;
        let start = ok("clock_time_get", sys::monotonic())?;
        let subs = [
            clock(
                4,
                wasi::CLOCKID_REALTIME,
                now - 1_000 * MS,
                wasi::SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME,
            ),
            clock(5, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
        ];
        let events = ok("poll_oneoff", poll(&subs))?;
        ensure(elapsed_since(start)? < 4_000 * MS, "did not fire at once")?;
        eq("events", events.len(), 1)?;
        event_of(&events, 4, wasi::EVENTTYPE_CLOCK).map(|_| ())
    });
    let file = sys::put(data, "poll.txt", b"poll me")
        .and_then(|_| ok("open", sys::open_file(data, "poll.txt", RO)));
    let Some(file) = r.setup("poll.txt", file) else {
        return;
    };
    r.check("a regular file is ready to read", || {
        let subs = [
            clock(1, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
            fd_sub(9, wasi::EVENTTYPE_FD_READ, file),
        ];
        let start = ok("clock_time_get", sys::monotonic())?;
        let events = ok("poll_oneoff", poll(&subs))?;
        ensure(elapsed_since(start)? < 4_000 * MS, "waited for the clock")?;
        eq("events", events.len(), 1)?;
        // wasmtime-wasi 48 reports nbytes 1 for a ready file (not the bytes left): only
        // "at least one" is asserted.
        let e = event_of(&events, 9, wasi::EVENTTYPE_FD_READ)?;
        ensure(e.fd_readwrite.nbytes >= 1, "nbytes is 0")
    });
    r.check("stdout is ready to write, stdin at EOF to read", || {
        let subs = [
            clock(1, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
            fd_sub(8, wasi::EVENTTYPE_FD_WRITE, STDOUT),
        ];
        let events = ok("poll_oneoff", poll(&subs))?;
        event_of(&events, 8, wasi::EVENTTYPE_FD_WRITE).map(|_| ())?;
        let subs = [
            clock(1, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
            fd_sub(6, wasi::EVENTTYPE_FD_READ, STDIN),
        ];
        let events = ok("poll_oneoff", poll(&subs))?;
        event_of(&events, 6, wasi::EVENTTYPE_FD_READ).map(|_| ())
    });
    r.check(
        "no subscriptions is EINVAL, a bad fd or a directory EBADF",
        || {
            fails(poll(&[]), wasi::ERRNO_INVAL)?;
            // wasmtime-wasi 48 fails the whole call (instead of reporting the error in the event)
            // for a descriptor it cannot poll: EBADF for a bad fd and for a directory, and EINVAL
            // for a CPU-time clock.
            for (fd, what) in [(BAD_FD, "bad fd"), (data, "directory")] {
                let subs = [
                    clock(1, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
                    fd_sub(2, wasi::EVENTTYPE_FD_READ, fd),
                ];
                fails_at(what, poll(&subs), wasi::ERRNO_BADF)?;
            }
            Ok(())
        },
    );
    // Two subscriptions: wasmtime sleeps for a lone relative clock without looking at its id.
    r.check("a CPU-time clock is EINVAL", || {
        let subs = [
            clock(1, wasi::CLOCKID_PROCESS_CPUTIME_ID, MS, 0),
            clock(2, wasi::CLOCKID_MONOTONIC, 5_000 * MS, 0),
        ];
        fails(poll(&subs), wasi::ERRNO_INVAL)
    });
    let _ = sys::close(file);
    let _ = sys::unlink(data, "poll.txt");
}

pub fn sock(r: &mut Report, data: Fd) {
    r.family("sock");
    // wasmtime-wasi 48 implements none of the p1 socket calls: any open descriptor is
    // ENOTSOCK, and only a descriptor that is not open at all is EBADF.
    let file = sys::put(data, "sock.txt", b"not a socket")
        .and_then(|_| ok("open", sys::open_file(data, "sock.txt", RO)));
    let Some(file) = r.setup("sock.txt", file) else {
        return;
    };
    let mut byte = [0u8; 4];
    let iov = [sys::iovec(&mut byte)];
    let ciov = [sys::ciovec(b"x")];
    // SAFETY (all socket calls): the iovecs point at live buffers of their lengths.
    let accept = |fd| unsafe { wasi::sock_accept(fd, 0) };
    let recv = |fd| unsafe { wasi::sock_recv(fd, &iov, 0) };
    let send = |fd| unsafe { wasi::sock_send(fd, &ciov, 0) };
    let shutdown = |fd, how| unsafe { wasi::sock_shutdown(fd, how) };
    let (notsock, badf) = (wasi::ERRNO_NOTSOCK, wasi::ERRNO_BADF);
    r.check("a file is ENOTSOCK", || {
        fails_at("sock_accept", accept(file), notsock)?;
        fails_at("sock_recv", recv(file), notsock)?;
        fails_at("sock_send", send(file), notsock)?;
        let how = wasi::SDFLAGS_RD | wasi::SDFLAGS_WR;
        fails_at("sock_shutdown", shutdown(file, how), notsock)
    });
    r.check("the preopen and stdout are ENOTSOCK", || {
        fails_at("sock_accept preopen", accept(data), notsock)?;
        fails_at("sock_send stdout", send(STDOUT), notsock)
    });
    r.check("a bad fd is EBADF", || {
        fails_at("sock_recv", recv(BAD_FD), badf)?;
        fails_at("sock_shutdown", shutdown(BAD_FD, wasi::SDFLAGS_RD), badf)
    });
    r.check("the file is unchanged", || {
        sys::content_is("content", data, "sock.txt", b"not a socket")
    });
    let _ = sys::close(file);
    let _ = sys::unlink(data, "sock.txt");
}
