//! Containers: named, possibly detached runs with their state, logs and lifecycle on disk,
//! as Docker has them (`run -d`, `ps`, `logs`, `stop`, `kill`, `rm`, `inspect`, `stats`).

pub mod hand_over;
pub mod logs;
pub mod monitor;
pub mod record;

use crate::sandbox::cgroup::RunCgroup;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use record::{Container, Containers, RecordError, Status};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("container {0} is running: stop it first, or remove it with -f")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} did not stop")]
    DidNotStop(String),
    #[error("failed to signal container {name}")]
    Signal {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Stops a running container: SIGTERM (forwarded by its monitor; a Wasm guest is
/// interrupted through the epoch), then SIGKILL after `grace`. Stopping a stopped container
/// does nothing.
pub fn stop(container: &Container, grace: Duration) -> Result<(), OpError> {
    let state = container.state()?;
    if !matches!(state.status(), Status::Running | Status::Restarting) {
        return Ok(());
    }
    // Its restart policy leaves it stopped; a monitor waiting out a back-off sees this.
    container.update_state(|s| s.stopped_by_user = true)?;
    if state.status() == Status::Restarting {
        return match wait_until_exited(container, grace) {
            true => Ok(()),
            false => Err(OpError::DidNotStop(container.config.name.clone())),
        };
    }
    if let Some(monitor) = state.monitor_pid {
        let _ = nix::sys::signal::kill(Pid::from_raw(monitor), Signal::SIGTERM);
    }
    if wait_until_exited(container, grace) {
        return Ok(());
    }
    if let Some(pid) = state.pid {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if wait_until_exited(container, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(OpError::DidNotStop(container.config.name.clone()))
    }
}

/// Sends `signal` to a running container's workload.
pub fn kill(container: &Container, signal: Signal) -> Result<(), OpError> {
    let state = container.state()?;
    let pid = match (state.status(), state.pid) {
        (Status::Running, Some(pid)) => pid,
        _ => return Err(OpError::NotRunning(container.config.name.clone())),
    };
    nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|source| OpError::Signal {
        name: container.config.name.clone(),
        source,
    })
}

/// Removes a container (killing it first with `force`) and its writable layer. The caller
/// then sweeps the state root once ([`crate::sandbox::sweep_stale`]), after runs whose
/// monitor died and any layer whose removal failed.
pub fn remove(containers: &Containers, container: &Container, force: bool) -> Result<(), OpError> {
    let state = container.state()?;
    if matches!(state.status(), Status::Running | Status::Restarting) {
        if !force {
            return Err(OpError::Running(container.config.name.clone()));
        }
        // Not to be run again by its restart policy.
        container.update_state(|s| s.stopped_by_user = true)?;
        if let Some(pid) = state.pid.filter(|_| state.status() == Status::Running) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !wait_until_exited(container, Duration::from_secs(10)) {
            return Err(OpError::DidNotStop(container.config.name.clone()));
        }
    }
    // A record may already be gone (`--rm`, or a concurrent `rm`).
    match containers.delete(container) {
        Ok(()) | Err(RecordError::Io { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Waits until the container's monitor is gone (its workload ended, its state written);
/// false if `limit` passed first.
pub fn wait_until_exited(container: &Container, limit: Duration) -> bool {
    // `Duration::MAX` waits for ever.
    let deadline = Instant::now().checked_add(limit);
    // A killed monitor is gone within milliseconds: polled every 10 ms from the start, an
    // `rm -f` of many containers waited most of that for each.
    let mut pause = Duration::from_millis(1);
    loop {
        if !container.monitor_alive() {
            return true;
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Live figures of a running container, from its cgroup and /proc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub memory: Option<u64>,
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
    /// CPU time used so far (user + system), from /proc.
    pub cpu_time: Option<Duration>,
}

/// The current usage of a running container.
pub fn usage(container: &Container) -> Result<Usage, OpError> {
    let state = container.state()?;
    if state.status() != Status::Running {
        return Ok(Usage::default());
    }
    let spec = &container.config.spec;
    let (memory, pids) = match &state.cgroup {
        Some(_) => {
            let cgroup = RunCgroup::existing(&spec.cgroup_path(container.id()));
            (cgroup.memory_usage(), cgroup.pids_current())
        }
        None => (None, None),
    };
    Ok(Usage {
        memory,
        memory_limit: spec.cgroup_memory(),
        pids,
        cpu_time: state.pid.and_then(cpu_time_of),
    })
}

/// User plus system time of a process, from `/proc/PID/stat`.
pub fn cpu_time_of(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain spaces: count from its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}
