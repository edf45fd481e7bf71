//! Signals on both sides: the parent forwards and reaps; the sandboxed child turns stop
//! signals and `--timeout` into an epoch interruption of the guest.

use super::parent_watch::ParentWatch;
use crate::idle_memory;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Signals the parent passes on to the workload, as `docker run` does with its sig-proxy.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// How long a guest may keep running after a stop request or timeout before it is cut off.
/// A guest running wasm code traps at once (the epoch); one still running after this is
/// blocked in a host call (a sleep, a read), where it has nothing left to do.
const STOP_GRACE: Duration = Duration::from_millis(250);

/// The signals the parent handles synchronously: the child's end, and those it forwards.
pub fn supervision_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(s);
    }
    set
}

/// Blocks the signals the parent will wait for synchronously; call before forking so that
/// none is lost. Returns the previous mask for the child to restore.
pub fn block_for_supervision() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&supervision_set()),
        Some(&mut old),
    )?;
    Ok(old)
}

static ENGINE: OnceLock<wasmtime::Engine> = OnceLock::new();
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
static TIMED_OUT: AtomicBool = AtomicBool::new(false);
static SERVING: AtomicBool = AtomicBool::new(false);

/// Why the guest was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(i32),
    Timeout,
}

/// In the child: restores the caller's mask, dies with the parent `dies_with` watches (if
/// any), and installs the stop and timeout handlers. Until [`arm`] names the engine, a stop
/// signal ends the child at once.
pub fn init_child(old_mask: &SigSet, dies_with: Option<&ParentWatch>) -> nix::Result<()> {
    if let Some(parent) = dies_with {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        parent.end_if_parent_died();
    }
    // Each handler blocks the other's signals: both re-arm the one timer.
    let mut alarm_only = SigSet::empty();
    alarm_only.add(Signal::SIGALRM);
    let stop = SigAction::new(SigHandler::Handler(on_stop), SaFlags::empty(), alarm_only);
    // SA_RESTART: the settling alarm rings in every run, and a guest's blocking read must
    // not see it as an interruption.
    let alarm = SigAction::new(
        SigHandler::Handler(on_alarm),
        SaFlags::SA_RESTART,
        supervision_set(),
    );
    // SAFETY: the handlers only touch atomics, call setitimer, clock_gettime, madvise and
    // _exit, and bump the epoch (an atomic add): all async-signal-safe.
    unsafe {
        for s in FORWARDED {
            signal::sigaction(s, &stop)?;
        }
        signal::sigaction(Signal::SIGALRM, &alarm)?;
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None)
}

/// What the child says when it has to cut off a guest that outlived its timeout's grace
/// (made before the alarm, written from the handler).
static TIMEOUT_NOTE: OnceLock<String> = OnceLock::new();

/// Set while the alarm is the one that tells the guest's process it has settled
/// ([`idle_memory`]): a guest asleep in a host call gives its start-up code pages back then.
static SETTLING: AtomicBool = AtomicBool::new(false);
/// When the `--timeout` ends the guest, on `CLOCK_MONOTONIC` in nanoseconds; 0 for never.
static TIMEOUT_AT: AtomicU64 = AtomicU64::new(0);

/// In the child: lets stop signals interrupt the guests of `engine` (one with interruption
/// checks compiled in; without, a stop signal or the timeout ends the process at once),
/// starts the `--timeout`, and has the process give its start-up code pages back once it has
/// run for [`idle_memory::SETTLED_AFTER`]. The one timer (`ITIMER_REAL`) rings for whichever
/// of the two comes first.
pub fn arm(engine: Option<&wasmtime::Engine>, timeout: Option<Duration>) {
    if let Some(engine) = engine {
        let _ = ENGINE.set(engine.clone());
    }
    idle_memory::prepare();
    SETTLING.store(true, Ordering::SeqCst);
    let mut first = idle_memory::SETTLED_AFTER;
    if let Some(timeout) = timeout {
        let _ = TIMEOUT_NOTE.set(format!(
            "wrun: timeout: the workload was interrupted after {}\n",
            humantime::format_duration(timeout)
        ));
        let at = monotonic_ns().saturating_add(timeout.as_nanos() as u64);
        TIMEOUT_AT.store(at, Ordering::SeqCst);
        first = first.min(timeout);
    }
    set_alarm(first);
}

/// In a serving child (`run -p`): a first stop signal is only recorded, for the server to stop
/// accepting and finish the requests in flight; a second one ends the process at once.
pub fn arm_server(engine: &wasmtime::Engine, timeout: Option<Duration>) {
    SERVING.store(true, Ordering::SeqCst);
    arm(Some(engine), timeout);
}

/// Whether a stop signal has arrived (see [`arm_server`]).
pub fn stop_requested() -> bool {
    STOP_SIGNAL.load(Ordering::SeqCst) != 0
}

/// Why the guest was interrupted, if it was.
pub fn stop_reason() -> Option<StopReason> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 if TIMED_OUT.load(Ordering::SeqCst) => Some(StopReason::Timeout),
        0 => None,
        signo => Some(StopReason::Signal(signo)),
    }
}

extern "C" fn on_stop(signo: libc::c_int) {
    let first = STOP_SIGNAL
        .compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first && SERVING.load(Ordering::SeqCst) {
        return;
    }
    match ENGINE.get() {
        Some(engine) if first => {
            engine.increment_epoch();
            // The timer now counts the grace, not the settling.
            SETTLING.store(false, Ordering::SeqCst);
            set_alarm(STOP_GRACE);
        }
        _ => exit_now(crate::exit::signaled(signo)),
    }
}

extern "C" fn on_alarm(_: libc::c_int) {
    if SETTLING.swap(false, Ordering::SeqCst) {
        idle_memory::drop_code_pages();
        let timeout_at = TIMEOUT_AT.load(Ordering::SeqCst);
        if timeout_at == 0 {
            return;
        }
        let now = monotonic_ns();
        if now < timeout_at {
            set_alarm(Duration::from_nanos(timeout_at - now));
            return;
        }
        // The timeout and the settling fell due together: the timeout's turn below.
    }
    let stop = STOP_SIGNAL.load(Ordering::SeqCst);
    if stop != 0 {
        exit_now(crate::exit::signaled(stop));
    }
    let again = TIMED_OUT.swap(true, Ordering::SeqCst);
    match ENGINE.get() {
        Some(engine) if !again => {
            engine.increment_epoch();
            set_alarm(STOP_GRACE);
        }
        // Still in a host call the epoch cannot reach (a blocking open, say), or no
        // interruption checks to reach the guest with.
        _ => {
            if let Some(note) = TIMEOUT_NOTE.get() {
                // SAFETY: write is async-signal-safe; the note lives as long as the process.
                unsafe { libc::write(2, note.as_ptr().cast(), note.len()) };
            }
            exit_now(crate::exit::TIMEOUT);
        }
    }
}

fn set_alarm(after: Duration) {
    let value = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: after.as_secs() as _,
            tv_usec: after.subsec_micros().max(1) as _,
        },
    };
    // SAFETY: setitimer is async-signal-safe and `value` is a valid itimerval.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &value, std::ptr::null_mut()) };
}

/// `CLOCK_MONOTONIC` in nanoseconds (async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime is async-signal-safe and writes only `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn exit_now(code: i32) -> ! {
    crate::sys::exit_now(code)
}
