//! Exec into a running native sandbox, as `runc exec` does: a new process joins the
//! sandbox's cgroup, namespaces and root, and becomes the given process under the
//! container's seccomp filter. It lives in the container's PID namespace, so it dies with
//! the container; it does not die with the `wrun exec` that started it.

use super::cgroup::RunCgroup;
use super::clone_into_cgroup::{self, CloneIntoCgroup};
use super::native::process::{become_workload, restrict, Dying, Role};
use super::parent_watch::ParentWatch;
use super::Stdio;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::Process;
use seccompiler::BpfProgram;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

/// The namespaces joined, the user namespace first: it grants the rights to join the others;
/// the mount namespace last: joining it changes the root the other paths were opened in.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("the container's process {pid} is gone")]
    Gone { pid: i32 },
    #[error("failed to {what} of the container's process {pid}")]
    Open {
        what: &'static str,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {0}")]
    Start(&'static str, #[source] nix::Error),
    /// The new process failed before it became the workload (`code` is its exit code).
    #[error("{message}")]
    Failed { message: String, code: i32 },
}

impl EnterError {
    pub fn exit_code(&self) -> i32 {
        match self {
            EnterError::Failed { code, .. } => *code,
            _ => crate::exit::RUNTIME_ERROR,
        }
    }
}

/// A running sandbox to exec into.
pub struct Target {
    /// Its first process, as the host sees it.
    pub pid: i32,
    /// The seccomp filter its workload runs under.
    pub filter: BpfProgram,
}

/// What the new process is to join, opened before anything is joined.
struct Joined {
    namespaces: Vec<(OwnedFd, CloneFlags)>,
    root: OwnedFd,
    /// The container's cgroup, to move into; none to join once forked into it.
    cgroup: Option<RunCgroup>,
}

/// What the entered process does once it is restricted as the container's process is.
pub enum Then<'a> {
    /// Replaces itself with the process's program.
    Exec,
    /// Runs `work` (keeping the descriptors `keep` open), then exits: wrun's own code with
    /// no more rights than the container's process.
    Run {
        work: &'a dyn Fn() -> Result<(), String>,
        keep: &'a [RawFd],
    },
}

/// An entered process (a child of this one) and the pipe its failure comes back on.
pub struct Started {
    pub pid: Pid,
    errors: OwnedFd,
}

impl Started {
    pub(super) fn new(pid: Pid, errors: OwnedFd) -> Started {
        Started { pid, errors }
    }

    /// Waits until the process has ended; the failure it reported, if any.
    pub fn finish(self) -> Result<(), EnterError> {
        let error = read_error(self.errors);
        let _ = nix::sys::wait::waitpid(self.pid, None);
        error.map_or(Ok(()), Err)
    }
}

/// Starts `process` in `target` with `stdio` (`None`: the caller's streams); returns its PID
/// as the host sees it once it has replaced itself with the workload. This process becomes
/// a child subreaper: the new process is its child, to wait for or to leave behind.
pub fn enter(target: &Target, process: &Process, stdio: Stdio) -> Result<Pid, EnterError> {
    let started = start(target, process, stdio, &Then::Exec)?;
    // The pipe closes at the exec (close-on-exec) or after a failure is reported.
    match read_error(started.errors) {
        None => Ok(started.pid),
        Some(error) => {
            let _ = nix::sys::wait::waitpid(started.pid, None);
            Err(error)
        }
    }
}

/// Runs `work` in `target` as `process` would run there, with the caller's streams and the
/// descriptors `keep`; [`Started::finish`] waits for it.
pub fn run_inside(
    target: &Target,
    process: &Process,
    work: &dyn Fn() -> Result<(), String>,
    keep: &[RawFd],
) -> Result<Started, EnterError> {
    start(target, process, Stdio::default(), &Then::Run { work, keep })
}

fn start(
    target: &Target,
    process: &Process,
    stdio: Stdio,
    then: &Then,
) -> Result<Started, EnterError> {
    let joined = open_joined(target.pid)?;
    nix::sys::prctl::set_child_subreaper(true).map_err(start_err("become a subreaper"))?;
    let (pid_read, pid_write) = pipe()?;
    let (error_read, error_write) = pipe()?;
    // On cgroup v2 the joining process is forked into the container's cgroup: a move would
    // wait for the kernel's global lock ([`super::clone_into_cgroup`]).
    let clone_into = CloneIntoCgroup::available();
    let cgroup_dir = clone_into
        .as_ref()
        .and(joined.cgroup.as_ref())
        .and_then(RunCgroup::open_dir);
    // SAFETY: wrun's command-line process is single-threaded, so the child may run
    // arbitrary code after the fork.
    let forked =
        unsafe { clone_into_cgroup::fork_into_or_fork(clone_into.as_ref(), cgroup_dir.as_ref()) };
    let (forked, born_in_cgroup) = forked.map_err(start_err("fork"))?;
    match forked {
        ForkResult::Child => {
            drop((pid_read, error_read));
            let mut joined = joined;
            if born_in_cgroup {
                joined.cgroup = None;
            }
            let failed = join_and_fork(
                joined,
                target,
                process,
                stdio,
                then,
                &pid_write,
                &error_write,
            );
            report(&error_write, failed)
        }
        ForkResult::Parent { child } => {
            if born_in_cgroup {
                crate::timeline::mark("forked into the container's cgroup");
            }
            drop((pid_write, error_write, joined));
            // The joining process exits as soon as it has forked the workload's.
            let _ = nix::sys::wait::waitpid(child, None);
            match read_pid(pid_read) {
                Some(pid) => Ok(Started::new(pid, error_read)),
                None => Err(read_error(error_read).unwrap_or(EnterError::Gone { pid: target.pid })),
            }
        }
    }
}

fn start_err(what: &'static str) -> impl FnOnce(nix::Error) -> EnterError {
    move |source| EnterError::Start(what, source)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EnterError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(start_err("create a pipe"))
}

/// The target's namespaces that differ from ours, its root and its cgroup.
fn open_joined(pid: i32) -> Result<Joined, EnterError> {
    let open = |what, path: String| {
        std::fs::File::open(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => EnterError::Gone { pid },
            _ => EnterError::Open { what, pid, source },
        })
    };
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = open("open the namespaces", format!("/proc/{pid}/ns/{name}"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
        let same = match (theirs.metadata(), ours) {
            (Ok(theirs), Some(ours)) => theirs.ino() == ours.ino() && theirs.dev() == ours.dev(),
            _ => false,
        };
        if !same {
            namespaces.push((theirs.into(), flag));
        }
    }
    let root = open("open the root", format!("/proc/{pid}/root"))?.into();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|source| {
        EnterError::Open {
            what: "read the cgroup",
            pid,
            source,
        }
    })?;
    Ok(Joined {
        namespaces,
        root,
        cgroup: cgroup_of(&cgroups).map(RunCgroup::existing),
    })
}

/// The process's cgroup path from `/proc/<pid>/cgroup`: the memory controller's under v1
/// (wrun's sandboxes have the same path in every hierarchy), the unified one's under v2.
fn cgroup_of(cgroups: &str) -> Option<&str> {
    let v1 = cgroups.lines().find(|line| {
        line.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "memory"))
    });
    let unified = cgroups.lines().find(|line| line.starts_with("0::"));
    v1.or(unified)
        .and_then(|line| line.splitn(3, ':').nth(2))
        .map(|path| path.trim_start_matches('/'))
        .filter(|path| !path.is_empty())
}

/// In the first child: joins the cgroup (if it was not born there), the namespaces and the
/// root, then forks the workload's process (the PID namespace applies to children only) and
/// reports its PID. Returns only on failure.
fn join_and_fork(
    joined: Joined,
    target: &Target,
    process: &Process,
    stdio: Stdio,
    then: &Then,
    pid_write: &OwnedFd,
    error_write: &OwnedFd,
) -> EnterError {
    if let Some(cgroup) = &joined.cgroup {
        if let Err(e) = cgroup.join_present_self() {
            return failed(crate::exit::RUNTIME_ERROR, &e);
        }
    }
    for (namespace, flag) in &joined.namespaces {
        if let Err(e) = nix::sched::setns(namespace, *flag) {
            return EnterError::Start("join the container's namespaces", e);
        }
    }
    let entered = nix::unistd::fchdir(&joined.root)
        .and_then(|()| nix::unistd::chroot("."))
        .map_err(start_err("enter the container's root"));
    if let Err(e) = entered {
        return e;
    }
    drop(joined);
    // SAFETY: still single-threaded, as the parent was.
    match unsafe { nix::unistd::fork() } {
        Err(e) => EnterError::Start("fork", e),
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::unistd::write(pid_write, &child.as_raw().to_ne_bytes());
            crate::sys::exit_now(0)
        }
        Ok(ForkResult::Child) => {
            let error = become_entered(target, process, stdio, then, error_write);
            report(error_write, error)
        }
    }
}

/// In the new process: its streams, nothing else inherited, then the process or the work.
/// Returns only on failure.
fn become_entered(
    target: &Target,
    process: &Process,
    stdio: Stdio,
    then: &Then,
    error_write: &OwnedFd,
) -> EnterError {
    if let Err(e) = super::work::install_stdio(stdio) {
        return EnterError::Start("connect the standard streams", e);
    }
    let mut keep = vec![error_write.as_raw_fd()];
    if let Then::Run { keep: more, .. } = then {
        keep.extend_from_slice(more);
    }
    if let Err(e) = super::harden::close_inherited_fds(&keep) {
        return failed(crate::exit::RUNTIME_ERROR, &e);
    }
    let Then::Run { work, .. } = then else {
        let error = become_workload(process, &target.filter, Role::Exec, ParentWatch::default());
        return failed(error.exit_code(), &error);
    };
    if let Err(e) = restrict(process, &target.filter, Dying::default()) {
        return failed(e.exit_code(), &e);
    }
    match work() {
        Ok(()) => crate::sys::exit_now(0),
        Err(message) => EnterError::Failed {
            message,
            code: crate::exit::RUNTIME_ERROR,
        },
    }
}

fn failed(code: i32, error: &(dyn std::error::Error + 'static)) -> EnterError {
    EnterError::Failed {
        message: crate::container::monitor::error_chain(error),
        code,
    }
}

/// Writes a failure for the parent as `code` then the message; exits with the code.
pub(super) fn report(error_write: &OwnedFd, error: EnterError) -> ! {
    let code = error.exit_code();
    let message = match &error {
        EnterError::Failed { message, .. } => message.clone(),
        other => crate::container::monitor::error_chain(other),
    };
    let mut bytes = code.to_ne_bytes().to_vec();
    bytes.extend_from_slice(message.as_bytes());
    let _ = nix::unistd::write(error_write, &bytes);
    crate::sys::exit_now(code)
}

fn read_pid(pid_read: OwnedFd) -> Option<Pid> {
    let mut bytes = [0u8; 4];
    std::fs::File::from(pid_read).read_exact(&mut bytes).ok()?;
    Some(Pid::from_raw(i32::from_ne_bytes(bytes)))
}

/// The failure reported on the pipe, or `None` at EOF without one (the exec succeeded).
fn read_error(error_read: OwnedFd) -> Option<EnterError> {
    let mut bytes = Vec::new();
    let _ = std::fs::File::from(error_read).read_to_end(&mut bytes);
    let (code, message) = bytes.split_first_chunk::<4>()?;
    Some(EnterError::Failed {
        message: String::from_utf8_lossy(message).into_owned(),
        code: i32::from_ne_bytes(*code),
    })
}

#[cfg(test)]
mod tests {
    use super::cgroup_of;

    #[test]
    fn the_cgroup_is_the_memory_controllers_or_the_unified_one() {
        let hybrid = "12:pids:/wrun/abc\n4:memory:/wrun/abc\n0::/wrun/abc\n";
        assert_eq!(cgroup_of(hybrid), Some("wrun/abc"));
        assert_eq!(cgroup_of("0::/wrun/x\n"), Some("wrun/x"));
        assert_eq!(cgroup_of("0::/\n"), None);
        assert_eq!(cgroup_of("3:cpu,cpuacct:/a\n5:memory:/b\n"), Some("b"));
    }
}
