//! A detached container's monitor, once its workload has settled, execs wrun afresh to carry
//! its wait on: the same process (PID, child, output pipes, locks, cgroup) without the heap,
//! the stack and the page tables that starting the workload left behind.

use super::logs::LogWriter;
use super::monitor::{self, MonitorError, Recorder};
use super::record::{Containers, RecordError};
use crate::sandbox::waiting::{self, Waiting};
use crate::state::StateRoot;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::PathBuf;

/// The flag `main` looks for before it parses a command line: what follows is the
/// descriptor of the hand-over. No command line of a user's starts with it.
pub const RESUME_FLAG: &str = "--resume-monitor";

/// What a detached monitor holds besides the run's wait.
pub struct HandOver {
    pub state: StateRoot,
    /// The descriptor holding the container's monitor lock, where this process holds it (a
    /// restart policy's runs leave it to the process that restarts them).
    pub monitor_lock: Option<RawFd>,
    pub after: AfterRun,
}

/// What the process that carries a run on does once the run has ended and is recorded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum AfterRun {
    /// Ends the container's monitoring ([`monitor::end`]): the container's only run.
    EndContainer,
    /// Exits with the run's code, which the restart policy's process reads.
    ExitWithCode,
}

/// Everything the fresh process needs, passed in a memfd.
#[derive(Serialize, Deserialize)]
struct Message {
    root: PathBuf,
    cache: PathBuf,
    container: String,
    monitor_lock: Option<RawFd>,
    after: AfterRun,
    /// The log's unterminated lines (stdout's, stderr's).
    partial: [Vec<u8>; 2],
    waiting: Waiting,
}

impl HandOver {
    /// Replaces this process with a fresh wrun that carries `waiting` on for `container`;
    /// returns only if that failed, with why.
    pub fn exec(
        &self,
        container: &str,
        partial: &[Vec<u8>; 2],
        waiting: &Waiting,
    ) -> std::io::Error {
        let message = Message {
            root: self.state.path().to_path_buf(),
            cache: self.state.cache_dir(),
            container: container.to_string(),
            monitor_lock: self.monitor_lock,
            after: self.after,
            partial: partial.clone(),
            waiting: waiting.clone(),
        };
        match exec(&message) {
            Err(error) => error,
            Ok(never) => match never {},
        }
    }
}

fn exec(message: &Message) -> std::io::Result<Infallible> {
    let memfd = nix::sys::memfd::memfd_create(c"wrun-monitor", nix::sys::memfd::MFdFlags::empty())?;
    let mut file = File::from(memfd);
    file.write_all(&serde_json::to_vec(message)?)?;
    file.rewind()?;
    let mut kept = waiting_descriptors(message);
    kept.push(file.as_raw_fd());
    for fd in &kept {
        set_close_on_exec(*fd, false)?;
    }
    let argv = [
        c"wrun".to_owned(),
        CString::new(RESUME_FLAG)?,
        CString::new(file.as_raw_fd().to_string())?,
    ];
    let error = nix::unistd::execve(c"/proc/self/exe", &argv, &environment()?).unwrap_err();
    for fd in &kept {
        let _ = set_close_on_exec(*fd, true);
    }
    Err(error.into())
}

/// This process's environment, and the fresh process's allocator set to musl's: it only
/// waits, and allocates little ([`crate::allocator`]).
fn environment() -> std::io::Result<Vec<CString>> {
    use std::os::unix::ffi::OsStrExt;
    let compact = crate::allocator::COMPACT_ENV.to_bytes();
    let mut environment = Vec::new();
    for (name, value) in std::env::vars_os() {
        if name.as_bytes() != compact {
            environment.push(CString::new(
                [name.as_bytes(), b"=", value.as_bytes()].concat(),
            )?);
        }
    }
    environment.push(CString::new([compact, b"=1"].concat())?);
    Ok(environment)
}

/// The descriptors the fresh process takes over, but for the message's own.
fn waiting_descriptors(message: &Message) -> Vec<RawFd> {
    let mut fds = message.waiting.descriptors();
    fds.extend(message.monitor_lock);
    fds
}

fn set_close_on_exec(fd: RawFd, close: bool) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: a descriptor this process holds open for the whole hand-over.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if close {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(drop)
}

/// The fresh process's side: takes over the wait the message in descriptor `fd` describes
/// and ends the container's run as the process it replaced would have. Its exit code: the
/// run's, for a restart policy's process to read; else 0 (nobody waits for a monitor).
pub fn resume(fd: Option<&OsStr>) -> i32 {
    crate::idle_memory::purge_at_once();
    match carry_on(fd) {
        Ok(code) => code,
        Err(error) => {
            // The monitor's stderr is /dev/null; this is for whoever typed the flag.
            crate::err_line!("wrun: {}", monitor::error_chain(&error));
            crate::exit::RUNTIME_ERROR
        }
    }
}

fn carry_on(fd: Option<&OsStr>) -> Result<i32, MonitorError> {
    let invalid = || std::io::Error::other("no hand-over descriptor");
    let fd: RawFd = fd
        .and_then(OsStr::to_str)
        .and_then(|fd| fd.parse().ok())
        .ok_or_else(invalid)
        .map_err(MonitorError::HandOver)?;
    let message = read_message(fd).map_err(MonitorError::HandOver)?;
    let state = StateRoot::resolve(Some(message.root)).with_cache_dir(Some(message.cache));
    let containers = Containers::open(&state)?;
    let container = containers
        .load(&message.container)
        .ok_or(RecordError::NotFound(message.container))?;
    // SAFETY: the monitor lock's descriptor, left open by the exec'd monitor for this process.
    let lock = message
        .monitor_lock
        .map(|fd| unsafe { File::from_raw_fd(fd) });
    let log =
        LogWriter::resume(&container.log_path(), message.partial).map_err(MonitorError::Output)?;
    let mut recorder = Recorder {
        container: &container,
        log,
        started: None,
        hand_over: None,
        waiting: None,
    };
    let spec = &container.config.spec;
    // SAFETY: the wait's descriptors were kept open across the exec for this process, and
    // nothing else here owns them.
    let result = unsafe { waiting::resume(message.waiting, spec, &mut recorder) };
    let recorded = monitor::record_end(&mut recorder, result);
    match message.after {
        AfterRun::EndContainer => {
            recorded?;
            monitor::end(&containers, &container, lock).map(|()| 0)
        }
        AfterRun::ExitWithCode => Ok(monitor::run_code(recorded)),
    }
}

fn read_message(fd: RawFd) -> std::io::Result<Message> {
    // SAFETY: only asks whether the number names an open descriptor.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|_| std::io::Error::other(format!("{fd} is not an open descriptor")))?;
    // SAFETY: the message's memfd, left open by the exec'd monitor for this process.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(serde_json::from_slice(&bytes)?)
}
