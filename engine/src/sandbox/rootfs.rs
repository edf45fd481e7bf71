//! The sandbox's root filesystem: an empty read-only tmpfs holding only the preopened
//! directories as bind mounts, entered with pivot_root so nothing of the host stays reachable
//! (or, where the template is pinned, the template's namespace entered: a private copy of
//! it where directories are mounted).

use crate::spec::Preopen;
use crate::wasm::exec::GuestDir;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A mount step that failed, and on what.
#[derive(Debug, thiserror::Error)]
#[error("failed to {what} `{path}`")]
pub struct MountFailed {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: nix::Error,
}

/// Names the mount step `what` on `path`, for a `map_err` on its result.
pub fn failed<E: From<MountFailed>>(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(nix::Error) -> E {
    let path = path.to_path_buf();
    move |source| MountFailed { what, path, source }.into()
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Mount(#[from] MountFailed),
    #[error(transparent)]
    Attach(#[from] super::attach::AttachError),
    #[error(
        "failed to enter the mount namespace template `{}`",
        super::mount_template::PIN
    )]
    Template(#[source] nix::Error),
    #[error("failed to pivot into the sandbox root `{path}`")]
    Pivot {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

const LOCKED_DOWN: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In a fresh mount namespace: makes every mount private (recursively), so that nothing done
/// from here on propagates back to the host's mounts.
pub fn make_mounts_private() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// In a fresh mount namespace: builds the empty root at `mount_point`, binds each preopen
/// into it (read-only ones read-only in the kernel too), makes `spares` more empty
/// directories after the preopens' (`/N`, …) for mounts attached later (a pooled sandbox's,
/// see `attach`), and pivots into it. Returns where each preopen is now reachable, in order.
pub fn enter_empty_root(
    mount_point: &Path,
    preopens: &[Preopen],
    spares: usize,
) -> Result<Vec<GuestDir>, RootfsError> {
    let fail = failed::<RootfsError>;
    make_mounts_private().map_err(fail("make private the mounts under", Path::new("/")))?;
    mount(
        Some("tmpfs"),
        mount_point,
        Some("tmpfs"),
        LOCKED_DOWN,
        Some("size=16k,nr_inodes=64,mode=0555"),
    )
    .map_err(fail("mount the sandbox root on", mount_point))?;

    let mut dirs = Vec::with_capacity(preopens.len());
    for (index, preopen) in preopens.iter().enumerate() {
        let inside = PathBuf::from(format!("/{index}"));
        let target = mount_point.join(index.to_string());
        make_mount_point(&target)?;
        bind(&preopen.host, &target, preopen.read_only)?;
        dirs.push(GuestDir {
            path: inside,
            guest: preopen.guest.clone(),
            read_only: preopen.read_only,
        });
    }

    for index in preopens.len()..preopens.len() + spares {
        let target = mount_point.join(index.to_string());
        make_mount_point(&target)?;
    }
    mount(
        None::<&str>,
        mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | LOCKED_DOWN,
        None::<&str>,
    )
    .map_err(fail("make read-only the sandbox root", mount_point))?;
    pivot_into(mount_point)?;
    Ok(dirs)
}

/// Enters the template's mount namespace (`mount_template`: its root is what
/// [`enter_empty_root`] builds, with `SLOTS` mount points); with preopens or spare mount
/// points, a private copy of it, and moves each preopen onto its mount point, read-only ones
/// read-only in the kernel too. Where the template cannot be
/// entered (`setns` refused), builds the root as [`enter_empty_root`] does. Returns where each
/// preopen is now reachable, in order.
pub fn enter_template(
    template: OwnedFd,
    mount_point: &Path,
    preopens: &[Preopen],
    spares: usize,
) -> Result<Vec<GuestDir>, RootfsError> {
    // Cloned while the host's paths are still reachable.
    let mut trees = Vec::with_capacity(preopens.len());
    for preopen in preopens {
        let dir = nix::fcntl::open(
            &preopen.host,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(failed::<RootfsError>(
            "open the preopened directory",
            &preopen.host,
        ))?;
        trees.push(super::attach::detached_mount(&dir, preopen)?);
    }
    let new_namespace = nix::sched::CloneFlags::CLONE_NEWNS;
    if let Err(e) = nix::sched::setns(template, new_namespace) {
        tracing::debug!(error = %e, "the mount namespace template was refused; building the root");
        nix::sched::unshare(new_namespace).map_err(RootfsError::Template)?;
        return enter_empty_root(mount_point, preopens, spares);
    }
    // A copy of its own where the preopens' mounts go, not into the template. A sandbox
    // with none mounts nothing and stays in the template itself: it then has no namespace
    // of its own to tear down at its exit, which waits for an RCU grace period.
    if !preopens.is_empty() || spares > 0 {
        nix::sched::unshare(new_namespace).map_err(RootfsError::Template)?;
    }
    nix::unistd::chdir("/").map_err(RootfsError::Template)?;
    // Whatever is pinned there, the sandbox goes on only in an empty read-only tmpfs.
    let root = nix::sys::statfs::statfs("/").map_err(RootfsError::Template)?;
    let read_only = root.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    if root.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC || !read_only {
        return Err(RootfsError::Template(nix::Error::EINVAL));
    }
    super::attach::move_onto_mount_points(&trees).map_err(RootfsError::Template)?;
    Ok(super::attach::guest_dirs(preopens.iter()))
}

fn make_mount_point(target: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir(target).map_err(|e| {
        let source = nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        failed("create the mount point", target)(source)
    })
}

/// Binds `host` onto `target`; the bind gets nosuid/nodev/noexec, and read-only if asked.
/// The source mount's atime and read-only flags are kept: in a user namespace they are
/// locked, and a remount that changed them would be refused.
fn bind(host: &Path, target: &Path, read_only: bool) -> Result<(), RootfsError> {
    mount(
        Some(host),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed::<RootfsError>(
        "bind-mount the preopened directory",
        host,
    ))?;
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | LOCKED_DOWN
        | mount_flags(target, MsFlags::MS_RDONLY | ATIME_FLAGS);
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(failed("restrict the bind mount of", host))
}

/// Which of `among` the mount at `path` has: what a bind remount must repeat (in a user
/// namespace they are locked, and a remount that drops one fails).
pub(crate) fn mount_flags(path: &Path, among: MsFlags) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    // ST_RELATIME (linux/statfs.h) has no name in nix for musl.
    const ST_RELATIME: libc::c_ulong = 0x1000;
    let have = stat.flags().bits();
    [
        (FsFlags::ST_RDONLY.bits(), MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID.bits(), MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV.bits(), MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC.bits(), MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME.bits(), MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME.bits(), MsFlags::MS_NODIRATIME),
        (ST_RELATIME, MsFlags::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st, ms)| have & st != 0 && among.contains(*ms))
    .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms)
}

/// The access-time flags every remount repeats.
pub(crate) const ATIME_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME);

/// `pivot_root(".", ".")` stacks the old root on top of the new one; detaching it leaves
/// only the new root, with no directory needed to park the old one in.
fn pivot_into(new_root: &Path) -> Result<(), RootfsError> {
    let fail = |source| RootfsError::Pivot {
        path: new_root.to_path_buf(),
        source,
    };
    nix::unistd::chdir(new_root).map_err(fail)?;
    nix::unistd::pivot_root(".", ".").map_err(fail)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}
