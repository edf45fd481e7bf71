//! A process exec'd into a running native task (`ctr task exec`, CRI `ExecSync` and `Exec`,
//! so `kubectl exec` and exec probes): `wrun exec --process` against the task's sandbox, with
//! containerd's FIFOs as its streams; it exits with the process's code.

use crate::process::{
    pidfd_open, pidfd_send_signal, signal_error, wait_for_pid, wait_for_set_up, wait_until_stopped,
    Task, WrunProcess,
};
use containerd_shim as shim;
use shim::api::{self, Status};
use shim::monitor::{monitor_subscribe, Topic};
use shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use wrun::handoff::Handoff;
use wrun::sandbox::terminal;

enum Phase {
    Created,
    /// `pidfd` is `None` when the process ended before it could be opened.
    Running {
        pid: u32,
        pidfd: Option<OwnedFd>,
    },
    Stopped {
        pid: u32,
        exit_status: u32,
        exited_at: Timestamp,
    },
}

fn copy_in_background(from: OwnedFd, to: OwnedFd) {
    std::thread::spawn(move || {
        let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
        let _ = std::io::copy(&mut from, &mut to);
    });
}

/// A console socket for `wrun exec --console-socket`, polled (not blocked on) for the master.
fn listen(path: &Path) -> shim::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .map_err(|e| shim::Error::Other(format!("failed to make the console socket: {e}")))
}

/// The terminal's master once wrun has sent it, `None` while it has not connected.
fn accept_master(listener: &UnixListener) -> Option<shim::Result<OwnedFd>> {
    match listener.accept() {
        Ok((stream, _)) => {
            let _ = stream.set_nonblocking(false);
            Some(terminal::receive_master(&stream).map_err(|e| {
                shim::Error::Other(format!("failed to receive the exec's terminal: {e}"))
            }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(shim::Error::Other(format!(
            "failed to accept on the console socket: {e}"
        )))),
    }
}

/// The exit status of a process deleted before it was started (runc shim's for a process
/// it could not run).
const NEVER_RAN: u32 = 255;

/// One exec'd process of a task.
pub struct Exec {
    pub id: String,
    pub io: [String; 3],
    /// The process, runtime-spec JSON as containerd sends it.
    process: Vec<u8>,
    /// Whether it has a terminal, relayed by the shim between containerd's FIFOs and the
    /// terminal's master (kept for resizes).
    terminal: bool,
    master: Mutex<Option<OwnedFd>>,
    phase: Mutex<Phase>,
    stopped: Condvar,
}

impl Exec {
    pub fn new(req: &api::ExecProcessRequest) -> shim::Result<Exec> {
        let process = req
            .spec
            .as_ref()
            .map(|spec| spec.value.clone())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| shim::Error::InvalidArgument("exec without a process spec".into()))?;
        Ok(Exec {
            id: req.exec_id.clone(),
            io: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            terminal: req.terminal,
            master: Mutex::new(None),
            process,
            phase: Mutex::new(Phase::Created),
            stopped: Condvar::new(),
        })
    }

    fn file(&self, task: &Task, extension: &str) -> PathBuf {
        task.bundle
            .dir
            .join(format!("exec-{}.{extension}", self.id))
    }

    /// Starts the process in `task`; its PID once it runs. `on_exit` gets its PID, exit
    /// status and time.
    pub fn start(
        self: &Arc<Self>,
        task: &Task,
        on_exit: impl FnOnce(u32, u32, Timestamp) + Send + 'static,
    ) -> shim::Result<u32> {
        let mut phase = self.phase.lock().expect("exec lock");
        if !matches!(*phase, Phase::Created) {
            return Err(shim::Error::FailedPreconditionError(format!(
                "exec {} was already started",
                self.id
            )));
        }
        let (process_file, pid_file, log) = (
            self.file(task, "json"),
            self.file(task, "pid"),
            self.file(task, "log"),
        );
        std::fs::write(&process_file, &self.process)
            .map_err(|e| shim::Error::Other(format!("failed to write the exec's process: {e}")))?;
        let mut command = Command::new(&task.wrun.binary);
        if let Some(config) = &task.wrun.config {
            command.arg("--config").arg(config);
        }
        command
            .arg("--log")
            .arg(&log)
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file)
            .args(["--sandbox-pid", &task.pid.to_string()])
            .arg("--bundle")
            .arg(&task.bundle.dir)
            .arg(&task.id);
        let console = self.terminal.then(|| self.file(task, "sock"));
        let listener = match &console {
            Some(path) => {
                command.arg("--console-socket").arg(path);
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                Some(listen(path)?)
            }
            None => {
                self.connect_streams(&mut command)?;
                None
            }
        };
        let exits = monitor_subscribe(Topic::Pid)?;
        let child = command.spawn().map_err(|e| {
            shim::Error::Other(format!(
                "failed to run `{}`: {e}",
                task.wrun.binary.display()
            ))
        })?;
        let mut wrun = WrunProcess::new(child, exits, Some(log));
        let relayed = match &listener {
            Some(listener) => wait_for_set_up(&mut wrun, || accept_master(listener))
                .and_then(|master| self.relay(master?)),
            None => Ok(()),
        };
        if let Some(path) = &console {
            let _ = std::fs::remove_file(path);
        }
        let pid = match relayed.and_then(|()| wait_for_pid(&mut wrun, &pid_file)) {
            Ok(pid) => pid,
            Err(e) => {
                // containerd may already wait for it: the wait ends with wrun's code.
                self.stop(&mut phase, 0, wrun.wait());
                return Err(e);
            }
        };
        let pidfd = pidfd_open(pid as i32).ok();
        *phase = Phase::Running { pid, pidfd };
        drop(phase);
        let exec = self.clone();
        std::thread::spawn(move || {
            let exit_status = wrun.wait();
            let exited_at = exec.stop(&mut exec.phase.lock().expect("exec lock"), pid, exit_status);
            on_exit(pid, exit_status, exited_at);
        });
        Ok(pid)
    }

    /// Marks it stopped and wakes whoever waits for it; when it stopped.
    fn stop(&self, phase: &mut Phase, pid: u32, exit_status: u32) -> Timestamp {
        let exited_at = shim::util::timestamp().unwrap_or_default();
        *phase = Phase::Stopped {
            pid,
            exit_status,
            exited_at: exited_at.clone(),
        };
        self.stopped.notify_all();
        exited_at
    }

    /// containerd's FIFOs as the process's streams; /dev/null where it gave none.
    fn connect_streams(&self, command: &mut Command) -> shim::Result<()> {
        let path = |p: &String| Some(PathBuf::from(p)).filter(|_| !p.is_empty());
        let handoff = Handoff {
            stdin: path(&self.io[0]),
            stdout: path(&self.io[1]),
            stderr: path(&self.io[2]),
            ..Handoff::default()
        };
        let streams = handoff
            .open_stdio()
            .map_err(|e| shim::Error::Other(format!("{e:#}")))?;
        let or_null = |fd: Option<OwnedFd>| fd.map_or_else(Stdio::null, Stdio::from);
        command
            .stdin(or_null(streams.stdin))
            .stdout(or_null(streams.stdout))
            .stderr(or_null(streams.stderr));
        Ok(())
    }

    /// Copies containerd's stdin FIFO to the terminal and the terminal to its stdout FIFO,
    /// until either ends.
    fn relay(&self, master: OwnedFd) -> shim::Result<()> {
        let path = |p: &String| Some(PathBuf::from(p)).filter(|_| !p.is_empty());
        let handoff = Handoff {
            stdin: path(&self.io[0]),
            stdout: path(&self.io[1]),
            ..Handoff::default()
        };
        let streams = handoff
            .open_stdio()
            .map_err(|e| shim::Error::Other(format!("{e:#}")))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| shim::Error::Other(format!("failed to copy the terminal: {e}")))
        };
        if let Some(stdin) = streams.stdin {
            copy_in_background(stdin, dup(&master)?);
        }
        if let Some(stdout) = streams.stdout {
            copy_in_background(dup(&master)?, stdout);
        }
        *self.master.lock().expect("exec lock") = Some(master);
        Ok(())
    }

    /// Resizes its terminal.
    pub fn resize(&self, rows: u32, columns: u32) -> shim::Result<()> {
        let master = self.master.lock().expect("exec lock");
        let Some(master) = master.as_ref() else {
            return Err(shim::Error::FailedPreconditionError(format!(
                "exec {} has no terminal",
                self.id
            )));
        };
        terminal::resize(master, rows as u16, columns as u16)
            .map_err(|e| shim::Error::Other(format!("failed to resize exec {}: {e}", self.id)))
    }

    /// Its status, PID (0 before it starts), exit status and time.
    pub fn status(&self) -> (Status, u32, u32, Option<Timestamp>) {
        match &*self.phase.lock().expect("exec lock") {
            Phase::Created => (Status::CREATED, 0, 0, None),
            Phase::Running { pid, .. } => (Status::RUNNING, *pid, 0, None),
            Phase::Stopped {
                pid,
                exit_status,
                exited_at,
            } => (Status::STOPPED, *pid, *exit_status, Some(exited_at.clone())),
        }
    }

    /// Blocks until it has stopped.
    pub fn wait(&self) -> (u32, Timestamp) {
        wait_until_stopped(&self.phase, &self.stopped, |phase| match phase {
            Phase::Stopped {
                exit_status,
                exited_at,
                ..
            } => Some((*exit_status, exited_at.clone())),
            _ => None,
        })
    }

    pub fn kill(&self, signal: u32) -> shim::Result<()> {
        match &*self.phase.lock().expect("exec lock") {
            Phase::Running {
                pidfd: Some(pidfd), ..
            } => pidfd_send_signal(pidfd, signal as i32)
                .map_err(|e| signal_error("exec", &self.id, e)),
            Phase::Running { pidfd: None, .. } => Err(shim::Error::NotFoundError(format!(
                "exec {} has already exited",
                self.id
            ))),
            Phase::Created => Err(shim::Error::FailedPreconditionError(format!(
                "exec {} has not started",
                self.id
            ))),
            Phase::Stopped { .. } => Err(shim::Error::NotFoundError(format!(
                "exec {} has already exited",
                self.id
            ))),
        }
    }

    /// Releases a stopped (or never started) process: its files removed; its PID, exit
    /// status and time.
    pub fn delete(&self, task: &Task) -> shim::Result<(u32, u32, Timestamp)> {
        {
            let mut phase = self.phase.lock().expect("exec lock");
            match &*phase {
                Phase::Running { .. } => {
                    return Err(shim::Error::FailedPreconditionError(format!(
                        "exec {} is running; kill it first",
                        self.id
                    )))
                }
                // Never started: a wait for it ends as for a process that could not run.
                Phase::Created => {
                    self.stop(&mut phase, 0, NEVER_RAN);
                }
                Phase::Stopped { .. } => {}
            }
        }
        let (_, pid, exit_status, exited_at) = self.status();
        for extension in ["json", "pid", "log"] {
            let _ = std::fs::remove_file(self.file(task, extension));
        }
        Ok((pid, exit_status, exited_at.unwrap_or_default()))
    }
}
