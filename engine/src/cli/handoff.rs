//! How a supervising program (the containerd shim, or anything runc-like) takes over a run:
//! the workload's streams from paths, the sandbox PID in a file, a gate between set-up and start.

use anyhow::Context;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use wrun::sandbox::{Gate, Stdio};

/// `run --pid-file`, `--start-gate`, `--stdin/--stdout/--stderr`.
#[derive(Debug, Default)]
pub struct Handoff {
    pub pid_file: Option<PathBuf>,
    pub start_gate: Option<PathBuf>,
    /// stdin, stdout, stderr.
    pub stdio: [Option<PathBuf>; 3],
}

impl Handoff {
    /// Nothing handed over: the run uses the caller's own stdio and starts at once.
    pub fn is_plain(&self) -> bool {
        self.pid_file.is_none()
            && self.start_gate.is_none()
            && self.stdio.iter().all(Option::is_none)
    }

    /// Opens the given stream paths. Output FIFOs are opened read-write so that opening never
    /// waits for a reader; stdin is opened without waiting for a writer, then made blocking.
    pub fn open_stdio(&self) -> anyhow::Result<Stdio> {
        let [stdin, stdout, stderr] = &self.stdio;
        Ok(Stdio {
            stdin: stdin.as_deref().map(open_input).transpose()?,
            stdout: stdout.as_deref().map(open_output).transpose()?,
            stderr: stderr.as_deref().map(open_output).transpose()?,
        })
    }

    /// The gate run between set-up and start: writes the PID file, then waits at the FIFO.
    pub fn gate(&self) -> Option<Gate<'static>> {
        let pid_file = self.pid_file.clone()?;
        let start_gate = self.start_gate.clone();
        Some(Box::new(move |pid: i32| {
            write_pid_file(&pid_file, pid)?;
            match start_gate {
                Some(fifo) => wait_at_gate(&fifo),
                None => Ok(()),
            }
        }))
    }
}

fn open_input(path: &Path) -> anyhow::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("failed to open stdin `{}`", path.display()))?;
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking))?;
    Ok(file.into())
}

fn open_output(path: &Path) -> anyhow::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(callers_mode())
        .open(path)
        .with_context(|| format!("failed to open output `{}`", path.display()))?;
    Ok(file.into())
}

/// Written to a temporary name and renamed, so a reader never sees a partial PID. Not
/// synced to disk (as runc's): a PID means nothing after a crash, and on a disk-backed
/// directory the fsync cost ≈0.5 ms on the start path.
fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(callers_mode())
        .open(&partial)?;
    file.write_all(pid.to_string().as_bytes())?;
    std::fs::rename(&partial, path)
}

/// A new file's mode outside the state root: 0666 less the caller's umask (wrun's own is
/// 077, which `mode` alone would not undo).
fn callers_mode() -> u32 {
    0o666 & !wrun::state::caller_umask().bits()
}

/// Blocks until the supervisor writes a byte; end of file means it gave up on the run.
fn wait_at_gate(fifo: &Path) -> std::io::Result<()> {
    let mut gate = File::open(fifo)?;
    let mut byte = [0u8; 1];
    match gate.read(&mut byte)? {
        1 => Ok(()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the start gate was closed",
        )),
    }
}
