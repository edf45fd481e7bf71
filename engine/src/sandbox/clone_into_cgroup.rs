//! On cgroup v2, the sandbox forked straight into its cgroup (`clone3` with
//! `CLONE_INTO_CGROUP`) instead of being moved there once born.
//!
//! Moving another process into a cgroup (writing its PID to `cgroup.procs`, v2's only way in:
//! a process cannot move itself through `cgroup.threads` to another domain) takes the kernel's
//! global `cgroup_threadgroup_rwsem` for writing, and its first writer after a quiet spell
//! waits for an RCU grace period: 7.8–13 ms a fork and move after 100 ms pauses on this host's
//! cgroup2 hierarchy, against 0.25–0.31 ms for a `clone3` into it. A fork into a cgroup takes
//! that lock only for reading, as every fork does. (v1 has no such flag; there the sandbox
//! moves itself, which spares the lock: [`super::self_join`].)
//!
//! musl keeps the calling thread's ID in its thread descriptor and refreshes it only in its
//! own `fork`; after a bare `clone3` the child's copy would still name the parent (`raise`,
//! and so `abort`, signal that ID). The child writes its own ID there. The slot is located and
//! checked to hold the caller's ID before `clone3` is used at all; where it does not (another C
//! library or layout) the sandbox is forked and moved as before.

use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// `CLONE_INTO_CGROUP` (Linux 5.7), which the libc crate names for glibc only.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks into a cgroup; exists only where the host and the C library allow it.
pub struct CloneIntoCgroup {
    /// The calling thread's ID in the C library's thread descriptor.
    cached_tid: *mut libc::c_int,
}

impl CloneIntoCgroup {
    /// On a cgroup v2 host (`CLONE_INTO_CGROUP` names v2 cgroups only) whose C library's
    /// cached thread ID this process can find.
    pub fn available() -> Option<CloneIntoCgroup> {
        if !cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            return None;
        }
        Some(CloneIntoCgroup {
            cached_tid: cached_tid_slot()?,
        })
    }

    /// Forks as `fork` does, the child starting life in the cgroup whose directory `cgroup` is
    /// open. An error (an old kernel's `ENOSYS`, a seccomp profile's refusal) means no child.
    ///
    /// # Safety
    /// As `fork`: the calling process must be single-threaded, and the one thread that
    /// created this value.
    pub unsafe fn fork(&self, cgroup: BorrowedFd<'_>) -> nix::Result<ForkResult> {
        // SAFETY: clone_args is plain integers; all zero is "no such option".
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = libc::SIGCHLD as u64;
        args.cgroup = cgroup.as_raw_fd() as u64;
        // SAFETY: without CLONE_VM the child gets a copy of this address space and returns
        // from the call on its copy of this stack, as after fork.
        let returned = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        match returned {
            -1 => Err(Errno::last()),
            0 => {
                // SAFETY: the slot was checked in `available` (same thread, same descriptor).
                unsafe {
                    self.cached_tid
                        .write_volatile(nix::unistd::gettid().as_raw())
                };
                Ok(ForkResult::Child)
            }
            child => Ok(ForkResult::Parent {
                child: Pid::from_raw(child as libc::pid_t),
            }),
        }
    }
}

/// Forks into the cgroup whose directory `cgroup` is open where `clone_into` exists (then
/// `true`: born there), else with `fork`, also when the kernel refuses `clone3` (no child
/// exists then); the caller moves a child that was not born in its cgroup.
///
/// # Safety
/// As `fork`: the calling process must be single-threaded.
pub unsafe fn fork_into_or_fork(
    clone_into: Option<&CloneIntoCgroup>,
    cgroup: Option<&OwnedFd>,
) -> nix::Result<(ForkResult, bool)> {
    if let (Some(clone_into), Some(cgroup)) = (clone_into, cgroup) {
        // SAFETY: the caller's promise.
        match unsafe { clone_into.fork(cgroup.as_fd()) } {
            Ok(forked) => return Ok((forked, true)),
            Err(e) => tracing::debug!("clone3 into the cgroup refused ({e}): fork and move"),
        }
    }
    // SAFETY: the caller's promise.
    unsafe { nix::unistd::fork() }.map(|forked| (forked, false))
}

/// The calling thread's ID slot in musl's thread descriptor, if it holds that ID: `struct
/// pthread`'s `tid`, after `self`, `dtv`, `prev`, `next`, `sysinfo` and `canary` on x86_64.
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
fn cached_tid_slot() -> Option<*mut libc::c_int> {
    const TID_OFFSET: usize = 48;
    let descriptor = unsafe { libc::pthread_self() } as usize as *mut u8;
    // SAFETY: musl's descriptor (hundreds of bytes) is live for the thread's lifetime and
    // holds an aligned `int` at this offset.
    let slot = unsafe { descriptor.add(TID_OFFSET) } as *mut libc::c_int;
    let holds_our_id = unsafe { slot.read_volatile() } == nix::unistd::gettid().as_raw();
    holds_our_id.then_some(slot)
}

#[cfg(not(all(target_env = "musl", target_arch = "x86_64")))]
fn cached_tid_slot() -> Option<*mut libc::c_int> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use std::os::fd::AsFd;

    #[test]
    fn the_cached_thread_id_is_found_on_every_thread() {
        // Each thread's descriptor holds its own ID (a thread's differs from the process's).
        let main = cached_tid_slot();
        let other = std::thread::spawn(|| cached_tid_slot().map(|slot| slot as usize))
            .join()
            .unwrap();
        assert!(main.is_some() && other.is_some());
        assert_ne!(main.map(|slot| slot as usize), other);
    }

    /// Where a cgroup2 hierarchy is mounted (all of /sys/fs/cgroup on a v2 host, a hybrid
    /// one's `unified`).
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mounts.lines().find_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            fs.starts_with("cgroup2 ")
                .then(|| fields.split(' ').nth(4).map(std::path::PathBuf::from))
                .flatten()
        })
    }

    fn skip(reason: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{reason} (CI=true forbids skipping)");
        }
        crate::err_line!("skipped: {reason}");
    }

    /// The child is in the cgroup from its first instruction, knows its own thread ID, and
    /// `raise` (which signals that ID) ends the child, not the parent.
    #[test]
    fn a_child_is_born_in_its_cgroup_and_raises_signals_on_itself() {
        let Some(mount) = cgroup2_mount() else {
            return skip("no cgroup2 hierarchy mounted");
        };
        let name = format!("wrun-clone-into-test-{}", std::process::id());
        let dir = mount.join(&name);
        if let Err(e) = std::fs::create_dir(&dir) {
            return skip(&format!("cannot make a cgroup in {}: {e}", mount.display()));
        }
        let opened = std::fs::File::open(&dir).expect("open the cgroup directory");
        let clone = CloneIntoCgroup {
            cached_tid: cached_tid_slot().expect("musl's cached thread ID"),
        };
        let wanted = format!("0::/{name}\n");
        // SAFETY: the child calls only async-signal-safe functions and `_exit`s (the test
        // harness has other threads).
        match unsafe { clone.fork(opened.as_fd()) }.expect("clone3") {
            ForkResult::Child => unsafe {
                if clone.cached_tid.read_volatile() != libc::syscall(libc::SYS_gettid) as i32 {
                    libc::_exit(10);
                }
                let mut text = [0u8; 4096];
                let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                let read = libc::read(fd, text.as_mut_ptr().cast(), text.len());
                let text = &text[..read.max(0) as usize];
                if !text.windows(wanted.len()).any(|w| w == wanted.as_bytes()) {
                    libc::_exit(11);
                }
                libc::raise(libc::SIGUSR1);
                libc::_exit(12)
            },
            ForkResult::Parent { child } => {
                let ended = waitpid(child, None).expect("wait");
                let _ = std::fs::remove_dir(&dir);
                assert_eq!(ended, WaitStatus::Signaled(child, Signal::SIGUSR1, false));
            }
        }
    }
}
