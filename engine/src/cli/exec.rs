//! `wrun exec`: a new process in a running native container, with Docker's flags
//! (`-i -e -u -w -d`) for people and runc's (`--process`, `--detach`, `--pid-file`, `--cwd`)
//! for the programs that drive an OCI runtime.

use super::relay;
use super::Failure;
use anyhow::{anyhow, Context};
use nix::sys::wait::WaitStatus;
use oci_spec::runtime::Process;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use wrun::container::record::{Containers, Status};
use wrun::runtime::Runtime;
use wrun::sandbox::enter::{self, Target};
use wrun::sandbox::native;
use wrun::sandbox::supervise::{self, NoEvents, NoOutput, Waited};
use wrun::sandbox::terminal::{self, Pty};
use wrun::sandbox::Stdio;
use wrun::spec::RunSpec;
use wrun::state::StateRoot;

/// Run a command in a running native container
#[derive(clap::Args, Debug)]
pub struct ExecCommand {
    /// Keep stdin open (without it the command reads /dev/null; with --process it is always
    /// passed on, as runc does)
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal (relayed to this one, or sent to --console-socket)
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (repeatable)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The user, `name|uid[:group|gid]`, looked up in the container's /etc/passwd
    #[arg(short, long)]
    user: Option<String>,
    /// The working directory inside the container
    #[arg(
        short = 'w',
        long = "workdir",
        visible_alias = "cwd",
        value_name = "DIR"
    )]
    workdir: Option<PathBuf>,
    /// Leave the command running in the background and return at once
    #[arg(short, long)]
    detach: bool,
    /// Write the new process's PID (as the host sees it) to this file
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// The whole process as runtime-spec JSON (runc's), instead of a command and flags
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["env", "user", "workdir"])]
    process: Option<PathBuf>,
    /// Send the terminal's master here (SCM_RIGHTS) instead of relaying it, as runc does
    #[arg(long, value_name = "SOCKET")]
    console_socket: Option<PathBuf>,
    /// Extra descriptors to pass beyond stdio: refused unless 0
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The sandbox's PID, for the containerd shim, whose tasks have no record
    #[arg(long, hide = true, requires = "bundle")]
    sandbox_pid: Option<i32>,
    /// The task's bundle, with --sandbox-pid
    #[arg(long, hide = true, requires = "sandbox_pid")]
    bundle: Option<PathBuf>,
    /// The container (name or ID)
    container: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl ExecCommand {
    pub fn execute(self, state: &StateRoot) -> Result<i32, Failure> {
        self.check_flags().map_err(Failure::runtime)?;
        let (pid, spec) = self.locate(state).map_err(Failure::runtime)?;
        let native = spec.native().ok_or_else(|| {
            Failure::runtime(anyhow!(
                "container `{}` runs a Wasm module: exec runs native processes only (start another module with `wrun run`)",
                self.container
            ))
        })?;
        let filter = native::filter_of(&native.spec)
            .with_context(|| format!("failed to read the seccomp profile of `{}`", self.container))
            .map_err(Failure::runtime)?;
        let process = self
            .process(pid, native.spec.process().as_ref())
            .map_err(Failure::runtime)?;
        let (stdio, relayed) = self.stdio(&process).map_err(Failure::runtime)?;
        let signals = wrun::sandbox::signals::block_for_supervision()
            .context("failed to block signals")
            .map_err(Failure::runtime)?;
        let target = Target { pid, filter };
        let child = enter::enter(&target, &process, stdio).map_err(|e| Failure {
            code: e.exit_code(),
            error: e.into(),
        })?;
        if let Some(path) = &self.pid_file {
            wrun::handoff::write_pid_file(path, child.as_raw())
                .with_context(|| format!("failed to write the PID file `{}`", path.display()))
                .map_err(Failure::runtime)?;
        }
        if self.detach {
            return Ok(0);
        }
        let waited = match relayed {
            Some(master) => relay::terminal(child, master),
            None => supervise::wait_for(child, None, Vec::new(), &mut NoOutput, &mut NoEvents),
        };
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&signals),
            None,
        );
        match waited {
            Ok(Waited::Ended(ended)) => Ok(match ended.status {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, signal, _) => wrun::exit::signaled(signal as i32),
                _ => wrun::exit::RUNTIME_ERROR,
            }),
            Ok(_) => Ok(wrun::exit::RUNTIME_ERROR),
            Err(e) => Err(Failure::runtime(
                anyhow::Error::new(e).context("failed to wait for the exec'd process"),
            )),
        }
    }

    fn check_flags(&self) -> anyhow::Result<()> {
        if self.preserve_fds != 0 {
            anyhow::bail!(
                "--preserve-fds {}: wrun passes no descriptors beyond stdio",
                self.preserve_fds
            );
        }
        match (&self.process, self.command.is_empty()) {
            (Some(_), false) => anyhow::bail!("give either --process or a command, not both"),
            (None, true) => anyhow::bail!("no command given: wrun exec CONTAINER COMMAND [ARG...]"),
            _ => Ok(()),
        }
    }

    /// The container's first process (as the host sees it) and its spec.
    fn locate(&self, state: &StateRoot) -> anyhow::Result<(i32, RunSpec)> {
        let id = &self.container;
        let load = |bundle: &Path| {
            wrun::spec::oci::load_with_hooks(bundle, "wrun")
                .with_context(|| format!("failed to read the bundle of `{id}`"))
        };
        if let (Some(pid), Some(bundle)) = (self.sandbox_pid, &self.bundle) {
            return Ok((pid, load(bundle)?));
        }
        let runtime = Runtime::open(state);
        if runtime.exists(id) {
            let (pid, bundle) = runtime.running(id)?;
            return Ok((pid, load(&bundle)?));
        }
        let container = Containers::open(state)?.find(id)?;
        let status = container.state()?;
        match (status.status(), status.pid) {
            (Status::Running, Some(pid)) => Ok((pid, container.config.spec)),
            _ => anyhow::bail!("container `{id}` is not running"),
        }
    }

    /// The process to start: `--process`, or the container's own with this command, the
    /// extra environment, user and directory.
    fn process(&self, pid: i32, container: Option<&Process>) -> anyhow::Result<Process> {
        if let Some(path) = &self.process {
            let file = std::fs::File::open(path)
                .with_context(|| format!("failed to read the process `{}`", path.display()))?;
            return serde_json::from_reader(std::io::BufReader::new(file))
                .with_context(|| format!("failed to parse the process `{}`", path.display()));
        }
        let mut process = container.cloned().unwrap_or_default();
        process.set_args(Some(self.command.clone()));
        process.set_terminal(Some(self.tty));
        let mut env = process.env().clone().unwrap_or_default();
        for pair in &self.env {
            let key = pair.split('=').next().unwrap_or(pair);
            if !pair.contains('=') {
                anyhow::bail!("--env `{pair}`: expected KEY=VALUE");
            }
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(pair.clone());
        }
        process.set_env(Some(env));
        if let Some(user) = &self.user {
            let root = PathBuf::from(format!("/proc/{pid}/root"));
            let (uid, gid) = wrun::spec::native::resolve_user(&root, Some(user))?;
            let mut spec_user = process.user().clone();
            spec_user.set_uid(uid);
            spec_user.set_gid(gid);
            spec_user.set_additional_gids(None);
            process.set_user(spec_user);
        }
        if let Some(dir) = &self.workdir {
            if !dir.is_absolute() {
                anyhow::bail!("--workdir `{}`: expected an absolute path", dir.display());
            }
            process.set_cwd(dir.clone());
        }
        Ok(process)
    }

    /// The process's streams, and the terminal's master when this process relays it: a
    /// terminal (sent to --console-socket, or relayed), else the caller's streams, except
    /// stdin without `-i` and every stream with `-d` (Docker's), unless runc's caller passes
    /// a whole process (its streams are the process's).
    fn stdio(&self, process: &Process) -> anyhow::Result<(Stdio, Option<OwnedFd>)> {
        let terminal = process.terminal() == Some(true);
        match (terminal, &self.console_socket) {
            (true, Some(socket)) => {
                return Ok((Pty::open(None)?.send_master(socket)?, None));
            }
            (true, None) if self.detach => {
                anyhow::bail!("a detached process's terminal needs --console-socket")
            }
            (true, None) => {
                let pty = Pty::open(Some(std::io::stdin().as_fd()))?;
                return Ok((terminal::streams(pty.replica), Some(pty.master)));
            }
            (false, Some(_)) => anyhow::bail!("--console-socket given without a terminal (--tty)"),
            (false, None) => {}
        }
        if self.process.is_some() || (self.interactive && !self.detach) {
            return Ok((Stdio::default(), None));
        }
        let null = || -> anyhow::Result<Option<OwnedFd>> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .context("failed to open /dev/null")?;
            Ok(Some(file.into()))
        };
        let streams = Stdio {
            stdin: null()?,
            stdout: if self.detach { null()? } else { None },
            stderr: if self.detach { null()? } else { None },
        };
        Ok((streams, None))
    }
}
