//! Defence in depth for the sandboxed process, applied once its setup is done and before any
//! guest code runs: inherited descriptors closed, resource limits, every capability dropped,
//! `no_new_privs`, and a seccomp allowlist of the system calls the wasmtime host needs.

use super::bpf::{self, ArgCheck, Rule};
use seccompiler::BpfProgram;
use std::os::fd::RawFd;

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("failed to close inherited file descriptors")]
    CloseFds(#[source] std::io::Error),
    #[error("failed to set resource limit {0}")]
    Rlimit(&'static str, #[source] nix::Error),
    #[error("failed to drop capabilities")]
    Capabilities(#[source] caps::errors::CapsError),
    #[error("failed to set no_new_privs")]
    NoNewPrivs(#[source] nix::Error),
    #[error("failed to install the seccomp filter")]
    SeccompInstall(#[source] seccompiler::Error),
}

/// Most files a Wasm sandbox may hold open; a guest opening more gets EMFILE.
pub const MAX_OPEN_FILES: u64 = 1024;

/// The errno every system call outside the allowlist fails with.
pub const DENIED_ERRNO: i32 = libc::EPERM;

/// Closes every descriptor from 3 up except those in `keep`: whatever the caller of `wrun`
/// left open (without close-on-exec) must not be reachable from the sandbox.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), HardenError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    let mut low = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > low {
            close_range(low, fd - 1)?;
        }
        low = fd.saturating_add(1);
    }
    Ok(())
}

fn close_range(first: u32, last: u32) -> Result<(), HardenError> {
    // SAFETY: close_range only closes descriptors; the ones still needed were excluded.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc < 0 {
        return Err(HardenError::CloseFds(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Caps open files and forbids core dumps (which would hold the guest's memory).
pub fn limit_resources() -> Result<(), HardenError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| HardenError::Rlimit("nofile", e))?;
    let files = hard.min(MAX_OPEN_FILES);
    setrlimit(Resource::RLIMIT_NOFILE, files, files)
        .map_err(|e| HardenError::Rlimit("nofile", e))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| HardenError::Rlimit("core", e))
}

/// Empties every capability set: bounding and ambient first (they need CAP_SETPCAP), then
/// inheritable, effective and permitted.
pub fn drop_capabilities() -> Result<(), HardenError> {
    use caps::CapSet;
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(HardenError::Capabilities)?;
    }
    Ok(())
}

/// What a pooled sandbox keeps until its claim: joining a pod's namespaces (`setns`) needs
/// CAP_SYS_ADMIN, and dropping it from the bounding set then needs CAP_SETPCAP.
const KEPT_UNTIL_CLAIM: [caps::Capability; 2] = [
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_SETPCAP,
];

/// As [`drop_capabilities`], but for [`KEPT_UNTIL_CLAIM`], which [`drop_kept_capabilities`]
/// drops once the claim says which namespaces to join.
pub fn drop_capabilities_until_claim() -> Result<(), HardenError> {
    use caps::CapSet;
    let kept: caps::CapsHashSet = KEPT_UNTIL_CLAIM.into_iter().collect();
    let bounding = caps::read(None, CapSet::Bounding).map_err(HardenError::Capabilities)?;
    for cap in bounding.difference(&kept) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(HardenError::Capabilities)?;
    }
    for set in [CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set).map_err(HardenError::Capabilities)?;
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &kept).map_err(HardenError::Capabilities)?;
    }
    Ok(())
}

/// Drops what [`drop_capabilities_until_claim`] kept: every set is empty afterwards.
pub fn drop_kept_capabilities() -> Result<(), HardenError> {
    use caps::CapSet;
    for cap in KEPT_UNTIL_CLAIM {
        caps::drop(None, CapSet::Bounding, cap).map_err(HardenError::Capabilities)?;
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(HardenError::Capabilities)?;
    }
    Ok(())
}

/// Makes execve unable to grant privileges (and lets an unprivileged process load seccomp).
pub fn set_no_new_privs() -> Result<(), HardenError> {
    nix::sys::prctl::set_no_new_privs().map_err(HardenError::NoNewPrivs)
}

/// Installs `program` on every thread of the process.
pub fn install_seccomp(program: &BpfProgram) -> Result<(), HardenError> {
    seccompiler::apply_filter_all_threads(program).map_err(HardenError::SeccompInstall)
}

/// The system calls the wasmtime host makes once setup is done, found by tracing the child
/// (`bench/syscalls.py`) through the samples and the escape suite's file system tour, plus
/// what threads, signals and allocation need; docs/security.md lists them with the reasons.
const WASM_HOST_SYSCALLS: &[i64] = &[
    // memory (mmap and mprotect are further restricted below)
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    // threads (clone is restricted below) and synchronisation
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // signals: traps, the timeout timer, stop requests
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_setitimer,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    // time
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // descriptors WASI hands out
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    // wasmtime-wasi writes a file opened with FDFLAGS_APPEND (`>>`, every log) with
    // `pwritev2(…, RWF_APPEND)`, and falls back only on ENOSYS/ENOTSUP.
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_getdents64,
    // paths, always relative to a preopened directory (cap-std resolves beneath it)
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    // waiting on descriptors and timers (the async runtime)
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
];

/// What serving HTTP adds (`run -p`): accepting on the listeners the parent opened and talking
/// on the accepted connections. No `socket`, `bind`, `listen` or `connect`: the guest's host
/// can answer, never open a socket of its own.
const HTTP_SERVER_SYSCALLS: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_accept,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
];

/// Terminal queries (is stdout a terminal, its size) and non-blocking mode: the only ioctls.
const ALLOWED_IOCTLS: &[u32] = &[
    libc::TCGETS as u32,
    libc::TIOCGWINSZ as u32,
    libc::FIONBIO as u32,
    libc::FIOCLEX as u32,
];

/// The seccomp filter for a Wasm sandbox: the allowlist above; `mmap` and `mprotect` only
/// without PROT_EXEC (all code was mapped before the filter, so no new code can appear);
/// `clone` only for threads (no new processes); the listed ioctls; everything else fails
/// with EPERM, and a call made for another architecture kills the process.
pub fn wasm_filter() -> BpfProgram {
    filter_with(&[], Vec::new())
}

/// [`wasm_filter`] plus accepting and answering connections, and `open` of directories only
/// (`O_DIRECTORY`, read-only, never creating): each new instance preopens its directories by
/// path after the filter is on, and musl's `open` is not the `*at` form.
pub fn http_server_filter() -> BpfProgram {
    let checked = (libc::O_DIRECTORY | libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC) as u32;
    let open_dir_handle = Rule::when(
        libc::SYS_open,
        vec![ArgCheck::MaskedEq {
            arg: 1,
            mask: checked,
            value: libc::O_DIRECTORY as u32,
        }],
        bpf::RET_ALLOW,
    );
    filter_with(HTTP_SERVER_SYSCALLS, vec![open_dir_handle])
}

fn filter_with(extra: &[i64], extra_rules: Vec<Rule>) -> BpfProgram {
    let allow = bpf::RET_ALLOW;
    let no_exec = || {
        vec![ArgCheck::MaskClear {
            arg: 2,
            mask: libc::PROT_EXEC as u32,
        }]
    };
    let mut rules: Vec<Rule> = WASM_HOST_SYSCALLS
        .iter()
        .chain(extra)
        .map(|&nr| Rule::new(nr, allow))
        .collect();
    rules.extend(extra_rules);
    rules.push(Rule::when(libc::SYS_mmap, no_exec(), allow));
    rules.push(Rule::when(libc::SYS_mprotect, no_exec(), allow));
    rules.push(Rule::when(
        libc::SYS_clone,
        vec![ArgCheck::MaskedEq {
            arg: 0,
            mask: libc::CLONE_THREAD as u32,
            value: libc::CLONE_THREAD as u32,
        }],
        allow,
    ));
    rules.extend(ALLOWED_IOCTLS.iter().map(|&request| {
        Rule::when(
            libc::SYS_ioctl,
            vec![ArgCheck::Eq {
                arg: 1,
                value: request,
            }],
            allow,
        )
    }));
    let deny = bpf::ret_errno(DENIED_ERRNO);
    bpf::compile(&rules, deny, deny)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xc000_003e;

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        bpf::evaluate(&wasm_filter(), ARCH, nr as u32, args)
    }

    #[test]
    fn a_server_may_accept_but_never_open_a_socket() {
        let server = http_server_filter();
        let allowed = |nr: i64, filter: &BpfProgram| {
            bpf::evaluate(filter, ARCH, nr as u32, [0; 6]) == bpf::RET_ALLOW
        };
        assert!(allowed(libc::SYS_accept4, &server));
        assert!(!allowed(libc::SYS_accept4, &wasm_filter()));
        for nr in [
            libc::SYS_socket,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_connect,
        ] {
            assert!(!allowed(nr, &server), "{nr}");
        }
    }

    #[test]
    fn the_host_calls_are_allowed() {
        for &nr in WASM_HOST_SYSCALLS {
            assert_eq!(verdict(nr, [0; 6]), bpf::RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn no_new_code_and_no_new_processes() {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
        let denied = bpf::ret_errno(libc::EPERM);
        assert_eq!(
            verdict(libc::SYS_mmap, [0, 4096, rw, 0, 0, 0]),
            bpf::RET_ALLOW
        );
        assert_eq!(verdict(libc::SYS_mmap, [0, 4096, rx, 0, 0, 0]), denied);
        assert_eq!(verdict(libc::SYS_mprotect, [0, 4096, rx, 0, 0, 0]), denied);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            verdict(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            bpf::RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
            denied
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, [1, libc::TCGETS as u64, 0, 0, 0, 0]),
            bpf::RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, [0, libc::TIOCSTI as u64, 0, 0, 0, 0]),
            denied
        );
    }

    #[test]
    fn dangerous_calls_are_not_on_the_list() {
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_keyctl,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone3,
            libc::SYS_open,
            libc::SYS_kill,
            libc::SYS_prctl,
            libc::SYS_memfd_create,
            libc::SYS_process_vm_writev,
            libc::SYS_chroot,
            libc::SYS_pivot_root,
            libc::SYS_init_module,
        ] {
            assert!(!WASM_HOST_SYSCALLS.contains(&nr), "{nr} is on the list");
            assert_eq!(verdict(nr, [0; 6]), bpf::ret_errno(libc::EPERM), "{nr}");
        }
    }
}
