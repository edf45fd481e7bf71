//! A process exec'd into a running native task (`ctr task exec`, CRI `ExecSync` and `Exec`,
//! so `kubectl exec` and exec probes): `wrun exec --process` against the task's sandbox, with
//! containerd's FIFOs as its streams; it exits with the process's code.

use crate::process::{pidfd_open, pidfd_send_signal, wait_for_pid, Task, WrunProcess};
use containerd_shim as shim;
use shim::api::{self, Status};
use shim::monitor::{monitor_subscribe, Topic};
use shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use wrun::handoff::Handoff;

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

/// The exit status of a process deleted before it was started (runc shim's for a process
/// it could not run).
const NEVER_RAN: u32 = 255;

/// One exec'd process of a task.
pub struct Exec {
    pub id: String,
    pub io: [String; 3],
    /// The process, runtime-spec JSON as containerd sends it.
    process: Vec<u8>,
    phase: Mutex<Phase>,
    stopped: Condvar,
}

impl Exec {
    pub fn new(req: &api::ExecProcessRequest) -> shim::Result<Exec> {
        if req.terminal {
            return Err(shim::Error::InvalidArgument(
                "a terminal (tty) is not supported by wrun's exec".into(),
            ));
        }
        let process = req
            .spec
            .as_ref()
            .map(|spec| spec.value.clone())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| shim::Error::InvalidArgument("exec without a process spec".into()))?;
        Ok(Exec {
            id: req.exec_id.clone(),
            io: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
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
        self.connect_streams(&mut command)?;
        let exits = monitor_subscribe(Topic::Pid)?;
        let child = command.spawn().map_err(|e| {
            shim::Error::Other(format!(
                "failed to run `{}`: {e}",
                task.wrun.binary.display()
            ))
        })?;
        let mut wrun = WrunProcess::new(child, exits, Some(log));
        let pid = match wait_for_pid(&mut wrun, &pid_file) {
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
        let mut phase = self.phase.lock().expect("exec lock");
        loop {
            if let Phase::Stopped {
                exit_status,
                exited_at,
                ..
            } = &*phase
            {
                return (*exit_status, exited_at.clone());
            }
            phase = self.stopped.wait(phase).expect("exec lock");
        }
    }

    pub fn kill(&self, signal: u32) -> shim::Result<()> {
        match &*self.phase.lock().expect("exec lock") {
            Phase::Running {
                pidfd: Some(pidfd), ..
            } => pidfd_send_signal(pidfd, signal as i32)
                .map_err(|e| shim::Error::Other(format!("failed to signal exec {}: {e}", self.id))),
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
