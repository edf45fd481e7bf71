//! The OCI runtime's command line (runc's): `create`, `start`, `state`, `delete`, `features`,
//! and `kill ID [SIGNAL]` and `ps ID`, as containerd's runc shim, Podman's conmon and Docker
//! call a runtime (`exec` is in `exec.rs`).

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
    /// Send the terminal's master here (SCM_RIGHTS), when the bundle's process.terminal asks
    /// for one
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
        if self.preserve_fds != 0 {
            return Err(Failure::runtime(anyhow::anyhow!(
                "--preserve-fds {}: wrun passes no descriptors beyond stdio",
                self.preserve_fds
            )));
        }
        let options = CreateOptions {
            pid_file: self.pid_file,
            console_socket: self.console_socket,
        };
        Ok(Runtime::open(state).create(&self.id, &self.bundle, &options)?)
    }
}

/// Start containers: stopped ones again (Docker's start), or a created OCI container's
/// workload (the OCI runtime's start)
#[derive(clap::Args, Debug)]
pub struct StartCommand {
    /// Every container whose restart policy brings it back after a reboot: `always`, and
    /// `unless-stopped` unless `stop` stopped it (what a boot-time unit runs)
    #[arg(long, conflicts_with = "containers")]
    all: bool,
    /// Container names or IDs
    #[arg(required_unless_present = "all")]
    containers: Vec<String>,
}

impl StartCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        if self.all {
            return super::containers::start_after_boot(state);
        }
        let runtime = Runtime::open(state);
        match &self.containers[..] {
            [id] if runtime.exists(id) => Ok(runtime.start(id)?),
            names => super::containers::start(state, names),
        }
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

/// Print what wrun supports as an OCI runtime, as JSON (runtime-spec's features)
#[derive(clap::Args, Debug)]
pub struct FeaturesCommand {}

impl FeaturesCommand {
    pub fn execute(self) -> Result<(), Failure> {
        let features =
            wrun::runtime::features::features().map_err(|e| Failure::runtime(e.into()))?;
        let text =
            serde_json::to_string_pretty(&features).map_err(|e| Failure::runtime(e.into()))?;
        wrun::out_line!("{text}");
        Ok(())
    }
}

/// `ps ID`: the container's processes, as a JSON list of PIDs, or `ps`'s table (with
/// `options`, default `-ef`) cut to them, as `runc ps` prints them.
pub fn ps(state: &StateRoot, id: &str, json: bool, options: &[String]) -> Result<(), Failure> {
    let pids = Runtime::open(state).pids(id)?;
    if json {
        let text = serde_json::to_string(&pids).map_err(|e| Failure::runtime(e.into()))?;
        wrun::out_line!("{text}");
        return Ok(());
    }
    print_processes(&pids, options)
}

/// `ps`'s table (with `options`, default `-ef`) cut to the processes `pids` (`runc ps`,
/// `docker top`).
pub fn print_processes(pids: &[i32], options: &[String]) -> Result<(), Failure> {
    let options: Vec<&str> = match options {
        [] => vec!["-ef"],
        given => given.iter().map(String::as_str).collect(),
    };
    let listed = std::process::Command::new("ps")
        .args(&options)
        .output()
        .map_err(|e| Failure::runtime(anyhow::anyhow!("failed to run `ps`: {e}")))?;
    if !listed.status.success() {
        return Err(Failure::runtime(anyhow::anyhow!(
            "`ps {}` failed: {}",
            options.join(" "),
            String::from_utf8_lossy(&listed.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(column) = header.split_whitespace().position(|field| field == "PID") else {
        return Err(Failure::runtime(anyhow::anyhow!(
            "`ps {}` prints no PID column",
            options.join(" ")
        )));
    };
    wrun::out_line!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            wrun::out_line!("{line}");
        }
    }
    Ok(())
}
