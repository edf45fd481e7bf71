//! The container commands: `logs`, `stop`, `start`, `restart`, `wait`, `kill`, `rm`,
//! `rename`, `inspect` (`ps` and `port` are in `ps.rs`, `stats` and `top` in `usage.rs`).

use super::format::Format;
use super::Failure;
use std::time::{Duration, SystemTime};
use wrun::container::record::{Container, ContainerState, Containers, RecordError, Status};
use wrun::container::{self, logs, monitor};
use wrun::state::StateRoot;

pub(super) fn open(state: &StateRoot) -> Result<Containers, Failure> {
    Containers::open(state).map_err(|e| Failure::runtime(e.into()))
}

pub(super) fn find(containers: &Containers, text: &str) -> Result<Container, Failure> {
    containers.find(text).map_err(|e| Failure {
        code: wrun::exit::RUNTIME_ERROR,
        error: e.into(),
    })
}

/// Runs `act` on each named container; reports every failure, one line each, and fails if
/// any did (Docker's behaviour for `stop`, `rm`, ...). Prints each name that succeeded.
fn each(
    containers: &Containers,
    names: &[String],
    mut act: impl FnMut(&Container) -> anyhow::Result<()>,
) -> Result<(), Failure> {
    each_printing(containers, names, |name, c| {
        act(c).map(|()| name.to_string())
    })
}

/// [`each`], printing what `act` returns (given the name as typed and the container)
/// instead of the name.
fn each_printing(
    containers: &Containers,
    names: &[String],
    mut act: impl FnMut(&str, &Container) -> anyhow::Result<String>,
) -> Result<(), Failure> {
    let mut failed = None;
    for name in names {
        let outcome = find(containers, name).and_then(|c| act(name, &c).map_err(Failure::runtime));
        match outcome {
            Ok(line) => wrun::out_line!("{line}"),
            Err(failure) => {
                wrun::err_line!("wrun: {:#}", failure.error);
                failed = Some(failure.code);
            }
        }
    }
    match failed {
        None => Ok(()),
        Some(code) => Err(Failure {
            code,
            error: anyhow::anyhow!("some containers failed"),
        }
        .silent()),
    }
}

/// Rename a container
#[derive(clap::Args, Debug)]
pub struct RenameCommand {
    /// The container's name or ID
    container: String,
    /// Its new name
    #[arg(value_parser = wrun::spec::parse_name)]
    name: String,
}

impl RenameCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let c = find(&containers, &self.container)?;
        containers
            .rename(&c, &self.name)
            .map_err(|e| Failure::runtime(e.into()))
    }
}

/// Print a container's output (stdout and stderr as it wrote them)
#[derive(clap::Args, Debug)]
pub struct LogsCommand {
    /// Keep printing new output until the container exits
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<usize>,
    /// Each line after the time it was written (RFC 3339, nanoseconds)
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines written since a time: RFC 3339 (2026-12-05T10:00:00Z), Unix seconds, or a
    /// duration before now (10m, 1h30m)
    #[arg(long, value_name = "TIME", value_parser = parse_log_time)]
    since: Option<SystemTime>,
    /// Only lines written before a time, in the same forms
    #[arg(long, value_name = "TIME", value_parser = parse_log_time)]
    until: Option<SystemTime>,
    /// Container name or ID (or a unique ID prefix)
    container: String,
}

impl LogsCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let container = find(&containers, &self.container)?;
        let path = container.log_path();
        let mut records = logs::read(&path);
        records.retain(|record| self.in_window(record));
        if let Some(tail) = self.tail {
            records.drain(..records.len().saturating_sub(tail));
        }
        logs::print(&records, self.timestamps);
        if !self.follow {
            return Ok(());
        }
        let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        loop {
            let alive = container.monitor_alive();
            let (mut new, next) = logs::read_from(&path, offset);
            new.retain(|record| self.in_window(record));
            logs::print(&new, self.timestamps);
            offset = next;
            if !alive {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl LogsCommand {
    /// Whether a record was written within `--since` and `--until`.
    fn in_window(&self, record: &logs::Record) -> bool {
        let Ok(time) = humantime::parse_rfc3339_weak(&record.time) else {
            return true;
        };
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }
}

/// `--since`/`--until` as Docker takes them: an RFC 3339 time, Unix seconds (with an
/// optional fraction), or a duration before now.
fn parse_log_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds));
        }
    }
    let ago = wrun::spec::parse_duration(text).map_err(|_| {
        format!("`{text}`: expected an RFC 3339 time, Unix seconds or a duration such as 10m")
    })?;
    Ok(SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}

/// Stop running containers: SIGTERM, then SIGKILL after a grace period
#[derive(clap::Args, Debug)]
pub struct StopCommand {
    /// Seconds to wait before killing
    #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10)]
    time: u64,
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

impl StopCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let grace = Duration::from_secs(self.time);
        each(&containers, &self.containers, |c| {
            Ok(container::stop(c, grace)?)
        })
    }
}

/// `start` of stopped containers: each runs again under a new monitor, with the same
/// configuration, name, ID and log (Docker's start); a running one is left as it is.
pub fn start(state: &StateRoot, names: &[String]) -> Result<(), Failure> {
    let containers = open(state)?;
    each(&containers, names, |c| start_one(&containers, c, state))
}

/// `start --all`: the containers whose restart policy says they come back after a reboot
/// and that are not running now.
pub fn start_after_boot(state: &StateRoot) -> Result<(), Failure> {
    use wrun::container::record::RestartPolicy;
    let containers = open(state)?;
    let names: Vec<String> = containers
        .list()
        .into_iter()
        .filter(|c| {
            c.state().is_ok_and(|s| {
                s.status() == Status::Exited
                    && match c.config.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::UnlessStopped => !s.stopped_by_user,
                        _ => false,
                    }
            })
        })
        .map(|c| c.config.name)
        .collect();
    each(&containers, &names, |c| start_one(&containers, c, state))
}

fn start_one(containers: &Containers, c: &Container, state: &StateRoot) -> anyhow::Result<()> {
    if matches!(c.state()?.status(), Status::Running | Status::Restarting) {
        return Ok(());
    }
    c.update_state(|s| s.stopped_by_user = false)?;
    Ok(monitor::start_detached(containers, c, state)?)
}

/// Stop running containers and start them again
#[derive(clap::Args, Debug)]
pub struct RestartCommand {
    /// Seconds to wait before killing
    #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10)]
    time: u64,
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

impl RestartCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let grace = Duration::from_secs(self.time);
        each(&containers, &self.containers, |c| {
            container::stop(c, grace)?;
            start_one(&containers, c, state)
        })
    }
}

/// Block until containers stop, then print their exit codes
#[derive(clap::Args, Debug)]
pub struct WaitCommand {
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

impl WaitCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        each_printing(&containers, &self.containers, |_, c| {
            container::wait_until_exited(c, Duration::MAX);
            let code = c.state()?.exit_code;
            Ok(code.map_or("unknown".to_string(), |code| code.to_string()))
        })
    }
}

/// Send a signal to running containers (SIGKILL by default)
#[derive(clap::Args, Debug)]
pub struct KillCommand {
    /// The signal, by name (KILL, SIGTERM, INT, ...) or number
    #[arg(short, long, default_value = "KILL", value_parser = parse_signal)]
    signal: nix::sys::signal::Signal,
    /// For an OCI runtime's container (`kill ID [SIGNAL]`, SIGTERM by default): signal every
    /// process in it
    #[arg(short, long)]
    all: bool,
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr;
    let err = || format!("unknown signal `{text}`");
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number).map_err(|_| err());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| err())
}

impl KillCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        if let Some(killed) = super::oci::kill(state, &self.containers, self.all) {
            return killed;
        }
        let containers = open(state)?;
        each(&containers, &self.containers, |c| {
            Ok(container::kill(c, self.signal)?)
        })
    }
}

/// Remove containers
#[derive(clap::Args, Debug)]
pub struct RmCommand {
    /// Kill running containers first
    #[arg(short, long)]
    force: bool,
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

impl RmCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        // As Docker's: with -f, a container that is not there is no error (scripts rely on it).
        let named: Vec<String> = self
            .containers
            .into_iter()
            .filter(|name| {
                !(self.force && matches!(containers.find(name), Err(RecordError::NotFound(_))))
            })
            .collect();
        let removed = each(&containers, &named, |c| {
            Ok(container::remove(&containers, c, self.force)?)
        });
        // Once for all of them: after runs whose monitor died while being killed, and a
        // writable layer whose removal failed.
        wrun::sandbox::sweep_stale(state);
        removed
    }
}

/// Show containers' configuration and state as JSON
#[derive(clap::Args, Debug)]
pub struct InspectCommand {
    /// A Go template per container as Docker takes it (`{{.State.Status}}`,
    /// `{{json .Config}}`, `json`), over the fields of the JSON
    #[arg(short, long)]
    format: Option<String>,
    /// Container names or IDs
    #[arg(required = true)]
    containers: Vec<String>,
}

impl InspectCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let mut out = Vec::new();
        for name in &self.containers {
            let c = find(&containers, name)?;
            let s = c.state().map_err(|e| Failure::runtime(e.into()))?;
            out.push(inspect_json(&c, &s));
        }
        if let Some(text) = &self.format {
            let format = Format::parse(text)?;
            for object in &out {
                wrun::out_line!("{}", format.render(object)?);
            }
            return Ok(());
        }
        wrun::out_line!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| Failure::runtime(e.into()))?
        );
        Ok(())
    }
}

fn inspect_json(c: &Container, s: &ContainerState) -> serde_json::Value {
    let spec = &c.config.spec;
    let (wasm, limits) = (spec.wasm(), &spec.sandbox.limits);
    let status = s.status().as_str();
    let cpu_time = if s.status() == Status::Running {
        s.pid.and_then(container::cpu_time_of)
    } else {
        s.cpu_time_ns.map(Duration::from_nanos)
    };
    serde_json::json!({
        "Id": c.id(),
        "Name": c.config.name,
        "Created": c.config.created,
        "Image": c.config.image.as_ref().map(|i| serde_json::json!({
            "Reference": i.reference, "Digest": i.digest,
        })),
        "Module": wasm.map(|w| &w.module),
        "ModuleDigest": wasm.and_then(|w| w.module_digest.as_ref()),
        "Args": spec.argv(),
        "Env": wasm.map(|w| &w.env[..]).unwrap_or_default().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "Mounts": wasm.map(|w| &w.preopens[..]).unwrap_or_default().iter().map(|p| serde_json::json!({
            "Source": p.host, "Destination": p.guest, "ReadOnly": p.read_only,
        })).collect::<Vec<_>>(),
        "State": {
            "Status": status,
            "Running": s.status() == Status::Running,
            "Pid": if s.status() == Status::Running { s.pid } else { None },
            "ExitCode": s.exit_code,
            "OOMKilled": s.oom_killed,
            "Error": s.error,
            "StartedAt": s.started_at,
            "FinishedAt": s.finished_at,
            "Restarting": s.status() == Status::Restarting,
        },
        "RestartCount": s.restart_count,
        "HostConfig": {
            "RestartPolicy": {
                "Name": c.config.restart.name(),
                "MaximumRetryCount": match c.config.restart {
                    wrun::container::record::RestartPolicy::OnFailure(Some(n)) => n,
                    _ => 0,
                },
            },
        },
        "Limits": {
            "MemoryBytes": limits.memory,
            "CgroupMemoryBytes": spec.cgroup_memory(),
            "CpuQuotaMicros": limits.cpu_quota_us,
            "CpuPeriodMicros": limits.cpu_quota_us.map(|_| wrun::spec::CPU_PERIOD_US),
            "Pids": limits.pids,
            "TimeoutMillis": limits.timeout.map(|t| t.as_millis() as u64),
        },
        "CgroupPath": s.cgroup,
        "MemoryPeakBytes": s.memory_peak,
        "CpuTimeNanos": cpu_time.map(|t| t.as_nanos() as u64),
        "AutoRemove": c.config.auto_remove,
        "Config": { "Labels": c.config.labels },
        "NetworkSettings": { "Ports": super::ps::ports_json(c) },
    })
}
