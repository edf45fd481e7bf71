//! The sandbox's mount namespace made once and pinned: its only mount is the empty read-only
//! root, and a Wasm sandbox enters it (a private copy of it where it mounts directories)
//! instead of copying the host's mounts.
//!
//! `unshare(CLONE_NEWNS)` copies every mount the host has, and leaving them again
//! (`pivot_root`, then a lazy unmount of the old root) walks them once more: measured here
//! (2026-12-07, a C program, 20 runs each) 0.29 ms with the host's 21 mounts and 1.22 ms with
//! 500 more, as a Kubernetes node with many pods has; entering a copy of this template took
//! 0.06 ms with either. The template is built by a short-lived helper the way the root was
//! built in each sandbox before (`rootfs::enter_empty_root`), with [`SLOTS`] empty directories
//! as mount points for preopens; its namespace is pinned on [`PIN`] (`pinned_namespace`).

use super::pinned_namespace::Pinned;
use super::shared_namespaces;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

/// How many directories a sandbox entering the template can be given (its mount points).
pub const SLOTS: usize = super::attach::SPARE_MOUNT_POINTS;

/// Where the template is pinned, beside the shared namespaces. The version names the layout
/// (one tmpfs, `SLOTS` mount points): a wrun that changes it pins a new one beside.
pub const PIN: &str = "/run/wrun-namespaces/mnt-v1";

const TEMPLATE: Pinned = Pinned {
    directory: shared_namespaces::DIRECTORY,
    pin: PIN,
    lock: shared_namespaces::LOCK,
    kind: "mnt",
    nstype: libc::CLONE_NEWNS,
    build: build_root,
    // A wrong namespace is found when a sandbox enters it (`rootfs::enter_template`).
    usable: |_, _| true,
};

/// The template's namespace, made first if it is not pinned yet; `None` (the sandbox copies
/// the host's mounts as before) where it cannot be made, e.g. without /run or without the
/// privilege to mount. Forks a helper when it makes it: call it single-threaded, before the
/// PID namespace is unshared.
pub fn open_or_make() -> Option<OwnedFd> {
    TEMPLATE.open_or_make()
}

/// In the helper: a new mount namespace whose root is an empty read-only tmpfs with
/// [`SLOTS`] mount points, as a sandbox's root is built without the template.
fn build_root(_: &Pinned) -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    super::rootfs::enter_empty_root(Path::new(shared_namespaces::DIRECTORY), &[], SLOTS)
        .map(drop)
        .map_err(io::Error::other)
}
