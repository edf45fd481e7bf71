//! `ps` (newest first, Docker's filters) and `port`: what containers there are and what
//! they publish.

use super::containers::{find, open};
use super::format::{text_fields, Format};
use super::time::{ago, docker_time, since, words};
use super::Failure;
use serde_json::{Map, Value as Json};
use wrun::container::record::{Container, ContainerState, Status};
use wrun::state::StateRoot;

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
    /// A Go template per container as Docker takes it (`{{.Names}}`, `table {{.ID}}\t{{.Status}}`,
    /// `json`); fields: ID, Image, Command, CreatedAt, RunningFor, Ports, State, Status, Names,
    /// Labels, Mounts. With a container: `table` (the default) or `json`, as `runc ps` prints them
    #[arg(long)]
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
            let json = match self.format.as_deref() {
                None | Some("table") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(Failure::runtime(anyhow::anyhow!(
                        "invalid --format `{other}` for the processes of a container: expected table or json"
                    )))
                }
            };
            return super::oci::ps(state, id, json, &self.ps_options);
        }
        let format = Format::parse(self.format.as_deref().unwrap_or(PS_TABLE))?;
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
        if self.quiet {
            for (c, _) in rows {
                wrun::out_line!("{}", id_of(&c, self.no_trunc));
            }
            return Ok(());
        }
        let rows: Vec<_> = rows
            .iter()
            .map(|(c, s)| ps_fields(c, s, self.no_trunc))
            .collect();
        wrun::out!("{}", format.render_rows(PS_FIELDS, &rows)?);
        Ok(())
    }
}

/// `ps --format`'s fields, Docker's names with their column titles.
const PS_FIELDS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
];

/// Docker's default `ps` table.
const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

fn id_of(c: &Container, whole: bool) -> String {
    match whole {
        true => c.id().to_string(),
        false => c.short_id().to_string(),
    }
}

/// One container's `ps` fields, as text the way Docker writes them.
fn ps_fields(c: &Container, s: &ContainerState, whole: bool) -> Map<String, Json> {
    let labels: Vec<String> = c
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mounts: Vec<String> = c
        .config
        .spec
        .wasm()
        .map(|w| &w.preopens[..])
        .unwrap_or_default()
        .iter()
        .map(|p| p.host.display().to_string())
        .collect();
    let fields = [
        ("ID", id_of(c, whole)),
        ("Image", image_of(c)),
        ("Command", command_of(c, whole)),
        ("CreatedAt", docker_time(&c.config.created)),
        ("RunningFor", ago(&c.config.created)),
        ("Ports", ports_of(c).join(", ")),
        ("State", s.status().as_str().to_string()),
        ("Status", status_of(s)),
        ("Names", c.config.name.clone()),
        ("Labels", labels.join(",")),
        ("Mounts", mounts.join(",")),
    ];
    text_fields(fields)
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
                "restarting" => Status::Restarting,
                other => {
                    return Err(format!(
                        "status `{other}`: expected created, running, restarting or exited"
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
pub(super) fn ports_json(c: &Container) -> serde_json::Value {
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
        Status::Exited | Status::Restarting => {
            let code = s
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string());
            let when = s.finished_at.as_deref().map(ago).unwrap_or_default();
            let word = match s.status() {
                Status::Restarting => "Restarting",
                _ => "Exited",
            };
            format!("{word} ({code}) {when}").trim_end().to_string()
        }
    }
}
