//! `poll_oneoff` over subscriptions that name sockets: their readiness, the clocks, and any
//! other descriptor counted ready at once.

use super::abi::{self, Errno, Result};
use super::fds::SocketFds;
use std::future::Future;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const SUBSCRIPTION_SIZE: u32 = 48;
const EVENT_SIZE: u32 = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

/// One subscription, as read from the guest.
#[derive(Debug, Clone, Copy)]
pub enum Subscription {
    Clock {
        userdata: u64,
        id: u32,
        timeout: u64,
        absolute: bool,
    },
    Fd {
        userdata: u64,
        fd: u32,
        write: bool,
    },
}

/// One event, to be written for the guest.
struct Event {
    userdata: u64,
    error: Errno,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

/// The `count` subscriptions at `at`.
pub fn subscriptions(memory: &[u8], at: u32, count: u32) -> Result<Vec<Subscription>> {
    (0..count)
        .map(|i| {
            let base = i
                .checked_mul(SUBSCRIPTION_SIZE)
                .and_then(|offset| at.checked_add(offset))
                .ok_or(Errno::FAULT)?;
            let userdata = abi::read_u64(memory, base)?;
            let tag = abi::slice(memory, base + 8, 1)?[0];
            Ok(match tag {
                EVENTTYPE_CLOCK => Subscription::Clock {
                    userdata,
                    id: abi::read_u32(memory, base + 16)?,
                    timeout: abi::read_u64(memory, base + 24)?,
                    absolute: abi::read_u16(memory, base + 40)? & SUBCLOCKFLAGS_ABSTIME != 0,
                },
                EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE => Subscription::Fd {
                    userdata,
                    fd: abi::read_u32(memory, base + 16)?,
                    write: tag == EVENTTYPE_FD_WRITE,
                },
                _ => return Err(Errno::INVAL),
            })
        })
        .collect()
}

/// Waits until a subscription is ready and writes the events to `out`: their number.
/// `monotonic_now` is the guest's monotonic clock now (for absolute deadlines on it).
pub async fn poll(
    memory: &mut [u8],
    fds: &mut SocketFds,
    subscriptions: &[Subscription],
    out: u32,
    monotonic_now: Option<u64>,
) -> Result<u32> {
    let started = Instant::now();
    let deadlines = subscriptions
        .iter()
        .map(|s| deadline(s, started, monotonic_now))
        .collect::<Result<Vec<_>>>()?;
    let earliest = deadlines.iter().flatten().min().copied();
    let mut sleep = earliest.map(|at| Box::pin(tokio::time::sleep_until(at)));
    let events = std::future::poll_fn(|cx| {
        let mut events = Vec::new();
        for subscription in subscriptions {
            let Subscription::Fd {
                userdata,
                fd,
                write,
            } = *subscription
            else {
                continue;
            };
            let kind = if write {
                EVENTTYPE_FD_WRITE
            } else {
                EVENTTYPE_FD_READ
            };
            let event = |error, nbytes, flags| Event {
                userdata,
                error,
                kind,
                nbytes,
                flags,
            };
            if !fds.holds(fd) {
                // Files are always ready, as wasmtime-wasi reports them; see usage.md for stdin.
                events.push(event(Errno::SUCCESS, 0, 0));
                continue;
            }
            let socket = match fds.get(fd) {
                Ok(socket) => socket,
                Err(errno) => {
                    events.push(event(errno, 0, 0));
                    continue;
                }
            };
            if write && socket.poll_writable(cx) {
                events.push(event(Errno::SUCCESS, 64 * 1024, 0));
            } else if !write && socket.poll_readable(cx) {
                let (nbytes, hangup) = socket.readable_bytes();
                let flags = if hangup { abi::EVENT_HANGUP } else { 0 };
                events.push(event(Errno::SUCCESS, nbytes, flags));
            }
        }
        let now_due = sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if events.is_empty() && !now_due {
            return Poll::Pending;
        }
        let now = Instant::now();
        for (subscription, due) in subscriptions.iter().zip(&deadlines) {
            if let (Subscription::Clock { userdata, .. }, Some(due)) = (subscription, due) {
                if *due <= now {
                    events.push(Event {
                        userdata: *userdata,
                        error: Errno::SUCCESS,
                        kind: EVENTTYPE_CLOCK,
                        nbytes: 0,
                        flags: 0,
                    });
                }
            }
        }
        Poll::Ready(events)
    })
    .await;
    for (i, event) in (0u32..).zip(&events) {
        write_event(memory, out + i * EVENT_SIZE, event)?;
    }
    Ok(events.len() as u32)
}

/// When a clock subscription falls due; `None` for a descriptor.
fn deadline(
    subscription: &Subscription,
    now: Instant,
    monotonic_now: Option<u64>,
) -> Result<Option<Instant>> {
    let Subscription::Clock {
        id,
        timeout,
        absolute,
        ..
    } = *subscription
    else {
        return Ok(None);
    };
    let after = match (absolute, id) {
        (false, _) => timeout,
        (true, CLOCK_REALTIME) => {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            timeout.saturating_sub(since_epoch)
        }
        (true, CLOCK_MONOTONIC) => timeout.saturating_sub(monotonic_now.ok_or(Errno::INVAL)?),
        (true, _) => return Err(Errno::INVAL),
    };
    Ok(Some(now + Duration::from_nanos(after)))
}

fn write_event(memory: &mut [u8], at: u32, event: &Event) -> Result<()> {
    let mut bytes = [0u8; EVENT_SIZE as usize];
    bytes[0..8].copy_from_slice(&event.userdata.to_le_bytes());
    bytes[8..10].copy_from_slice(&event.error.0.to_le_bytes());
    bytes[10] = event.kind;
    bytes[16..24].copy_from_slice(&event.nbytes.to_le_bytes());
    bytes[24..26].copy_from_slice(&event.flags.to_le_bytes());
    abi::write(memory, at, &bytes)
}

/// Whether any subscription names a descriptor of `fds`: only then is the poll ours.
pub fn names_socket(fds: &SocketFds, subscriptions: &[Subscription]) -> bool {
    subscriptions
        .iter()
        .any(|s| matches!(s, Subscription::Fd { fd, .. } if fds.holds(*fd)))
}

/// Whether an absolute deadline on the monotonic clock needs the guest's clock read.
pub fn needs_monotonic(subscriptions: &[Subscription]) -> bool {
    subscriptions.iter().any(|s| {
        matches!(
            s,
            Subscription::Clock {
                id: CLOCK_MONOTONIC,
                absolute: true,
                ..
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock subscription (48 bytes) on `id` for `timeout` ns, absolute or not.
    fn clock(userdata: u64, id: u32, timeout: u64, absolute: bool) -> [u8; 48] {
        let mut bytes = [0u8; 48];
        bytes[0..8].copy_from_slice(&userdata.to_le_bytes());
        bytes[8] = EVENTTYPE_CLOCK;
        bytes[16..20].copy_from_slice(&id.to_le_bytes());
        bytes[24..32].copy_from_slice(&timeout.to_le_bytes());
        bytes[40..42].copy_from_slice(&u16::from(absolute).to_le_bytes());
        bytes
    }

    fn fd_read(userdata: u64, fd: u32) -> [u8; 48] {
        let mut bytes = [0u8; 48];
        bytes[0..8].copy_from_slice(&userdata.to_le_bytes());
        bytes[8] = EVENTTYPE_FD_READ;
        bytes[16..20].copy_from_slice(&fd.to_le_bytes());
        bytes
    }

    #[test]
    fn subscriptions_are_read_at_the_witx_offsets() {
        let memory = [clock(7, CLOCK_MONOTONIC, 5_000_000, false), fd_read(9, 3)].concat();
        let subs = subscriptions(&memory, 0, 2).unwrap();
        assert!(matches!(
            subs[0],
            Subscription::Clock {
                userdata: 7,
                id: CLOCK_MONOTONIC,
                timeout: 5_000_000,
                absolute: false
            }
        ));
        assert!(matches!(
            subs[1],
            Subscription::Fd {
                userdata: 9,
                fd: 3,
                write: false
            }
        ));
        // Past the end of memory, or an unknown tag.
        assert_eq!(subscriptions(&memory, 48, 2).unwrap_err(), Errno::FAULT);
        let mut bad = fd_read(1, 3);
        bad[8] = 9;
        assert_eq!(subscriptions(&bad, 0, 1).unwrap_err(), Errno::INVAL);
    }

    #[test]
    fn deadlines_follow_the_clock_and_its_flags() {
        let now = Instant::now();
        let relative = subscriptions(&clock(1, CLOCK_REALTIME, 2_000, false), 0, 1).unwrap();
        let due = deadline(&relative[0], now, None).unwrap();
        assert_eq!(due, Some(now + Duration::from_micros(2)));
        // An absolute wall-clock time already past is due at once.
        let past = subscriptions(&clock(1, CLOCK_REALTIME, 1, true), 0, 1).unwrap();
        assert_eq!(deadline(&past[0], now, None).unwrap(), Some(now));
        // An absolute monotonic time counts from the guest's clock.
        let mono = subscriptions(&clock(1, CLOCK_MONOTONIC, 1_500, true), 0, 1).unwrap();
        let due = deadline(&mono[0], now, Some(1_000)).unwrap();
        assert_eq!(due, Some(now + Duration::from_nanos(500)));
        assert!(needs_monotonic(&mono));
        // The CPU-time clocks have no deadline here.
        let cpu = subscriptions(&clock(1, 2, 1, true), 0, 1).unwrap();
        assert_eq!(deadline(&cpu[0], now, None).unwrap_err(), Errno::INVAL);
        let socket = subscriptions(&fd_read(1, 3), 0, 1).unwrap();
        assert_eq!(deadline(&socket[0], now, None).unwrap(), None);
    }
}
