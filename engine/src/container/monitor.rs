//! The monitor of a container (like conmon): holds the workload, writes its output to the
//! capped log, and records its state from start to exit. A detached container's monitor is a
//! process of its own that outlives the `wrun` command; an attached, named run is its own
//! monitor.

use super::hand_over::{AfterRun, HandOver};
use super::logs::LogWriter;
use super::record::{Container, Containers, RecordError, RestartPolicy, Status};
use crate::image::store::now_rfc3339;
use crate::sandbox::supervise::{OutputSink, Stream};
use crate::sandbox::waiting::Waiting;
use crate::sandbox::{Observer, Options, Report, RunError, Started, Stdio};
use crate::state::StateRoot;
use nix::fcntl::OFlag;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("failed to set up the container's output")]
    Output(#[source] std::io::Error),
    #[error("failed to start the container's monitor: {what}")]
    Start {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Reported(String),
    #[error("failed to carry the container's monitor on after its exec")]
    HandOver(#[source] std::io::Error),
}

impl MonitorError {
    /// The exit code `wrun run` reports for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            MonitorError::Run(e) => e.exit_code(),
            _ => crate::exit::RUNTIME_ERROR,
        }
    }
}

/// Runs the container's workload to its end in this process, recording everything, and
/// again as its restart policy says, with Docker's back-off. `started` is told (one byte)
/// once the workload runs, or given the error if it never does.
pub fn supervise(
    containers: &Containers,
    container: &Container,
    state: &StateRoot,
    attached: bool,
    started: Option<OwnedFd>,
) -> Result<Report, MonitorError> {
    let lock = container.lock_monitor()?;
    let report = match container.config.restart {
        RestartPolicy::No => {
            // A detached monitor only waits once its workload has settled.
            let hand_over = (!attached).then(|| HandOver {
                state: state.clone(),
                monitor_lock: Some(lock.as_raw_fd()),
                after: AfterRun::EndContainer,
            });
            run_once(container, state, attached, started, hand_over)?
        }
        _ => run_with_restarts(container, state, started)?,
    };
    end(containers, container, lock)?;
    Ok(report)
}

/// What is left to do once the container's last run has ended and is recorded: an `--rm`
/// container is removed. `lock` is the monitor's, let go first.
pub(super) fn end<Lock>(
    containers: &Containers,
    container: &Container,
    lock: Lock,
) -> Result<(), MonitorError> {
    drop(lock);
    if container.config.auto_remove {
        containers.delete(container)?;
    }
    Ok(())
}

/// Runs the workload until its restart policy lets it stay exited. Each run is a process of
/// its own, forked from this monitor: a process makes one PID namespace for its children,
/// once (a second `unshare(CLONE_NEWPID)` fails).
fn run_with_restarts(
    container: &Container,
    state: &StateRoot,
    started: Option<OwnedFd>,
) -> Result<Report, MonitorError> {
    let mut started = started;
    let mut backoff = Backoff::default();
    loop {
        let begun = std::time::Instant::now();
        let first = started.is_some();
        let started_before = container.raw_state()?.started_at;
        let code = run_forked(container, state, started.take())?;
        let record = container.raw_state()?;
        // A first start that failed was reported to its caller: nothing to restart.
        let failed_to_start = first && record.started_at == started_before;
        let policy = container.config.restart;
        if failed_to_start || !policy.restarts(code, record.restart_count, record.stopped_by_user) {
            return Ok(report_of(container, code, &record));
        }
        container.update_state(|s| {
            s.status = Some(Status::Restarting);
            s.restart_count += 1;
        })?;
        if !backoff.wait(begun.elapsed(), || stopped_by_user(container)) {
            container.update_state(|s| s.status = Some(Status::Exited))?;
            return Ok(report_of(container, code, &record));
        }
    }
}

/// One run in a child process; its exit code (128+N if signal N ended it).
fn run_forked(
    container: &Container,
    state: &StateRoot,
    started: Option<OwnedFd>,
) -> Result<i32, MonitorError> {
    let start = |what| move |source| MonitorError::Start { what, source };
    // SAFETY: the monitor is single-threaded, so the child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(start("fork"))? {
        nix::unistd::ForkResult::Child => {
            let hand_over = HandOver {
                state: state.clone(),
                monitor_lock: None,
                after: AfterRun::ExitWithCode,
            };
            let ran = run_once(container, state, false, started, Some(hand_over));
            crate::sys::exit_now(run_code(ran))
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(started);
            loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => {
                        return Ok(crate::exit::signaled(signal as i32))
                    }
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(start("wait for the run")(e)),
                }
            }
        }
    }
}

/// The exit code of a restart policy's run process: the workload's, or the failure's.
pub(super) fn run_code(ran: Result<Report, MonitorError>) -> i32 {
    match ran {
        Ok(report) => report.code,
        Err(e) => e.exit_code(),
    }
}

/// The last run's end, as its record says.
fn report_of(container: &Container, code: i32, record: &super::record::ContainerState) -> Report {
    Report {
        id: container.id().to_string(),
        code,
        oom_killed: record.oom_killed,
        memory_peak: record.memory_peak,
        cpu_time: std::time::Duration::from_nanos(record.cpu_time_ns.unwrap_or(0)),
        note: record.error.clone(),
    }
}

fn stopped_by_user(container: &Container) -> bool {
    container.raw_state().is_ok_and(|s| s.stopped_by_user)
}

/// Docker's restart back-off: 100 ms, doubled after each restart up to a minute, back to
/// 100 ms after a run that lasted 10 s.
#[derive(Default)]
struct Backoff {
    next: Option<std::time::Duration>,
}

impl Backoff {
    /// Waits out the delay before the next start; false if `stopped` said so meanwhile.
    fn wait(&mut self, ran: std::time::Duration, stopped: impl Fn() -> bool) -> bool {
        use std::time::Duration;
        let first = Duration::from_millis(100);
        let delay = match self.next {
            Some(delay) if ran < Duration::from_secs(10) => delay,
            _ => first,
        };
        self.next = Some((delay * 2).min(Duration::from_secs(60)));
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            if stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(delay));
        }
        !stopped()
    }
}

/// One run of the workload, recorded from start to exit; `hand_over` once it has settled.
fn run_once(
    container: &Container,
    state: &StateRoot,
    attached: bool,
    started: Option<OwnedFd>,
    hand_over: Option<HandOver>,
) -> Result<Report, MonitorError> {
    let log = LogWriter::open(&container.log_path(), attached).map_err(MonitorError::Output)?;
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC);
    let start = |what| move |source| MonitorError::Start { what, source };
    let (out_read, out_write) = pipe().map_err(start("create the stdout pipe"))?;
    let (err_read, err_write) = pipe().map_err(start("create the stderr pipe"))?;
    let stdin = if attached {
        None
    } else {
        Some(OwnedFd::from(
            std::fs::File::open("/dev/null").map_err(MonitorError::Output)?,
        ))
    };
    let mut observer = Recorder {
        container,
        log,
        started,
        hand_over,
        waiting: None,
    };
    let stdio = Stdio {
        stdin,
        stdout: Some(out_write),
        stderr: Some(err_write),
    };
    let relay = vec![(Stream::Stdout, out_read), (Stream::Stderr, err_read)];
    let options = Options {
        id: Some(container.id().to_string()),
        stdio,
        relay,
        observer: Some(&mut observer),
        // A container keeps its writable layer until it is removed.
        keep_writable_layer: true,
        gate: None,
        start_fifo: None,
        own_cgroup: false,
    };
    let result = crate::launch::launch(&container.config.spec, state, options);
    record_end(&mut observer, result)
}

/// Records how the run ended (or why it did not start) in the container's state.
pub(super) fn record_end(
    observer: &mut Recorder,
    result: Result<Report, RunError>,
) -> Result<Report, MonitorError> {
    let container = observer.container;
    observer.log.flush();
    let recorded = match &result {
        Ok(report) => container.update_state(|s| {
            s.status = Some(Status::Exited);
            s.finished_at = Some(now_rfc3339());
            s.exit_code = Some(report.code);
            s.oom_killed = report.oom_killed;
            s.memory_peak = report.memory_peak;
            s.cpu_time_ns = Some(report.cpu_time.as_nanos() as u64);
            s.error = report.note.clone();
        }),
        Err(e) => {
            let message = error_chain(e);
            if let Some(pipe) = observer.started.take() {
                let _ = nix::unistd::write(&pipe, message.as_bytes());
            }
            container.update_state(|s| {
                s.status = Some(Status::Exited);
                s.finished_at = Some(now_rfc3339());
                s.exit_code = Some(e.exit_code());
                s.error = Some(message.clone());
            })
        }
    };
    recorded?;
    Ok(result?)
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Records the run as it goes: state on start, output into the log.
pub(super) struct Recorder<'a> {
    pub container: &'a Container,
    pub log: LogWriter,
    pub started: Option<OwnedFd>,
    /// A detached monitor's: to hand its wait over once the workload has settled.
    pub hand_over: Option<HandOver>,
    /// What the standalone parent waits on, for the hand-over.
    pub waiting: Option<Waiting>,
}

impl OutputSink for Recorder<'_> {
    fn output(&mut self, stream: Stream, data: &[u8]) {
        self.log.output(stream, data);
    }

    /// Execs wrun afresh to carry the wait on, when this is a detached monitor's standalone
    /// run; else, or if the exec fails, gives back what starting touched as every
    /// supervisor does.
    fn settled(&mut self) {
        if let (Some(hand_over), Some(waiting)) = (&self.hand_over, &self.waiting) {
            let partial = self.log.partial();
            let error = hand_over.exec(self.container.id(), partial, waiting);
            tracing::warn!("the container's monitor goes on without a fresh start: {error}");
        }
        crate::idle_memory::give_back();
    }
}

impl Observer for Recorder<'_> {
    fn takes_waiting(&self) -> bool {
        self.hand_over.is_some()
    }

    fn keeps_memory_peak(&self) -> bool {
        true
    }

    fn supervising(&mut self, waiting: Waiting) {
        self.waiting = Some(waiting);
    }

    fn started(&mut self, started: &Started) {
        let recorded = self.container.update_state(|s| {
            s.status = Some(Status::Running);
            s.monitor_pid = Some(std::process::id() as i32);
            s.pid = Some(started.pid);
            s.started_at = Some(now_rfc3339());
            s.cgroup = started.cgroup.clone();
        });
        if let Err(e) = recorded {
            tracing::warn!("{e:#}");
        }
        if let Some(pipe) = self.started.take() {
            let _ = nix::unistd::write(&pipe, &[1]);
        }
    }
}

/// Starts the container's monitor as a process of its own (new session, stdio on
/// /dev/null) and returns once the workload runs — or with its error if it never did.
pub fn start_detached(
    containers: &Containers,
    container: &Container,
    state: &StateRoot,
) -> Result<(), MonitorError> {
    let start = |what| move |source| MonitorError::Start { what, source };
    let (ready_read, ready_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(start("create a pipe"))?;
    // SAFETY: `wrun` is single-threaded here, so the forked monitor may run any code.
    match unsafe { nix::unistd::fork() }.map_err(start("fork"))? {
        nix::unistd::ForkResult::Child => {
            drop(ready_read);
            crate::idle_memory::purge_at_once();
            let code = match detach() {
                Ok(()) => match supervise(containers, container, state, false, Some(ready_write)) {
                    Ok(_) => 0,
                    Err(_) => 1,
                },
                Err(_) => 1,
            };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_write);
            let mut answer = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                match nix::unistd::read(&ready_read, &mut buffer) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => break,
                }
                if answer.first() == Some(&1) {
                    return Ok(());
                }
            }
            let message = String::from_utf8_lossy(&answer).trim().to_string();
            Err(MonitorError::Reported(if message.is_empty() {
                "the container's monitor ended before the workload started".into()
            } else {
                message
            }))
        }
    }
}

/// Leaves the caller's session and terminal: the monitor must outlive the `wrun` command.
fn detach() -> nix::Result<()> {
    nix::unistd::setsid()?;
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)
}
