//! The container commands: `ps`, `logs`, `stop`, `kill`, `rm`, `inspect`, `stats`.

use super::time::{ago, since, size, words};
use super::Failure;
use std::time::{Duration, Instant, SystemTime};
use wrun::container::record::{Container, ContainerState, Containers, RecordError, Status};
use wrun::container::{self, logs, monitor};
use wrun::state::StateRoot;

fn open(state: &StateRoot) -> Result<Containers, Failure> {
    Containers::open(state).map_err(|e| Failure::runtime(e.into()))
}

fn find(containers: &Containers, text: &str) -> Result<Container, Failure> {
    containers.find(text).map_err(|e| Failure {
        code: wrun::exit::RUNTIME_ERROR,
        error: e.into(),
    })
}

/// Runs `act` on each named container; reports every failure, one line each, and fails if
/// any did (Docker's behaviour for `stop`, `rm`, ...).
fn each(
    containers: &Containers,
    names: &[String],
    mut act: impl FnMut(&Container) -> anyhow::Result<()>,
) -> Result<(), Failure> {
    let mut failed = None;
    for name in names {
        let outcome = find(containers, name).and_then(|c| act(&c).map_err(Failure::runtime));
        match outcome {
            Ok(()) => wrun::out_line!("{name}"),
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

/// List containers
#[derive(clap::Args, Debug)]
pub struct PsCommand {
    /// Show all containers (running ones only by default)
    #[arg(short, long)]
    all: bool,
    /// Only print container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Only the N most recently created containers (of all states)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Only the most recently created container (of all states)
    #[arg(short, long)]
    latest: bool,
    /// Whole IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// Only containers matching KEY=VALUE: name, id, label (KEY or KEY=VALUE), status
    /// (created, running, exited), ancestor (image); repeatable, all must match
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE", value_parser = PsFilter::parse)]
    filters: Vec<PsFilter>,
    /// With a container: `table` (the default) or `json`, as `runc ps` prints them
    #[arg(long, value_parser = ["table", "json"], requires = "container")]
    format: Option<String>,
    /// An OCI runtime container: list its processes instead (`runc ps`)
    container: Option<String>,
    /// With a container: the options `ps` gets for the table [default: -ef]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        requires = "container"
    )]
    ps_options: Vec<String>,
}

impl PsCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        if let Some(id) = &self.container {
            let json = self.format.as_deref() == Some("json");
            return super::oci::ps(state, id, json, &self.ps_options);
        }
        let containers = open(state)?;
        let mut rows: Vec<(Container, ContainerState)> = containers
            .list()
            .into_iter()
            .filter_map(|c| Some((c.state().ok()?, c)))
            .map(|(s, c)| (c, s))
            .collect();
        // Newest first, as Docker lists them (RFC 3339 times of one form sort as text).
        rows.sort_by(|(a, _), (b, _)| b.config.created.cmp(&a.config.created));
        let last = if self.latest { Some(1) } else { self.last };
        let every_state = self.all || last.is_some() || !self.filters.is_empty();
        rows.retain(|(c, s)| {
            (every_state || s.status() == Status::Running)
                && self.filters.iter().all(|f| f.matches(c, s))
        });
        rows.truncate(last.unwrap_or(usize::MAX));
        let id_of = |c: &Container| match self.no_trunc {
            true => c.id().to_string(),
            false => c.short_id().to_string(),
        };
        if self.quiet {
            for (c, _) in rows {
                wrun::out_line!("{}", id_of(&c));
            }
            return Ok(());
        }
        let mut table = vec![[
            "CONTAINER ID".to_string(),
            "IMAGE".into(),
            "COMMAND".into(),
            "CREATED".into(),
            "STATUS".into(),
            "PORTS".into(),
            "NAMES".into(),
        ]];
        for (c, s) in rows {
            table.push([
                id_of(&c),
                image_of(&c),
                command_of(&c, self.no_trunc),
                ago(&c.config.created),
                status_of(&s),
                ports_of(&c).join(", "),
                c.config.name.clone(),
            ]);
        }
        print_table(&table);
        Ok(())
    }
}

/// One `ps --filter`.
#[derive(Debug, Clone)]
pub enum PsFilter {
    Name(String),
    Id(String),
    Label(String, Option<String>),
    Status(Status),
    Ancestor(String),
}

impl PsFilter {
    fn parse(text: &str) -> Result<PsFilter, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
        Ok(match key {
            "name" => PsFilter::Name(value.to_string()),
            "id" => PsFilter::Id(value.to_string()),
            "label" => match value.split_once('=') {
                Some((k, v)) => PsFilter::Label(k.to_string(), Some(v.to_string())),
                None => PsFilter::Label(value.to_string(), None),
            },
            "status" => PsFilter::Status(match value {
                "created" => Status::Created,
                "running" => Status::Running,
                "exited" => Status::Exited,
                other => {
                    return Err(format!(
                        "status `{other}`: expected created, running or exited"
                    ))
                }
            }),
            "ancestor" => PsFilter::Ancestor(value.to_string()),
            other => {
                return Err(format!(
                    "`{other}`: filters are name, id, label, status and ancestor"
                ))
            }
        })
    }

    /// As Docker matches: a name or ID by substring or prefix, a label by key (and value),
    /// an image by its reference however it is written (`busybox`,
    /// `docker.io/library/busybox:latest`).
    fn matches(&self, c: &Container, s: &ContainerState) -> bool {
        match self {
            PsFilter::Name(part) => c.config.name.contains(part.as_str()),
            PsFilter::Id(prefix) => c.id().starts_with(prefix.as_str()),
            PsFilter::Label(key, value) => c
                .config
                .labels
                .get(key)
                .is_some_and(|v| value.as_ref().is_none_or(|wanted| v == wanted)),
            PsFilter::Status(status) => s.status() == *status,
            PsFilter::Ancestor(image) => c
                .config
                .image
                .as_ref()
                .is_some_and(|i| short_reference(&i.reference) == short_reference(image)),
        }
    }
}

/// `NetworkSettings.Ports` as Docker's inspect writes it.
fn ports_json(c: &Container) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for p in c
        .config
        .spec
        .wasm()
        .map(|w| &w.ports[..])
        .unwrap_or_default()
    {
        let bindings = ports
            .entry(format!("{}/tcp", p.guest_port))
            .or_insert_with(|| serde_json::json!([]));
        if let Some(list) = bindings.as_array_mut() {
            list.push(serde_json::json!({
                "HostIp": p.host.ip().to_string(),
                "HostPort": p.host.port().to_string(),
            }));
        }
    }
    serde_json::Value::Object(ports)
}

/// The published ports as Docker shows them: `0.0.0.0:8080->80/tcp`.
fn ports_of(c: &Container) -> Vec<String> {
    let ports = c
        .config
        .spec
        .wasm()
        .map(|w| &w.ports[..])
        .unwrap_or_default();
    ports
        .iter()
        .map(|p| format!("{}->{}/tcp", p.host, p.guest_port))
        .collect()
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

/// Show a running container's processes (`ps -ef`, or the `ps` options given)
#[derive(clap::Args, Debug)]
pub struct TopCommand {
    /// Container name or ID
    container: String,
    /// Options for `ps` [default: -ef]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

impl TopCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let c = find(&containers, &self.container)?;
        let s = c.state().map_err(|e| Failure::runtime(e.into()))?;
        let (Status::Running, Some(pid)) = (s.status(), s.pid) else {
            return Err(Failure::runtime(anyhow::anyhow!(
                "container `{}` is not running",
                self.container
            )));
        };
        let pids: Vec<i32> = match &s.cgroup {
            Some(path) => wrun::sandbox::cgroup::RunCgroup::existing(path)
                .procs()
                .into_iter()
                .map(|p| p as i32)
                .collect(),
            None => vec![pid],
        };
        super::oci::print_processes(&pids, &self.ps_options)
    }
}

/// List a container's published ports, or the host address of one guest port
#[derive(clap::Args, Debug)]
pub struct PortCommand {
    /// Container name or ID
    container: String,
    /// A guest port (`80` or `80/tcp`)
    port: Option<String>,
}

impl PortCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let c = find(&containers, &self.container)?;
        let ports = c
            .config
            .spec
            .wasm()
            .map(|w| w.ports.clone())
            .unwrap_or_default();
        let Some(wanted) = &self.port else {
            for p in &ports {
                wrun::out_line!("{}/tcp -> {}", p.guest_port, p.host);
            }
            return Ok(());
        };
        let number = wanted.trim_end_matches("/tcp");
        let matching: Vec<_> = ports
            .iter()
            .filter(|p| p.guest_port.to_string() == number)
            .collect();
        if matching.is_empty() {
            return Err(Failure::runtime(anyhow::anyhow!(
                "no public port `{wanted}` published for `{}`",
                self.container
            )));
        }
        for p in matching {
            wrun::out_line!("{}", p.host);
        }
        Ok(())
    }
}

/// A reference without the defaults Docker leaves out.
fn short_reference(reference: &str) -> &str {
    let reference = reference.trim_end_matches(":latest");
    reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference)
}

fn image_of(c: &Container) -> String {
    match &c.config.image {
        Some(image) => image.reference.trim_end_matches(":latest").to_string(),
        None => match c.config.spec.wasm() {
            Some(wasm) => wasm.module.display().to_string(),
            None => String::new(),
        },
    }
}

fn command_of(c: &Container, whole: bool) -> String {
    let command = c.config.spec.argv().join(" ");
    if whole {
        return format!("\"{command}\"");
    }
    let short: String = command.chars().take(20).collect();
    if short.len() < command.len() {
        format!("\"{short}…\"")
    } else {
        format!("\"{short}\"")
    }
}

fn status_of(s: &ContainerState) -> String {
    match s.status() {
        Status::Created => "Created".into(),
        Status::Running => match s.started_at.as_deref().and_then(since) {
            Some(up) => format!("Up {}", words(up)),
            None => "Up".into(),
        },
        Status::Exited => {
            let code = s
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let when = s.finished_at.as_deref().map(ago).unwrap_or_default();
            format!("Exited ({code}) {when}").trim_end().to_string()
        }
    }
}

/// Prints rows as aligned columns, the first row being the header.
pub fn print_rows<const N: usize>(rows: &[[String; N]]) {
    print_table(rows)
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    wrun::out!("{}", render_table(rows));
}

/// Columns padded to their widest cell, three spaces apart, a line per row.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        text.push_str(line.join("   ").trim_end());
        text.push('\n');
    }
    text
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

fn start_one(containers: &Containers, c: &Container, state: &StateRoot) -> anyhow::Result<()> {
    if c.state()?.status() == Status::Running {
        return Ok(());
    }
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
        let mut failed = None;
        for name in &self.containers {
            let waited = find(&containers, name).and_then(|c| {
                container::wait_until_exited(&c, Duration::MAX);
                let code = c.state().map_err(|e| Failure::runtime(e.into()))?.exit_code;
                Ok(code.map_or("unknown".to_string(), |code| code.to_string()))
            });
            match waited {
                Ok(code) => wrun::out_line!("{code}"),
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
        each(&containers, &named, |c| {
            Ok(container::remove(&containers, c, self.force, state)?)
        })
    }
}

/// Show containers' configuration and state as JSON
#[derive(clap::Args, Debug)]
pub struct InspectCommand {
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
    let status = match s.status() {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
    };
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
        "NetworkSettings": { "Ports": ports_json(c) },
    })
}

/// Show running containers' resource use (cgroup figures)
#[derive(clap::Args, Debug)]
pub struct StatsCommand {
    /// Print one sample and exit (by default a new sample every second until interrupted;
    /// on a terminal each replaces the last)
    #[arg(long)]
    no_stream: bool,
    /// Include stopped containers
    #[arg(short, long)]
    all: bool,
    /// Container names or IDs (all running ones by default)
    containers: Vec<String>,
}

impl StatsCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        let containers = open(state)?;
        let chosen: Vec<Container> = if self.containers.is_empty() {
            containers
                .list()
                .into_iter()
                .filter(|c| self.all || c.state().is_ok_and(|s| s.status() == Status::Running))
                .collect()
        } else {
            self.containers
                .iter()
                .map(|n| find(&containers, n))
                .collect::<Result<_, _>>()?
        };
        if self.no_stream {
            print_table(&usage_table(&chosen, Duration::from_millis(500))?);
            return Ok(());
        }
        use std::io::Write;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        loop {
            let mut text = render_table(&usage_table(&chosen, Duration::from_secs(1))?);
            if terminal {
                // Docker's redraw: clear the screen, home the cursor.
                text.insert_str(0, "\x1b[2J\x1b[H");
            }
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // Whoever read the samples has gone.
                return Ok(());
            }
        }
    }
}

/// One sample of the containers' use, CPU measured over `window`.
fn usage_table(chosen: &[Container], window: Duration) -> Result<Vec<[String; 6]>, Failure> {
    let before: Vec<_> = chosen.iter().map(|c| container::usage(c).ok()).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let elapsed = started.elapsed();
    let mut table = vec![[
        "CONTAINER ID".to_string(),
        "NAME".into(),
        "CPU %".into(),
        "MEM USAGE / LIMIT".into(),
        "MEM %".into(),
        "PIDS".into(),
    ]];
    for (c, before) in chosen.iter().zip(before) {
        let now = container::usage(c).map_err(|e| Failure::runtime(e.into()))?;
        let cpu = match (before.and_then(|b| b.cpu_time), now.cpu_time) {
            (Some(a), Some(b)) => {
                format!(
                    "{:.2}%",
                    (b.saturating_sub(a)).as_secs_f64() / elapsed.as_secs_f64() * 100.0
                )
            }
            _ => "--".into(),
        };
        let memory = now.memory.map_or_else(|| "--".to_string(), size);
        let limit = now
            .memory_limit
            .map_or_else(|| "unlimited".to_string(), size);
        let percent = match (now.memory, now.memory_limit) {
            (Some(m), Some(l)) if l > 0 => format!("{:.2}%", m as f64 / l as f64 * 100.0),
            _ => "--".into(),
        };
        table.push([
            c.short_id().to_string(),
            c.config.name.clone(),
            cpu,
            format!("{memory} / {limit}"),
            percent,
            now.pids.map_or_else(|| "--".to_string(), |p| p.to_string()),
        ]);
    }
    Ok(table)
}
