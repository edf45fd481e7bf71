//! wrun as an OCI runtime (runtime-spec's runtime.md, runc's command line): a container is
//! created from a bundle and left waiting, started, queried, signalled and deleted by its ID,
//! its state kept under the state root's `oci/` directory. The created sandbox is the
//! container's init: once `create` returns, its caller (a containerd shim, conmon) reaps it and
//! reads the workload's exit code from it, as from runc's.

pub mod features;
pub mod hooks;

use crate::image::store::now_rfc3339;
use crate::sandbox::cgroup::RunCgroup;
use crate::sandbox::supervise::{OutputSink, Stream};
use crate::sandbox::terminal::Pty;
use crate::sandbox::{self, Observer, Options, RunError, Started, Stdio};
use crate::state::StateRoot;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Hook, Hooks};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runtime spec version the state reports.
pub const OCI_VERSION: &str = "1.0.2";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container `{0}` does not exist")]
    NotFound(String),
    #[error("container `{0}` already exists")]
    Exists(String),
    #[error("invalid container id `{0}`: expected letters, digits and _ . - (not first)")]
    InvalidId(String),
    #[error("container `{id}` is {status}, not created")]
    NotCreated { id: String, status: Status },
    #[error("container `{id}` is {status}: stop it first, or delete it with --force")]
    NotStopped { id: String, status: Status },
    #[error("container `{0}` did not stop after SIGKILL")]
    StillRunning(String),
    #[error("failed to {what} `{path}`")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] crate::spec::oci::BundleError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("{0}")]
    Console(&'static str),
    #[error(transparent)]
    Terminal(#[from] crate::sandbox::terminal::TerminalError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Cgroup(#[from] crate::sandbox::cgroup::CgroupError),
    #[error("failed to signal container `{id}`")]
    Signal {
        id: String,
        #[source]
        source: nix::Error,
    },
}

impl RuntimeError {
    /// The exit code for this failure: what the run's would be, else a runtime error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RuntimeError::Run(e) => e.exit_code(),
            _ => crate::exit::RUNTIME_ERROR,
        }
    }
}

/// A container's status, as runtime-spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// The state runtime-spec's `state` command reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: &'static str,
    pub id: String,
    pub status: Status,
    /// The init process as the host sees it; absent once stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// When it was created (runc reports it too).
    pub created: String,
}

/// What wrun keeps of a created container.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    pid: i32,
    /// The init's start time (`/proc/<pid>/stat` field 22): a PID reused by another process
    /// is not taken for it.
    start_time: u64,
    bundle: PathBuf,
    cgroup: Option<String>,
    #[serde(default)]
    annotations: HashMap<String, String>,
    created: String,
    /// The bundle's hooks, for `start` and `delete`.
    #[serde(default)]
    hooks: Option<oci_spec::runtime::Hooks>,
}

/// The containers of one state root.
pub struct Runtime<'a> {
    state: &'a StateRoot,
    dir: PathBuf,
}

/// How `create` hands the container over.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// Where the init's PID is written.
    pub pid_file: Option<PathBuf>,
    /// Where the terminal's master goes when `process.terminal` asks for one.
    pub console_socket: Option<PathBuf>,
}

impl<'a> Runtime<'a> {
    pub fn open(state: &'a StateRoot) -> Runtime<'a> {
        Runtime {
            state,
            dir: state.path().join("oci"),
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn fifo(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exec.fifo")
    }

    /// Whether `id` names a container of this runtime.
    pub fn exists(&self, id: &str) -> bool {
        self.container_dir(id).join("state.json").exists()
    }

    /// Creates container `id` from the bundle at `bundle`, left waiting for [`Runtime::start`].
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        options: &CreateOptions,
    ) -> Result<(), RuntimeError> {
        crate::spec::parse_name(id).map_err(|_| RuntimeError::InvalidId(id.to_string()))?;
        let bundle = std::fs::canonicalize(bundle).map_err(io("read the bundle", bundle))?;
        let spec = crate::spec::oci::load_with_hooks(&bundle, "wrun")?.for_service();
        let extras = bundle_extras(&bundle);
        match (extras.terminal, &options.console_socket) {
            (true, None) => {
                return Err(RuntimeError::Console(
                    "process.terminal is true: a terminal needs --console-socket",
                ))
            }
            (false, Some(_)) => {
                return Err(RuntimeError::Console(
                    "--console-socket given, but process.terminal is false",
                ))
            }
            _ => {}
        }
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Exists(id.to_string()));
            }
            other => other.map_err(io("create", &dir))?,
        }
        let made = self.create_in(id, &bundle, &spec, extras, options);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    fn create_in(
        &self,
        id: &str,
        bundle: &Path,
        spec: &crate::spec::RunSpec,
        extras: BundleExtras,
        options: &CreateOptions,
    ) -> Result<(), RuntimeError> {
        let fifo_path = self.fifo(id);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io("create", &fifo_path)(e.into()))?;
        let fifo = open_fifo(&fifo_path, nix::fcntl::OFlag::O_RDWR)
            .map_err(|e| io("open", &fifo_path)(e.into()))?;
        let stdio = match &options.console_socket {
            Some(path) => Pty::open(None)?.send_master(path)?,
            None => Stdio::default(),
        };
        let mut seen = SeenStart::default();
        let options_run = Options {
            id: Some(id.to_string()),
            stdio,
            observer: Some(&mut seen),
            start_fifo: Some(fifo),
            ..Options::default()
        };
        sandbox::run(spec, self.state, options_run)?;
        let started = seen.0.ok_or(RunError::NotCreated)?;
        let recorded = self
            .record_created(id, bundle, extras, &started, options)
            .and_then(|()| self.run_hooks(id, "prestart", |h| [h.prestart(), h.create_runtime()]));
        if recorded.is_err() {
            // Not left behind unrecorded: it is still this process's child.
            let pid = Pid::from_raw(started.pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            if let Some(path) = &started.cgroup {
                let _ = RunCgroup::existing(path).remove();
            }
        }
        recorded
    }

    /// Writes a created container's state and its PID file.
    fn record_created(
        &self,
        id: &str,
        bundle: &Path,
        extras: BundleExtras,
        started: &Started,
        options: &CreateOptions,
    ) -> Result<(), RuntimeError> {
        let saved = Saved {
            pid: started.pid,
            start_time: start_time(started.pid).unwrap_or(0),
            bundle: bundle.to_path_buf(),
            cgroup: started.cgroup.clone(),
            annotations: extras.annotations,
            created: now_rfc3339(),
            hooks: extras.hooks,
        };
        self.save(id, &saved)?;
        if let Some(path) = &options.pid_file {
            crate::handoff::write_pid_file(path, started.pid)
                .map_err(io("write the PID file", path))?;
        }
        Ok(())
    }

    /// Lets a created container's workload start.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let saved = self.load(id)?;
        let status = self.status(id, &saved);
        if status != Status::Created {
            return Err(RuntimeError::NotCreated {
                id: id.to_string(),
                status,
            });
        }
        let path = self.fifo(id);
        let fifo = open_fifo(
            &path,
            nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK,
        )
        .map_err(|e| io("open", &path)(e.into()))?;
        nix::unistd::write(&fifo, &[1]).map_err(|e| io("write to", &path)(e.into()))?;
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
        // As runc: a failed poststart hook is reported, the container runs on.
        if let Err(e) = self.run_hooks(id, "poststart", |h| [h.poststart(), &None]) {
            crate::err_line!("wrun: warning: {:#}", anyhow::Error::new(e));
        }
        Ok(())
    }

    /// Runs the saved container's hooks of one phase with its state on stdin.
    fn run_hooks(
        &self,
        id: &str,
        phase: &'static str,
        pick: impl Fn(&Hooks) -> [&Option<Vec<Hook>>; 2],
    ) -> Result<(), RuntimeError> {
        let saved = self.load(id)?;
        let hooks: Vec<Hook> = saved
            .hooks
            .as_ref()
            .map(|all| pick(all).into_iter().flatten().flatten().cloned().collect())
            .unwrap_or_default();
        if hooks.is_empty() {
            return Ok(());
        }
        let state = serde_json::to_vec(&self.state(id)?).map_err(|e| {
            io("write the state of", &self.container_dir(id))(std::io::Error::other(e))
        })?;
        Ok(hooks::run(phase, &hooks, &state)?)
    }

    /// The container's state.
    pub fn state(&self, id: &str) -> Result<State, RuntimeError> {
        let saved = self.load(id)?;
        let status = self.status(id, &saved);
        Ok(State {
            oci_version: OCI_VERSION,
            id: id.to_string(),
            status,
            pid: (status != Status::Stopped).then_some(saved.pid),
            bundle: saved.bundle,
            annotations: saved.annotations,
            created: saved.created,
        })
    }

    /// The host PIDs of a created or running container's processes (`ps`).
    pub fn pids(&self, id: &str) -> Result<Vec<i32>, RuntimeError> {
        let (pid, _) = self.running(id)?;
        let saved = self.load(id)?;
        Ok(match &saved.cgroup {
            Some(path) => RunCgroup::existing(path)
                .procs()
                .into_iter()
                .map(|p| p as i32)
                .collect(),
            None => vec![pid],
        })
    }

    /// A created or running container's init PID and bundle, for `exec`.
    pub fn running(&self, id: &str) -> Result<(i32, PathBuf), RuntimeError> {
        let saved = self.load(id)?;
        match self.status(id, &saved) {
            Status::Stopped => Err(RuntimeError::NotCreated {
                id: id.to_string(),
                status: Status::Stopped,
            }),
            _ => Ok((saved.pid, saved.bundle)),
        }
    }

    /// Sends `signal` to the init, or with `all` to every process in the container's cgroup.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let saved = self.load(id)?;
        if self.status(id, &saved) == Status::Stopped {
            return Err(RuntimeError::NotCreated {
                id: id.to_string(),
                status: Status::Stopped,
            });
        }
        let signal_one = |pid: i32| {
            nix::sys::signal::kill(Pid::from_raw(pid), signal).map_err(|source| {
                RuntimeError::Signal {
                    id: id.to_string(),
                    source,
                }
            })
        };
        match (&saved.cgroup, all) {
            (Some(path), true) => {
                for pid in RunCgroup::existing(path).procs() {
                    let _ = signal_one(pid as i32);
                }
                Ok(())
            }
            _ => signal_one(saved.pid),
        }
    }

    /// Deletes a stopped container (with `force`, kills it first): its cgroup and its state.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let saved = match self.load(id) {
            Err(RuntimeError::NotFound(_)) if force => return Ok(()),
            other => other?,
        };
        let status = self.status(id, &saved);
        if status == Status::Running && !force {
            return Err(RuntimeError::NotStopped {
                id: id.to_string(),
                status,
            });
        }
        if status != Status::Stopped {
            // A created container was never started: deleting it ends it, as runc does.
            let _ = nix::sys::signal::kill(Pid::from_raw(saved.pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.status(id, &saved) != Status::Stopped {
                if Instant::now() > deadline {
                    return Err(RuntimeError::StillRunning(id.to_string()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(path) = &saved.cgroup {
            let cgroup = RunCgroup::existing(path);
            cgroup.kill_all();
            cgroup.remove()?;
        }
        if let Err(e) = self.run_hooks(id, "poststop", |h| [h.poststop(), &None]) {
            crate::err_line!("wrun: warning: {:#}", anyhow::Error::new(e));
        }
        let dir = self.container_dir(id);
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        Ok(())
    }

    fn status(&self, id: &str, saved: &Saved) -> Status {
        let alive =
            start_time(saved.pid).is_some_and(|t| t == saved.start_time) && !zombie(saved.pid);
        match (alive, self.fifo(id).exists()) {
            (false, _) => Status::Stopped,
            (true, true) => Status::Created,
            (true, false) => Status::Running,
        }
    }

    fn load(&self, id: &str) -> Result<Saved, RuntimeError> {
        let path = self.container_dir(id).join("state.json");
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            other => other.map_err(io("read", &path))?,
        };
        serde_json::from_slice(&bytes).map_err(|e| io("read", &path)(std::io::Error::other(e)))
    }

    fn save(&self, id: &str, saved: &Saved) -> Result<(), RuntimeError> {
        let path = self.container_dir(id).join("state.json");
        let bytes = serde_json::to_vec(saved).map_err(std::io::Error::other);
        bytes
            .and_then(|bytes| write_atomically(&path, &bytes))
            .map_err(io("write", &path))
    }
}

/// Records the sandbox's PID and cgroup as `sandbox::run` reports them.
#[derive(Default)]
struct SeenStart(Option<Started>);

impl OutputSink for SeenStart {
    fn output(&mut self, _: Stream, _: &[u8]) {}
}

impl Observer for SeenStart {
    fn started(&mut self, started: &Started) {
        self.0 = Some(started.clone());
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { what, path, source }
}

fn open_fifo(path: &Path, flags: nix::fcntl::OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// What the runtime keeps of a bundle besides the run: annotations for `state`, hooks.
#[derive(Default)]
struct BundleExtras {
    annotations: HashMap<String, String>,
    hooks: Option<Hooks>,
    /// `process.terminal`.
    terminal: bool,
}

fn bundle_extras(bundle: &Path) -> BundleExtras {
    match oci_spec::runtime::Spec::load(bundle.join("config.json")) {
        Ok(spec) => BundleExtras {
            annotations: spec.annotations().clone().unwrap_or_default(),
            hooks: spec.hooks().clone(),
            terminal: spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false),
        },
        Err(_) => BundleExtras::default(),
    }
}

/// A process's start time in clock ticks since boot, if it exists.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain spaces: count from its end.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether the process has exited and waits to be reaped.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Written to a temporary name and renamed: a reader never sees a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
