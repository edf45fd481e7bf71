//! `wrun-bench http`: the frontend-app sample served with `wrun run -d -p`: time from `run -d`
//! to the first 200, then requests/s and latency percentiles from a loopback keep-alive client.
//! `wasmtime serve` runs the same component in the same way when the wasmtime CLI is installed.

use crate::fixtures::Fixtures;
use crate::stats::Summary;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Requests per server
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Client connections sending at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Where http.{md,json} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpRow {
    pub label: String,
    pub first_response_ms: Option<f64>,
    pub requests_per_second: Option<f64>,
    pub latency_ms: Option<Summary>,
    pub error: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let fx = Fixtures::prepare()?;
    let module = crate::repo().join("samples/build/frontend-app.wasm");
    if !module.exists() {
        bail!(
            "{} is missing: run scripts/build-samples.sh",
            module.display()
        );
    }
    fx.wrun_ok(&["compile", module.to_str().unwrap()])?;
    let mut rows = Vec::new();
    let port = crate::fixtures::free_port()?;
    let publish = format!("127.0.0.1:{port}:8080");
    let started = Instant::now();
    fx.wrun_ok(&[
        "run",
        "-d",
        "--name",
        "bench-http",
        "-e",
        "REPLICA=bench",
        "-p",
        &publish,
        module.to_str().unwrap(),
    ])?;
    let wrun_row = measure("wrun run -d -p (frontend-app)", port, started, &args);
    fx.wrun_ok(&["rm", "-f", "bench-http"])?;
    rows.push(wrun_row);
    rows.push(match which("wasmtime") {
        Some(wasmtime) => {
            let port = crate::fixtures::free_port()?;
            let started = Instant::now();
            let mut server = Command::new(wasmtime)
                .args([
                    "serve",
                    "--addr",
                    &format!("127.0.0.1:{port}"),
                    "-Scli",
                    "--env",
                    "REPLICA=bench",
                ])
                .arg(&module)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let row = measure("wasmtime serve (same component)", port, started, &args);
            stop(&mut server);
            row
        }
        None => HttpRow {
            label: "wasmtime serve".into(),
            first_response_ms: None,
            requests_per_second: None,
            latency_ms: None,
            error: Some("the wasmtime CLI is not installed (not packaged in Debian 12)".into()),
        },
    });
    let md = markdown(&rows, &args);
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("http.json"),
        serde_json::to_vec_pretty(&rows)?,
    )?;
    std::fs::write(args.out.join("http.md"), &md)?;
    print!("{md}");
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|p| p.is_file())
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn measure(label: &str, port: u16, started: Instant, args: &Args) -> HttpRow {
    let attempt = || -> Result<HttpRow> {
        let first = wait_first_ok(port, started)?;
        let (latencies, per_second) =
            crate::fixtures::load(port, args.requests, args.concurrency, client)?;
        Ok(HttpRow {
            label: label.into(),
            first_response_ms: Some(first.as_secs_f64() * 1e3),
            requests_per_second: Some(per_second),
            latency_ms: Summary::of(&latencies),
            error: None,
        })
    };
    attempt().unwrap_or_else(|e| HttpRow {
        label: label.into(),
        first_response_ms: None,
        requests_per_second: None,
        latency_ms: None,
        error: Some(format!("{e:#}")),
    })
}

fn wait_first_ok(port: u16, started: Instant) -> Result<Duration> {
    loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            if request(&mut stream).is_ok_and(|status| status == 200) {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("no 200 from port {port} within 30 s");
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// `count` keep-alive GETs on one connection; each latency in ms.
fn client(port: u16, count: usize) -> Result<Vec<f64>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context("connect")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let sent = Instant::now();
        let status = request(&mut stream)?;
        if status != 200 {
            bail!("status {status}");
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    Ok(latencies)
}

/// One GET /api/info on a kept-alive connection; reads the whole (chunked or sized) response.
fn request(stream: &mut TcpStream) -> Result<u16> {
    stream.write_all(b"GET /api/info HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed mid-response");
        }
        response.extend_from_slice(&buf[..n]);
        if complete(&response) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")
}

fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

fn markdown(rows: &[HttpRow], args: &Args) -> String {
    let mut md = format!(
        "# HTTP\n\nThe frontend-app sample's `/api/info`, {} requests per server from {} keep-alive \
         loopback connections, by `wrun-bench http` ({}).\n\n{}\n\
         | server | run to first 200 | requests/s | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n",
        args.requests,
        args.concurrency,
        crate::report::now_utc(),
        crate::machine::Machine::describe().markdown()
    );
    for r in rows {
        match (&r.latency_ms, r.first_response_ms, r.requests_per_second) {
            (Some(l), Some(first), Some(rps)) => md.push_str(&format!(
                "| {} | {first:.1} ms | {rps:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n",
                r.label, l.median, l.p90, l.p99, l.max
            )),
            _ => md.push_str(&format!(
                "| {} | n/a | n/a | n/a | n/a | n/a | n/a |\n",
                r.label
            )),
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
