//! The sandbox moving itself into its cgroup on cgroup v1. Moving another process (the
//! parent writing the child's PID to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, whose per-CPU rwsem waits for an RCU grace period:
//! 6–19 ms a move measured here when the machine had been idle for 100 ms (a grace period
//! is not already under way). A single-threaded process writing `0` to a v1 hierarchy's
//! `tasks` moves only itself and the kernel skips that lock: ~0 ms. cgroup v2 has no such
//! file (`cgroup.procs` always locks); there the child is forked into its cgroup instead
//! ([`super::clone_into_cgroup`]).

use super::cgroup::RunCgroup;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Where the v1 hierarchies are mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The go-ahead byte: the parent has moved the sandbox into its cgroup (or there is none).
pub const JOINED: u8 = 1;
/// The go-ahead byte: the cgroup is made; the sandbox moves itself in.
pub const JOIN_YOURSELF: u8 = 2;

/// `/sys/fs/cgroup`, held open by the sandbox before its own root hides it; the parent
/// names the `tasks` files with the go-ahead.
pub struct SelfJoin {
    root: OwnedFd,
}

impl SelfJoin {
    /// Opens `/sys/fs/cgroup` (one `open`: the start path pays nothing more for it).
    pub fn open() -> Option<SelfJoin> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = nix::fcntl::open(ROOT, flags, Mode::empty()).ok()?;
        Some(SelfJoin { root })
    }

    pub fn fd(&self) -> RawFd {
        self.root.as_raw_fd()
    }

    /// Moves this (single-threaded) process into the cgroup: `tasks` lists the files, one a
    /// line, relative to `/sys/fs/cgroup`, as [`go_ahead`] wrote them.
    pub fn join(&self, tasks: &[u8]) -> nix::Result<()> {
        let text = std::str::from_utf8(tasks).map_err(|_| nix::Error::EINVAL)?;
        for file in text.lines().filter(|line| !line.is_empty()) {
            let file = openat(
                &self.root,
                file,
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            nix::unistd::write(&file, b"0")?;
        }
        Ok(())
    }
}

/// The go-ahead the parent sends once `cgroup` is made: [`JOIN_YOURSELF`] and its `tasks`
/// files, one a line, where the sandbox can move itself in (cgroup v1, every hierarchy under
/// `/sys/fs/cgroup`), else [`JOINED`] after moving the sandbox with `join`. Short enough for
/// one atomic pipe write.
pub fn go_ahead(cgroup: &RunCgroup) -> Option<Vec<u8>> {
    if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
        return None;
    }
    let dirs = cgroup.dirs();
    let tasks: Option<Vec<String>> = dirs
        .iter()
        .map(|dir| {
            let relative = dir.strip_prefix(Path::new(ROOT)).ok()?;
            Some(relative.join("tasks").to_string_lossy().into_owned())
        })
        .collect();
    let text = tasks?.join("\n");
    let mut message = vec![JOIN_YOURSELF];
    message.extend_from_slice(text.as_bytes());
    (!dirs.is_empty() && message.len() <= 4096).then_some(message)
}
