//! Puts the claimed run's directories into a pooled sandbox, whose root was pivoted before
//! the run was known: the supervisor clones each directory the client opened into a detached
//! bind mount (`open_tree`), locks it down (`mount_setattr`: nosuid, nodev, noexec, and
//! read-only for `:ro`), and a short-lived helper moves the mounts onto the root's spare
//! mount points from inside the sandbox's mount namespace (`move_mount`). The sandbox itself
//! holds no capability for any of it.

use crate::spec::Preopen;
use crate::sys::MountAttr;
use crate::wasm::exec::GuestDir;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// How many directories a pooled sandbox can take (its root's spare mount points).
pub const SPARE_MOUNT_POINTS: usize = 8;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("failed to clone the mount of `{path}`")]
    Clone {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock down the mount of `{path}`")]
    Attributes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to move the directories into the pooled sandbox")]
    Move(#[source] nix::Error),
}

/// Mounts each `(directory, preopen)` at `/0`, `/1`, … of `sandbox`'s root; where each is
/// now reachable there, in order.
pub fn attach(sandbox: Pid, dirs: &[(OwnedFd, &Preopen)]) -> Result<Vec<GuestDir>, AttachError> {
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    let mut trees = Vec::with_capacity(dirs.len());
    for (dir, preopen) in dirs {
        trees.push(detached_mount(dir, preopen)?);
    }
    let namespace = nix::fcntl::open(
        format!("/proc/{sandbox}/ns/mnt").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(AttachError::Move)?;
    // SAFETY: the supervisor is single-threaded, so the helper may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(AttachError::Move)? {
        ForkResult::Child => {
            let moved = move_into(namespace, &trees);
            // Without the supervisor's destructors in this copy of it.
            crate::sys::exit_now(i32::from(moved.is_err()))
        }
        ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => {}
            Ok(_) => return Err(AttachError::Move(nix::Error::EPERM)),
            Err(e) => return Err(AttachError::Move(e)),
        },
    }
    Ok(guest_dirs(dirs.iter().map(|(_, preopen)| *preopen)))
}

/// Where each preopen is reachable once mounted at `/0`, `/1`, …, in order.
pub(crate) fn guest_dirs<'a>(preopens: impl Iterator<Item = &'a Preopen>) -> Vec<GuestDir> {
    preopens
        .enumerate()
        .map(|(index, preopen)| GuestDir {
            path: PathBuf::from(format!("/{index}")),
            guest: preopen.guest.clone(),
            read_only: preopen.read_only,
        })
        .collect()
}

/// A bind mount of `dir`, not attached anywhere yet, with the standalone path's flags.
pub(crate) fn detached_mount(dir: &OwnedFd, preopen: &Preopen) -> Result<OwnedFd, AttachError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    let tree = open_tree(dir, c"", flags).map_err(|e| AttachError::Clone {
        path: preopen.host.clone(),
        source: e.into(),
    })?;
    let mut attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    if preopen.read_only {
        attr_set |= MOUNT_ATTR_RDONLY;
    }
    // Private, as everything in a standalone sandbox's root: nothing the host mounts under
    // the directory later appears inside (unlocked).
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    crate::sys::mount_setattr(&tree, &attr).map_err(|source| AttachError::Attributes {
        path: preopen.host.clone(),
        source,
    })?;
    Ok(tree)
}

/// In the helper: enters the sandbox's mount namespace (whose root is the sandbox's pivoted
/// root) and moves each tree onto its mount point.
fn move_into(namespace: OwnedFd, trees: &[OwnedFd]) -> nix::Result<()> {
    nix::sched::setns(namespace, nix::sched::CloneFlags::CLONE_NEWNS)?;
    move_onto_mount_points(trees)
}

/// Moves each tree onto `/0`, `/1`, … of the calling process's root.
pub(crate) fn move_onto_mount_points(trees: &[OwnedFd]) -> nix::Result<()> {
    use rustix::mount::{move_mount, MoveMountFlags};
    let root = rustix::fs::CWD;
    for (index, tree) in trees.iter().enumerate() {
        let target = format!("/{index}");
        move_mount(
            tree,
            c"",
            root,
            target.as_str(),
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| nix::Error::from_raw(e.raw_os_error()))?;
    }
    Ok(())
}
