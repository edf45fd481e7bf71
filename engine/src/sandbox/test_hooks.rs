//! Test-only hooks (cargo feature `test-hooks`, built as `wrun-hooked`):
//! - `WRUN_TEST_SYSCALL=NAME`: the sandboxed child makes a forbidden system call from the
//!   host side right after seccomp is installed, prints `hook NAME: errno N` (0 if it
//!   succeeded) on stderr and exits 0, so the escape suite can check the kernel layer alone;
//! - `WRUN_TEST_PAUSE=STAGE`: the parent prints `paused at STAGE` and stops there, so the
//!   fault tests can `kill -9` it at a known stage (`forked`, `running`, `reaped`);
//! - `WRUN_TEST_CHILD_LATE=MS`: the sandbox sleeps MS milliseconds before its first step, as
//!   a child the scheduler leaves waiting on a busy machine would.

/// Stops the parent forever at `stage` when asked to.
pub fn pause_at(stage: &str) {
    if std::env::var("WRUN_TEST_PAUSE").as_deref() != Ok(stage) {
        return;
    }
    crate::err_line!("paused at {stage}");
    loop {
        std::thread::park();
    }
}

/// Holds the sandbox back before its first step when asked to.
pub fn child_late() {
    let Some(millis) = std::env::var("WRUN_TEST_CHILD_LATE")
        .ok()
        .and_then(|text| text.parse().ok())
    else {
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(millis));
}

/// Runs the requested forbidden call, if any, and ends the process.
pub fn after_seccomp() {
    let Ok(name) = std::env::var("WRUN_TEST_SYSCALL") else {
        return;
    };
    let errno = attempt(&name);
    crate::err_line!("hook {name}: errno {errno}");
    crate::sys::exit_now(0)
}

/// The errno of the attempt (0 when it succeeded, -1 for an unknown name).
fn attempt(name: &str) -> i32 {
    // SAFETY: each call below is a plain system call with valid (or null) pointers; none of
    // them is expected to succeed; success would affect this disposable process and what it
    // shares with the test's other sandboxes (the mount namespace template, for one).
    let rc: libc::c_long = unsafe {
        match name {
            "mount" => libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null::<u8>(),
            ),
            "umount" => libc::syscall(libc::SYS_umount2, c"/".as_ptr(), libc::MNT_DETACH),
            "socket" => libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
            "socket-unix" => libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0),
            "socketpair" => {
                let mut pair = [0i32; 2];
                libc::syscall(
                    libc::SYS_socketpair,
                    libc::AF_UNIX,
                    libc::SOCK_STREAM,
                    0,
                    pair.as_mut_ptr(),
                )
            }
            // What the shared IPC namespace holds (`shared_namespaces`).
            "shmget" => libc::syscall(libc::SYS_shmget, libc::IPC_PRIVATE, 4096, 0o600),
            "semget" => libc::syscall(libc::SYS_semget, libc::IPC_PRIVATE, 1, 0o600),
            "msgget" => libc::syscall(libc::SYS_msgget, libc::IPC_PRIVATE, 0o600),
            "mq_open" => libc::syscall(
                libc::SYS_mq_open,
                c"wrun-test".as_ptr(),
                libc::O_RDWR | libc::O_CREAT,
                0o600,
                std::ptr::null::<u8>(),
            ),
            "execve" => {
                let argv = [c"/bin/sh".as_ptr(), std::ptr::null()];
                libc::syscall(
                    libc::SYS_execve,
                    argv[0],
                    argv.as_ptr(),
                    std::ptr::null::<u8>(),
                )
            }
            "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
            "unshare-user" => libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
            "setns" => libc::syscall(libc::SYS_setns, 0, 0),
            "fork" => libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0),
            "clone3" => libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0),
            "uname" => {
                let mut name = std::mem::zeroed::<libc::utsname>();
                libc::syscall(libc::SYS_uname, &mut name)
            }
            "kill" => libc::syscall(libc::SYS_kill, 1, libc::SIGKILL),
            "bpf" => libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0),
            "keyctl" => libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0),
            "kexec_load" => libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0),
            "open" => libc::syscall(libc::SYS_open, c"/etc/passwd".as_ptr(), libc::O_RDONLY),
            "chroot" => libc::syscall(libc::SYS_chroot, c"/".as_ptr()),
            "capset" => {
                let mut header = libc_cap_header();
                let data = [0u32; 6];
                libc::syscall(libc::SYS_capset, &mut header as *mut _, data.as_ptr())
            }
            "ioctl-tiocsti" => libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, c"x".as_ptr()),
            "memfd" => libc::syscall(libc::SYS_memfd_create, c"x".as_ptr(), 0),
            // Raw: musl's mmap reports EPERM for anonymous maps as ENOMEM.
            "mmap-exec" => libc::syscall(
                libc::SYS_mmap,
                0,
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ),
            "mprotect-exec" => {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                libc::syscall(
                    libc::SYS_mprotect,
                    p,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            }
            _ => return -1,
        }
    };
    if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

fn libc_cap_header() -> CapHeader {
    CapHeader {
        version: 0x2008_0522,
        pid: 0,
    }
}
