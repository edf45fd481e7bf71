//! The ttrpc task service containerd talks to: one daemon serves every task of a pod.

use crate::exec::Exec;
use crate::process::{Task, Wrun};
use containerd_shim as shim;
use shim::api;
use shim::event::Event;
use shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use shim::protos::ttrpc;
use shim::publisher::RemotePublisher;
use shim::{ExitSignal, TtrpcContext, TtrpcResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Tasks {
    namespace: String,
    exit: Arc<ExitSignal>,
    events: Arc<Events>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

/// Publishes task events to containerd, in the order they happen.
struct Events {
    namespace: String,
    publisher: RemotePublisher,
}

impl Events {
    fn publish(&self, event: impl Event + 'static) {
        let topic = event.topic();
        if let Err(e) = self.publisher.publish(
            shim::Context::default(),
            &topic,
            &self.namespace,
            Box::new(event),
        ) {
            log::warn!("failed to publish {topic}: {e}");
        }
    }
}

impl Tasks {
    pub fn new(namespace: String, exit: Arc<ExitSignal>, publisher: RemotePublisher) -> Tasks {
        Tasks {
            events: Arc::new(Events {
                namespace: namespace.clone(),
                publisher,
            }),
            namespace,
            exit,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        self.tasks
            .lock()
            .expect("tasks lock")
            .get(id)
            .cloned()
            .ok_or_else(|| status(ttrpc::Code::NOT_FOUND, format!("task {id} not found")))
    }

    /// Starts an exec'd process; its exit is published with its exec ID.
    fn start_exec(&self, task: &Task, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        let exec = exec_of(task, exec_id)?;
        let events = self.events.clone();
        let (container_id, id) = (task.id.clone(), exec_id.to_string());
        // The exit is published after the start event (the lock is held until it is out).
        let order = Arc::new(Mutex::new(()));
        let published = order.lock().expect("event order lock");
        let after_start = order.clone();
        let pid = exec
            .start(task, move |pid, exit_status, exited_at| {
                drop(after_start.lock().expect("event order lock"));
                events.publish(TaskExit {
                    container_id,
                    id,
                    pid,
                    exit_status,
                    exited_at: Some(exited_at).into(),
                    ..Default::default()
                })
            })
            .map_err(rpc_error)?;
        self.events.publish(TaskExecStarted {
            container_id: task.id.clone(),
            exec_id: exec_id.to_string(),
            pid,
            ..Default::default()
        });
        drop(published);
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Publishes the task's exit when its process ends.
    fn exit_publisher(
        &self,
        task: &Task,
    ) -> impl FnOnce(u32, shim::protos::protobuf::well_known_types::timestamp::Timestamp) + Send + 'static
    {
        let events = self.events.clone();
        let (id, pid) = (task.id.clone(), task.pid);
        move |exit_status, exited_at| {
            events.publish(TaskExit {
                container_id: id.clone(),
                id,
                pid,
                exit_status,
                exited_at: Some(exited_at).into(),
                ..Default::default()
            })
        }
    }
}

fn status(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// containerd shows the message as it is, so it carries wrun's reason and nothing else.
fn rpc_error(e: shim::Error) -> ttrpc::Error {
    match e {
        shim::Error::InvalidArgument(m) => status(ttrpc::Code::INVALID_ARGUMENT, m),
        shim::Error::NotFoundError(m) => status(ttrpc::Code::NOT_FOUND, m),
        shim::Error::FailedPreconditionError(m) => status(ttrpc::Code::FAILED_PRECONDITION, m),
        shim::Error::Other(m) => status(ttrpc::Code::UNKNOWN, m),
        other => status(ttrpc::Code::UNKNOWN, other.to_string()),
    }
}

fn unimplemented<T>(what: &str) -> TtrpcResult<T> {
    Err(status(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{what} is not implemented by wrun"),
    ))
}

/// The task's exec'd process `exec_id`.
fn exec_of(task: &Task, exec_id: &str) -> TtrpcResult<Arc<Exec>> {
    task.execs
        .lock()
        .expect("execs lock")
        .get(exec_id)
        .cloned()
        .ok_or_else(|| {
            status(
                ttrpc::Code::NOT_FOUND,
                format!("process {exec_id} not found"),
            )
        })
}

impl shim::Task for Tasks {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if self.tasks.lock().expect("tasks lock").contains_key(&req.id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("task {} already exists", req.id),
            ));
        }
        let config = crate::options::config_path(req.options.as_ref())
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        let task = Arc::new(Task::create(&req, &Wrun::locate(config)).map_err(rpc_error)?);
        let pid = task.pid;
        self.tasks
            .lock()
            .expect("tasks lock")
            .insert(req.id.clone(), task);
        self.events.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(&task, &req.exec_id);
        }
        // The start event goes out before the exit event can.
        let events = self.events.clone();
        let on_exit = self.exit_publisher(&task);
        let (id, pid) = (task.id.clone(), task.pid);
        let published = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let after_start = published.clone();
        task.start(move |exit_status, exited_at| {
            let (lock, cv) = &*after_start;
            let mut started = lock.lock().expect("event order lock");
            while !*started {
                started = cv.wait(started).expect("event order lock");
            }
            on_exit(exit_status, exited_at)
        })
        .map_err(rpc_error)?;
        events.publish(TaskStart {
            container_id: id,
            pid,
            ..Default::default()
        });
        *published.0.lock().expect("event order lock") = true;
        published.1.notify_all();
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let task = self.get(&req.id)?;
        let (state, pid, exit_status, exited_at, io) = if req.exec_id.is_empty() {
            let (state, exit_status, exited_at) = task.status();
            (state, task.pid, exit_status, exited_at, task.io.clone())
        } else {
            let exec = exec_of(&task, &req.exec_id)?;
            let (state, pid, exit_status, exited_at) = exec.status();
            (state, pid, exit_status, exited_at, exec.io.clone())
        };
        let [stdin, stdout, stderr] = io;
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                task.id.clone()
            } else {
                req.exec_id
            },
            bundle: task.bundle_dir(),
            pid,
            status: state.into(),
            stdin,
            stdout,
            stderr,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let task = self.get(&req.id)?;
        let (exit_status, exited_at) = if req.exec_id.is_empty() {
            task.wait()
        } else {
            exec_of(&task, &req.exec_id)?.wait()
        };
        Ok(api::WaitResponse {
            exit_status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            exec_of(&task, &req.exec_id)?
                .kill(req.signal)
                .map_err(rpc_error)?;
            return Ok(api::Empty::new());
        }
        task.kill(req.signal, req.all, self.exit_publisher(&task))
            .map_err(rpc_error)?;
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            let exec = exec_of(&task, &req.exec_id)?;
            let (pid, exit_status, exited_at) = exec.delete(&task).map_err(rpc_error)?;
            task.execs.lock().expect("execs lock").remove(&req.exec_id);
            return Ok(api::DeleteResponse {
                pid,
                exit_status,
                exited_at: Some(exited_at).into(),
                ..Default::default()
            });
        }
        let (exit_status, exited_at) = task.delete().map_err(rpc_error)?;
        self.tasks.lock().expect("tasks lock").remove(&req.id);
        self.events.publish(TaskDelete {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: task.pid,
            exit_status,
            exited_at: Some(exited_at.clone()).into(),
            ..Default::default()
        });
        Ok(api::DeleteResponse {
            pid: task.pid,
            exit_status,
            exited_at: Some(exited_at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let task = self.get(&req.id)?;
        let processes = task
            .cgroup()
            .procs()
            .into_iter()
            .map(|pid| shim::protos::types::task::ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let task = self.get(&req.id)?;
        let metrics = crate::metrics::of(&task.cgroup());
        let any = shim::util::convert_to_any(Box::new(metrics)).map_err(rpc_error)?;
        Ok(api::StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.get(&req.id).map(|t| t.pid).unwrap_or_default();
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    /// The daemon serves a whole pod: it exits only once its last task is deleted.
    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.tasks.lock().expect("tasks lock").is_empty() {
            log::info!("no task left in namespace {}: exiting", self.namespace);
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }

    /// The shim holds no end of stdin, for a task or an exec'd process: when containerd
    /// closes its writer the process sees EOF.
    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let task = self.get(&req.id)?;
        if !req.exec_id.is_empty() {
            exec_of(&task, &req.exec_id)?;
        }
        Ok(api::Empty::new())
    }

    /// Adds a process to a running native task, started by `start` with its exec ID.
    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let task = self.get(&req.id)?;
        if !task.native {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!(
                    "task {} runs a Wasm module: exec runs native processes only",
                    req.id
                ),
            ));
        }
        let exec = Exec::new(&req).map_err(rpc_error)?;
        let mut execs = task.execs.lock().expect("execs lock");
        if execs.contains_key(&req.exec_id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("process {} already exists", req.exec_id),
            ));
        }
        execs.insert(req.exec_id.clone(), Arc::new(exec));
        drop(execs);
        self.events.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(api::Empty::new())
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        unimplemented("pause")
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        unimplemented("resume")
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        unimplemented("checkpoint")
    }

    /// An exec'd process's terminal is resized; a task has none (create refuses one).
    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let task = self.get(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} has no terminal", task.id),
            ));
        }
        exec_of(&task, &req.exec_id)?
            .resize(req.height, req.width)
            .map_err(rpc_error)?;
        Ok(api::Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        unimplemented("update")
    }
}
