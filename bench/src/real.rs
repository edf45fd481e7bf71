//! `wrun-bench real`: large real WASI programs (tests/real-programs, fetched pinned from PyPI)
//! run cold, compiled and warm under `wrun run` and under the reference wasmtime
//! (`wasmtime-reference`: the same wasmtime crates in-process, compiling with all cores),
//! interleaved; results to docs/bench/real.{json,md}.

use crate::machine::Machine;
use crate::report::now_utc;
use crate::stats::Summary;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use wrun_tests::compare::Invocation;
use wrun_tests::real_programs::{fetch, workloads};

#[derive(clap::Args)]
pub struct Args {
    /// Warm runs per workload and runtime, interleaved
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these workloads (repeatable; default: cpython, cc1, yosys-0.60-synth, yosys-0.70-synth)
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// Where real.json and real.md go
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
}

const DEFAULT_WORKLOADS: [&str; 4] = ["cpython", "cc1", "yosys-0.60-synth", "yosys-0.70-synth"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealReport {
    pub measured_at: String,
    pub machine: Machine,
    pub runs: usize,
    pub rows: Vec<RealRow>,
}

/// One workload: milliseconds of wall time, start to exit, under each runtime.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealRow {
    pub workload: String,
    pub module_bytes: u64,
    pub exit_code: Option<i32>,
    /// The first run with nothing compiled: compilation plus the run.
    pub cold_wrun: f64,
    pub cold_reference: f64,
    /// The reference compiling with Winch (`-C compiler=winch`), as wrun's first run of a large
    /// module does; `None` where Winch cannot compile the module.
    #[serde(default)]
    pub cold_reference_winch: Option<f64>,
    /// Compilation alone: `wrun compile` and the reference's `--compile-only`.
    pub compile_wrun: f64,
    pub compile_reference: f64,
    /// Runs of the precompiled module (wrun from its cache).
    pub warm_wrun: Summary,
    pub warm_reference: Summary,
    /// The reference with the epoch-interruption checks wrun compiles in: their cost.
    pub warm_reference_epoch: Summary,
}

/// Where the runtimes and their scratch space are.
struct Bench {
    wrun: PathBuf,
    reference: PathBuf,
    scratch: tempfile::TempDir,
}

pub fn run(args: Args) -> Result<()> {
    let cache = fetch().map_err(|e| anyhow::anyhow!(e))?;
    let bench = Bench {
        wrun: crate::sibling_binary("wrun")?,
        reference: crate::sibling_binary("wasmtime-reference")?,
        scratch: private_tempdir()?,
    };
    let wanted: Vec<String> = if args.workloads.is_empty() {
        DEFAULT_WORKLOADS.iter().map(|w| w.to_string()).collect()
    } else {
        args.workloads.clone()
    };
    let all = workloads(&cache);
    let mut rows = Vec::new();
    for name in &wanted {
        let workload = all
            .iter()
            .find(|w| w.name == name)
            .with_context(|| format!("no workload `{name}`"))?;
        eprintln!("real: {name}");
        rows.push(bench.measure(name, &workload.invocation, args.runs)?);
    }
    let report = RealReport {
        measured_at: now_utc(),
        machine: Machine::describe(),
        runs: args.runs,
        rows,
    };
    report.write(&args.out)?;
    print!("{}", report.markdown());
    Ok(())
}

impl Bench {
    fn measure(&self, name: &str, guest: &Invocation, runs: usize) -> Result<RealRow> {
        let work = self.scratch.path().join(name);
        let root = work.join("root");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let (cold_wrun, code) = self.wrun_run(guest, &root, &work)?;
        // Waits for the run's background compiler, if it started one, to finish: its work
        // would fall on the runs measured next.
        self.timed(
            Command::new(&self.wrun)
                .arg("--root")
                .arg(&root)
                .arg("compile")
                .arg(&guest.module),
        )?;
        let (cold_reference, reference_code) = self.reference_run(guest, None, false, &work)?;
        if code != reference_code {
            bail!("{name}: wrun exited {code:?}, the reference {reference_code:?}");
        }
        let cold_reference_winch = match self.reference_winch_run(guest, &work)? {
            (ms, winch_code) if winch_code == code => Some(ms),
            _ => None,
        };
        let compile_wrun = self.timed(
            Command::new(&self.wrun)
                .arg("--root")
                .arg(work.join("compile-root"))
                .arg("compile")
                .arg(&guest.module),
        )?;
        let artifact = work.join("reference.cwasm");
        let compile_reference = self.compile_reference(guest, &artifact, false)?;
        let epoch_artifact = work.join("reference-epoch.cwasm");
        self.compile_reference(guest, &epoch_artifact, true)?;
        let (mut warm_wrun, mut warm_reference, mut warm_reference_epoch) =
            (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let (ms, run_code) = self.wrun_run(guest, &root, &work)?;
            check_code(name, run_code, code)?;
            warm_wrun.push(ms);
            let (ms, run_code) = self.reference_run(guest, Some(&artifact), false, &work)?;
            check_code(name, run_code, code)?;
            warm_reference.push(ms);
            let (ms, run_code) = self.reference_run(guest, Some(&epoch_artifact), true, &work)?;
            check_code(name, run_code, code)?;
            warm_reference_epoch.push(ms);
        }
        Ok(RealRow {
            workload: name.to_string(),
            module_bytes: std::fs::metadata(&guest.module)?.len(),
            exit_code: code,
            cold_wrun,
            cold_reference,
            cold_reference_winch,
            compile_wrun,
            compile_reference,
            warm_wrun: Summary::of(&warm_wrun).context("no warm runs")?,
            warm_reference: Summary::of(&warm_reference).context("no warm runs")?,
            warm_reference_epoch: Summary::of(&warm_reference_epoch).context("no warm runs")?,
        })
    }

    /// One `wrun --root ROOT run …` with fresh writable directories: (ms, exit code).
    fn wrun_run(&self, guest: &Invocation, root: &Path, work: &Path) -> Result<(f64, Option<i32>)> {
        let hosts = guest.fresh_dirs(&work.join("dirs"));
        let mut cmd = Command::new(&self.wrun);
        cmd.arg("--root")
            .arg(root)
            .arg("run")
            .args(guest.wrun_run_args(&hosts));
        self.fed(guest, cmd)
    }

    /// One run of the reference, compiling the module or loading `precompiled` (compiled
    /// with or without `epoch` checks).
    fn reference_run(
        &self,
        guest: &Invocation,
        precompiled: Option<&Path>,
        epoch: bool,
        work: &Path,
    ) -> Result<(f64, Option<i32>)> {
        let hosts = guest.fresh_dirs(&work.join("dirs"));
        let mut options = Vec::new();
        if let Some(artifact) = precompiled {
            options.push("--precompiled".to_string());
            options.push(artifact.display().to_string());
        }
        if epoch {
            options.push("--epoch-interruption".to_string());
        }
        self.fed(
            guest,
            guest.reference_cmd(&self.reference, &hosts, &options),
        )
    }

    /// One run of the reference compiling with Winch: (ms, exit code; 1 if Winch cannot
    /// compile the module).
    fn reference_winch_run(&self, guest: &Invocation, work: &Path) -> Result<(f64, Option<i32>)> {
        let hosts = guest.fresh_dirs(&work.join("dirs"));
        let options = ["--compiler".to_string(), "winch".to_string()];
        self.fed(
            guest,
            guest.reference_cmd(&self.reference, &hosts, &options),
        )
    }

    fn compile_reference(&self, guest: &Invocation, artifact: &Path, epoch: bool) -> Result<f64> {
        let mut cmd = Command::new(&self.reference);
        if epoch {
            cmd.arg("--epoch-interruption");
        }
        self.timed(cmd.arg("--compile-only").arg(artifact).arg(&guest.module))
    }

    fn fed(&self, guest: &Invocation, cmd: Command) -> Result<(f64, Option<i32>)> {
        let started = Instant::now();
        let output = guest.feed(cmd);
        Ok((started.elapsed().as_secs_f64() * 1e3, output.status.code()))
    }

    fn timed(&self, cmd: &mut Command) -> Result<f64> {
        let started = Instant::now();
        let output = cmd.output().context("failed to start a compile")?;
        if !output.status.success() {
            bail!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }
}

fn check_code(name: &str, got: Option<i32>, expected: Option<i32>) -> Result<()> {
    if got != expected {
        bail!("{name}: a warm run exited {got:?}, the cold one {expected:?}");
    }
    Ok(())
}

/// wrun refuses a state root other users can enter: the scratch space is 0700.
fn private_tempdir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

impl RealReport {
    fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)
            .with_context(|| format!("failed to create {}", out.display()))?;
        std::fs::write(out.join("real.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(out.join("real.md"), self.markdown())?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let seconds = |ms: f64| format!("{:.2} s", ms / 1e3);
        let ratio = |ours: f64, theirs: f64| format!("{:.2}x", ours / theirs);
        let mut md = format!(
            "# Real programs: wrun against the reference wasmtime\n\n\
             Measured {} by `wrun-bench real --runs {}`: wall time from start to exit of \
             each process. The reference is `wasmtime-reference` (tests/src/bin/): the \
             wasmtime and wasmtime-wasi crates wrun uses, in-process, no sandbox, compiling \
             with all cores. The last column is the reference with the epoch-interruption \
             checks wrun compiles in for runs with `--timeout` or `-p`: what they cost. Cold: \
             nothing compiled yet (wrun: a fresh state root, under `--memory 256m`; a module \
             of 1 MiB or more starts on Winch's code, Cranelift's compiled in the background \
             for the next runs, which the bench waits for before it goes on). \
             Cold reference, Winch: the reference compiling with Winch as wrun's first run \
             does (`-` where Winch cannot compile the module: wrun's first run then waits for \
             Cranelift's code). Compile: `wrun compile` against the reference's \
             `--compile-only`. Warm: the precompiled module (wrun from its cache, the \
             reference from its own artifact), {} runs each, interleaved; median (p90).\n\n\
             | workload | module | exit | cold wrun | cold reference | ratio | cold reference, Winch | compile wrun | compile reference | ratio | warm wrun | warm reference | ratio | warm reference, epoch checks |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            self.measured_at, self.runs, self.runs
        );
        for row in &self.rows {
            md.push_str(&format!(
                "| {} | {:.1} MB | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} ({}) |\n",
                row.workload,
                row.module_bytes as f64 / 1e6,
                row.exit_code.map_or("-".into(), |c| c.to_string()),
                seconds(row.cold_wrun),
                seconds(row.cold_reference),
                ratio(row.cold_wrun, row.cold_reference),
                row.cold_reference_winch.map_or("-".into(), seconds),
                seconds(row.compile_wrun),
                seconds(row.compile_reference),
                ratio(row.compile_wrun, row.compile_reference),
                seconds(row.warm_wrun.median),
                seconds(row.warm_wrun.p90),
                seconds(row.warm_reference.median),
                seconds(row.warm_reference.p90),
                ratio(row.warm_wrun.median, row.warm_reference.median),
                seconds(row.warm_reference_epoch.median),
                seconds(row.warm_reference_epoch.p90),
            ));
        }
        md.push_str(&format!("\n{}\n", self.machine.markdown()));
        md
    }
}
