//! `wrun-bench`: start-up latency and density of wrun measured side by side with runc, crun,
//! containerd, Docker, Podman and a KVM micro-VM, written as Markdown, JSON and SVG under
//! `docs/bench/`.

mod containerd;
mod density;
mod density_pods;
mod engine_floor;
mod fixtures;
mod http;
mod machine;
mod microvm;
mod oci_tools;
mod pool;
mod real;
mod refill;
mod report;
mod startup;
mod stats;
mod svg;
mod table;
mod tcp;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "wrun-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start-to-exit time of a hello workload under every runtime, interleaved
    Startup(startup::Args),
    /// The start-up rows back to back, no pause between runs: p50, p90 and p99 of a burst
    Burst(startup::BurstArgs),
    /// Start N idle sandboxes per runtime; time, memory, teardown
    Density(density::Args),
    /// Requests/s and latency of the HTTP sample under `wrun run -p`
    Http(http::Args),
    /// The plain TCP sample under `wrun run -d -p` and natively under runc, interleaved
    Tcp(tcp::Args),
    /// `wrun run` at a steady rate against `wrun daemon`: how many starts the pool takes
    Refill(refill::Args),
    /// Large real WASI programs cold, compiled and warm, against the reference wasmtime
    Real(real::Args),
    /// Write docs/comparison.md (micro-VM vs container vs Wasm) from the latest results
    Table(table::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Startup(args) => startup::run(args),
        Command::Burst(args) => startup::burst(args),
        Command::Density(args) => density::run(args),
        Command::Table(args) => table::run(args),
        Command::Http(args) => http::run(args),
        Command::Tcp(args) => tcp::run(args),
        Command::Refill(args) => refill::run(args),
        Command::Real(args) => real::run(args),
    };
    if let Err(e) = result {
        eprintln!("wrun-bench: {e:#}");
        std::process::exit(1);
    }
}

/// The repository root (results and samples are found from it).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the repository")
        .to_path_buf()
}

/// A binary built next to this one (`wrun`, the shim), or `$WRUN_BIN` for wrun.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    if name == "wrun" {
        if let Some(bin) = std::env::var_os("WRUN_BIN") {
            return Ok(bin.into());
        }
    }
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("`{name}` is not built next to {}", exe.display()))?;
    Ok(path)
}
