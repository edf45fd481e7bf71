//! The one body of every sandboxed child, standalone or pooled: signals and inherited
//! descriptors, namespaces, engine, root; then the go-ahead (the parent has put it in its
//! cgroup), the network namespace and the cgroup namespace; then the payload: a Wasm guest
//! whose work comes from a [`WorkSource`], locked down and run in [`guest`], or a native
//! process. It never returns: it exits with the workload's code.

use super::guest;
use super::harden::{self, HardenError};
use super::native::process::{ProcessError, Role};
use super::native::{self, mounts::MountError, Network};
use super::parent_watch::ParentWatch;
use super::rootfs::{self, RootfsError};
use super::signals;
use super::work::{install_stdio, WorkSource};
use super::{mount_template, shared_namespaces};
use crate::exit;
use crate::spec::{JoinedNamespaces, NativeSpec};
use crate::timeline;
use crate::wasm::cache::AotCache;
use crate::wasm::exec::ExecError;
use crate::wasm::LoadError;
use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// What every sandbox is given across the fork, whatever it runs.
pub struct ChildPlan {
    /// Descriptors to install as the workload's stdin, stdout, stderr (a pooled sandbox's
    /// come with its claim).
    pub stdio: super::Stdio,
    /// Inherited descriptors the sandbox keeps (the module, listeners, the connect broker's
    /// end, its supervisor's socket); every other is closed.
    pub keep: Vec<RawFd>,
    pub cache: AotCache,
    pub mount_point: PathBuf,
    /// The pinned mount namespace a Wasm sandbox enters a copy of (`mount_template`); without
    /// it the sandbox copies the host's mounts and builds its root at `mount_point`.
    pub mount_template: Option<OwnedFd>,
    /// The pinned network and IPC namespaces a Wasm sandbox of wrun's CLI joins outside a pod
    /// (`shared_namespaces`); without them it makes an IPC namespace and joins the network
    /// namespace its parent makes.
    pub shared: shared_namespaces::Shared,
    pub hostname: String,
    /// The supervising parent, whose network namespace the sandbox joins without the shared
    /// one.
    pub parent: nix::unistd::Pid,
    /// The parent's pidfd: a sandbox that dies with its parent checks that it is still there
    /// once it has asked for the signal (empty for a created container).
    pub parent_watch: ParentWatch,
    /// Read end of the pipe on which the parent says the cgroup is ready (its first byte
    /// says whether the sandbox is in it or moves itself in: [`super::self_join`]).
    pub ready: OwnedFd,
    /// `/sys/fs/cgroup`, held open for moving itself into its cgroup v1.
    pub self_join: Option<super::self_join::SelfJoin>,
    pub old_mask: SigSet,
    /// An OCI runtime's `create`: the sandbox says it is created and waits for `start`,
    /// outliving the parent that made it.
    pub start: Option<StartGate>,
}

/// Where a created sandbox waits to be started.
pub struct StartGate {
    /// Write end of the pipe on which the sandbox tells its parent it is created.
    pub created: OwnedFd,
    /// The container's FIFO, open for reading and writing (so that no end of file comes
    /// before `start`): one byte written to it starts the workload.
    pub fifo: OwnedFd,
}

impl StartGate {
    /// Says created, then waits for the byte `start` writes.
    fn wait(self) -> Result<(), ChildError> {
        let gone = |_| ChildError::ParentGone;
        nix::unistd::write(&self.created, &[1]).map_err(gone)?;
        drop(self.created);
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&self.fifo, &mut byte) {
                Ok(1) => return Ok(()),
                Err(nix::Error::EINTR) => continue,
                other => {
                    return Err(ChildError::Setup(
                        "wait to be started",
                        other.err().unwrap_or(nix::Error::EIO),
                    ))
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChildError {
    /// A set-up step (`what` failed: "set the sandbox hostname").
    #[error("failed to {0}")]
    Setup(&'static str, #[source] nix::Error),
    #[error("failed to create the sandbox namespaces")]
    Namespaces(#[source] nix::Error),
    #[error(
        "failed to join the shared namespaces in `{}`",
        shared_namespaces::DIRECTORY
    )]
    SharedNamespaces(#[source] nix::Error),
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

/// What failed when the workload's streams could not be installed.
pub(crate) const STDIO: &str = "connect the workload's standard streams";
const HOSTNAME: &str = "set the sandbox hostname";

/// A failed set-up step, for a `map_err`.
pub(crate) fn setup(what: &'static str) -> impl FnOnce(nix::Error) -> ChildError {
    move |source| ChildError::Setup(what, source)
}

impl ChildError {
    fn exit_code(&self) -> i32 {
        match self {
            ChildError::Load(_) => exit::CANNOT_EXECUTE,
            ChildError::Exec(e) if e.is_module_error() => exit::CANNOT_EXECUTE,
            ChildError::Process(e) => e.exit_code(),
            _ => exit::RUNTIME_ERROR,
        }
    }
}

/// Runs a Wasm sandbox whose work comes from `source` to its end, and exits with its code.
pub(crate) fn main(plan: ChildPlan, source: impl WorkSource) -> ! {
    crate::allocator::round_small_sizes();
    exit_with(begin(plan).and_then(|plan| run_wasm(plan, source)))
}

/// Runs a native sandbox to its end: its process replaces this one, or it exits with the
/// failure's code.
pub(crate) fn main_native(plan: ChildPlan, native: &NativeSpec) -> ! {
    exit_with(begin(plan).and_then(|plan| run_native(plan, native)))
}

/// Ends the process with the workload's code, or with the failure's after printing it.
fn exit_with(outcome: Result<i32, ChildError>) -> ! {
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            crate::err_line!("wrun: {:#}", anyhow::Error::new(e));
            tracing::debug!("exit {code}: wrun failed in the sandbox, the workload did not end");
            code
        }
    };
    guest::flush_output();
    crate::sys::exit_now(code)
}

/// The first steps of every sandbox: its signals, its streams, nothing else inherited.
fn begin(mut plan: ChildPlan) -> Result<ChildPlan, ChildError> {
    timeline::in_child();
    super::test_hooks::child_late();
    let dies_with = plan.start.is_none().then_some(&plan.parent_watch);
    signals::init_child(&plan.old_mask, dies_with)
        .map_err(setup("set up the sandbox signal handlers"))?;
    // Installed, and the originals closed, before closing everything else inherited.
    install_stdio(std::mem::take(&mut plan.stdio)).map_err(setup(STDIO))?;
    let mut keep = std::mem::take(&mut plan.keep);
    keep.push(std::os::fd::AsRawFd::as_raw_fd(&plan.ready));
    keep.extend(plan.self_join.as_ref().map(|join| join.fd()));
    keep.extend(plan.mount_template.as_ref().map(AsRawFd::as_raw_fd));
    keep.extend(plan.shared.fds());
    keep.extend(plan.parent_watch.fd());
    if let Some(start) = &plan.start {
        keep.extend([start.created.as_raw_fd(), start.fifo.as_raw_fd()]);
    }
    harden::close_inherited_fds(&keep)?;
    Ok(plan)
}

/// A Wasm sandbox: namespaces, engine, root, go-ahead, then the guest's work.
fn run_wasm(mut plan: ChildPlan, mut source: impl WorkSource) -> Result<i32, ChildError> {
    let joins = source.joins();
    let mount_points = {
        let (preopens, spares) = source.root();
        preopens.len() + spares
    };
    let template = plan
        .mount_template
        .take()
        .filter(|_| mount_points <= mount_template::SLOTS);
    let shared = std::mem::take(&mut plan.shared);
    // A shared network namespace is joined now; a pod's or the parent's once the parent
    // says so. Opened while /proc is still reachable; the parent's `net` link is followed
    // only once the parent has moved into the new network namespace.
    let network = match (&joins.network, &shared.network) {
        (Some(path), _) => Some(NetworkJoin::Existing(open_namespace(path)?)),
        (None, Some(_)) => None,
        (None, None) => Some(NetworkJoin::Parents(open_dir(&format!(
            "/proc/{}/ns",
            plan.parent
        ))?)),
    };
    let new = NewNamespaces {
        mounts: template.is_none(),
        ipc: shared.ipc.is_none(),
    };
    enter_namespaces(&joins, &plan.hostname, new)?;
    shared.join().map_err(ChildError::SharedNamespaces)?;
    timeline::mark("namespaces");
    let engine = source.prepare(&plan.cache)?;
    // The guest's new files get the caller's umask, as under wasmtime (a native process
    // gets its spec's); wrun's own, 077, stays for what it wrote to the state root above.
    nix::sys::stat::umask(crate::state::caller_umask());
    let (preopens, spares) = source.root();
    let dirs = match template {
        Some(template) => {
            let dirs = rootfs::enter_template(template, &plan.mount_point, preopens, spares)?;
            timeline::mark("root entered");
            dirs
        }
        None => {
            let dirs = rootfs::enter_empty_root(&plan.mount_point, preopens, spares)?;
            timeline::mark("root pivoted");
            dirs
        }
    };
    // Once more, well after `begin`: a parent dying just as the signal was asked for may
    // hand out its death signals before its pidfd reads as ended. Then the signal alone.
    std::mem::take(&mut plan.parent_watch).end_if_parent_died();
    // Before the go-ahead: whatever the parent still has to do overlaps it.
    source.lock_for_set_up()?;
    after_go_ahead(plan.ready, plan.self_join.as_ref(), network, true)?;
    source.keep_cgroup_root(plan.self_join.take());
    timeline::mark("cgroup ready");
    if let Some(start) = plan.start {
        start.wait()?;
    }
    match source.work(engine, dirs)? {
        Some(work) => guest::run(work),
        // Never claimed: the pool is shutting down.
        None => Ok(0),
    }
}

/// The native payload: the spec's namespaces and root, then `execve` (which only returns on
/// failure). Capabilities, user and seccomp come from the spec, in `native::process`.
fn run_native(mut plan: ChildPlan, native: &NativeSpec) -> Result<i32, ChildError> {
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
        nix::unistd::sethostname(&name).map_err(setup(HOSTNAME))?;
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
    after_go_ahead(plan.ready, plan.self_join.as_ref(), network, false)?;
    drop(plan.self_join.take());
    after_network.finish()?;
    if native::new_cgroup_namespace(spec) {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    }
    // Empty for a created container, which outlives the parent that made it.
    let watch = std::mem::take(&mut plan.parent_watch);
    if let Some(start) = plan.start {
        start.wait()?;
    }
    let process = spec.process().as_ref().ok_or(ProcessError::NoProcess)?;
    let role = if native.init {
        Role::Init
    } else {
        Role::Workload
    };
    Err(native::process::become_workload(process, &filter, role, watch).into())
}

/// Which namespaces a Wasm sandbox makes besides its UTS one, rather than entering the
/// template's copy or joining a shared one.
struct NewNamespaces {
    mounts: bool,
    ipc: bool,
}

/// The UTS namespace and, as `new` says, the IPC and mount namespaces: new ones or those
/// `joins` names (with neither, the root step enters the mount template's, and the IPC one is
/// the shared one); a new UTS namespace gets `hostname`.
fn enter_namespaces(
    joins: &JoinedNamespaces,
    hostname: &str,
    new: NewNamespaces,
) -> Result<(), ChildError> {
    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNS, new.mounts);
    for (path, flag, make) in [
        (&joins.uts, CloneFlags::CLONE_NEWUTS, true),
        (&joins.ipc, CloneFlags::CLONE_NEWIPC, new.ipc),
    ] {
        match path {
            Some(path) => join_path(path, flag)?,
            None if make => flags |= flag,
            None => {}
        }
    }
    nix::sched::unshare(flags).map_err(ChildError::Namespaces)?;
    if joins.uts.is_none() {
        nix::unistd::sethostname(hostname).map_err(setup(HOSTNAME))?;
    }
    Ok(())
}

/// Waits for the parent's go-ahead (the sandbox is in its cgroup), then joins the network
/// namespace and, with `cgroup_namespace`, makes a cgroup namespace rooted at the run's own.
fn after_go_ahead(
    ready: OwnedFd,
    self_join: Option<&super::self_join::SelfJoin>,
    network: Option<NetworkJoin>,
    cgroup_namespace: bool,
) -> Result<(), ChildError> {
    let go_ahead = wait_ready(ready)?;
    if go_ahead.first() == Some(&super::self_join::JOIN_YOURSELF) {
        // Before the cgroup namespace, which is rooted at the cgroup the process is in.
        self_join
            .ok_or(nix::Error::ENOENT)
            .and_then(|join| join.join(&go_ahead[1..]))
            .map_err(setup("move the sandbox into its cgroup"))?;
        timeline::mark("cgroup joined");
    }
    if let Some(network) = network {
        network.join()?;
    }
    if cgroup_namespace {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ChildError::Namespaces)?;
    }
    Ok(())
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
enum NetworkJoin {
    /// The one the parent made: its `/proc/<pid>/ns` directory, whose `net` entry is read
    /// only after the parent has moved into the new namespace.
    Parents(OwnedFd),
    /// An existing one (a pod's).
    Existing(File),
}

impl NetworkJoin {
    fn join(self) -> Result<(), ChildError> {
        match self {
            NetworkJoin::Parents(namespaces) => join_network(namespaces),
            NetworkJoin::Existing(file) => {
                nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(ChildError::Namespaces)
            }
        }
    }
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
/// The parent's go-ahead: one write, so one read takes it whole.
fn wait_ready(ready: OwnedFd) -> Result<Vec<u8>, ChildError> {
    let mut message = vec![0u8; 4096];
    loop {
        match nix::unistd::read(&ready, &mut message) {
            Ok(n) if n > 0 => {
                message.truncate(n);
                return Ok(message);
            }
            Err(nix::Error::EINTR) => continue,
            _ => return Err(ChildError::ParentGone),
        }
    }
}
