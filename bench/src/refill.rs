//! `wrun-bench refill`: `wrun run hello.wasm` started at a steady rate against a `wrun daemon`,
//! to see whether the pool refills as fast as sandboxes are claimed: how many starts a pooled
//! sandbox took (the rest ran standalone, as the pool's fallback), and their start-to-exit
//! times.

use crate::fixtures::Fixtures;
use crate::pool::PoolDaemon;
use crate::stats::Summary;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Starts per second to try, one after the other
    #[arg(long, value_delimiter = ',', default_values_t = [100, 200])]
    rates: Vec<u32>,
    /// Pool sizes (`wrun daemon --pool`) to try each rate with
    #[arg(long, value_delimiter = ',', default_values_t = [4, 8, 16])]
    pools: Vec<usize>,
    /// How long each rate is kept up
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Where refill.{md,json} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefillRow {
    pub pool: usize,
    pub rate: u32,
    pub starts: usize,
    pub pooled: usize,
    pub failed: usize,
    pub pooled_ms: Option<Summary>,
    pub standalone_ms: Option<Summary>,
}

pub fn run(args: Args) -> Result<()> {
    if args.rates.contains(&0) || args.pools.contains(&0) || args.seconds <= 0.0 {
        bail!("--rates, --pools and --seconds must be positive");
    }
    let fx = Fixtures::prepare()?;
    let mut rows = Vec::new();
    for &pool in &args.pools {
        let root = fx.dir.path().join(format!("pool-{pool}"));
        let daemon = PoolDaemon::start(&fx.wrun, root, pool, &fx.hello)?;
        for &rate in &args.rates {
            // A full pool at the start of each rate.
            std::thread::sleep(Duration::from_secs(1));
            let row = measure(&daemon, &fx, pool, rate, args.seconds)?;
            eprintln!(
                "pool {pool}, {rate}/s: {} of {} pooled, {} failed",
                row.pooled, row.starts, row.failed
            );
            rows.push(row);
        }
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("refill.md"), markdown(&rows, &args))?;
    std::fs::write(
        args.out.join("refill.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    println!("{}", markdown(&rows, &args));
    Ok(())
}

/// Starts `rate` runs a second for `seconds`, each on a schedule of its own (not waiting for
/// the one before), then waits for all of them.
fn measure(
    daemon: &PoolDaemon,
    fx: &Fixtures,
    pool: usize,
    rate: u32,
    seconds: f64,
) -> Result<RefillRow> {
    let starts = (f64::from(rate) * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let began = Instant::now();
    let mut waiters = Vec::with_capacity(starts);
    for i in 0..starts {
        let due = began + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let child = daemon
            .run_cmd(&fx.hello)
            .env("WRUN_TIMINGS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start wrun run")?;
        waiters.push(std::thread::spawn(move || {
            let out = child.wait_with_output();
            (started.elapsed(), out)
        }));
    }
    let (mut pooled_ms, mut standalone_ms, mut failed) = (Vec::new(), Vec::new(), 0);
    for waiter in waiters {
        let (took, out) = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("a waiter panicked"))?;
        let out: Output = out.context("failed to wait for wrun run")?;
        let hello = String::from_utf8_lossy(&out.stdout).contains("Hello");
        if !out.status.success() || !hello {
            failed += 1;
            continue;
        }
        let ms = took.as_secs_f64() * 1e3;
        if String::from_utf8_lossy(&out.stderr).contains("pool: finished") {
            pooled_ms.push(ms);
        } else {
            standalone_ms.push(ms);
        }
    }
    Ok(RefillRow {
        pool,
        rate,
        starts,
        pooled: pooled_ms.len(),
        failed,
        pooled_ms: Summary::of(&pooled_ms),
        standalone_ms: Summary::of(&standalone_ms),
    })
}

fn markdown(rows: &[RefillRow], args: &Args) -> String {
    let mut md = format!(
        "# Pool refill\n\n`wrun run hello.wasm` started at a steady rate for {} s against `wrun \
         daemon --pool N` (each start on its own schedule, not waiting for the one before; the \
         pool full at the start of each rate), by `wrun-bench refill` ({}). A start the pool \
         cannot take (no sandbox ready) runs standalone.\n\n{}\n\
         | pool | starts/s | starts | pooled | standalone | failed | pooled median | standalone median |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.seconds,
        crate::report::now_utc(),
        crate::machine::Machine::describe().markdown()
    );
    let median = |s: &Option<Summary>| {
        s.as_ref()
            .map_or("n/a".to_string(), |s| format!("{:.2} ms", s.median))
    };
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} ({:.0}%) | {} | {} | {} | {} |\n",
            r.pool,
            r.rate,
            r.starts,
            r.pooled,
            100.0 * r.pooled as f64 / r.starts.max(1) as f64,
            r.starts - r.pooled - r.failed,
            r.failed,
            median(&r.pooled_ms),
            median(&r.standalone_ms),
        ));
    }
    md
}
