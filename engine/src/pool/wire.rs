//! The pool's protocol: what `wrun run` and a pooled sandbox's supervisor say to each other,
//! and what a claimed supervisor tells the daemon. Carried by [`crate::net::packet`].

use serde::{Deserialize, Serialize};

/// From `wrun run` to the pooled sandbox's supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Run this; the module, stdin, stdout, stderr, the write end of a status pipe, each
    /// preopened directory (`O_PATH`), each published port's listening socket, with
    /// `--allow-outbound` the sandbox's end of the caller's connect broker, and each namespace
    /// the spec joins (network, IPC, UTS, as many as it names) are attached in that order.
    /// Unless the claim asks for usage or names a cgroup, the sandbox writes the workload's
    /// exit code (one byte) to the status pipe as soon as it has it, before its teardown; a
    /// pipe that closes empty means the supervisor's `Finished` tells.
    Claim(Box<Claim>),
    /// Let a held claim's workload start (its caller's start gate opened).
    Start,
    /// A stop signal the caller received, for the workload.
    Signal(i32),
}

/// A run handed to the pool.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub spec: crate::spec::RunSpec,
    /// Report the workload's CPU time and memory peak (a container's monitor records them),
    /// which waits for the sandbox to be reaped before answering.
    pub usage: bool,
    /// Hold the workload after `Accepted` until the caller sends `Start` (OCI's create, then
    /// start: the caller hands the PID on and waits at its start gate).
    #[serde(default)]
    pub held: bool,
    /// The cgroup the caller needs the run in (a bundle's `linux.cgroupsPath`, a task's
    /// cgroup): the sandbox is moved there, with the limits, instead of keeping the pool's.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// From the pooled sandbox's supervisor to `wrun run`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The claim was taken: from here on the workload is this sandbox's to run. `pid` is the
    /// sandbox as the host sees it; `cgroup` its cgroup's path.
    Accepted {
        id: String,
        pid: i32,
        cgroup: Option<String>,
    },
    /// This sandbox cannot run it (the caller runs it standalone); nothing was started.
    Refused { reason: String },
    /// The workload ended: the exit code to report and wrun's note about the end, if any;
    /// with `usage` claimed, what it used.
    Finished {
        code: i32,
        note: Option<String>,
        #[serde(default)]
        usage: Option<Usage>,
    },
}

/// What a finished workload used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    pub oom_killed: bool,
    pub memory_peak: Option<u64>,
    pub cpu_time: std::time::Duration,
}

/// From a claimed sandbox's supervisor to the daemon: the artifact its claim ran, which the
/// sandboxes made next map ahead.
#[derive(Debug, Serialize, Deserialize)]
pub struct Used {
    pub artifact: crate::sandbox::preload::RecentArtifact,
}
