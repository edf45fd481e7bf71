//! A namespace made once by a short-lived helper and kept alive as a bind mount of its nsfs
//! file under /run, for sandboxes to enter instead of each making its own.
//!
//! /run is cleared at boot, and the first run after makes the namespace again. Concurrent
//! first runs make one: the makers hold an `flock` beside the pin.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// `statfs`'s filesystem type of a namespace file (linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `ioctl` on a namespace file that answers its `CLONE_NEW*` type (linux/nsfs.h, `_IO(0xb7, 3)`).
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Where one kind of namespace is pinned, and how its helper builds it.
pub struct Pinned {
    /// Made in /run as it is (0700): a host without /run gets none.
    pub directory: &'static str,
    /// The bind mount of the namespace file; its name carries the layout's version.
    pub pin: &'static str,
    /// The makers' lock.
    pub lock: &'static str,
    /// The namespace's name under `/proc/PID/ns`, and its `CLONE_NEW*` type.
    pub kind: &'static str,
    pub nstype: libc::c_int,
    /// Run in the helper: makes the namespace (its `unshare`) and what goes in it.
    pub build: fn(&Pinned) -> io::Result<()>,
    /// Whether a pinned namespace may be used (besides being a namespace of its kind).
    pub usable: fn(&Pinned, &std::fs::File) -> bool,
}

impl Pinned {
    /// The pinned namespace, made first if it is not pinned yet; `None` where it cannot be
    /// made (no /run, no privilege to mount). Forks a helper when it makes it: call it
    /// single-threaded, before the PID namespace is unshared.
    pub fn open_or_make(&self) -> Option<OwnedFd> {
        if let Some(pinned) = self.open_pinned() {
            return Some(pinned);
        }
        match self.make() {
            Ok(pinned) => Some(pinned),
            Err(e) => {
                tracing::debug!(error = %e, pin = self.pin, "no pinned namespace; each sandbox makes its own");
                None
            }
        }
    }

    /// The pinned namespace, if the pin is one of its kind (after a reboot it is an empty
    /// file, or missing) that may be used.
    fn open_pinned(&self) -> Option<OwnedFd> {
        let file = std::fs::File::open(self.pin).ok()?;
        let is_namespace = nix::sys::statfs::fstatfs(file.as_fd())
            .is_ok_and(|fs| fs.filesystem_type().0 as i64 == NSFS_MAGIC);
        // SAFETY: an ioctl without an argument on a file this function owns.
        let is_its_kind =
            is_namespace && unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) } == self.nstype;
        (is_its_kind && (self.usable)(self, &file)).then(|| file.into())
    }

    /// Builds the namespace in a helper and pins it, holding the makers' lock.
    fn make(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        match std::fs::DirBuilder::new()
            .mode(0o700)
            .create(self.directory)
        {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock)?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io::Error::from(e))?;
        if let Some(pinned) = self.open_pinned() {
            return Ok(pinned);
        }
        // The mount point: what is there already (an unusable namespace) gets the new one
        // mounted over it.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.pin)
        {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let helper = Helper::start(self)?;
        let pinned = nix::mount::mount(
            Some(Path::new(&format!("/proc/{}/ns/{}", helper.pid, self.kind))),
            self.pin,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
        helper.finish();
        pinned?;
        self.open_pinned()
            .ok_or_else(|| io::Error::other("the pinned file is not a usable namespace"))
    }
}

/// The process whose namespace gets pinned: it builds it, says so, and waits until it is
/// pinned.
struct Helper {
    pid: nix::unistd::Pid,
    done: OwnedFd,
}

impl Helper {
    fn start(pinned: &Pinned) -> io::Result<Helper> {
        use nix::fcntl::OFlag;
        let (ready_read, ready_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (done_read, done_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: the caller is single-threaded (see `open_or_make`); the helper only makes
        // system calls and exits without running destructors.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => {
                drop((ready_read, done_write));
                let built = (pinned.build)(pinned).is_ok();
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
                        Err(io::Error::other("the helper could not build the namespace"))
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
