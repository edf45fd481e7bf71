//! `wrun-kernel-steps MOUNT_POINT CGROUP_PARENT`: the kernel work of one standalone `wrun run`
//! and nothing else, as a floor for wrun's own start (the burst's `kernel-steps` row).
//!
//! The same steps, in the same processes and order, as wrun's parent and sandboxed child
//! (docs/architecture.md, "The start path"), with no engine, module, host, state root,
//! capability drop or seccomp filter: a new PID namespace and a fork, the child moved off the
//! parent's CPU; in the child a new UTS namespace, a hostname, the pinned mount namespace
//! template entered, as wrun's sandbox without directories does (where none is pinned, a new
//! mount namespace with an empty read-only tmpfs root pivoted into), and the shared network
//! and IPC namespaces joined (without them, a new IPC namespace, and a new network namespace
//! made by the parent that the child joins after the go-ahead); in the parent the run's cgroup (memory and pids
//! on v1); the go-ahead; the child moves itself into the cgroup (v1), enters a new cgroup
//! namespace, writes one line and exits; the parent reaps it and removes the cgroup. On
//! cgroup v2 the cgroup is made before the fork and the child forked into it, as wrun's is.
//! A small static program, so that its start costs what a `fork` and `exec` of busybox do.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{
    sched_getaffinity, sched_getcpu, sched_setaffinity, setns, unshare, CloneFlags, CpuSet,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pivot_root, ForkResult, Pid};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use wrun::sandbox::clone_into_cgroup::{self, CloneIntoCgroup};
use wrun::sandbox::mount_template;
use wrun::sandbox::shared_namespaces::Shared;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.as_slice() {
        [mount_point, cgroup_parent] => match start(Path::new(mount_point), cgroup_parent) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("wrun-kernel-steps: {e:#}");
                1
            }
        },
        _ => {
            eprintln!("usage: wrun-kernel-steps MOUNT_POINT CGROUP_PARENT");
            2
        }
    };
    std::process::exit(code);
}

/// The run's cgroup: `<parent>/<id>` in the hierarchies wrun uses, memory and pids on v1,
/// the one unified hierarchy on v2.
struct RunCgroup {
    dirs: Vec<PathBuf>,
    unified: bool,
}

/// Where the hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl RunCgroup {
    fn at(parent: &str, id: &str) -> RunCgroup {
        let root = Path::new(CGROUP_ROOT);
        let unified = root.join("cgroup.controllers").exists();
        let hierarchies: &[&str] = if unified { &[""] } else { &["memory", "pids"] };
        RunCgroup {
            dirs: hierarchies
                .iter()
                .map(|hierarchy| root.join(hierarchy).join(parent).join(id))
                .collect(),
            unified,
        }
    }

    /// Makes the directories. On v2, from the root down, each of the leaf's ancestors is made
    /// and gives its children the memory and pids controllers, as cgroups-rs does for wrun
    /// (ignoring a refusal, as it does).
    fn create(&self) -> Result<()> {
        for dir in &self.dirs {
            if self.unified {
                let mut ancestors: Vec<&Path> = dir.ancestors().skip(1).collect();
                ancestors.reverse();
                for ancestor in ancestors.iter().filter(|a| a.starts_with(CGROUP_ROOT)) {
                    std::fs::create_dir_all(ancestor).with_context(|| {
                        format!("failed to create cgroup `{}`", ancestor.display())
                    })?;
                    for controller in ["+memory", "+pids"] {
                        let _ = std::fs::write(ancestor.join("cgroup.subtree_control"), controller);
                    }
                }
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create cgroup `{}`", dir.display()))?;
        }
        Ok(())
    }

    /// On v2, where the child could not be forked into the cgroup, the parent moves it in,
    /// as wrun's does then (v2 has no `tasks` file to move oneself through without the
    /// kernel's global lock).
    fn move_in(&self, child: Pid) -> Result<()> {
        for dir in self.dirs.iter().filter(|_| self.unified) {
            std::fs::write(dir.join("cgroup.procs"), child.to_string())
                .with_context(|| format!("failed to move the child into `{}`", dir.display()))?;
        }
        Ok(())
    }

    /// On v1 the child moves itself in, writing `0` to each hierarchy's `tasks`, through
    /// `/sys/fs/cgroup` opened before its own root hid it.
    fn join(&self, root: &File) -> Result<()> {
        for dir in self.dirs.iter().filter(|_| !self.unified) {
            let tasks = dir.join("tasks");
            let relative = tasks.strip_prefix(CGROUP_ROOT)?;
            let file = nix::fcntl::openat(
                root.as_fd(),
                relative,
                nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(|| format!("failed to open `{}`", tasks.display()))?;
            File::from(file)
                .write_all(b"0")
                .with_context(|| format!("failed to move into cgroup `{}`", dir.display()))?;
        }
        Ok(())
    }

    /// The one v2 directory, opened for the child to be forked into.
    fn open_dir(&self) -> Result<OwnedFd> {
        let dir = self.dirs.first().context("no cgroup directory")?;
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())
            .with_context(|| format!("failed to open cgroup `{}`", dir.display()))
    }

    /// Removes every directory made (one `create` left out is not there).
    fn remove(&self) -> Result<()> {
        let mut failed = Ok(());
        for dir in &self.dirs {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    failed = Err(e)
                        .with_context(|| format!("failed to remove cgroup `{}`", dir.display()));
                }
                _ => {}
            }
        }
        failed
    }
}

fn start(mount_point: &Path, cgroup_parent: &str) -> Result<i32> {
    let parent = nix::unistd::getpid();
    let cgroup = RunCgroup::at(cgroup_parent, &format!("kernel-steps-{parent}"));
    let (ready_read, ready_write) = nix::unistd::pipe().context("failed to create a pipe")?;
    let template = mount_template::open_or_make();
    let shared = Shared::open_or_make(true, true);
    let shares_network = shared.network.is_some();
    unshare(CloneFlags::CLONE_NEWPID).context("failed to unshare the pid namespace")?;
    let allowed = sched_getaffinity(Pid::from_raw(0)).context("failed to read the CPU affinity")?;
    // On v2 the cgroup is made first and the child forked into it.
    let clone_into = cgroup.unified.then(CloneIntoCgroup::available).flatten();
    let cgroup_dir = clone_into
        .as_ref()
        .map(|_| cgroup.create().and_then(|()| cgroup.open_dir()))
        .transpose();
    let cgroup_dir = match cgroup_dir {
        Ok(dir) => dir,
        Err(e) => {
            let _ = cgroup.remove();
            return Err(e);
        }
    };
    // SAFETY: single-threaded; the child runs only this program's own steps and exits.
    let forked =
        unsafe { clone_into_cgroup::fork_into_or_fork(clone_into.as_ref(), cgroup_dir.as_ref()) };
    let (forked, born_in_cgroup) = forked.context("failed to fork").inspect_err(|_| {
        let _ = cgroup.remove();
    })?;
    match forked {
        ForkResult::Child => {
            drop(ready_write);
            let root = match template {
                Some(template) => Root::Template(template),
                None => Root::Build(mount_point),
            };
            let code = match child(root, shared, parent, &cgroup, ready_read, &allowed) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("wrun-kernel-steps: {e:#}");
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((ready_read, shared));
            move_off_this_cpu(child, &allowed);
            let made = match shares_network {
                true => Ok(()),
                false => unshare(CloneFlags::CLONE_NEWNET)
                    .context("failed to unshare the network namespace"),
            };
            let made = made.and_then(|()| match born_in_cgroup {
                true => Ok(()),
                false => cgroup.create().and_then(|()| cgroup.move_in(child)),
            });
            // A child that failed has printed why; it is reaped and the cgroup removed all
            // the same.
            if made.is_ok() {
                let _ = nix::unistd::write(&ready_write, &[1]);
            }
            drop(ready_write);
            let status = waitpid(child, None).context("failed to reap the child")?;
            let removed = cgroup.remove();
            made?;
            removed?;
            match status {
                WaitStatus::Exited(_, code) => Ok(code),
                other => bail!("the child ended as {other:?}"),
            }
        }
    }
}

/// The parent's half of wrun's CPU split: the child starts on another CPU it may use.
fn move_off_this_cpu(child: Pid, allowed: &CpuSet) {
    let Ok(this_cpu) = sched_getcpu() else {
        return;
    };
    let mut elsewhere = *allowed;
    let any_other = elsewhere.unset(this_cpu).is_ok()
        && (0..CpuSet::count()).any(|cpu| elsewhere.is_set(cpu).unwrap_or(false));
    if any_other {
        let _ = sched_setaffinity(child, &elsewhere);
    }
}

/// How the child gets its root, as wrun's sandbox without directories: the pinned
/// template's mount namespace, or a root built on a mount point of a copy of the host's.
enum Root<'a> {
    Template(OwnedFd),
    Build(&'a Path),
}

fn child(
    root: Root<'_>,
    shared: Shared,
    parent: Pid,
    cgroup: &RunCgroup,
    ready: OwnedFd,
    allowed: &CpuSet,
) -> Result<()> {
    let cgroup_root = File::open(CGROUP_ROOT).context("failed to open /sys/fs/cgroup")?;
    let mut new = CloneFlags::CLONE_NEWUTS;
    new.set(CloneFlags::CLONE_NEWIPC, shared.ipc.is_none());
    new.set(CloneFlags::CLONE_NEWNS, matches!(root, Root::Build(_)));
    unshare(new).context("failed to unshare the namespaces")?;
    nix::unistd::sethostname("0123456789ab").context("failed to set the hostname")?;
    let parent_namespaces = match shared.network {
        Some(_) => None,
        None => Some(
            File::open(format!("/proc/{parent}/ns"))
                .context("failed to open the parent's namespaces")?,
        ),
    };
    shared
        .join()
        .context("failed to join the shared namespaces")?;
    match root {
        Root::Template(template) => {
            setns(template, CloneFlags::CLONE_NEWNS).context("failed to enter the template")?;
            nix::unistd::chdir("/").context("failed to enter the root")?;
        }
        Root::Build(mount_point) => enter_empty_root(mount_point)?,
    }
    let mut go_ahead = [0u8; 1];
    if File::from(ready).read(&mut go_ahead)? != 1 {
        bail!("no go-ahead from the parent");
    }
    // Every CPU it may use again, as wrun's sandbox before it joins its cgroup.
    let _ = sched_setaffinity(Pid::from_raw(0), allowed);
    if let Some(parent_namespaces) = parent_namespaces {
        let network = nix::fcntl::openat(
            parent_namespaces.as_fd(),
            "net",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .context("failed to open the parent's network namespace")?;
        setns(network, CloneFlags::CLONE_NEWNET).context("failed to join the network namespace")?;
    }
    cgroup.join(&cgroup_root)?;
    unshare(CloneFlags::CLONE_NEWCGROUP).context("failed to unshare the cgroup namespace")?;
    std::io::stdout().write_all(b"hello\n")?;
    Ok(())
}

/// wrun's empty root: private mounts, a read-only tmpfs on `mount_point`, pivoted into, the
/// old root detached.
fn enter_empty_root(mount_point: &Path) -> Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .context("failed to make the mounts private")?;
    mount(
        Some("tmpfs"),
        mount_point,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=16k,nr_inodes=64,mode=0555"),
    )
    .with_context(|| format!("failed to mount the root on `{}`", mount_point.display()))?;
    mount(
        none,
        mount_point,
        none,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        none,
    )
    .context("failed to make the root read-only")?;
    nix::unistd::chdir(mount_point).context("failed to enter the root")?;
    pivot_root(".", ".").context("failed to pivot into the root")?;
    umount2(".", MntFlags::MNT_DETACH).context("failed to detach the old root")?;
    Ok(())
}
