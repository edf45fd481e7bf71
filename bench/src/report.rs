//! Start-up results as JSON (for `table`), Markdown and an SVG chart.

use crate::machine::Machine;
use crate::stats::Summary;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    pub key: String,
    pub label: String,
    pub summary: Option<Summary>,
    /// Why the row has no figures ("n/a"), or why it stopped.
    pub error: Option<String>,
}

impl RowResult {
    pub fn new(key: &str, label: String, samples_ms: &[f64], error: Option<String>) -> RowResult {
        RowResult {
            key: key.into(),
            label,
            summary: Summary::of(samples_ms),
            error,
        }
    }

    pub fn median(&self) -> Option<f64> {
        self.summary.as_ref().map(|s| s.median)
    }

    pub fn p90(&self) -> Option<f64> {
        self.summary.as_ref().map(|s| s.p90)
    }
}

/// The ratios the Docker and Podman rows are for: tool, wrun's row, the row it is set against.
const TOOL_PAIRS: [(&str, &str, &str); 6] = [
    ("Docker", "docker-wrun", "docker-runc"),
    ("Docker", "docker-wrun-wasm", "docker-runc"),
    ("Podman", "podman-wrun", "podman-runc"),
    ("Podman", "podman-wrun", "podman-crun"),
    ("Podman", "podman-wrun-wasm", "podman-runc"),
    ("Podman", "podman-wrun-wasm", "podman-crun"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupReport {
    pub measured_at: String,
    pub machine: Machine,
    pub runs: usize,
    pub warmup: usize,
    pub gap_ms: u64,
    pub rows: Vec<RowResult>,
    /// One warm Wasm start, step by step: `ms process step` lines.
    #[serde(default)]
    pub timeline: Option<Vec<String>>,
    /// How much of wrun's code was mapped in 2 MiB pages.
    #[serde(default)]
    pub code_pages: Option<String>,
    /// Rows measured on their own after the interleaved rounds, by key.
    #[serde(default)]
    pub measured_alone: Vec<String>,
}

impl StartupReport {
    pub fn new(runs: usize, warmup: usize, gap_ms: u64, rows: Vec<RowResult>) -> StartupReport {
        StartupReport {
            measured_at: now_utc(),
            machine: Machine::describe(),
            runs,
            warmup,
            gap_ms,
            rows,
            timeline: None,
            code_pages: None,
            measured_alone: Vec::new(),
        }
    }

    pub fn row(&self, key: &str) -> Option<&RowResult> {
        self.rows.iter().find(|r| r.key == key)
    }

    /// wrun's rows through Docker and Podman against the same tool's other runtimes, measured
    /// in the same rounds: a table of medians and ratios, or `None` when no pair was measured.
    pub fn tool_ratios_markdown(&self) -> Option<String> {
        let pairs = TOOL_PAIRS.iter().filter_map(|&(tool, wrun, base)| {
            let (w, b) = (self.row(wrun)?, self.row(base)?);
            Some((tool, w, w.median()?, b, b.median()?))
        });
        let mut md = String::from(
            "| through | wrun as the runtime | median | against | median | ratio |\n\
             |---|---|---:|---|---:|---:|\n",
        );
        let mut any = false;
        for (tool, wrun, wrun_ms, base, base_ms) in pairs {
            any = true;
            md.push_str(&format!(
                "| {tool} | {} | {wrun_ms:.2} ms | {} | {base_ms:.2} ms | **{:.2}x** |\n",
                wrun.label,
                base.label,
                wrun_ms / base_ms
            ));
        }
        any.then_some(md)
    }

    /// Writes `NAME.json`, `NAME.md` and `NAME.svg` under `out`.
    pub fn write(&self, out: &Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(out)
            .with_context(|| format!("failed to create {}", out.display()))?;
        std::fs::write(
            out.join(format!("{name}.json")),
            serde_json::to_vec_pretty(self)?,
        )?;
        std::fs::write(out.join(format!("{name}.md")), self.markdown(name))?;
        std::fs::write(
            out.join(format!("{name}.svg")),
            crate::svg::startup_chart(self),
        )?;
        Ok(())
    }

    /// The report as Markdown, its chart named `NAME.svg`.
    pub fn markdown(&self, name: &str) -> String {
        let runc = self.row("runc").and_then(RowResult::median);
        let floor = self.row("floor").and_then(RowResult::median);
        let floor_p90 = self.row("floor").and_then(RowResult::p90);
        let ratio = |median: f64, base: Option<f64>| {
            base.map_or("n/a".to_string(), |b| format!("{:.2}x", median / b))
        };
        let (title, pause) = if self.gap_ms == 0 {
            ("Start-up back to back", "no pause between runs".to_string())
        } else {
            (
                "Start-up",
                format!("{} ms pause before each run", self.gap_ms),
            )
        };
        let mut md = format!(
            "# {title}\n\nStart-to-exit wall time, {} measured runs per row after {} warm-up rounds, \
             interleaved (one run of each row per round, {pause}). Measured {} by \
             `wrun-bench {name}`.\n\n{}{}\n\
             | row | min | median | p90 | p99 | max | vs runc | vs kernel floor | p90 vs floor's p90 |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.runs,
            self.warmup,
            self.measured_at,
            self.machine.markdown(),
            self.code_pages
                .as_ref()
                .map_or(String::new(), |line| format!("- {line}\n"))
        );
        for row in &self.rows {
            match &row.summary {
                Some(s) => md.push_str(&format!(
                    "| {} | {:.2} ms | **{:.2} ms** | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} |\n",
                    row.label,
                    s.min,
                    s.median,
                    s.p90,
                    s.p99,
                    s.max,
                    ratio(s.median, runc),
                    ratio(s.median, floor),
                    ratio(s.p90, floor_p90)
                )),
                None => md.push_str(&format!(
                    "| {} | n/a | n/a | n/a | n/a | n/a | | | |\n",
                    row.label
                )),
            }
        }
        let notes: Vec<_> = self
            .rows
            .iter()
            .filter_map(|r| Some((r, r.error.as_ref()?)))
            .collect();
        for key in &self.measured_alone {
            if let Some(row) = self.row(key) {
                md.push_str(&format!(
                    "\n{} was measured on its own, its runs back to back after the interleaved \
                     rounds: the work it leaves running in the background (a pool refilling) \
                     would otherwise fall on the next row's run.\n",
                    row.label
                ));
            }
        }
        if self
            .row("kernel-steps")
            .is_some_and(|row| row.summary.is_some())
        {
            md.push_str(
                "\nwrun's kernel steps alone: a small program (`wrun-kernel-steps`) doing the \
                 kernel work of one standalone `wrun run`, in the same two processes and order \
                 (PID namespace, fork, the child moved to the other CPU; a UTS namespace, the \
                 mount namespace template entered, the shared network and IPC namespaces \
                 joined; the cgroup made by the parent; the go-ahead, the cgroup \
                 join, the cgroup namespace), \
                 with no engine, module, capability drop or seccomp filter. A standalone wrun \
                 start does all of it, then locks down and runs the guest: this row is below \
                 any time such a start can reach.\n",
            );
        }
        if !notes.is_empty() {
            md.push_str("\nRows without figures, or stopped early:\n\n");
            for (row, error) in notes {
                md.push_str(&format!("- {}: {}\n", row.label, error.replace('\n', " ")));
            }
        }
        if let Some(table) = self.tool_ratios_markdown() {
            md.push_str(
                "\n## Through Docker and Podman\n\nThe same `run --rm` through each tool, wrun as \
                 its OCI runtime against the tool's other runtimes, in the same rounds (the Wasm \
                 image's ratio sets wrun's Wasm start against busybox `true` under the other \
                 runtime, which cannot run it):\n\n",
            );
            md.push_str(&table);
        }
        md.push_str(&format!("\n![start-up medians]({name}.svg)\n"));
        if let Some(timeline) = &self.timeline {
            md.push_str(
                "\n## Where a warm Wasm start spends its time\n\nOne `wrun run hello.wasm` with \
                 `WRUN_TIMINGS=1` (milliseconds since `main` started; the parent and the \
                 sandboxed child work in parallel):\n\n```\n",
            );
            for line in timeline {
                md.push_str(line);
                md.push('\n');
            }
            md.push_str("```\n");
        }
        md
    }
}

/// UTC date and time, `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
