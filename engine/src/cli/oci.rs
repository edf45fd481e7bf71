//! The OCI runtime's command line (runc's): `create`, `start`, `state`, `delete`, and
//! `kill ID [SIGNAL]`, as containerd's runc shim, Podman's conmon and Docker call a runtime.

use super::Failure;
use std::path::PathBuf;
use wrun::runtime::{CreateOptions, Runtime, RuntimeError};
use wrun::state::StateRoot;

impl From<RuntimeError> for Failure {
    fn from(error: RuntimeError) -> Failure {
        Failure {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

/// Create a container from an OCI bundle, left waiting for `start` (the OCI runtime's create)
#[derive(clap::Args, Debug)]
pub struct CreateCommand {
    /// The bundle directory (config.json and its root)
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    bundle: PathBuf,
    /// Write the container's init PID here
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// A terminal's socket: refused, wrun gives workloads no terminal
    #[arg(long, value_name = "SOCKET")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc's callers: wrun always pivots into the root
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for runc's callers: no session keyring is made
    #[arg(long)]
    no_new_keyring: bool,
    /// Extra descriptors to pass beyond stdio: refused unless 0
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The container's ID
    id: String,
}

impl CreateCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        if self.console_socket.is_some() {
            return Err(Failure::runtime(anyhow::anyhow!(
                "--console-socket: wrun gives workloads no terminal (process.terminal must be false)"
            )));
        }
        if self.preserve_fds != 0 {
            return Err(Failure::runtime(anyhow::anyhow!(
                "--preserve-fds {}: wrun passes no descriptors beyond stdio",
                self.preserve_fds
            )));
        }
        let options = CreateOptions {
            pid_file: self.pid_file,
        };
        Ok(Runtime::open(state).create(&self.id, &self.bundle, &options)?)
    }
}

/// Start a created container's workload (the OCI runtime's start)
#[derive(clap::Args, Debug)]
pub struct StartCommand {
    /// The container's ID
    id: String,
}

impl StartCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        Ok(Runtime::open(state).start(&self.id)?)
    }
}

/// Print a container's state as JSON (the OCI runtime's state)
#[derive(clap::Args, Debug)]
pub struct StateCommand {
    /// The container's ID
    id: String,
}

impl StateCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let container = Runtime::open(state).state(&self.id)?;
        let text =
            serde_json::to_string_pretty(&container).map_err(|e| Failure::runtime(e.into()))?;
        wrun::out_line!("{text}");
        Ok(())
    }
}

/// Delete a stopped container: its cgroup and state (the OCI runtime's delete)
#[derive(clap::Args, Debug)]
pub struct DeleteCommand {
    /// Kill it first if it still runs; a missing container is no error
    #[arg(short, long)]
    force: bool,
    /// The container's ID
    id: String,
}

impl DeleteCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        Ok(Runtime::open(state).delete(&self.id, self.force)?)
    }
}

/// `kill ID [SIGNAL]` as runc takes it (SIGTERM by default), when `ID` is a created container.
pub fn kill(state: &StateRoot, words: &[String], all: bool) -> Option<Result<(), Failure>> {
    let runtime = Runtime::open(state);
    let id = words.first().filter(|id| runtime.exists(id))?;
    let signal = match words.get(1) {
        Some(text) => match super::containers::parse_signal(text) {
            Ok(signal) => signal,
            Err(e) => return Some(Err(Failure::runtime(anyhow::anyhow!(e)))),
        },
        None => nix::sys::signal::Signal::SIGTERM,
    };
    Some(runtime.kill(id, signal, all).map_err(Failure::from))
}
