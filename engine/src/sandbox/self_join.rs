//! The sandbox moving itself into its cgroup on cgroup v1. Moving another process (the
//! parent writing the child's PID to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, whose per-CPU rwsem waits for an RCU grace period:
//! 6–19 ms a move measured here when the machine had been idle for 100 ms (a grace period
//! is not already under way). A single-threaded process writing `0` to a v1 hierarchy's
//! `tasks` moves only itself and the kernel skips that lock: ~0 ms. cgroup v2 has no such
//! file (`cgroup.procs` always locks); there the parent moves the child as before.

use super::cgroup::{controllers, RunCgroup};
use crate::spec::Limits;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Where the v1 hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The go-ahead byte: the parent has moved the sandbox into its cgroup (or there is none).
pub const JOINED: u8 = 1;
/// The go-ahead byte: the cgroup is made; the sandbox moves itself in.
pub const JOIN_YOURSELF: u8 = 2;

/// The `tasks` files of a run's cgroup, relative to `/sys/fs/cgroup`, held open there
/// before the sandbox's own root hides it.
pub struct SelfJoin {
    root: OwnedFd,
    tasks: Vec<PathBuf>,
}

impl SelfJoin {
    /// For the cgroup at `path` of a run with `limits`: `None` unless the host's hierarchies
    /// are v1 and all under `/sys/fs/cgroup`.
    pub fn prepare(path: &str, limits: &Limits) -> Option<SelfJoin> {
        let tasks = tasks_files(&planned_dirs(path, limits)?)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = nix::fcntl::open(ROOT, flags, Mode::empty()).ok()?;
        Some(SelfJoin { root, tasks })
    }

    pub fn fd(&self) -> RawFd {
        self.root.as_raw_fd()
    }

    /// Moves this (single-threaded) process into the cgroup in every hierarchy.
    pub fn join(&self) -> nix::Result<()> {
        for tasks in &self.tasks {
            let file = openat(
                &self.root,
                tasks,
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            nix::unistd::write(&file, b"0")?;
        }
        Ok(())
    }
}

/// Whether the sandbox of a run whose cgroup is `cgroup` moves itself in: the same test as
/// [`SelfJoin::prepare`] makes, on the parent's side.
pub fn applies(cgroup: &RunCgroup) -> bool {
    tasks_files(&cgroup.dirs()).is_some()
}

fn planned_dirs(path: &str, limits: &Limits) -> Option<Vec<PathBuf>> {
    if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        return None;
    }
    let hierarchy = cgroups_rs::fs::hierarchies::auto();
    let cgroup = cgroups_rs::fs::Cgroup::load_with_specified_controllers(
        hierarchy,
        path,
        controllers(limits),
    );
    Some(
        cgroup
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect(),
    )
}

/// The `tasks` file of each directory, relative to `/sys/fs/cgroup`; `None` if one is not
/// under it, or there are none, or the hierarchy is v2.
fn tasks_files(dirs: &[PathBuf]) -> Option<Vec<PathBuf>> {
    if dirs.is_empty() || cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        return None;
    }
    dirs.iter()
        .map(|dir| {
            dir.strip_prefix(Path::new(ROOT))
                .ok()
                .map(|d| d.join("tasks"))
        })
        .collect()
}
