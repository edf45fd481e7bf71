//! The parent's wait for its workload: reaps it with its resource usage, forwards stop
//! signals to it, relays the output of piped streams, and enforces the timeout backstop.

use super::signals;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Which standard stream output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives what the workload writes on piped streams.
pub trait OutputSink {
    fn output(&mut self, stream: Stream, data: &[u8]);
}

/// A sink for runs whose streams are not piped.
pub struct NoOutput;

impl OutputSink for NoOutput {
    fn output(&mut self, _: Stream, _: &[u8]) {}
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub status: WaitStatus,
    /// User plus system CPU time of the workload.
    pub cpu_time: Duration,
}

/// How waiting ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Ended(Ended),
    DeadlinePassed,
}

/// Waits for `child`, forwarding stop signals to it and relaying `pipes` into `sink`, until
/// it ends (its pipes then drained to their end) or `deadline` passes. The signals must be
/// blocked ([`signals::block_for_supervision`]).
pub fn wait_for(
    child: Pid,
    deadline: Option<Instant>,
    mut pipes: Vec<(Stream, OwnedFd)>,
    sink: &mut dyn OutputSink,
) -> nix::Result<Waited> {
    let signals = SignalFd::with_flags(
        &signals::supervision_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?;
    loop {
        if let Some(ended) = reap(child)? {
            for (stream, pipe) in pipes {
                while drain(stream, &pipe, sink) {}
            }
            return Ok(Waited::Ended(ended));
        }
        let timeout = match deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                None => return Ok(Waited::DeadlinePassed),
            },
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            pipes
                .iter()
                .map(|(_, pipe)| PollFd::new(pipe.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            forward_pending(&signals, child);
        }
        let mut index = 1;
        pipes.retain(|(stream, pipe)| {
            let keep = !ready[index] || drain(*stream, pipe, sink);
            index += 1;
            keep
        });
    }
}

/// Reads what is there from `pipe` into `sink`; false at end of stream.
///
/// The buffer is the thread's own, on the heap, made on the first call: a 64 KiB stack buffer
/// made every caller probe 16 stack pages on entry, relaying or not — 16 page faults (≈40 µs
/// here) in each waiting parent and pooled client, twice in the standalone parent.
pub(crate) fn drain(stream: Stream, pipe: impl AsFd, sink: &mut dyn OutputSink) -> bool {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.resize(64 << 10, 0);
        match nix::unistd::read(pipe, buffer) {
            Ok(0) => false,
            Ok(n) => {
                sink.output(stream, &buffer[..n]);
                true
            }
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => true,
            Err(_) => false,
        }
    })
}

fn forward_pending(signals: &SignalFd, child: Pid) {
    while let Ok(Some(info)) = signals.read_signal() {
        let signo = info.ssi_signo as i32;
        if signo != libc::SIGCHLD {
            tracing::debug!(signo, "forwarding signal to the workload");
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(child.as_raw(), signo) };
        }
    }
}

/// `wait4` without blocking: the child's status and CPU time once it has ended.
pub(crate) fn reap(child: Pid) -> nix::Result<Option<Ended>> {
    let mut status = 0;
    // SAFETY: rusage is plain data, fully written by wait4 when it returns the pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointers are valid for the duration of the call.
    let pid = unsafe { libc::wait4(child.as_raw(), &mut status, libc::WNOHANG, &mut usage) };
    match pid {
        0 => Ok(None),
        p if p < 0 => Err(nix::Error::last()),
        p => {
            let time = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            Ok(Some(Ended {
                status: WaitStatus::from_raw(Pid::from_raw(p), status)?,
                cpu_time: time(usage.ru_utime) + time(usage.ru_stime),
            }))
        }
    }
}
