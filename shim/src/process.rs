//! One task's `wrun` process: created (set up, held at the start gate), running, stopped.

use crate::exec::Exec;
use containerd_shim as shim;
use shim::api::{self, Status};
use shim::monitor::{monitor_subscribe, Subject, Subscription, Topic};
use shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wrun::handoff::Handoff;
use wrun::sandbox::cgroup::RunCgroup;

/// wrun's `--cgroup-parent` default, for specs without `cgroupsPath`.
const DEFAULT_CGROUP_PARENT: &str = "wrun";

/// How long `wrun` may take to set a sandbox up before create gives up on it.
const SET_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The files of a task in its bundle directory.
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: PathBuf) -> Bundle {
        Bundle { dir }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("wrun.pid")
    }

    fn start_gate(&self) -> PathBuf {
        self.dir.join("wrun.start")
    }

    /// Mounts containerd's rootfs mounts (a snapshot) at `rootfs/`; none with `ctr --rootfs`.
    fn mount_rootfs(&self, mounts: &[shim::protos::types::mount::Mount]) -> shim::Result<bool> {
        for m in mounts {
            let mounted = shim::mount::mount_rootfs(
                Some(&m.type_),
                Some(&m.source),
                &m.options,
                self.rootfs(),
            );
            if let Err(e) = mounted {
                self.unmount_rootfs();
                return Err(e);
            }
        }
        Ok(!mounts.is_empty())
    }

    fn unmount_rootfs(&self) {
        // Lazily: a process that still holds the root (it should not) cannot keep it mounted.
        while nix::mount::umount2(&self.rootfs(), nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let _ = std::fs::remove_file(self.start_gate());
    }

    /// After the daemon died: its sandbox is killed (wrun then removes the sandbox's cgroup and
    /// state), the snapshot unmounted, the hand-off files removed.
    pub fn clean_up_after_daemon(&self) {
        if let Some(pid) = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            if let Ok(pidfd) = pidfd_open(pid) {
                let _ = pidfd_send_signal(&pidfd, libc::SIGKILL);
                let _ = wait_until_gone(pid, Duration::from_secs(5));
            }
        }
        self.unmount_rootfs();
        self.remove_files();
    }
}

/// How `wrun` is invoked for every task of this shim.
#[derive(Clone)]
pub struct Wrun {
    pub binary: PathBuf,
    pub config: Option<PathBuf>,
}

impl Wrun {
    /// `wrun` next to the shim (installed together), else the one on `PATH`.
    pub fn locate(config: Option<PathBuf>) -> Wrun {
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("wrun")))
            .filter(|path| path.is_file());
        Wrun {
            binary: sibling.unwrap_or_else(|| PathBuf::from("wrun")),
            config,
        }
    }
}

/// Where a task is in its life.
enum Phase {
    /// Set up, held at the gate; writing to `gate` starts it, closing it abandons it.
    Created {
        gate: File,
        wrun: WrunProcess,
    },
    Running,
    Stopped {
        exit_status: u32,
        exited_at: Timestamp,
    },
}

/// A task and its `wrun` process.
pub struct Task {
    pub id: String,
    pub bundle: Bundle,
    pub io: [String; 3],
    /// The sandbox's PID (the workload's, or a native workload's init).
    pub pid: u32,
    pidfd: OwnedFd,
    /// The sandbox's cgroup path (the spec's `cgroupsPath`, as wrun placed it).
    cgroup_path: String,
    /// Whether the payload is native (only native tasks take exec'd processes).
    pub native: bool,
    /// How `wrun` is invoked, for exec'd processes.
    pub wrun: Wrun,
    /// The processes exec'd into it, by exec ID.
    pub execs: Mutex<HashMap<String, Arc<Exec>>>,
    rootfs_mounted: bool,
    phase: Mutex<Phase>,
    stopped: Condvar,
}

impl Task {
    /// Mounts the root, starts `wrun run --bundle` and waits until the sandbox is set up.
    pub fn create(req: &api::CreateTaskRequest, wrun: &Wrun) -> shim::Result<Task> {
        if req.terminal {
            return Err(shim::Error::InvalidArgument(
                "a terminal (tty) is not supported by wrun".into(),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(shim::Error::InvalidArgument(
                "restoring from a checkpoint is not supported by wrun".into(),
            ));
        }
        let bundle = Bundle::new(PathBuf::from(&req.bundle));
        bundle.remove_files();
        let rootfs_mounted = bundle.mount_rootfs(&req.rootfs)?;
        let io = [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()];
        let spawned = placement(&bundle, &req.id).and_then(|(cgroup_path, native)| {
            Ok((
                cgroup_path,
                native,
                spawn_held(&req.id, &bundle, &io, wrun)?,
            ))
        });
        match spawned {
            Ok((cgroup_path, native, (gate, wrun_process, pid, pidfd))) => Ok(Task {
                id: req.id.clone(),
                bundle,
                io,
                pid,
                pidfd,
                cgroup_path,
                native,
                wrun: wrun.clone(),
                execs: Mutex::new(HashMap::new()),
                rootfs_mounted,
                phase: Mutex::new(Phase::Created {
                    gate,
                    wrun: wrun_process,
                }),
                stopped: Condvar::new(),
            }),
            Err(e) => {
                if rootfs_mounted {
                    bundle.unmount_rootfs();
                }
                bundle.remove_files();
                Err(e)
            }
        }
    }

    /// Opens the gate; `on_exit` is called once with the exit status and time.
    pub fn start(
        self: &std::sync::Arc<Self>,
        on_exit: impl FnOnce(u32, Timestamp) + Send + 'static,
    ) -> shim::Result<()> {
        let mut phase = self.phase.lock().expect("task lock");
        let Phase::Created { .. } = &*phase else {
            return Err(shim::Error::FailedPreconditionError(format!(
                "task {} is not in the created state",
                self.id
            )));
        };
        let Phase::Created { mut gate, wrun } = std::mem::replace(&mut *phase, Phase::Running)
        else {
            unreachable!("checked above")
        };
        if let Err(e) = gate.write_all(b"1") {
            *phase = Phase::Created { gate, wrun };
            return Err(shim::Error::Other(format!(
                "failed to start task {}: {e}",
                self.id
            )));
        }
        drop(gate);
        drop(phase);
        self.wait_in_background(wrun, on_exit);
        Ok(())
    }

    fn wait_in_background(
        self: &std::sync::Arc<Self>,
        wrun: WrunProcess,
        on_exit: impl FnOnce(u32, Timestamp) + Send + 'static,
    ) {
        let task = self.clone();
        std::thread::spawn(move || {
            let exit_status = wrun.wait();
            let exited_at = shim::util::timestamp().unwrap_or_default();
            *task.phase.lock().expect("task lock") = Phase::Stopped {
                exit_status,
                exited_at: exited_at.clone(),
            };
            task.stopped.notify_all();
            on_exit(exit_status, exited_at);
        });
    }

    pub fn status(&self) -> (Status, u32, Option<Timestamp>) {
        match &*self.phase.lock().expect("task lock") {
            Phase::Created { .. } => (Status::CREATED, 0, None),
            Phase::Running => (Status::RUNNING, 0, None),
            Phase::Stopped {
                exit_status,
                exited_at,
            } => (Status::STOPPED, *exit_status, Some(exited_at.clone())),
        }
    }

    /// Blocks until the task has stopped.
    pub fn wait(&self) -> (u32, Timestamp) {
        wait_until_stopped(&self.phase, &self.stopped, |phase| match phase {
            Phase::Stopped {
                exit_status,
                exited_at,
            } => Some((*exit_status, exited_at.clone())),
            _ => None,
        })
    }

    /// Signals the sandbox (with `all`, every process in its cgroup). A task that has not
    /// started is abandoned instead: wrun tears the sandbox down.
    pub fn kill(
        self: &std::sync::Arc<Self>,
        signal: u32,
        all: bool,
        on_exit: impl FnOnce(u32, Timestamp) + Send + 'static,
    ) -> shim::Result<()> {
        let mut phase = self.phase.lock().expect("task lock");
        match &*phase {
            Phase::Created { .. } => {
                let Phase::Created { gate, wrun } = std::mem::replace(&mut *phase, Phase::Running)
                else {
                    unreachable!("checked above")
                };
                drop(gate);
                drop(phase);
                self.wait_in_background(wrun, on_exit);
                Ok(())
            }
            Phase::Running => {
                if all {
                    for pid in self.cgroup().procs() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            signal_of(signal)?,
                        );
                    }
                }
                pidfd_send_signal(&self.pidfd, signal as i32)
                    .map_err(|e| signal_error("task", &self.id, e))
            }
            Phase::Stopped { .. } => Err(shim::Error::NotFoundError(format!(
                "task {} has already exited",
                self.id
            ))),
        }
    }

    /// Releases a stopped task: its root unmounted, its files removed. A created task is
    /// abandoned first.
    pub fn delete(self: &std::sync::Arc<Self>) -> shim::Result<(u32, Timestamp)> {
        let created = matches!(
            &*self.phase.lock().expect("task lock"),
            Phase::Created { .. }
        );
        if created {
            self.kill(libc::SIGKILL as u32, false, |_, _| {})?;
        }
        let (exit_status, exited_at) = match self.status() {
            (Status::RUNNING, ..) if !created => {
                return Err(shim::Error::FailedPreconditionError(format!(
                    "task {} is running; kill it first",
                    self.id
                )))
            }
            _ => self.wait(),
        };
        if self.rootfs_mounted {
            self.bundle.unmount_rootfs();
        }
        self.bundle.remove_files();
        Ok((exit_status, exited_at))
    }
}

/// Where wrun puts the bundle's cgroup (the engine reads the spec the same way for both),
/// and whether its payload is native.
fn placement(bundle: &Bundle, id: &str) -> shim::Result<(String, bool)> {
    let spec = wrun::spec::oci::load(&bundle.dir, DEFAULT_CGROUP_PARENT)
        .map_err(|e| shim::Error::InvalidArgument(format!("{e:#}")))?;
    Ok((spec.cgroup_path(id), spec.native().is_some()))
}

/// Starts `wrun run --bundle` held at its start gate; returns once the sandbox PID is known,
/// or with wrun's own error message if it failed to set the sandbox up.
fn spawn_held(
    id: &str,
    bundle: &Bundle,
    io: &[String; 3],
    wrun: &Wrun,
) -> shim::Result<(File, WrunProcess, u32, OwnedFd)> {
    let gate_path = bundle.start_gate();
    nix::unistd::mkfifo(&gate_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| shim::Error::Other(format!("failed to make the start gate: {e}")))?;
    // Read-write: opening never blocks, and wrun's reading end opens at once.
    let gate = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gate_path)
        .map_err(|e| shim::Error::Other(format!("failed to open the start gate: {e}")))?;
    let mut command = Command::new(&wrun.binary);
    if let Some(config) = &wrun.config {
        command.arg("--config").arg(config);
    }
    let stream = |path: &String| Some(PathBuf::from(path)).filter(|_| !path.is_empty());
    let handoff = Handoff {
        pid_file: Some(bundle.pid_file()),
        start_gate: Some(gate_path.clone()),
        stdin: stream(&io[0]),
        stdout: stream(&io[1]),
        stderr: stream(&io[2]),
    };
    command
        .arg("run")
        .arg("--bundle")
        .arg(&bundle.dir)
        .args(["--id", id])
        .args(handoff.to_args());
    // The shim's reaper collects every child; its exit reaches us through this subscription.
    let exits = monitor_subscribe(Topic::Pid)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            shim::Error::Other(format!("failed to run `{}`: {e}", wrun.binary.display()))
        })?;
    let mut wrun = WrunProcess::new(child, exits, None);
    let pid = match wait_for_pid(&mut wrun, &bundle.pid_file()) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = wrun.child.kill();
            wrun.wait();
            return Err(e);
        }
    };
    let pidfd = pidfd_open(pid as i32).map_err(|e| {
        shim::Error::Other(format!("failed to open the sandbox process {pid}: {e}"))
    })?;
    relay_errors(&mut wrun.child, &io[2]);
    Ok((gate, wrun, pid, pidfd))
}

/// A `wrun` child and the subscription its exit arrives on.
pub struct WrunProcess {
    child: Child,
    exits: Subscription,
    exit_code: Option<u32>,
    /// Where wrun writes its errors (`--log`) when its stderr is not piped to the shim.
    error_log: Option<PathBuf>,
}

impl WrunProcess {
    pub fn new(child: Child, exits: Subscription, error_log: Option<PathBuf>) -> WrunProcess {
        WrunProcess {
            child,
            exits,
            exit_code: None,
            error_log,
        }
    }

    fn try_wait(&mut self) -> Option<u32> {
        let pid = self.child.id();
        if self.exit_code.is_none() {
            self.exit_code = self
                .exits
                .rx
                .try_iter()
                .find_map(|event| match event.subject {
                    Subject::Pid(exited) if exited as u32 == pid => Some(event.exit_code as u32),
                    _ => None,
                });
        }
        self.exit_code
    }

    /// Blocks until wrun exits; its exit code (128 + signal if killed). A shim whose task runs
    /// on only waits and answers the odd request: once the task has run for a while, the
    /// shim gives its start-up pages back (`wrun::idle_memory`).
    pub fn wait(mut self) -> u32 {
        let settled_at = std::time::Instant::now() + wrun::idle_memory::SETTLED_AFTER;
        let pid = self.child.id() as i32;
        while self.try_wait().is_none() {
            let left = settled_at.saturating_duration_since(std::time::Instant::now());
            match self.exits.rx.recv_timeout(left) {
                Ok(event) if matches!(event.subject, Subject::Pid(exited) if exited == pid) => {
                    return event.exit_code as u32;
                }
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    wrun::idle_memory::give_back();
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        match self.exit_code {
            Some(code) => code,
            None => shim::monitor::wait_pid(pid, self.exits) as u32,
        }
    }
}

/// Blocks on `changed` until `stopped` reads an exit status and time from the phase.
pub fn wait_until_stopped<P>(
    phase: &Mutex<P>,
    changed: &Condvar,
    stopped: impl Fn(&P) -> Option<(u32, Timestamp)>,
) -> (u32, Timestamp) {
    let mut current = phase.lock().expect("phase lock");
    loop {
        if let Some(ended) = stopped(&current) {
            return ended;
        }
        current = changed.wait(current).expect("phase lock");
    }
}

/// Polls for the PID file (written just before wrun waits at the gate) or wrun's exit.
pub fn wait_for_pid(wrun: &mut WrunProcess, pid_file: &Path) -> shim::Result<u32> {
    wait_for_set_up(wrun, || {
        std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    })
}

/// Polls `ready` until it gives a value, or fails with wrun's own message if it exits first.
pub fn wait_for_set_up<T>(
    wrun: &mut WrunProcess,
    mut ready: impl FnMut() -> Option<T>,
) -> shim::Result<T> {
    let deadline = Instant::now() + SET_UP_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if let Some(code) = wrun.try_wait() {
            let mut message = String::new();
            if let Some(mut stderr) = wrun.child.stderr.take() {
                let _ = stderr.read_to_string(&mut message);
            } else if let Some(log) = &wrun.error_log {
                message = std::fs::read_to_string(log).unwrap_or_default();
            }
            let message = message.trim().trim_start_matches("wrun: ").to_string();
            return Err(shim::Error::Other(if message.is_empty() {
                format!("wrun exited with status {code} while setting up")
            } else {
                message
            }));
        }
        if Instant::now() > deadline {
            return Err(shim::Error::Other(format!(
                "wrun did not set the sandbox up within {}s",
                SET_UP_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// wrun's own messages after set-up (a trap, a limit hit) go where the workload's errors go.
fn relay_errors(child: &mut Child, stderr_path: &str) {
    let Some(mut errors) = child.stderr.take() else {
        return;
    };
    let mut sink: Option<File> = (!stderr_path.is_empty())
        .then(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(stderr_path)
                .ok()
        })
        .flatten();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = errors.read(&mut buffer) {
            if n == 0 {
                break;
            }
            match sink.as_mut() {
                Some(sink) => {
                    let _ = sink.write_all(&buffer[..n]);
                }
                None => log::warn!("{}", String::from_utf8_lossy(&buffer[..n]).trim_end()),
            }
        }
    });
}

fn signal_of(signal: u32) -> shim::Result<nix::sys::signal::Signal> {
    nix::sys::signal::Signal::try_from(signal as i32)
        .map_err(|_| shim::Error::InvalidArgument(format!("invalid signal {signal}")))
}

/// A PID file descriptor: signals through it cannot reach a recycled PID.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A failed signal as containerd reads it: a process that is gone (killed with its cgroup a
/// moment before, or exited while its reaping is under way) is "not found", which
/// `ctr task delete --force` and the CRI plugin's stop accept, as runc.v2 reports it.
pub fn signal_error(what: &str, id: &str, e: std::io::Error) -> shim::Error {
    if e.raw_os_error() == Some(libc::ESRCH) {
        return shim::Error::NotFoundError(format!("{what} {id} has already exited"));
    }
    shim::Error::Other(format!("failed to signal {what} {id}: {e}"))
}

pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> std::io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn wait_until_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

impl Task {
    pub fn cgroup(&self) -> RunCgroup {
        RunCgroup::existing(&self.cgroup_path)
    }

    pub fn bundle_dir(&self) -> String {
        self.bundle.dir.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_to_a_reaped_process_is_not_found_as_containerd_expects() {
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        let e = pidfd_send_signal(&pidfd, libc::SIGKILL).unwrap_err();
        let gone = signal_error("task", "t1", e);
        assert!(
            matches!(gone, shim::Error::NotFoundError(ref m) if m == "task t1 has already exited"),
            "{gone:?}"
        );
        let other = std::io::Error::from_raw_os_error(libc::EPERM);
        assert!(matches!(
            signal_error("exec", "e1", other),
            shim::Error::Other(ref m) if m.starts_with("failed to signal exec e1: ")
        ));
    }
}
