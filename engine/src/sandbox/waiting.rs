//! A standalone parent's wait, described so that another process can carry it on: the
//! sandbox's PID, the output pipes, the cgroup and the run record it holds, and the timeout's
//! deadline (a detached container's monitor execs itself once its workload has settled:
//! `container::hand_over`).

use super::cgroup::{HeldCgroup, RunCgroup};
use super::parent::{self, ChildGuard};
use super::runs::{HeldRecord, RunRecord};
use super::supervise::Stream;
use super::{Observer, Report, RunError};
use crate::spec::RunSpec;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// What the parent of a running sandbox waits on, and holds until it has ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Waiting {
    pub id: String,
    /// The sandbox, this process's child.
    pub child: i32,
    /// The run's `--timeout`, for the report of a sandbox the backstop kills.
    pub timeout: Option<Duration>,
    /// When the backstop kills the sandbox.
    #[serde(with = "monotonic")]
    pub deadline: Option<Instant>,
    /// The pipes of the workload's output, read here.
    pub relay: Vec<(Stream, RawFd)>,
    pub cgroup: Option<HeldCgroup>,
    pub record: Option<HeldRecord>,
}

impl Waiting {
    /// The descriptors the wait holds: an exec must keep them open.
    pub fn descriptors(&self) -> Vec<RawFd> {
        let pipes = self.relay.iter().map(|(_, fd)| *fd);
        pipes
            .chain(self.record.as_ref().map(HeldRecord::fd))
            .collect()
    }
}

/// Carries `waiting` on in this process, as the parent that began it would have: waits for
/// the sandbox, then reports its end and removes its cgroup and record.
///
/// # Safety
/// `waiting`'s descriptors must be open, kept across the exec that made this process, and
/// owned by nothing else here: they become this call's.
pub unsafe fn resume(
    waiting: Waiting,
    spec: &RunSpec,
    observer: &mut dyn Observer,
) -> Result<Report, RunError> {
    let relay = waiting
        .relay
        .iter()
        // SAFETY: the caller's promise.
        .map(|(stream, fd)| (*stream, unsafe { OwnedFd::from_raw_fd(*fd) }))
        .collect();
    // The guard first: whatever fails below, the sandbox is killed and what it had removed.
    let mut guard = ChildGuard {
        child: Pid::from_raw(waiting.child),
        reaped: false,
        cgroup: None,
        record: None,
    };
    guard.cgroup = waiting
        .cgroup
        .map(|held| RunCgroup::from_held(held, &spec.sandbox.limits));
    // SAFETY: the caller's promise.
    let record = waiting
        .record
        .map(|held| unsafe { RunRecord::from_held(held) });
    guard.record = record.transpose().map_err(|source| RunError::Start {
        what: "hold the run record again",
        source: nix::errno::Errno::from_raw(source.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let (id, timeout, deadline) = (waiting.id, waiting.timeout, waiting.deadline);
    parent::wait_and_end(guard, spec, &id, timeout, deadline, relay, observer)
}

/// An `Instant` as nanoseconds of `CLOCK_MONOTONIC`, the clock `Instant` reads on Linux: the
/// same in the process an exec makes.
mod monotonic {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::{Duration, Instant};

    fn now_ns() -> u128 {
        // It cannot fail on Linux; were it to, both sides would count from 0 alike.
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default()
            .as_nanos()
    }

    pub fn serialize<S: Serializer>(at: &Option<Instant>, to: S) -> Result<S::Ok, S::Error> {
        let ns = at.map(|at| {
            let (now, clock) = (Instant::now(), now_ns());
            let ahead = at.saturating_duration_since(now).as_nanos();
            let behind = now.saturating_duration_since(at).as_nanos();
            (clock + ahead).saturating_sub(behind) as u64
        });
        ns.serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<Instant>, D::Error> {
        let ns = Option::<u64>::deserialize(from)?;
        Ok(ns.map(|ns| {
            let (now, clock) = (Instant::now(), now_ns());
            let ns = u128::from(ns);
            if ns >= clock {
                now + Duration::from_nanos((ns - clock) as u64)
            } else {
                now.checked_sub(Duration::from_nanos((clock - ns) as u64))
                    .unwrap_or(now)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(deadline: Option<Instant>) -> Waiting {
        let waiting = Waiting {
            id: "run".into(),
            child: 42,
            timeout: Some(Duration::from_secs(3)),
            deadline,
            relay: vec![(Stream::Stdout, 7), (Stream::Stderr, 9)],
            cgroup: None,
            record: None,
        };
        serde_json::from_str(&serde_json::to_string(&waiting).unwrap()).unwrap()
    }

    #[test]
    fn a_deadline_ahead_or_past_crosses_the_hand_over_on_the_same_clock() {
        let now = Instant::now();
        for deadline in [
            now + Duration::from_secs(5),
            now - Duration::from_millis(1500),
        ] {
            let carried = round_trip(Some(deadline)).deadline.unwrap();
            let drift = carried
                .saturating_duration_since(deadline)
                .max(deadline.saturating_duration_since(carried));
            assert!(drift < Duration::from_millis(50), "{drift:?}");
        }
        let carried = round_trip(None);
        assert_eq!(carried.deadline, None);
        assert_eq!(
            (carried.child, carried.timeout),
            (42, Some(Duration::from_secs(3)))
        );
        assert_eq!(carried.descriptors(), [7, 9]);
    }
}
