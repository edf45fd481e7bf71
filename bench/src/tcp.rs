//! `wrun-bench tcp`: the tcp-kv sample (a `std::net` server) started with `wrun run -d -p`,
//! as a wasm32-wasip2 component (it binds through wasi:sockets) and as a wasm32-wasip1 module
//! (it serves the listener pre-opened at fd 3), and the same server built natively under `runc run -d` (host network, as `docker run
//! --network host`: neither row pays for a network namespace on the data path), in
//! interleaved rounds: time from the start command to the first answered PING, then
//! requests/s and latency from concurrent loopback clients.

use crate::fixtures::Fixtures;
use crate::stats::Summary;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per server and round
    #[arg(long, default_value_t = 20000)]
    requests: usize,
    /// Client connections sending at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Interleaved rounds (each server started afresh in each)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where tcp.{md,json} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpRow {
    pub label: String,
    /// Per round: start command to the first PONG.
    pub first_answer_ms: Vec<f64>,
    /// Per round.
    pub requests_per_second: Vec<f64>,
    /// Every request of every round.
    pub latency_ms: Option<Summary>,
    pub error: Option<String>,
}

/// One server under test: how to start it on a host port, and how to stop it.
trait Server {
    fn label(&self) -> &'static str;
    fn start(&self, port: u16) -> Result<()>;
    fn stop(&self) -> Result<()>;
}

struct Wrun<'a> {
    fx: &'a Fixtures,
    module: PathBuf,
    label: &'static str,
}

impl Server for Wrun<'_> {
    fn label(&self) -> &'static str {
        self.label
    }

    fn start(&self, port: u16) -> Result<()> {
        let publish = format!("127.0.0.1:{port}:7000");
        let module = self.module.to_str().context("module path")?;
        self.fx
            .wrun_ok(&["run", "-d", "--name", "bench-tcp", "-p", &publish, module])
            .map(drop)
    }

    fn stop(&self) -> Result<()> {
        self.fx.wrun_ok(&["rm", "-f", "bench-tcp"]).map(drop)
    }
}

struct Runc {
    bundle: PathBuf,
}

impl Server for Runc {
    fn label(&self) -> &'static str {
        "runc run -d (tcp-kv built natively, host network)"
    }

    fn start(&self, port: u16) -> Result<()> {
        set_native_address(&self.bundle, &format!("127.0.0.1:{port}"))?;
        run_ok(
            Command::new("runc")
                .args(["run", "-d", "--bundle"])
                .arg(&self.bundle)
                .arg("bench-tcp"),
        )
    }

    fn stop(&self) -> Result<()> {
        run_ok(Command::new("runc").args(["delete", "-f", "bench-tcp"]))
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.requests == 0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--requests, --concurrency and --rounds must be at least 1");
    }
    let samples = crate::repo().join("samples/build");
    let (module, native) = (samples.join("tcp-kv.wasm"), samples.join("tcp-kv.native"));
    let module_p1 = samples.join("tcp-kv.p1.wasm");
    for sample in [&module, &module_p1, &native] {
        if !sample.exists() {
            bail!(
                "{} is missing: run scripts/build-samples.sh",
                sample.display()
            );
        }
    }
    let fx = Fixtures::prepare()?;
    for module in [&module, &module_p1] {
        fx.wrun_ok(&["compile", module.to_str().context("module path")?])?;
    }
    let bundle = fx.dir.path().join("tcp-kv-bundle");
    make_native_bundle(&bundle, &native)?;
    let component = Wrun {
        fx: &fx,
        module,
        label: "wrun run -d -p (tcp-kv.wasm, wasm32-wasip2)",
    };
    let preview1 = Wrun {
        fx: &fx,
        module: module_p1,
        label: "wrun run -d -p (tcp-kv.p1.wasm, wasm32-wasip1)",
    };
    let servers: [&dyn Server; 3] = [&component, &preview1, &Runc { bundle }];
    let mut rows: Vec<(TcpRow, Vec<f64>)> = servers
        .iter()
        .map(|s| (empty_row(s.label()), Vec::new()))
        .collect();
    // One start of each, not measured: a published run's code has interruption checks, a
    // variant its first start compiles and caches; runc's binary and bundle come into the cache.
    for server in servers {
        let port = crate::fixtures::free_port()?;
        server.start(port)?;
        wait_first_answer(port, Instant::now())?;
        server.stop()?;
    }
    for _ in 0..args.rounds {
        for (server, (row, latencies)) in servers.iter().zip(rows.iter_mut()) {
            if row.error.is_some() {
                continue;
            }
            let measured = round(*server, &args);
            let stopped = server.stop();
            match measured.and_then(|m| stopped.map(|()| m)) {
                Ok((first, rps, mut round_latencies)) => {
                    row.first_answer_ms.push(first);
                    row.requests_per_second.push(rps);
                    latencies.append(&mut round_latencies);
                }
                Err(e) => row.error = Some(format!("{e:#}")),
            }
        }
    }
    let rows: Vec<TcpRow> = rows
        .into_iter()
        .map(|(mut row, latencies)| {
            row.latency_ms = Summary::of(&latencies);
            row
        })
        .collect();
    let md = markdown(&rows, &args);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("tcp.json"), serde_json::to_vec_pretty(&rows)?)?;
    std::fs::write(args.out.join("tcp.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn empty_row(label: &str) -> TcpRow {
    TcpRow {
        label: label.into(),
        first_answer_ms: Vec::new(),
        requests_per_second: Vec::new(),
        latency_ms: None,
        error: None,
    }
}

/// Starts `server`, waits for its first answer, loads it: (first answer ms, requests/s,
/// latencies ms).
fn round(server: &dyn Server, args: &Args) -> Result<(f64, f64, Vec<f64>)> {
    let port = crate::fixtures::free_port()?;
    let started = Instant::now();
    server.start(port)?;
    let first = wait_first_answer(port, started)?;
    let (latencies, rps) = crate::fixtures::load(port, args.requests, args.concurrency, client)?;
    Ok((first.as_secs_f64() * 1e3, rps, latencies))
}

fn wait_first_answer(port: u16, started: Instant) -> Result<Duration> {
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut conn = BufReader::new(stream);
            if ping(&mut conn).is_ok() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("no answer from port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// `count` PINGs on one connection, each answered before the next; each latency in ms.
fn client(port: u16, count: usize) -> Result<Vec<f64>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = BufReader::new(stream);
    (0..count)
        .map(|_| {
            let sent = Instant::now();
            ping(&mut conn)?;
            Ok(sent.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

fn ping(conn: &mut BufReader<TcpStream>) -> Result<()> {
    conn.get_mut().write_all(b"PING\n")?;
    let mut answer = String::new();
    conn.read_line(&mut answer)?;
    if answer != "PONG\n" {
        bail!("answered {answer:?}");
    }
    Ok(())
}

/// A root holding only the static native server, and `runc spec`'s config without a network
/// namespace.
fn make_native_bundle(bundle: &Path, native: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    std::fs::copy(native, rootfs.join("tcp-kv")).context("copy the native server")?;
    run_ok(Command::new("runc").args(["spec", "--bundle"]).arg(bundle))?;
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = false.into();
    spec["root"]["readonly"] = true.into();
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "network");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

fn set_native_address(bundle: &Path, address: &str) -> Result<()> {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["args"] = serde_json::json!(["/tcp-kv", address]);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// Runs `command` to its end. Its stderr goes to a file, not a pipe: `runc run -d` leaves the
/// container holding the streams it was given, and a pipe would never reach its end.
fn run_ok(command: &mut Command) -> Result<()> {
    let mut errors = tempfile::tempfile()?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errors.try_clone()?)
        .status()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !status.success() {
        let mut text = String::new();
        std::io::Seek::rewind(&mut errors)?;
        std::io::Read::read_to_string(&mut errors, &mut text)?;
        bail!("{command:?} failed: {}", text.trim());
    }
    Ok(())
}

fn median(samples: &[f64]) -> Option<f64> {
    Summary::of(samples).map(|s| s.median)
}

fn markdown(rows: &[TcpRow], args: &Args) -> String {
    let mut md = format!(
        "# Plain TCP\n\nThe tcp-kv sample (`samples/tcp-kv`, one `std::net` server), {} rounds \
         interleaved after one unmeasured start of each, each server started afresh per round; {} PINGs per round from {} \
         loopback connections, each answered before the next; by `wrun-bench tcp` ({}).\n\n{}\n\
         | server | start to first answer (median) | requests/s (median) | p50 | p90 | p99 | max |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        args.rounds,
        args.requests,
        args.concurrency,
        crate::report::now_utc(),
        crate::machine::Machine::describe().markdown()
    );
    for r in rows {
        let first = median(&r.first_answer_ms);
        let rps = median(&r.requests_per_second);
        match (&r.latency_ms, first, rps) {
            (Some(l), Some(first), Some(rps)) => md.push_str(&format!(
                "| {} | {first:.1} ms | {rps:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {:.2} ms |\n",
                r.label, l.median, l.p90, l.p99, l.max
            )),
            _ => md.push_str(&format!(
                "| {} | n/a | n/a | n/a | n/a | n/a | n/a |\n",
                r.label
            )),
        }
    }
    if let Some((native, wasm_rows)) = rows.split_last() {
        for wasm in wasm_rows {
            if let (Some(a), Some(b)) = (
                median(&wasm.requests_per_second),
                median(&native.requests_per_second),
            ) {
                md.push_str(&format!(
                    "\n{} serves {:.2}× the native server's requests/s.\n",
                    wasm.label,
                    a / b
                ));
            }
        }
    }
    for r in rows.iter().filter(|r| r.error.is_some()) {
        md.push_str(&format!(
            "\n- {}: {}\n",
            r.label,
            r.error.as_deref().unwrap_or_default()
        ));
    }
    md
}
