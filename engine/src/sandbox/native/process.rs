//! Becoming a native workload: resource limits, the capability sets, the user, the seccomp
//! filter, then `execve` — or, with `--init`, a minimal init as PID 1 that starts the workload,
//! forwards signals to it and reaps every zombie it adopts.

use super::profile;
use crate::sandbox::parent_watch::ParentWatch;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimit, Process};
use seccompiler::BpfProgram;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the spec has no process")]
    NoProcess,
    #[error("the process has no arguments")]
    NoArgs,
    #[error("failed to set {what}")]
    Setup {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("failed to set {name}")]
    Rlimit {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("failed to set the capabilities")]
    Capabilities(#[source] caps::errors::CapsError),
    #[error("unknown capability `{0}`")]
    UnknownCapability(String),
    #[error("failed to install the seccomp filter")]
    Seccomp(#[source] seccompiler::Error),
    #[error("`{0}`: executable file not found in $PATH")]
    NotFound(String),
    #[error("failed to execute `{path}`")]
    Exec {
        path: String,
        #[source]
        source: nix::Error,
    },
}

impl ProcessError {
    /// Docker's codes: 127 not found, 126 found but not executable.
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::NotFound(_) => crate::exit::NOT_FOUND,
            ProcessError::Exec { source, .. } if *source == nix::Error::ENOENT => {
                crate::exit::NOT_FOUND
            }
            ProcessError::Exec { .. } => crate::exit::CANNOT_EXECUTE,
            _ => crate::exit::RUNTIME_ERROR,
        }
    }
}

fn setup(what: &'static str) -> impl FnOnce(nix::Error) -> ProcessError {
    move |source| ProcessError::Setup { what, source }
}

/// What the process becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The container's workload, killed if its supervisor dies.
    Workload,
    /// With `--init`: a minimal init that runs the workload, killed if its supervisor dies.
    Init,
    /// A process exec'd into a running container: it outlives whoever started it, as under
    /// `runc exec --detach`, and dies with the container's PID namespace.
    Exec,
}

/// Applies everything the process section asks for and replaces this process with the
/// workload (or becomes its init). Returns only on failure. `watch`: the parent the sandbox
/// must not outlive, checked once the parent-death signal is asked for again (empty where
/// there is none to check), then closed.
pub fn become_workload(
    process: &Process,
    filter: &BpfProgram,
    role: Role,
    watch: ParentWatch,
) -> ProcessError {
    let dies_with = Dying {
        parent: role != Role::Exec,
        watch,
    };
    match prepare(process, filter, dies_with) {
        Ok((path, argv, envp)) => match role {
            Role::Init => run_init(&path, &argv, &envp),
            Role::Workload | Role::Exec => exec(&path, &argv, &envp),
        },
        Err(e) => e,
    }
}

type Command = (CString, Vec<CString>, Vec<CString>);

/// Whether the process dies with its parent, and the watch on a parent that must be alive.
#[derive(Default)]
pub struct Dying {
    pub parent: bool,
    pub watch: ParentWatch,
}

fn prepare(
    process: &Process,
    filter: &BpfProgram,
    dies_with: Dying,
) -> Result<Command, ProcessError> {
    let args = process.args().clone().ok_or(ProcessError::NoArgs)?;
    if args.is_empty() {
        return Err(ProcessError::NoArgs);
    }
    let env = restrict(process, filter, dies_with)?;
    let path = find_executable(&args[0], &env)?;
    let cstring = |s: &str| CString::new(s).unwrap_or_default();
    Ok((
        cstring(&path.to_string_lossy()),
        args.iter().map(|a| cstring(a)).collect(),
        env.iter().map(|e| cstring(e)).collect(),
    ))
}

/// Everything the process section asks for but the program: the terminal, rlimits, user,
/// capabilities, working directory and, last, the seccomp filter. Returns the environment.
pub fn restrict(
    process: &Process,
    filter: &BpfProgram,
    dies_with: Dying,
) -> Result<Vec<String>, ProcessError> {
    if process.terminal() == Some(true) {
        crate::sandbox::terminal::take_controlling_terminal()
            .map_err(setup("the controlling terminal"))?;
    }
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        // As runc does: the user's home from the container's /etc/passwd, else `/`.
        env.push(format!("HOME={}", home_of(process.user().uid())));
    }
    for rlimit in process.rlimits().iter().flatten() {
        let (name, resource) = rlimit_of(rlimit).ok_or(ProcessError::Setup {
            what: "an unknown rlimit",
            source: nix::Error::EINVAL,
        })?;
        nix::sys::resource::setrlimit(resource, rlimit.soft(), rlimit.hard())
            .map_err(|source| ProcessError::Rlimit { name, source })?;
    }
    if let Some(score) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", score.to_string()).map_err(|e| {
            ProcessError::Setup {
                what: "oom_score_adj",
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        })?;
    }
    // runc's default when the spec names none.
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask as _));
    let capabilities = process.capabilities().clone().unwrap_or_default();
    drop_bounding(&capabilities)?;
    switch_user(process, dies_with)?;
    set_capabilities(&capabilities)?;
    nix::sys::prctl::set_no_new_privs().map_err(setup("no_new_privs"))?;
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(setup("the working directory"))?;
    // Before the filter: a strict profile need not allow rt_sigaction.
    reset_signals();
    seccompiler::apply_filter_all_threads(filter).map_err(ProcessError::Seccomp)?;
    Ok(env)
}

/// A spec's rlimit: its name (`RLIMIT_NOFILE`) and the resource it limits, if it is one.
pub fn rlimit_of(rlimit: &PosixRlimit) -> Option<(String, nix::sys::resource::Resource)> {
    let name = serde_json::to_string(&rlimit.typ()).ok()?;
    let name = name.trim_matches('"').to_string();
    let resource = rlimit_resource(&name)?;
    Some((name, resource))
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource;
    Some(
        match name.to_ascii_uppercase().trim_start_matches("RLIMIT_") {
            "CORE" => Resource::RLIMIT_CORE,
            "CPU" => Resource::RLIMIT_CPU,
            "DATA" => Resource::RLIMIT_DATA,
            "FSIZE" => Resource::RLIMIT_FSIZE,
            "NOFILE" => Resource::RLIMIT_NOFILE,
            "STACK" => Resource::RLIMIT_STACK,
            "AS" => Resource::RLIMIT_AS,
            "NPROC" => Resource::RLIMIT_NPROC,
            "MEMLOCK" => Resource::RLIMIT_MEMLOCK,
            "LOCKS" => Resource::RLIMIT_LOCKS,
            "SIGPENDING" => Resource::RLIMIT_SIGPENDING,
            "MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
            "NICE" => Resource::RLIMIT_NICE,
            "RTPRIO" => Resource::RLIMIT_RTPRIO,
            "RTTIME" => Resource::RLIMIT_RTTIME,
            _ => return None,
        },
    )
}

fn names(set: &Option<oci_spec::runtime::Capabilities>) -> Result<caps::CapsHashSet, ProcessError> {
    let names: Vec<String> = set
        .iter()
        .flatten()
        .map(|c| c.to_string())
        .map(|c| {
            if c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        })
        .collect();
    profile::capabilities(names.iter().map(String::as_str)).map_err(ProcessError::UnknownCapability)
}

/// Drops from the bounding set everything the spec does not list (needs CAP_SETPCAP, so it
/// comes before the user switch).
fn drop_bounding(capabilities: &LinuxCapabilities) -> Result<(), ProcessError> {
    let keep = names(capabilities.bounding())?;
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Capabilities newer than the running kernel are simply absent.
            let _ = caps::drop(None, caps::CapSet::Bounding, cap);
        }
    }
    Ok(())
}

fn set_capabilities(capabilities: &LinuxCapabilities) -> Result<(), ProcessError> {
    use caps::CapSet;
    // Effective first: it must stay a subset of permitted at every step.
    let sets = [
        (CapSet::Effective, names(capabilities.effective())?),
        (CapSet::Permitted, names(capabilities.permitted())?),
        (CapSet::Inheritable, names(capabilities.inheritable())?),
    ];
    for (set, values) in sets {
        caps::set(None, set, &values).map_err(ProcessError::Capabilities)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(ProcessError::Capabilities)?;
    // The kernel takes an ambient capability only if it is also permitted and inheritable;
    // runc's default spec lists ambient ones without inheritable, and runc skips them too.
    // Skipping a grant never widens privileges.
    let inheritable = names(capabilities.inheritable())?;
    for cap in names(capabilities.ambient())? {
        if inheritable.contains(&cap) {
            caps::raise(None, CapSet::Ambient, cap).map_err(ProcessError::Capabilities)?;
        } else {
            tracing::debug!(?cap, "ambient capability skipped: not inheritable");
        }
    }
    Ok(())
}

/// Switches to the spec's uid, gid and supplementary groups, keeping the permitted
/// capabilities across the switch (set again right after), and re-arms the parent-death
/// signal a credential change clears (`dies_with`).
fn switch_user(process: &Process, dies_with: Dying) -> Result<(), ProcessError> {
    let user = process.user();
    let gids: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|&g| nix::unistd::Gid::from_raw(g))
        .collect();
    nix::sys::prctl::set_keepcaps(true).map_err(setup("keepcaps"))?;
    nix::unistd::setgroups(&gids).map_err(setup("the supplementary groups"))?;
    nix::unistd::setresgid(
        nix::unistd::Gid::from_raw(user.gid()),
        nix::unistd::Gid::from_raw(user.gid()),
        nix::unistd::Gid::from_raw(user.gid()),
    )
    .map_err(setup("the group"))?;
    nix::unistd::setresuid(
        nix::unistd::Uid::from_raw(user.uid()),
        nix::unistd::Uid::from_raw(user.uid()),
        nix::unistd::Uid::from_raw(user.uid()),
    )
    .map_err(setup("the user"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(setup("keepcaps"))?;
    let signal = dies_with.parent.then_some(Signal::SIGKILL);
    nix::sys::prctl::set_pdeathsig(signal).map_err(setup("the parent-death signal"))?;
    // Closed here: an init that never execs must not hold its supervisor's pidfd.
    dies_with.watch.end_if_parent_died();
    Ok(())
}

/// The home directory of `uid` in the container's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
        .and_then(|fields| fields.get(5).map(|h| h.to_string()))
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// `args[0]` itself if it holds a `/`, else the first executable of that name on the
/// workload's `PATH` (Docker's default path when it has none).
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
                && candidate.is_file()
        })
        .ok_or_else(|| ProcessError::NotFound(name.to_string()))
}

fn exec(path: &CString, argv: &[CString], envp: &[CString]) -> ProcessError {
    let failed = nix::unistd::execve(path, argv, envp);
    // wrun reports the failure on a stderr that may be closed: an error, not a SIGPIPE.
    // SAFETY: SIG_IGN installs no handler.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    match failed {
        Err(source) => ProcessError::Exec {
            path: path.to_string_lossy().into_owned(),
            source,
        },
        Ok(never) => match never {},
    }
}

/// Gives the workload every signal at its default disposition and none blocked, as runc
/// does: `execve` keeps an ignored signal ignored, and Rust's runtime ignores SIGPIPE (so
/// `yes | head` would spin), while wrun's own handlers and mask are for wrun alone.
fn reset_signals() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: SIG_DFL installs no handler.
        let _ = unsafe { signal::sigaction(signal, &default) };
    }
    // The real-time signals too, through the kernel: the libc refuses 32–34, which it keeps
    // for itself, though an ignored one would pass through `execve` all the same.
    for signo in 32..=64 {
        // The kernel's `struct sigaction` for SIG_DFL: no handler, flags, restorer or mask.
        let default = [0u64; 4];
        // SAFETY: rt_sigaction reads a valid kernel sigaction of the size given and writes
        // nothing (no old action asked for); SIG_DFL runs no code.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
    }
    let _ = signal::sigprocmask(
        signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
}

static WORKLOAD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signo: libc::c_int) {
    let pid = WORKLOAD.load(Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe.
        if let Ok(signal) = Signal::try_from(signo) {
            let _ = signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }
}

/// PID 1 of the container: starts the workload, forwards signals to it, reaps everything,
/// and exits as the workload did.
fn run_init(path: &CString, argv: &[CString], envp: &[CString]) -> ProcessError {
    // SAFETY: this process is single-threaded (the native path starts no threads).
    match unsafe { nix::unistd::fork() } {
        Err(source) => ProcessError::Exec {
            path: path.to_string_lossy().into_owned(),
            source,
        },
        Ok(nix::unistd::ForkResult::Child) => {
            let error = exec(path, argv, envp);
            crate::err_line!("wrun: {:#}", anyhow::Error::new(error));
            // Without the parent's destructors.
            crate::sys::exit_now(crate::exit::NOT_FOUND)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            WORKLOAD.store(child.as_raw(), Ordering::SeqCst);
            let action = SigAction::new(
                SigHandler::Handler(forward),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            for s in [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGQUIT,
                Signal::SIGUSR1,
                Signal::SIGUSR2,
            ] {
                // SAFETY: `forward` only reads an atomic and calls kill(2).
                let _ = unsafe { signal::sigaction(s, &action) };
            }
            loop {
                match nix::sys::wait::wait() {
                    Ok(nix::sys::wait::WaitStatus::Exited(pid, code)) if pid == child => {
                        // With the workload's code; nothing else to clean up.
                        crate::sys::exit_now(code)
                    }
                    Ok(nix::sys::wait::WaitStatus::Signaled(pid, signal, _)) if pid == child => {
                        crate::sys::exit_now(crate::exit::signaled(signal as i32))
                    }
                    Ok(_) | Err(nix::Error::EINTR) => continue,
                    Err(_) => crate::sys::exit_now(crate::exit::RUNTIME_ERROR),
                }
            }
        }
    }
}
