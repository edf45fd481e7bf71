//! `wrun run`: runs a module in a new sandbox, attached, and exits with its code.

use super::Failure;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use wrun::spec::{self, EnvEntry, Limits, Preopen, RunSpec};
use wrun::state::StateRoot;

/// Run a WebAssembly module or component in a new sandbox
#[derive(clap::Args, Debug)]
pub struct RunCommand {
    /// Make a host directory visible to the guest (repeatable); `:ro` makes it read-only
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = Preopen::parse)]
    dirs: Vec<Preopen>,
    /// Set an environment variable, or pass the caller's value with NAME alone (repeatable)
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = spec::parse_env)]
    env: Vec<EnvEntry>,
    /// Read environment variables from a file of NAME=VALUE lines (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Memory limit, e.g. 64m or 1g: the guest's memories and tables together, and the
    /// sandbox's cgroup (plus 32 MiB for the runtime)
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = spec::parse_memory)]
    memory: Option<u64>,
    /// CPU limit in CPUs, e.g. 0.5 (a cgroup CPU quota)
    #[arg(long, value_name = "N.N", value_parser = spec::parse_cpus)]
    cpus: Option<u64>,
    /// Maximum number of processes and threads in the sandbox (the runtime uses up to 4)
    #[arg(long, alias = "pids-limit", value_name = "N", value_parser = spec::parse_pids)]
    pids: Option<u64>,
    /// Interrupt the guest after this long (e.g. 500ms, 10s, 2m); exit code 124
    #[arg(long, value_name = "DURATION", value_parser = spec::parse_duration)]
    timeout: Option<Duration>,
    /// Cgroup under which the run's cgroup is created, in every hierarchy
    #[arg(long, value_name = "PATH", default_value = "wrun", value_parser = spec::parse_cgroup_parent)]
    cgroup_parent: String,
    /// The module: a wasm binary, a component, or WAT text
    module: PathBuf,
    /// Arguments passed to the guest
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self, state: &StateRoot) -> Result<i32, Failure> {
        let spec = self.into_spec().map_err(Failure::runtime)?;
        wrun::sandbox::run(&spec, state).map_err(|e| Failure {
            code: e.exit_code(),
            error: e.into(),
        })
    }

    fn into_spec(self) -> anyhow::Result<RunSpec> {
        let env = resolve_env(&self.env_files, self.env)?;
        let argv0 = self.module.to_string_lossy().into_owned();
        Ok(RunSpec {
            args: std::iter::once(argv0).chain(self.args).collect(),
            module: self.module,
            env,
            preopens: self.dirs,
            limits: Limits {
                memory: self.memory,
                cpu_quota_us: self.cpus,
                pids: self.pids,
                timeout: self.timeout,
            },
            cgroup_parent: self.cgroup_parent,
        })
    }
}

/// Env files first, then `--env`, later values replacing earlier ones (Docker's order);
/// `NAME` alone takes the caller's value and is dropped when the caller has none.
fn resolve_env(files: &[PathBuf], flags: Vec<EnvEntry>) -> anyhow::Result<Vec<(String, String)>> {
    let mut entries = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read env file `{}`", file.display()))?;
        entries.extend(spec::parse_env_file(&file.display().to_string(), &text)?);
    }
    entries.extend(flags);
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let (name, value) = match entry {
            EnvEntry::Set(name, value) => (name, value),
            EnvEntry::Inherit(name) => match std::env::var(&name) {
                Ok(value) => (name, value),
                Err(_) => continue,
            },
        };
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    }
    Ok(env)
}
