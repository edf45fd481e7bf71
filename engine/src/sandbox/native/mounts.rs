//! A native workload's root file system: the image's layers under a private writable layer
//! (overlayfs, or a copy where overlay is unavailable) or a directory; the spec's mounts
//! (`/proc`, a minimal `/dev`, `/sys` read-only, tmpfs, binds); runc's masked and read-only
//! paths; then `pivot_root`.
//!
//! Mount targets are resolved inside the root with `openat2(RESOLVE_IN_ROOT)`, so a symlink
//! the image planted (`/proc -> /`) cannot redirect a mount onto the host.

use crate::sandbox::rootfs::MountFailed;
use crate::spec::{NativeSpec, RootfsSource};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Mount;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Mount(#[from] MountFailed),
    #[error("failed to prepare `{path}` in the container's root")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount type `{0}` is not supported")]
    Unsupported(String),
    #[error("failed to set linux.sysctl `{key}`")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

fn mount_err(what: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> MountError {
    crate::sandbox::rootfs::failed(what, path)
}

/// The devices every container gets, bind-mounted from the host's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root, mounts everything but sysfs, pivots into it, masks what must be
/// hidden. `bundle` resolves relative bind sources. What needs the container's network
/// namespace is returned for [`AfterNetwork::finish`].
pub fn enter(native: &NativeSpec, bundle: Option<&Path>) -> Result<AfterNetwork, MountError> {
    crate::sandbox::rootfs::make_mounts_private()
        .map_err(mount_err("make private the mounts under", Path::new("/")))?;
    let root = prepare_root(&native.rootfs)?;
    let root_dir = open_path(&root)?;
    // sysfs, and what the spec mounts beneath it (`/sys/fs/cgroup`), in the spec's order.
    let mounts = native.spec.mounts().iter().flatten();
    let sysfs_destinations: Vec<&Path> = mounts
        .clone()
        .filter(|m| m.typ().as_deref() == Some("sysfs"))
        .map(|m| m.destination().as_path())
        .collect();
    let (sysfs, now): (Vec<&Mount>, Vec<&Mount>) = mounts.partition(|m| {
        sysfs_destinations
            .iter()
            .any(|d| m.destination().starts_with(d))
    });
    for m in now {
        mount_one(&root_dir, m, bundle)?;
    }
    populate_dev(&root_dir)?;
    pivot(&root)?;
    let linux = native.spec.linux().as_ref();
    let mut after = AfterNetwork {
        sysfs: sysfs.into_iter().cloned().collect(),
        sysctls: linux
            .and_then(|l| l.sysctl().clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..AfterNetwork::default()
    };
    // Masked and read-only only once the sysctls are written: `/proc/sys` is among them.
    let later = |path: &Path| {
        let sysctl = !after.sysctls.is_empty() && path.starts_with("/proc/sys");
        sysctl
            || after
                .sysfs
                .iter()
                .any(|m| path.starts_with(m.destination()))
    };
    let split = |paths: Option<Vec<String>>| -> (Vec<PathBuf>, Vec<PathBuf>) {
        let paths = paths.unwrap_or_default().into_iter().map(PathBuf::from);
        paths.partition(|p| later(p))
    };
    let (masked_later, masked_now) = split(linux.and_then(|l| l.masked_paths().clone()));
    let (read_only_later, read_only_now) = split(linux.and_then(|l| l.readonly_paths().clone()));
    for path in masked_now {
        mask(&path)?;
    }
    for path in read_only_now {
        make_read_only(&path, false)?;
    }
    after.masked = masked_later;
    after.read_only = read_only_later;
    after.read_only_root = native
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if after.sysfs.is_empty() && after.read_only_root {
        make_read_only(Path::new("/"), true)?;
        after.read_only_root = false;
    }
    Ok(after)
}

/// The mounts that wait for the container's network namespace: sysfs lists the network
/// devices of the namespace that mounts it (mounted before, the container would see the
/// host's), so it is mounted from inside, as runc does, with the spec's mounts beneath it;
/// then the sysctls (`net.*` are the network namespace's), the masks and read-only paths
/// beneath either, and a read-only root last. (Mounted through the container's own `/proc`,
/// which the spec must mount, as every runtime's does.)
#[derive(Debug, Default)]
pub struct AfterNetwork {
    sysfs: Vec<Mount>,
    /// `linux.sysctl`, checked when the bundle was read (namespaced, a plain dotted key).
    sysctls: Vec<(String, String)>,
    masked: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    read_only_root: bool,
}

impl AfterNetwork {
    /// Makes the remaining mounts, in the new root and the container's network namespace.
    pub fn finish(self) -> Result<(), MountError> {
        if !self.sysfs.is_empty() {
            let root = open_path(Path::new("/"))?;
            for m in &self.sysfs {
                mount_one(&root, m, None)?;
            }
        }
        for (key, value) in &self.sysctls {
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|source| MountError::Sysctl {
                key: key.clone(),
                source,
            })?;
        }
        for path in &self.masked {
            mask(path)?;
        }
        for path in &self.read_only {
            make_read_only(path, false)?;
        }
        if self.read_only_root {
            make_read_only(Path::new("/"), true)?;
        }
        Ok(())
    }
}

/// For `cp` with a stopped container, in a mount namespace of the caller's own: the root
/// file system as the container sees it, without devices or set-user-ID programs.
pub fn mount_root_for_copy(source: &RootfsSource) -> Result<PathBuf, MountError> {
    crate::sandbox::rootfs::make_mounts_private()
        .map_err(mount_err("make private the mounts under", Path::new("/")))?;
    let root = prepare_root(source)?;
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(mount_err("remount without devices", &root))?;
    Ok(root)
}

/// Mounts the root file system at a mount point of its own and returns where.
fn prepare_root(source: &RootfsSource) -> Result<PathBuf, MountError> {
    match source {
        RootfsSource::Directory(dir) => {
            mount(
                Some(dir.as_path()),
                dir.as_path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(mount_err("bind the root file system", dir))?;
            Ok(dir.clone())
        }
        RootfsSource::Image { layers, work } => {
            // Made here, after the fork, so that a run which fails before it leaves none.
            // 0700 whatever the umask: the layer is in wrun's state root.
            for dir in ["upper", "work", "merged"] {
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(work.join(dir))
                .map_err(|source| MountError::Prepare {
                    path: work.join(dir),
                    source,
                })?;
            }
            // The container's `/` shows the upper layer's own mode and owner: the image's.
            // Made 0700 like all of wrun's state, and reachable only through `work`, which
            // stays 0700 so no host user can reach what the container writes.
            same_owner_and_mode(layers, &work.join("upper")).map_err(|source| {
                MountError::Prepare {
                    path: work.join("upper"),
                    source,
                }
            })?;
            let merged = work.join("merged");
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                layers.display(),
                work.join("upper").display(),
                work.join("work").display()
            );
            let overlay = mount(
                Some("overlay"),
                &merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(options.as_str()),
            );
            if let Err(e) = overlay {
                tracing::debug!("overlayfs unavailable ({e}): copying the image instead");
                copy_tree(layers, &merged).map_err(|source| MountError::Prepare {
                    path: merged.clone(),
                    source,
                })?;
                mount(
                    Some(merged.as_path()),
                    merged.as_path(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(mount_err("bind the copied root", &merged))?;
            }
            Ok(merged)
        }
    }
}

/// Gives `to` the owner and permission bits of `from`.
fn same_owner_and_mode(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(from)?;
    std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// Copies a tree (the fallback when overlayfs is unavailable), keeping links and modes.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("cp -a failed"))
    }
}

fn open_path(path: &Path) -> Result<OwnedFd, MountError> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(mount_err("open", path))
}

/// Opens `path` inside `root` as if `root` were `/` (symlinks included), creating it first
/// as a directory (or, with `file`, an empty file) when missing.
fn resolve_in_root(root: &OwnedFd, path: &Path, file: bool) -> Result<OwnedFd, MountError> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let prepare = |source| MountError::Prepare {
        path: path.to_path_buf(),
        source,
    };
    let dir = cap_std::fs::Dir::reopen_dir(root).map_err(prepare)?;
    if !relative.as_os_str().is_empty() && dir.symlink_metadata(relative).is_err() {
        if file {
            if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty()) {
                dir.create_dir_all(parent).map_err(prepare)?;
            }
            dir.create(relative).map_err(prepare)?;
        } else {
            dir.create_dir_all(relative).map_err(prepare)?;
        }
    }
    let how = nix::fcntl::OpenHow::new()
        .flags(nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC)
        .resolve(
            nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let target = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    nix::fcntl::openat2(root, target, how).map_err(mount_err("resolve", path))
}

/// The path through which the kernel reaches an open descriptor (the host's /proc, before
/// the pivot).
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The mount options wrun reads itself (others go to the file system as data), for
/// `wrun features`.
pub const MOUNT_OPTIONS: [&str; 23] = [
    "ro",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "nodiratime",
    "diratime",
    "relatime",
    "strictatime",
    "bind",
    "rbind",
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "async",
];

/// Flags and data of a mount's options.
fn parse_options(options: &[String]) -> (MsFlags, bool, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut recursive_bind = false;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => {
                flags |= MsFlags::MS_BIND;
                recursive_bind = true;
            }
            "rw" | "suid" | "dev" | "exec" | "atime" | "diratime" | "private" | "rprivate"
            | "slave" | "rslave" | "shared" | "rshared" | "async" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, recursive_bind, data)
}

fn mount_one(root: &OwnedFd, m: &Mount, bundle: Option<&Path>) -> Result<(), MountError> {
    let destination = m.destination();
    let kind = m.typ().clone().unwrap_or_else(|| "bind".into());
    let options = m.options().clone().unwrap_or_default();
    let (flags, recursive, data) = parse_options(&options);
    let is_bind = kind == "bind" || flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let source = m.source().clone().unwrap_or_default();
        let source = match (source.is_relative(), bundle) {
            (true, Some(bundle)) => bundle.join(source),
            _ => source,
        };
        let target = resolve_in_root(root, destination, !source.is_dir())?;
        let target_path = fd_path(&target);
        let mut bind_flags = MsFlags::MS_BIND;
        if recursive {
            bind_flags |= MsFlags::MS_REC;
        }
        mount(
            Some(source.as_path()),
            &target_path,
            None::<&str>,
            bind_flags,
            None::<&str>,
        )
        .map_err(mount_err("bind-mount", &source))?;
        let wanted = flags & !MsFlags::MS_BIND;
        if !wanted.is_empty() {
            // Reopen: the target now names the bind mount, not the directory beneath it.
            let target = resolve_in_root(root, destination, false)?;
            let remount = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | wanted
                | inherited_flags(&fd_path(&target));
            mount(
                None::<&str>,
                &fd_path(&target),
                None::<&str>,
                remount,
                None::<&str>,
            )
            .map_err(mount_err("restrict the bind mount", destination))?;
        }
        return Ok(());
    }
    let (fstype, extra): (&str, MsFlags) = match kind.as_str() {
        "proc" => (
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        "tmpfs" => ("tmpfs", MsFlags::empty()),
        "devpts" => ("devpts", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC),
        "mqueue" => (
            "mqueue",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        "sysfs" => (
            "sysfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        ),
        // Cgroup file systems are not exposed: an empty read-only tmpfs takes their place.
        "cgroup" | "cgroup2" => ("tmpfs", MsFlags::MS_RDONLY),
        other => return Err(MountError::Unsupported(other.to_string())),
    };
    let target = resolve_in_root(root, destination, false)?;
    let data = if fstype == "tmpfs" && (kind == "cgroup" || kind == "cgroup2") {
        "size=0,mode=0555".to_string()
    } else {
        data.join(",")
    };
    mount(
        Some(fstype),
        &fd_path(&target),
        Some(fstype),
        flags | extra,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(mount_err("mount", destination))
}

/// The standard device nodes (bound from the host) and the usual links in `/dev`.
fn populate_dev(root: &OwnedFd) -> Result<(), MountError> {
    for device in DEVICES {
        let path = PathBuf::from(format!("/dev/{device}"));
        let host = PathBuf::from(format!("/dev/{device}"));
        if !host.exists() {
            continue;
        }
        let target = resolve_in_root(root, &path, true)?;
        mount(
            Some(host.as_path()),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err("bind the device", &host))?;
    }
    let dev = resolve_in_root(root, Path::new("/dev"), false)?;
    let dir = cap_std::fs::Dir::reopen_dir(&dev).map_err(|source| MountError::Prepare {
        path: "/dev".into(),
        source,
    })?;
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        if dir.symlink_metadata(link).is_err() {
            dir.symlink_contents(target, link)
                .map_err(|source| MountError::Prepare {
                    path: PathBuf::from(format!("/dev/{link}")),
                    source,
                })?;
        }
    }
    Ok(())
}

/// `pivot_root(".", ".")` and detach the old root (see `sandbox/rootfs.rs`).
fn pivot(root: &Path) -> Result<(), MountError> {
    let fail = mount_err("pivot into", root);
    nix::unistd::chdir(root).map_err(mount_err("pivot into", root))?;
    nix::unistd::pivot_root(".", ".").map_err(fail)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(mount_err("detach the old root from", root))?;
    nix::unistd::chdir("/").map_err(mount_err("enter the new root", root))
}

/// Hides a path: `/dev/null` over a file, an empty read-only tmpfs over a directory.
fn mask(path: &Path) -> Result<(), MountError> {
    let result = match std::fs::metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        ),
        Ok(_) => mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
    };
    result.map_err(mount_err("mask", path))
}

/// Makes a path (and, with `recursive`, the mounts beneath it) read-only.
fn make_read_only(path: &Path, recursive: bool) -> Result<(), MountError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    let mut bind = MsFlags::MS_BIND;
    if recursive {
        bind |= MsFlags::MS_REC;
    }
    if path != Path::new("/") {
        mount(Some(path), path, None::<&str>, bind, None::<&str>)
            .map_err(mount_err("bind read-only", path))?;
    }
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | inherited_flags(path);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(mount_err("make read-only", path))
}

/// The flags of the mount at `path` that a remount must repeat (locked in a user namespace).
fn inherited_flags(path: &Path) -> MsFlags {
    use crate::sandbox::rootfs::{mount_flags, ATIME_FLAGS};
    let locked = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_flags(path, locked | ATIME_FLAGS)
}

#[cfg(test)]
mod tests {
    use super::{parse_options, MOUNT_OPTIONS};

    #[test]
    fn every_option_features_lists_is_read_not_passed_as_data() {
        for option in MOUNT_OPTIONS {
            let (_, _, data) = parse_options(&[option.to_string()]);
            assert!(
                data.is_empty(),
                "{option} would be passed to the file system"
            );
        }
        let (_, _, data) = parse_options(&["size=64k".to_string()]);
        assert_eq!(data, ["size=64k"]);
    }
}
