//! The kernel sandbox around a run: a child in new PID, mount, UTS and cgroup namespaces, the
//! shared network and IPC namespaces (`shared_namespaces`; new ones for a native container),
//! in a cgroup of its own, supervised by the calling process.
//!
//! The parent stays single-threaded until the child exists. Then the two halves overlap on two
//! cores: the parent creates the cgroup (and, where the sandbox shares none, a network
//! namespace, by moving itself into it); meanwhile the child enters its namespaces, loads the
//! guest and enters its empty root.

pub mod attach;
mod bpf;
pub mod cgroup;
pub(crate) mod child;
mod claim_filter;
pub(crate) mod claimed;
pub mod clone_into_cgroup;
pub mod copy;
mod cpu_split;
pub mod enter;
mod filter_pipe;
pub(crate) mod guest;
pub mod harden;
pub mod mount_template;
pub mod native;
mod parent;
pub(crate) mod parent_watch;
mod pinned_namespace;
pub mod precompile;
mod prefault;
pub mod preload;
pub mod rootfs;
pub mod runs;
pub mod self_join;
pub mod shared_namespaces;
pub mod signals;
pub mod supervise;
pub mod terminal;
#[cfg(feature = "test-hooks")]
mod test_hooks;
pub mod userns;
pub mod waiting;
#[cfg(not(feature = "test-hooks"))]
mod test_hooks {
    //! Without the `test-hooks` feature there are no hooks.
    pub fn after_seccomp() {}
    pub fn pause_at(_stage: &str) {}
    pub fn child_late() {}
}
pub(crate) mod work;

pub use parent::{
    ending, oom_killed, remove_writable_layer, run, start_broker, sweep_stale, timeout_report,
    ChildGuard,
};

use crate::exit;
use cgroup::CgroupError;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;
use supervise::{OutputSink, Stream};

/// Why a run could not be carried out (the guest's own failures are exit codes, not errors).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("module `{0}` not found")]
    ModuleNotFound(PathBuf),
    #[error("failed to open module `{path}`")]
    ModuleOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("module `{0}` is not a regular file")]
    ModuleNotFile(PathBuf),
    #[error("invalid --dir `{path}`: {reason}")]
    Preopen { path: PathBuf, reason: String },
    #[error("failed to prepare the state root `{path}`")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start the sandbox: {what}")]
    Start {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Userns(#[from] userns::UsernsError),
    #[error("failed to wait for the workload")]
    Wait(#[source] nix::Error),
    #[error("the run was abandoned before it started")]
    Gate(#[source] std::io::Error),
    #[error("the sandbox ended before it was created")]
    NotCreated,
    #[error("{0}")]
    Pool(String),
    #[error(transparent)]
    Publish(#[from] crate::net::PublishError),
}

impl RunError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::ModuleNotFound(_) => exit::NOT_FOUND,
            RunError::ModuleOpen { .. } | RunError::ModuleNotFile(_) => exit::CANNOT_EXECUTE,
            _ => exit::RUNTIME_ERROR,
        }
    }
}

/// Time the child gets after its own timeout handling before the parent kills it.
pub(crate) const TIMEOUT_BACKSTOP: Duration = Duration::from_secs(5);

/// How a sandbox's standard streams are connected: a descriptor given here becomes the
/// workload's stdin, stdout or stderr; `None` passes the caller's own.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// What the supervisor learns while a run is under way.
pub trait Observer: OutputSink {
    /// The workload is in its sandbox and cgroup and about to start the guest.
    fn started(&mut self, _started: &Started) {}

    /// Whether it takes what a standalone parent waits on ([`Observer::supervising`]); the
    /// parent describes it only then.
    fn takes_waiting(&self) -> bool {
        false
    }

    /// A standalone parent is about to wait for its sandbox: what it waits on and holds.
    fn supervising(&mut self, _waiting: waiting::Waiting) {}

    /// Whether it keeps the run's memory peak (a container's record does): the parent reads
    /// it from the cgroup only then, not on every run's way to the caller's prompt.
    fn keeps_memory_peak(&self) -> bool {
        false
    }
}

impl Observer for supervise::NoOutput {}

/// The facts of a started run.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    /// The workload's PID, as the caller sees it.
    pub pid: i32,
    /// The run's cgroup path under each hierarchy, if it has one.
    pub cgroup: Option<String>,
}

/// Optional parts of a run.
#[derive(Default)]
pub struct Options<'a> {
    /// The run's ID (a container's); a fresh one if `None`.
    pub id: Option<String>,
    pub stdio: Stdio,
    /// Read ends of pipes behind `stdio.stdout`/`stderr`, relayed into the observer.
    pub relay: Vec<(Stream, OwnedFd)>,
    pub observer: Option<&'a mut dyn Observer>,
    /// Keep a native image's writable layer after the run (a container's, until `rm`).
    pub keep_writable_layer: bool,
    /// Called with the sandbox's PID once it is set up and in its cgroup, before the
    /// workload is let go (OCI's create, then start); an error abandons the run.
    pub gate: Option<Gate<'a>>,
    /// An OCI runtime's `create`: the sandbox is left created, waiting for a byte on this
    /// FIFO (`start` writes it), and the call returns as soon as it waits; nothing supervises
    /// it afterwards (whoever reaps this process's orphans reaps it), and its cgroup stays
    /// until `delete`. The FIFO is open for reading and writing.
    pub start_fifo: Option<OwnedFd>,
    /// Put the run in the cgroup its spec and `id` name even when a pooled sandbox takes it
    /// (a supervising program looks for it there). Without an `id` there is no such name:
    /// the run goes where the pool or the standalone path puts it.
    pub own_cgroup: bool,
}

/// See [`Options::gate`].
pub type Gate<'a> = Box<dyn FnOnce(i32) -> std::io::Result<()> + 'a>;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub id: String,
    pub code: i32,
    pub oom_killed: bool,
    /// The cgroup's most memory, read only for an observer that keeps it
    /// ([`Observer::keeps_memory_peak`]).
    pub memory_peak: Option<u64>,
    pub cpu_time: Duration,
    /// What wrun itself has to say about the end, if anything (a kill, the OOM killer).
    pub note: Option<String>,
}

/// The first 12 characters of an ID, as Docker shows it (the whole ID if it is shorter).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A fresh 64-hex-digit run ID (Docker's container ID format).
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        if let Ok(n) =
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
        {
            filled += n;
        }
    }
    hex::encode(bytes)
}
