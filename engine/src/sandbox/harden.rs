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

/// What a call outside the allowlist gets: "not implemented", so that a library with a
/// fallback (rustix's `statx` → `fstatat`, wasmtime-wasi's `pwritev2` → `write`, libc's
/// `clone3` → `clone`) takes it, as it would on an older kernel.
pub const UNLISTED_ERRNO: i32 = libc::ENOSYS;

/// What a call on [`DENIED_SYSCALLS`] (or a listed call with a refused argument) gets.
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

/// Closes the range; the descriptors still needed were excluded from it.
fn close_range(first: u32, last: u32) -> Result<(), HardenError> {
    crate::sys::close_range(first, last).map_err(|e| HardenError::CloseFds(e.into()))
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
/// inheritable, then permitted (and effective with it).
pub fn drop_capabilities() -> Result<(), HardenError> {
    drop_bounding_set_but(&[])?;
    drop_capability_sets()
}

/// Empties the ambient, inheritable and permitted sets (and effective with it).
pub fn drop_capability_sets() -> Result<(), HardenError> {
    use caps::CapSet;
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Permitted] {
        caps::clear(None, set).map_err(HardenError::Capabilities)?;
    }
    Ok(())
}

/// What a standalone sandbox locks down before it waits for its go-ahead, as it would
/// otherwise wait idle: resource limits, the bounding set emptied, `no_new_privs`, and its
/// set-up filter (`claim_filter::set_up_filters`). Its capabilities stay usable for the
/// joins the go-ahead allows; [`drop_capability_sets`] and the narrowing filter follow.
pub fn lock_for_set_up(set_up_filter: &BpfProgram) -> Result<(), HardenError> {
    limit_resources()?;
    drop_bounding_set_but(&[])?;
    set_no_new_privs()?;
    install_seccomp(set_up_filter)
}

/// Drops every capability but `kept` from the bounding set: one `PR_CAPBSET_DROP` for each
/// capability the kernel knows, numbered from 0 up until the first it answers EINVAL for.
/// (The caps crate reads each capability before dropping it, twice the system calls on
/// the start path, 82 on this kernel, and leaves any newer than itself in the set.)
fn drop_bounding_set_but(kept: &[caps::Capability]) -> Result<(), HardenError> {
    for index in 0..64u8 {
        if kept.iter().any(|cap| cap.index() == index) {
            continue;
        }
        // SAFETY: integer arguments only; the call changes this process's bounding set.
        let result =
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(index), 0, 0, 0) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) && index > 0 {
                return Ok(());
            }
            let text = format!("PR_CAPBSET_DROP of capability {index}: {error}");
            return Err(HardenError::Capabilities(text.into()));
        }
    }
    Ok(())
}

/// What a pooled sandbox keeps until its claim: joining a pod's namespaces (`setns`) or
/// making a bundle's own (`unshare`) needs CAP_SYS_ADMIN, and dropping it from the bounding
/// set then needs CAP_SETPCAP.
const KEPT_UNTIL_CLAIM: [caps::Capability; 2] = [
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_SETPCAP,
];

/// As [`drop_capabilities`], but for [`KEPT_UNTIL_CLAIM`], which [`drop_kept_capabilities`]
/// drops once the claim says which namespaces to join.
pub fn drop_capabilities_until_claim() -> Result<(), HardenError> {
    use caps::CapSet;
    let kept: caps::CapsHashSet = KEPT_UNTIL_CLAIM.into_iter().collect();
    drop_bounding_set_but(&KEPT_UNTIL_CLAIM)?;
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
    // Permitted, and effective with it.
    caps::clear(None, CapSet::Permitted).map_err(HardenError::Capabilities)
}

/// Makes execve unable to grant privileges (and lets an unprivileged process load seccomp).
pub fn set_no_new_privs() -> Result<(), HardenError> {
    nix::sys::prctl::set_no_new_privs().map_err(HardenError::NoNewPrivs)
}

/// Installs `program` on every thread of the process.
pub fn install_seccomp(program: &BpfProgram) -> Result<(), HardenError> {
    seccompiler::apply_filter_all_threads(program).map_err(HardenError::SeccompInstall)
}

/// The system calls the wasmtime host makes once setup is done, derived from the code that
/// serves each WASI call (wasmtime-wasi 48 over rustix, tokio's blocking pool for file
/// streams and stdin) and checked by tracing the samples, the escape suite and the WASI
/// conformance guests; docs/security.md lists them per WASI family with the reasons.
const WASM_HOST_SYSCALLS: &[i64] = &[
    // memory (mmap and mprotect are further restricted below): memory.grow, the pooling
    // allocator's resets, the allocator
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    // threads (clone is restricted below): tokio's blocking pool serves file streams,
    // `poll_oneoff` on files and stdin on threads of their own
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // signals: traps, the timeout timer, stop requests; `rt_sigaction` so that a crash of the
    // host itself, handed back to the default action, ends the process instead of looping
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_setitimer,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    // clocks (`clock_time_get`, `subscribe-duration`, `poll_oneoff` timeouts)
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // descriptors WASI hands out: `fd_read`/`fd_write`/`fd_pread`/`fd_pwrite`, streams
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    // an `FDFLAGS_APPEND` file is written with `pwritev2(…, RWF_APPEND)` (its fallback on
    // ENOSYS, `fcntl` + `write`, would change the file's flags for every holder)
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
    libc::SYS_fadvise64,
    libc::SYS_getdents64,
    // paths, always relative to a preopened directory (`openat2` with RESOLVE_BENEATH makes
    // the kernel keep every path beneath it)
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    // waiting on descriptors and timers (the async runtime, `poll_oneoff`, `wasi:io/poll`)
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_restart_syscall,
    // `random_get`, `wasi:random` (no /dev/urandom to fall back on)
    libc::SYS_getrandom,
];

/// Calls a Wasm sandbox must never make, answered EPERM ("refused") rather than ENOSYS, so
/// that nothing takes them for an old kernel and tries another way in: new processes and
/// programs, namespaces and mounts, other processes, the kernel's larger attack surfaces,
/// executable or shared memory, sockets of its own, credentials, system-wide state.
/// `clone3` is not here: its flags are in memory seccomp cannot read, and C libraries fall
/// back to the checked `clone` only on ENOSYS.
pub const DENIED_SYSCALLS: &[i64] = &[
    // processes and programs
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_execve,
    libc::SYS_execveat,
    // namespaces and mounts
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // other processes
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pidfd_send_signal,
    libc::SYS_kill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    // the kernel's larger attack surfaces
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_seccomp,
    libc::SYS_modify_ldt,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_fanotify_init,
    libc::SYS_fanotify_mark,
    libc::SYS_vmsplice,
    // executable or shared memory (beside mmap/mprotect with PROT_EXEC, below)
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_personality,
    libc::SYS_pkey_mprotect,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_remap_file_pages,
    // sockets of its own (a served component only accepts on the listeners it was given)
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_connect,
    // credentials and process attributes
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_capset,
    libc::SYS_prctl,
    libc::SYS_arch_prctl,
    // system-wide state
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_setpriority,
    libc::SYS_ioprio_set,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    // System V and POSIX message queues and semaphores (shared with a pod's IPC namespace)
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    // paths not relative to a preopen (the `*at` forms above are)
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_link,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_symlink,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_truncate,
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

/// The seccomp filters a guest may run under, each a policy for [`bpf::compile`]: its rules,
/// [`UNLISTED_ERRNO`] for the calls they do not name and [`DENIED_ERRNO`] for x32 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestFilter {
    /// [`wasm_filter`]
    Wasm,
    /// [`socket_filter`]
    Socket,
    /// [`pod_filter`]
    Pod,
    /// [`http_server_filter`]
    HttpServer,
}

impl GuestFilter {
    pub const ALL: [GuestFilter; 4] = [
        GuestFilter::Wasm,
        GuestFilter::Socket,
        GuestFilter::Pod,
        GuestFilter::HttpServer,
    ];

    /// The filter's rules.
    pub fn rules(self) -> Vec<Rule> {
        match self {
            GuestFilter::Wasm => filter_rules(&[], Vec::new()),
            GuestFilter::Socket => filter_rules(HTTP_SERVER_SYSCALLS, Vec::new()),
            GuestFilter::Pod => pod_rules(),
            GuestFilter::HttpServer => http_server_rules(),
        }
    }

    /// The filter's program.
    pub fn program(self) -> BpfProgram {
        bpf::compile(
            &self.rules(),
            bpf::ret_errno(UNLISTED_ERRNO),
            bpf::ret_errno(DENIED_ERRNO),
        )
    }
}

/// The seccomp filter for a Wasm sandbox: the allowlist above; `mmap` and `mprotect` only
/// without PROT_EXEC (all code was mapped before the filter, so no new code can appear);
/// `clone` only for threads (no new processes); the listed ioctls. Those calls with other
/// arguments, and [`DENIED_SYSCALLS`], fail with EPERM; every other call with ENOSYS; a call
/// made for another architecture kills the process.
pub fn wasm_filter() -> BpfProgram {
    GuestFilter::Wasm.program()
}

/// [`wasm_filter`] plus accepting and answering connections, and `open` of directories only
/// (`O_DIRECTORY`, read-only, never creating): each new instance preopens its directories by
/// path after the filter is on, and musl's `open` is not the `*at` form.
pub fn http_server_filter() -> BpfProgram {
    GuestFilter::HttpServer.program()
}

fn http_server_rules() -> Vec<Rule> {
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
    filter_rules(HTTP_SERVER_SYSCALLS, vec![open_dir_handle])
}

/// Which filter a guest run to its end gets: [`wasm_filter`]'s, plus what its sockets need when
/// it has published ports or outbound rules (accepting, talking; never opening a socket).
pub fn command_filter(wasm: &crate::spec::WasmPayload, pod: bool) -> GuestFilter {
    if pod {
        GuestFilter::Pod
    } else if wasm.ports.is_empty() && wasm.allow_outbound.is_empty() {
        GuestFilter::Wasm
    } else {
        GuestFilter::Socket
    }
}

/// [`socket_filter`] plus sockets of the process's own (`socket` of IPv4 and IPv6 stream and
/// datagram sockets only, `bind`, `listen`, `connect`), for a run in a pod's network
/// namespace, whose guest uses the pod's network as any of the pod's containers does: its
/// TCP and UDP sockets, and the pod resolver's DNS queries.
pub fn pod_filter() -> BpfProgram {
    GuestFilter::Pod.program()
}

fn pod_rules() -> Vec<Rule> {
    let socket = |family: i32, kind: i32| {
        Rule::when(
            libc::SYS_socket,
            vec![
                ArgCheck::Eq {
                    arg: 0,
                    value: family as u32,
                },
                ArgCheck::MaskedEq {
                    arg: 1,
                    mask: SOCKET_TYPE_MASK,
                    value: kind as u32,
                },
            ],
            bpf::RET_ALLOW,
        )
    };
    let own_sockets = [libc::SYS_bind, libc::SYS_listen, libc::SYS_connect];
    let extra: Vec<i64> = HTTP_SERVER_SYSCALLS
        .iter()
        .chain(&own_sockets)
        .copied()
        .collect();
    filter_rules(
        &extra,
        vec![
            socket(libc::AF_INET, libc::SOCK_STREAM),
            socket(libc::AF_INET6, libc::SOCK_STREAM),
            socket(libc::AF_INET, libc::SOCK_DGRAM),
            socket(libc::AF_INET6, libc::SOCK_DGRAM),
        ],
    )
}

/// The bits of `socket`'s type that are the type (the rest are `SOCK_NONBLOCK` and
/// `SOCK_CLOEXEC`).
const SOCKET_TYPE_MASK: u32 = 0xf;

/// [`wasm_filter`] plus accepting and talking on sockets given to the process.
pub fn socket_filter() -> BpfProgram {
    GuestFilter::Socket.program()
}

/// The rules of [`wasm_filter`], with `extra` calls allowed and `extra_rules` added.
fn filter_rules(extra: &[i64], extra_rules: Vec<Rule>) -> Vec<Rule> {
    let allow = bpf::RET_ALLOW;
    let deny = bpf::ret_errno(DENIED_ERRNO);
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
    // A rule's checks failing falls through to the next rule of the same call: these come
    // last, so the calls above with refused arguments (and `open` but for directories) are
    // refused rather than taken for unimplemented.
    let refused_arguments = [
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_clone,
        libc::SYS_ioctl,
    ];
    rules.extend(
        refused_arguments
            .iter()
            .chain(DENIED_SYSCALLS)
            .map(|&nr| Rule::new(nr, deny)),
    );
    rules
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
    fn in_a_pod_the_sandbox_may_open_tcp_and_udp_sockets_and_nothing_else() {
        let pod = pod_filter();
        let verdict = |nr: i64, args: [u64; 6]| bpf::evaluate(&pod, ARCH, nr as u32, args);
        let denied = bpf::ret_errno(libc::EPERM);
        let socket = |family: i32, kind: i32| {
            verdict(libc::SYS_socket, [family as u64, kind as u64, 0, 0, 0, 0])
        };
        let stream = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        assert_eq!(socket(libc::AF_INET, stream), bpf::RET_ALLOW);
        assert_eq!(socket(libc::AF_INET6, libc::SOCK_STREAM), bpf::RET_ALLOW);
        let datagram = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        assert_eq!(socket(libc::AF_INET, datagram), bpf::RET_ALLOW);
        assert_eq!(socket(libc::AF_INET6, libc::SOCK_DGRAM), bpf::RET_ALLOW);
        assert_eq!(socket(libc::AF_INET, libc::SOCK_RAW), denied);
        assert_eq!(socket(libc::AF_INET6, libc::SOCK_SEQPACKET), denied);
        assert_eq!(socket(libc::AF_PACKET, libc::SOCK_DGRAM), denied);
        assert_eq!(socket(libc::AF_UNIX, libc::SOCK_STREAM), denied);
        assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_RAW), denied);
        for nr in [
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_connect,
            libc::SYS_accept4,
        ] {
            assert_eq!(verdict(nr, [0; 6]), bpf::RET_ALLOW, "{nr}");
        }
        assert_eq!(verdict(libc::SYS_socketpair, [0; 6]), denied);
        // The rest of the Wasm filter is unchanged.
        assert_eq!(verdict(libc::SYS_ptrace, [0; 6]), denied);
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
    fn dangerous_calls_are_refused_and_never_allowed() {
        for &nr in DENIED_SYSCALLS {
            assert!(!WASM_HOST_SYSCALLS.contains(&nr), "{nr} is on both lists");
            assert!(!HTTP_SERVER_SYSCALLS.contains(&nr), "{nr} is on both lists");
            assert_eq!(verdict(nr, [0; 6]), bpf::ret_errno(libc::EPERM), "{nr}");
        }
        for nr in [
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_socket,
            libc::SYS_open,
        ] {
            assert!(DENIED_SYSCALLS.contains(&nr), "{nr} must be refused");
        }
    }

    #[test]
    fn other_calls_are_unimplemented_so_fallbacks_work() {
        let unimplemented = bpf::ret_errno(libc::ENOSYS);
        for nr in [
            libc::SYS_clone3,
            libc::SYS_uname,
            libc::SYS_sysinfo,
            libc::SYS_fstatfs,
            libc::SYS_copy_file_range,
            libc::SYS_getuid,
        ] {
            assert_eq!(verdict(nr, [0; 6]), unimplemented, "{nr}");
        }
        let server = http_server_filter();
        let open_file = [0, libc::O_RDONLY as u64, 0, 0, 0, 0];
        assert_eq!(
            bpf::evaluate(&server, ARCH, libc::SYS_open as u32, open_file),
            bpf::ret_errno(libc::EPERM)
        );
    }
}
