//! The sandbox's mount namespace made once and pinned: its only mount is the empty read-only
//! root, and a Wasm sandbox enters a private copy of it instead of copying the host's mounts.
//!
//! `unshare(CLONE_NEWNS)` copies every mount the host has, and leaving them again
//! (`pivot_root`, then a lazy unmount of the old root) walks them once more: measured here
//! (2026-12-07, a C program, 20 runs each) 0.29 ms with the host's 21 mounts and 1.22 ms with
//! 500 more, as a Kubernetes node with many pods has; entering a copy of this template took
//! 0.06 ms with either. The template is built by a short-lived helper the way the root was
//! built in each sandbox before (`rootfs::enter_empty_root`), with [`SLOTS`] empty directories
//! as mount points for preopens; its namespace stays alive as a bind mount of its nsfs file on
//! [`PIN`]. /run is cleared at boot, and the first run after makes it again.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// How many directories a sandbox entering the template can be given (its mount points).
pub const SLOTS: usize = super::attach::SPARE_MOUNT_POINTS;

/// Where the template is pinned, and the lock its makers take. The version names the layout
/// (one tmpfs, `SLOTS` mount points): a wrun that changes it pins a new one beside.
const DIRECTORY: &str = "/run/wrun-mount-template";
pub const PIN: &str = "/run/wrun-mount-template/v1";
const LOCK: &str = "/run/wrun-mount-template/lock";

/// `statfs`'s filesystem type of a namespace file (linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// The template's namespace, made first if it is not pinned yet; `None` (the sandbox copies
/// the host's mounts as before) where it cannot be made, e.g. without /run or without the
/// privilege to mount. Forks a helper when it makes it: call it single-threaded, before the
/// PID namespace is unshared.
pub fn open_or_make() -> Option<OwnedFd> {
    if let Some(pinned) = open_pinned() {
        return Some(pinned);
    }
    match make() {
        Ok(pinned) => Some(pinned),
        Err(e) => {
            tracing::debug!(error = %e, pin = PIN, "no mount namespace template; each sandbox copies the host's mounts");
            None
        }
    }
}

/// The pinned namespace, if [`PIN`] is one (after a reboot it is an empty file, or missing).
fn open_pinned() -> Option<OwnedFd> {
    let file = std::fs::File::open(PIN).ok()?;
    let is_namespace = nix::sys::statfs::fstatfs(file.as_fd())
        .is_ok_and(|fs| fs.filesystem_type().0 as i64 == NSFS_MAGIC);
    is_namespace.then(|| file.into())
}

/// Builds the template in a helper and pins its namespace, holding the makers' lock so that
/// concurrent first runs make one.
fn make() -> io::Result<OwnedFd> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // In /run as it is: a host without one gets none made.
    match std::fs::DirBuilder::new().mode(0o700).create(DIRECTORY) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(LOCK)?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))?;
    if let Some(pinned) = open_pinned() {
        return Ok(pinned);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(PIN)?;
    let helper = Helper::start()?;
    let pinned = nix::mount::mount(
        Some(Path::new(&format!("/proc/{}/ns/mnt", helper.pid))),
        PIN,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    );
    helper.finish();
    pinned?;
    open_pinned().ok_or_else(|| io::Error::other("the pinned template is not a namespace"))
}

/// The process whose mount namespace becomes the template: it builds the root, says so,
/// and waits until its namespace is pinned.
struct Helper {
    pid: nix::unistd::Pid,
    done: OwnedFd,
}

impl Helper {
    fn start() -> io::Result<Helper> {
        use nix::fcntl::OFlag;
        let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (done_read, done_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: the caller is single-threaded (see `open_or_make`); the helper only makes
        // system calls and exits without running destructors.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop((ready_read, done_write));
                let built = build_root().is_ok();
                let _ = nix::unistd::write(&ready_write, &[u8::from(built)]);
                // Returns at end of file: the namespace is pinned, or will not be.
                let _ = nix::unistd::read(done_read.as_fd(), &mut [0u8; 1]);
                crate::sys::exit_now(0)
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((ready_write, done_read));
                let helper = Helper {
                    pid: child,
                    done: done_write,
                };
                let mut built = [0u8; 1];
                match nix::unistd::read(ready_read.as_fd(), &mut built) {
                    Ok(1) if built[0] == 1 => Ok(helper),
                    _ => {
                        helper.finish();
                        Err(io::Error::other(
                            "the helper could not build the template root",
                        ))
                    }
                }
            }
        }
    }

    /// Lets the helper exit and reaps it.
    fn finish(self) {
        drop(self.done);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// In the helper: a new mount namespace whose root is an empty read-only tmpfs with
/// [`SLOTS`] mount points, as a sandbox's root is built without the template.
fn build_root() -> Result<(), super::rootfs::RootfsError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(super::rootfs::RootfsError::Template)?;
    super::rootfs::enter_empty_root(Path::new(DIRECTORY), &[], SLOTS).map(drop)
}
