//! How a supervising program (the containerd shim, or anything runc-like) takes over a run:
//! the workload's streams from paths, the sandbox PID in a file, a gate between set-up and
//! start. One type for both sides: `wrun run` parses these flags, the shim writes them.

use crate::sandbox::{Gate, Stdio};
use anyhow::Context;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `run --pid-file`, `--start-gate`, `--stdin/--stdout/--stderr`.
#[derive(clap::Args, Debug, Default, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// Write the sandbox's PID to this file once it is set up, before the workload starts
    #[arg(long, value_name = "FILE", conflicts_with_all = ["detach", "name"])]
    pub pid_file: Option<PathBuf>,
    /// Hold the set-up sandbox until a byte can be read from this FIFO (EOF abandons the run)
    #[arg(long, hide = true, value_name = "FIFO", requires = "pid_file")]
    pub start_gate: Option<PathBuf>,
    /// Connect the workload's stdin to this file or FIFO
    #[arg(long, hide = true, value_name = "PATH", conflicts_with_all = ["detach", "name"])]
    pub stdin: Option<PathBuf>,
    /// Connect the workload's stdout to this file or FIFO
    #[arg(long, hide = true, value_name = "PATH", conflicts_with_all = ["detach", "name"])]
    pub stdout: Option<PathBuf>,
    /// Connect the workload's stderr to this file or FIFO
    #[arg(long, hide = true, value_name = "PATH", conflicts_with_all = ["detach", "name"])]
    pub stderr: Option<PathBuf>,
}

impl Handoff {
    /// The `wrun run` flags that hand a run over like this.
    pub fn to_args(&self) -> Vec<OsString> {
        let flags = [
            ("--pid-file", &self.pid_file),
            ("--start-gate", &self.start_gate),
            ("--stdin", &self.stdin),
            ("--stdout", &self.stdout),
            ("--stderr", &self.stderr),
        ];
        flags
            .into_iter()
            .filter_map(|(flag, path)| Some([flag.into(), path.clone()?.into_os_string()]))
            .flatten()
            .collect()
    }

    /// Nothing handed over: the run uses the caller's own stdio and starts at once.
    pub fn is_plain(&self) -> bool {
        *self == Handoff::default()
    }

    /// Opens the given stream paths. Output FIFOs are opened read-write so that opening never
    /// waits for a reader; stdin is opened without waiting for a writer, then made blocking.
    pub fn open_stdio(&self) -> anyhow::Result<Stdio> {
        Ok(Stdio {
            stdin: self.stdin.as_deref().map(open_input).transpose()?,
            stdout: self.stdout.as_deref().map(open_output).transpose()?,
            stderr: self.stderr.as_deref().map(open_output).transpose()?,
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
pub fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
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
    0o666 & !crate::state::caller_umask().bits()
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[arg(long)]
        detach: bool,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        handoff: Handoff,
    }

    #[test]
    fn the_flags_written_parse_back_to_the_same_handoff() {
        let handoff = Handoff {
            pid_file: Some("/run/x/pid".into()),
            start_gate: Some("/run/x/gate".into()),
            stdin: None,
            stdout: Some("/run/x/out".into()),
            stderr: Some("/run/x/err".into()),
        };
        let mut argv = vec![OsString::from("wrun")];
        argv.extend(handoff.to_args());
        assert_eq!(Flags::parse_from(argv).handoff, handoff);
        assert!(Handoff::default().to_args().is_empty());
        assert!(Handoff::default().is_plain());
    }
}
