//! `stats` and `top`: what running containers use, from their cgroups.

use super::containers::{find, open};
use super::format::{text_fields, Format};
use super::time::size;
use super::Failure;
use serde_json::{Map, Value as Json};
use std::time::{Duration, Instant};
use wrun::container;
use wrun::container::record::{Container, Status};
use wrun::state::StateRoot;

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
    /// A Go template per container as Docker takes it (`{{.Name}}: {{.MemUsage}}`, `table …`,
    /// `json`); fields: Container, ID, Name, CPUPerc, MemUsage, MemPerc, PIDs
    #[arg(long)]
    format: Option<String>,
    /// Container names or IDs (all running ones by default)
    containers: Vec<String>,
}

/// `stats --format`'s fields, Docker's names with their column titles.
const STATS_FIELDS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("PIDs", "PIDS"),
];

/// Docker's default `stats` table.
const STATS_TABLE: &str =
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.PIDs}}";

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
        let format = Format::parse(self.format.as_deref().unwrap_or(STATS_TABLE))?;
        let sample = |window| -> Result<String, Failure> {
            let rows = usage_rows(&chosen, &self.containers, window)?;
            format.render_rows(STATS_FIELDS, &rows)
        };
        if self.no_stream {
            wrun::out!("{}", sample(Duration::from_millis(500))?);
            return Ok(());
        }
        use std::io::Write;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        loop {
            let mut text = sample(Duration::from_secs(1))?;
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

/// One sample of the containers' use, CPU measured over `window`; `given` the names the
/// containers were asked by (Docker's `.Container`), if any.
fn usage_rows(
    chosen: &[Container],
    given: &[String],
    window: Duration,
) -> Result<Vec<Map<String, Json>>, Failure> {
    let before: Vec<_> = chosen.iter().map(|c| container::usage(c).ok()).collect();
    let started = Instant::now();
    std::thread::sleep(window);
    let elapsed = started.elapsed();
    let mut rows = Vec::new();
    for (index, (c, before)) in chosen.iter().zip(before).enumerate() {
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
        let fields = [
            (
                "Container",
                given
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| c.short_id().to_string()),
            ),
            ("ID", c.short_id().to_string()),
            ("Name", c.config.name.clone()),
            ("CPUPerc", cpu),
            ("MemUsage", format!("{memory} / {limit}")),
            ("MemPerc", percent),
            (
                "PIDs",
                now.pids.map_or_else(|| "--".to_string(), |p| p.to_string()),
            ),
        ];
        rows.push(text_fields(fields));
    }
    Ok(rows)
}
