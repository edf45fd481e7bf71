//! The supervisor's one wait for its sandbox, standalone or pooled: reaps it with its
//! resource usage, forwards stop signals to it, relays the output of piped streams, watches
//! whatever else the caller names (a pooled run's client and sandbox), and enforces the
//! timeout backstop.

use super::signals;
use crate::idle_memory;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Which standard stream output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

    /// The workload has run for [`idle_memory::SETTLED_AFTER`] and this process only waits
    /// from now on: it gives back what it touched while starting (a detached container's
    /// monitor hands its wait over to a fresh process instead, `container::hand_over`).
    fn settled(&mut self) {
        idle_memory::give_back();
    }
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
    /// The sandbox said how its guest ended before it was gone (a pooled run's code).
    Reported(i32),
}

/// What else a wait watches, besides the sandbox's end, stop signals and output.
pub trait Events {
    /// The descriptors to watch this round.
    fn watched(&self) -> Vec<BorrowedFd<'_>>;
    /// The `index`th watched descriptor is readable: `Some(code)` ends the wait.
    fn fired(&mut self, index: usize, child: Pid) -> Option<i32>;
    /// Whether the stop signals this process gets go on to the sandbox (as `docker run`'s
    /// sig-proxy). A pooled run's are its client's to relay, not its supervisor's.
    fn forwards_signals(&self) -> bool {
        true
    }
}

/// A wait that watches nothing else (a standalone run).
pub struct NoEvents;

impl Events for NoEvents {
    fn watched(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    fn fired(&mut self, _: usize, _: Pid) -> Option<i32> {
        None
    }
}

/// Waits for `child`, forwarding stop signals to it, relaying `pipes` into `sink` and
/// passing `events` what they watch, until it ends (its pipes then drained to their end),
/// `events` end the wait, or `deadline` passes. The signals must be blocked
/// ([`signals::block_for_supervision`]).
pub fn wait_for(
    child: Pid,
    deadline: Option<Instant>,
    mut pipes: Vec<(Stream, OwnedFd)>,
    sink: &mut dyn OutputSink,
    events: &mut dyn Events,
) -> nix::Result<Waited> {
    let watched_signals = if events.forwards_signals() {
        signals::supervision_set()
    } else {
        let mut child_only = nix::sys::signal::SigSet::empty();
        child_only.add(nix::sys::signal::Signal::SIGCHLD);
        child_only
    };
    let signals = SignalFd::with_flags(
        &watched_signals,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?;
    // Once the child has run for a while, this process only waits: what it touched while
    // starting goes back to the kernel, once.
    let mut settles_at = Some(Instant::now() + idle_memory::SETTLED_AFTER);
    loop {
        if let Some(ended) = reap(child)? {
            for (stream, pipe) in pipes {
                while drain(stream, &pipe, sink) {}
            }
            return Ok(Waited::Ended(ended));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Waited::DeadlinePassed);
        }
        if settles_at.is_some_and(|s| Instant::now() >= s) {
            settles_at = None;
            sink.settled();
        }
        let wake_at = [deadline, settles_at].into_iter().flatten().min();
        let timeout = wake_at.map_or(PollTimeout::NONE, |at| {
            let left = at.saturating_duration_since(Instant::now());
            // Rounded up: a poll that wakes a fraction of a millisecond early spins.
            PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
        });
        let watched = events.watched();
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            pipes
                .iter()
                .map(|(_, pipe)| PollFd::new(pipe.as_fd(), PollFlags::POLLIN)),
        );
        fds.extend(watched.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
        let ready = fired(&fds);
        drop((fds, watched));
        if ready[0] {
            forward_pending(&signals, child);
        }
        let (pipes_ready, events_ready) = ready[1..].split_at(pipes.len());
        let mut index = 0;
        pipes.retain(|(stream, pipe)| {
            let keep = !pipes_ready[index] || drain(*stream, pipe, sink);
            index += 1;
            keep
        });
        for (index, _) in events_ready.iter().enumerate().filter(|(_, r)| **r) {
            if let Some(code) = events.fired(index, child) {
                return Ok(Waited::Reported(code));
            }
        }
    }
}

/// Reads what is there from `pipe` into `sink`; false at end of stream.
///
/// The buffer is the thread's own, on the heap, made on the first call: a 64 KiB stack buffer
/// made every caller probe 16 stack pages on entry, relaying or not — 16 page faults (≈40 µs
/// here) in each waiting parent and pooled client, twice in the standalone parent. It is
/// read into without being zeroed first, so only the pages the output fills are touched: a
/// container that printed one line keeps one page of it, not 16 (64 KiB less in each idle
/// container's monitor).
pub(crate) fn drain(stream: Stream, pipe: impl AsFd, sink: &mut dyn OutputSink) -> bool {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        buffer.reserve_exact(64 << 10);
        let spare = buffer.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the spare capacity.
        let read = unsafe {
            libc::read(
                pipe.as_fd().as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
            )
        };
        match nix::errno::Errno::result(read) {
            Ok(0) => false,
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` bytes.
                unsafe { buffer.set_len(n as usize) };
                sink.output(stream, buffer);
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
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signo) {
                let _ = nix::sys::signal::kill(child, signal);
            }
        }
    }
}

/// The child's status and CPU time once it has ended, without blocking.
pub(crate) fn reap(child: Pid) -> nix::Result<Option<Ended>> {
    let Some((status, usage)) = crate::sys::wait4_nohang(child)? else {
        return Ok(None);
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(Some(Ended {
        status: WaitStatus::from_raw(child, status)?,
        cpu_time: time(usage.ru_utime) + time(usage.ru_stime),
    }))
}

/// Which of `fds` the `poll` that filled them reported on: readable, closed or in error.
pub(crate) fn fired(fds: &[PollFd<'_>]) -> Vec<bool> {
    fds.iter()
        .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Collected(Vec<(Stream, Vec<u8>)>);

    impl OutputSink for Collected {
        fn output(&mut self, stream: Stream, data: &[u8]) {
            self.0.push((stream, data.to_vec()));
        }
    }

    #[test]
    fn drain_relays_every_byte_in_reads_of_at_most_64_kib_then_the_end() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let written: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let written = written.clone();
            std::thread::spawn(move || std::fs::File::from(write).write_all(&written).unwrap())
        };
        let mut sink = Collected(Vec::new());
        while drain(Stream::Stderr, &read, &mut sink) {}
        writer.join().unwrap();
        assert!(sink.0.iter().all(|(stream, _)| *stream == Stream::Stderr));
        assert!(sink
            .0
            .iter()
            .all(|(_, data)| !data.is_empty() && data.len() <= 64 << 10));
        let relayed: Vec<u8> = sink.0.into_iter().flat_map(|(_, data)| data).collect();
        assert_eq!(relayed.len(), written.len());
        assert!(
            relayed == written,
            "the bytes relayed differ from those written"
        );
    }
}
