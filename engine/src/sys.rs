//! The few raw system calls wrun makes that nix, rustix and caps do not wrap, each with the
//! reason it is sound.

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd};

/// Ends the process at once with `code`: no destructors, no atexit handlers, no flushing
/// (callers flush what they wrote). A forked child must not run its parent's destructors,
/// and a sandbox skips tearing its engine down (≈1 ms) when the kernel frees it all anyway.
/// Async-signal-safe.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Sets the scheduling policy of thread `tid` (0: the calling one) to `policy` at priority 0
/// (`SCHED_OTHER`, `SCHED_IDLE`: a thread that runs only on a CPU nothing else wants). The
/// system call itself: musl's `sched_setscheduler` only returns ENOSYS. Threads made later
/// inherit the policy.
pub fn set_scheduling(tid: i32, policy: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the parameter is a valid sched_param that outlives the call; a zero priority
    // is the only one these policies take.
    let done = unsafe {
        let param: libc::sched_param = std::mem::zeroed();
        libc::syscall(libc::SYS_sched_setscheduler, tid, policy, &param)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An OS error's text as wrun's messages show it: lower case, without ` (os error N)`.
pub fn error_text(text: &str) -> String {
    text.split(" (os error")
        .next()
        .unwrap_or(text)
        .to_lowercase()
}

/// `wait4(child, WNOHANG)`: the wait status and resource usage once `child` has ended.
pub fn wait4_nohang(child: Pid) -> nix::Result<Option<(i32, libc::rusage)>> {
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: both pointers are valid for the call; `usage` is plain data (every bit pattern
    // is a valid rusage), zeroed before the call, so it is initialised whatever the kernel
    // wrote.
    let (pid, usage) = unsafe {
        let pid = libc::wait4(
            child.as_raw(),
            &mut status,
            libc::WNOHANG,
            usage.as_mut_ptr(),
        );
        (pid, usage.assume_init())
    };
    match pid {
        0 => Ok(None),
        p if p < 0 => Err(nix::Error::last()),
        _ => Ok(Some((status, usage))),
    }
}

/// `close_range(first, last, 0)`: closes every descriptor in the range.
pub fn close_range(first: u32, last: u32) -> nix::Result<()> {
    // SAFETY: close_range only closes descriptors; the callers own the whole range (nothing
    // in the process holds one of them afterwards).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// The kind of namespace `fd` refers to (`NS_GET_NSTYPE`), or `None` if it is none.
pub fn namespace_type(fd: impl AsFd) -> Option<CloneFlags> {
    // _IO(0xb7, 0x3), from linux/nsfs.h.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl that takes no argument, on a descriptor borrowed for the call.
    let kind = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), NS_GET_NSTYPE as _) };
    (kind > 0).then(|| CloneFlags::from_bits_truncate(kind))
}

/// The attributes `mount_setattr(2)` sets on a mount (`struct mount_attr`).
#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, attr)` on a detached mount.
pub fn mount_setattr(tree: impl AsFd, attr: &MountAttr) -> std::io::Result<()> {
    let empty = c"";
    // SAFETY: the kernel reads the empty path and `attr`, of the size given; both outlive
    // the call, and the descriptor is borrowed for it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn namespace_descriptors_are_told_by_kind() {
        let net = File::open("/proc/self/ns/net").unwrap();
        assert_eq!(namespace_type(&net), Some(CloneFlags::CLONE_NEWNET));
        let uts = File::open("/proc/self/ns/uts").unwrap();
        assert_eq!(namespace_type(&uts), Some(CloneFlags::CLONE_NEWUTS));
        let plain = File::open("/proc/self/status").unwrap();
        assert_eq!(namespace_type(&plain), None);
    }
}
