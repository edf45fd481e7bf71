//! The sandboxed child: enters its namespaces and root, prepares its payload (a Wasm guest or
//! a native process), waits for its cgroup, locks itself down, then runs the payload and exits
//! with its code. It never returns. Both payloads share every step but the root and the run.

use super::harden::{self, HardenError};
use super::native::{self, mounts::MountError, process::ProcessError, Network};
use super::rootfs::{self, RootfsError};
use super::signals::{self, StopReason};
use super::test_hooks;
use crate::exit;
use crate::spec::{NativeSpec, RunSpec};
use crate::timeline;
use crate::wasm::cache::AotCache;
use crate::wasm::exec::{self, ExecError, Outcome};
use crate::wasm::source::ModuleFile;
use crate::wasm::{self as wasm, LoadError, Origin};
use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// What the parent hands the child across the fork.
pub struct ChildPlan<'a> {
    pub spec: &'a RunSpec,
    /// The Wasm module, opened by the parent (none for a native payload).
    pub module_file: Option<File>,
    /// Descriptors to install as the workload's stdin, stdout, stderr.
    pub stdio: super::Stdio,
    pub cache: AotCache,
    pub mount_point: PathBuf,
    pub hostname: String,
    /// Sockets listening on the published addresses (`-p`), for the guest to serve on.
    pub listeners: Vec<std::net::TcpListener>,
    /// The sandbox's end of the outbound connect broker (`--allow-outbound`).
    pub broker: Option<OwnedFd>,
    /// The supervising parent, whose network namespace the sandbox joins.
    pub parent: nix::unistd::Pid,
    /// Read end of the pipe on which the parent says the cgroup is ready.
    pub ready: OwnedFd,
    pub old_mask: SigSet,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ChildError {
    #[error("failed to set up the sandbox signal handlers")]
    Signals(#[source] nix::Error),
    #[error("failed to connect the workload's standard streams")]
    Stdio(#[source] nix::Error),
    #[error("failed to create the sandbox namespaces")]
    Namespaces(#[source] nix::Error),
    #[error("failed to set the sandbox hostname")]
    Hostname(#[source] nix::Error),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Harden(#[from] HardenError),
    #[error("failed to create the wasm engine")]
    Engine(#[source] wasmtime::Error),
    #[error("the sandbox's warm-up guest failed")]
    WarmUp(#[source] wasmtime::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the supervising wrun process went away before the sandbox was ready")]
    ParentGone,
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Mounts(#[from] MountError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Seccomp(#[from] native::profile::SeccompSpecError),
}

impl ChildError {
    pub(super) fn exit_code(&self) -> i32 {
        match self {
            ChildError::Load(_) => exit::CANNOT_EXECUTE,
            ChildError::Exec(e) if e.is_module_error() => exit::CANNOT_EXECUTE,
            ChildError::Process(e) => e.exit_code(),
            _ => exit::RUNTIME_ERROR,
        }
    }
}

/// Runs the child to its end and exits the process with the workload's code.
pub fn main(plan: ChildPlan<'_>) -> ! {
    exit_with(run(plan))
}

/// Ends the process with the workload's code, or with the failure's after printing it.
pub(super) fn exit_with(outcome: Result<i32, ChildError>) -> ! {
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            crate::err_line!("wrun: {:#}", anyhow::Error::new(e));
            tracing::debug!("exit {code}: wrun failed in the sandbox, the workload did not end");
            code
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit skips destructors on purpose: tearing the engine and module down costs
    // about a millisecond and the kernel frees everything anyway.
    unsafe { libc::_exit(code) }
}

fn run(mut plan: ChildPlan<'_>) -> Result<i32, ChildError> {
    timeline::in_child();
    signals::init_child(&plan.old_mask).map_err(ChildError::Signals)?;
    // Installed, and the originals closed, before closing everything else inherited.
    install_stdio(std::mem::take(&mut plan.stdio)).map_err(ChildError::Stdio)?;
    let mut keep = vec![plan.ready.as_raw_fd()];
    keep.extend(plan.module_file.as_ref().map(AsRawFd::as_raw_fd));
    keep.extend(plan.listeners.iter().map(AsRawFd::as_raw_fd));
    keep.extend(plan.broker.as_ref().map(AsRawFd::as_raw_fd));
    harden::close_inherited_fds(&keep)?;
    let spec = plan.spec;
    match &spec.native {
        None => run_wasm(plan),
        Some(native) => run_native(plan, native),
    }
}

fn run_wasm(mut plan: ChildPlan<'_>) -> Result<i32, ChildError> {
    let spec = plan.spec;
    let mut new = CloneFlags::CLONE_NEWNS;
    for (path, flag) in [
        (&spec.join.uts, CloneFlags::CLONE_NEWUTS),
        (&spec.join.ipc, CloneFlags::CLONE_NEWIPC),
    ] {
        match path {
            Some(path) => join_path(path, flag)?,
            None => new |= flag,
        }
    }
    nix::sched::unshare(new).map_err(ChildError::Namespaces)?;
    if spec.join.uts.is_none() {
        nix::unistd::sethostname(&plan.hostname).map_err(ChildError::Hostname)?;
    }
    timeline::mark("namespaces");

    let engine = wasm::engine::new_engine(false, &spec.engine).map_err(ChildError::Engine)?;
    timeline::mark("engine");
    let module_file = plan
        .module_file
        .take()
        .expect("the parent opens a Wasm module");
    let module = ModuleFile::new(module_file, &spec.module).map_err(LoadError::from)?;
    let (program, origin) =
        wasm::load(&engine, &module, &plan.cache, spec.module_digest.as_deref())?;
    match &origin {
        Origin::Cached(path) => tracing::debug!(path = %path.display(), "aot cache hit"),
        Origin::Compiled(_) => tracing::debug!("compiled (aot cache miss)"),
    }
    timeline::mark("module loaded");
    drop(module);
    // The guest's new files get the caller's umask, as under wasmtime (a native process
    // gets its spec's); wrun's own, 077, stays for what it wrote to the state root above.
    nix::sys::stat::umask(crate::state::caller_umask());

    // Opened while /proc is still reachable; the parent's `net` link is followed only once
    // the parent has moved into the new network namespace.
    let network = match &spec.join.network {
        Some(path) => NetworkJoin::Existing(open_namespace(path)?),
        None => NetworkJoin::of_parent(plan.parent)?,
    };
    let preopens = rootfs::enter_empty_root(&plan.mount_point, &spec.preopens)?;
    timeline::mark("root pivoted");
    // Everything that does not need the cgroup is done before waiting for it. (A second
    // thread for this was measured slower: with the parent busy, three threads share 2 CPUs.)
    if !spec.ports.is_empty() {
        return serve_http(plan, engine, program, network, preopens);
    }
    let mut host = exec::prepare_host(&engine, program.kind(), &spec.args, &spec.env)?;
    let filter = harden::wasm_filter();
    timeline::mark("host ready");
    wait_ready(plan.ready)?;
    timeline::mark("cgroup ready");
    network.join()?;
    // Rooted at the run's own cgroup now that the parent has moved us into it.
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    host.preopen(&preopens)?;
    lock_down(&filter)?;
    timeline::mark("locked down");
    test_hooks::after_seccomp();

    signals::arm(
        spec.engine.epoch_interruption.then_some(&engine),
        spec.limits.timeout,
    );
    let outcome = exec::run(&engine, &program, &spec.module, host, spec.limits.memory)?;
    timeline::mark("guest returned");
    Ok(exit_code(outcome, spec))
}

/// `-p`: the same sandbox, serving HTTP requests on the inherited listeners instead of running
/// a command. The filter adds only what accepting and answering connections needs.
fn serve_http(
    mut plan: ChildPlan<'_>,
    engine: wasmtime::Engine,
    program: wasm::Program,
    network: NetworkJoin,
    preopens: Vec<exec::GuestDir>,
) -> Result<i32, ChildError> {
    let spec = plan.spec;
    let server = Server::prepare(&engine, &program, &spec.module)?;
    wait_ready(plan.ready)?;
    network.join()?;
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    let options = wasm::serve::ServeOptions {
        stop_requested: signals::stop_requested,
        preopens,
        args: spec.args.clone(),
        env: spec.env.clone(),
        memory_limit: spec.limits.memory,
        request_timeout: spec.request_timeout,
        allow_outbound: spec.allow_outbound.clone(),
        broker: plan.broker.take(),
    };
    server.serve(&engine, spec.limits.timeout, plan.listeners, options, false)
}

/// An HTTP handler made ready to serve: what can be done before the cgroup is joined.
pub(super) struct Server {
    pre: wasmtime_wasi_http::p2::bindings::ProxyPre<wasm::serve::ServeState>,
    runtime: tokio::runtime::Runtime,
    filter: seccompiler::BpfProgram,
}

impl Server {
    /// Checks that `program` (from `path`) is an HTTP handler and prepares it.
    pub(super) fn prepare(
        engine: &wasmtime::Engine,
        program: &wasm::Program,
        path: &std::path::Path,
    ) -> Result<Server, ChildError> {
        let wasm::Program::Component(component) = program else {
            return Err(exec::ExecError::NotHttpHandler {
                path: path.to_path_buf(),
            }
            .into());
        };
        Ok(Server {
            pre: wasm::serve::prepare(engine, component, path)?,
            runtime: wasm::serve::runtime()?,
            filter: harden::http_server_filter(),
        })
    }

    /// Locks the process down (only the filter is left when `privileges_dropped`) and serves
    /// on `listeners` until told to stop.
    pub(super) fn serve(
        self,
        engine: &wasmtime::Engine,
        timeout: Option<std::time::Duration>,
        listeners: Vec<std::net::TcpListener>,
        options: wasm::serve::ServeOptions,
        privileges_dropped: bool,
    ) -> Result<i32, ChildError> {
        let ticker_engine = engine.clone();
        let ticks = options.request_timeout.is_some();
        if privileges_dropped {
            harden::install_seccomp(&self.filter)?;
        } else {
            lock_down(&self.filter)?;
        }
        signals::arm_server(engine, timeout);
        if ticks {
            std::thread::spawn(move || loop {
                std::thread::sleep(wasm::serve::TICK);
                ticker_engine.increment_epoch();
            });
        }
        wasm::serve::serve(self.runtime, self.pre, listeners, options)?;
        Ok(0)
    }
}

/// The native payload: the spec's namespaces and root, then `execve` (which only returns on
/// failure). Capabilities, user and seccomp come from the spec, in `native::process`.
fn run_native(plan: ChildPlan<'_>, native: &NativeSpec) -> Result<i32, ChildError> {
    let spec = &native.spec;
    // Directories made in the container's root for mount points are the container's:
    // 0755 as runc makes them, not wrun's own 077 (the process gets its spec's umask later).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sched::unshare(native::unshare_flags(spec)).map_err(ChildError::Namespaces)?;
    for (flag, path) in native::joined(spec) {
        join_path(&path, flag)?;
    }
    if native::new_uts(spec) {
        let name = spec
            .hostname()
            .clone()
            .unwrap_or_else(|| plan.hostname.clone());
        nix::unistd::sethostname(&name).map_err(ChildError::Hostname)?;
    }
    // Opened before the new root hides the host's /proc (a pod's `/proc/<pid>/ns/net`).
    let network = match native::network_of(spec) {
        Network::New => Some(NetworkJoin::Parents(open_dir(&format!(
            "/proc/{}/ns",
            plan.parent
        ))?)),
        Network::Join(path) => Some(NetworkJoin::Existing(open_namespace(&path)?)),
        Network::Host => None,
    };
    let after_network = native::mounts::enter(native, native.bundle.as_deref())?;
    let filter = native::filter_of(spec)?;
    wait_ready(plan.ready)?;
    if let Some(network) = network {
        network.join()?;
    }
    after_network.finish()?;
    if native::new_cgroup_namespace(spec) {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    }
    let process = spec.process().as_ref().ok_or(ProcessError::NoProcess)?;
    Err(native::process::become_workload(process, &filter, native.init).into())
}

/// Joins the namespace at `path` (a pod's, say).
fn join_path(path: &std::path::Path, flag: CloneFlags) -> Result<(), ChildError> {
    nix::sched::setns(open_namespace(path)?, flag).map_err(ChildError::Namespaces)
}

fn open_namespace(path: &std::path::Path) -> Result<File, ChildError> {
    File::open(path).map_err(|e| {
        ChildError::Namespaces(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })
}

/// The network namespace the sandbox ends up in, opened while it can still be named.
pub(super) enum NetworkJoin {
    /// The one the parent made: its `/proc/<pid>/ns` directory, whose `net` entry is read
    /// only after the parent has moved into the new namespace.
    Parents(OwnedFd),
    /// An existing one (a pod's).
    Existing(File),
}

impl NetworkJoin {
    /// The namespace `parent` is about to make (`/proc` must still be reachable).
    pub(super) fn of_parent(parent: nix::unistd::Pid) -> Result<NetworkJoin, ChildError> {
        Ok(NetworkJoin::Parents(open_dir(&format!(
            "/proc/{parent}/ns"
        ))?))
    }

    pub(super) fn join(self) -> Result<(), ChildError> {
        match self {
            NetworkJoin::Parents(namespaces) => join_network(namespaces),
            NetworkJoin::Existing(file) => {
                nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(ChildError::Namespaces)
            }
        }
    }
}

/// Makes the given descriptors the process's stdin, stdout and stderr.
pub(super) fn install_stdio(stdio: super::Stdio) -> nix::Result<()> {
    for (fd, target) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
        if let Some(fd) = fd {
            // SAFETY: dup2 onto a standard descriptor number; `fd` stays valid until dropped.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                return Err(nix::Error::last());
            }
        }
    }
    Ok(())
}

/// The last step before guest code: no more privileges, and only the allowlisted system calls.
fn lock_down(filter: &seccompiler::BpfProgram) -> Result<(), HardenError> {
    harden::limit_resources()?;
    harden::drop_capabilities()?;
    harden::set_no_new_privs()?;
    harden::install_seccomp(filter)
}

fn open_dir(path: &str) -> Result<OwnedFd, ChildError> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ChildError::Namespaces)
}

/// Enters the network namespace the parent created for this sandbox.
fn join_network(parent_namespaces: OwnedFd) -> Result<(), ChildError> {
    use nix::fcntl::OFlag;
    let net = nix::fcntl::openat(
        &parent_namespaces,
        "net",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(ChildError::Namespaces)?;
    nix::sched::setns(net, CloneFlags::CLONE_NEWNET).map_err(ChildError::Namespaces)
}

/// Blocks until the parent has put us in our cgroup; EOF means it failed or died.
pub(super) fn wait_ready(ready: OwnedFd) -> Result<(), ChildError> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&ready, &mut byte) {
            Ok(1) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            _ => return Err(ChildError::ParentGone),
        }
    }
}

fn exit_code(outcome: Outcome, spec: &RunSpec) -> i32 {
    let guests_own = matches!(outcome, Outcome::Exited(_));
    let code = exit_code_of(outcome, spec.limits.timeout);
    if guests_own && signals::stop_reason().is_none() {
        // A guest may exit 125-127 itself: `-v` tells it from wrun's own failure. (Not in a
        // pooled sandbox, whose stderr is the caller's and whose logging is the daemon's.)
        tracing::debug!("exit {code}: the guest's own exit code");
    }
    code
}

/// The exit code of a guest that ended with `outcome`, reporting a trap or timeout on stderr.
pub(super) fn exit_code_of(outcome: Outcome, timeout: Option<std::time::Duration>) -> i32 {
    match (outcome, signals::stop_reason()) {
        // The timeout wins over whatever the guest did once it passed: a host call it was
        // blocked in (opening a FIFO, say) fails, and the guest may well exit 0 on that.
        (_, Some(StopReason::Timeout)) | (Outcome::Interrupted, None) => {
            let after = timeout
                .map(|t| humantime::format_duration(t).to_string())
                .unwrap_or_default();
            crate::err_line!("wrun: timeout: the workload was interrupted after {after}");
            exit::TIMEOUT
        }
        (Outcome::Exited(code), _) => code,
        (_, Some(StopReason::Signal(signo))) => exit::signaled(signo),
        (Outcome::Trapped(error), None) => {
            report_trap(&error);
            exit::TRAP
        }
    }
}

fn report_trap(error: &wasmtime::Error) {
    let mut report = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wrun: {trap}"),
        None => format!("wrun: the guest failed: {:#}", error.root_cause()),
    };
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        report.push('\n');
        report.push_str(&backtrace.to_string());
    }
    crate::err_line!("{}", report.trim_end());
}
