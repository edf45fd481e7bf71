//! `wrun-bench table`: the classic "VM vs container" comparison, reproduced from the measured
//! start-up and density results, with a Wasm column.

use crate::density::DensityReport;
use crate::report::StartupReport;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Where startup.json and density.json are
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    results: PathBuf,
    /// The comparison page to write
    #[arg(long, default_value_os_t = crate::repo().join("docs/comparison.md"))]
    out: PathBuf,
}

/// What the Docker and Podman ratios are.
const TOOLS: &str = "Start to exit of `docker run --rm` and `podman run --rm` (median), wrun as \
                     the tool's OCI runtime against runc and crun through the same tool, from \
                     the same start-up run:";

/// Where the generated part of the page ends and the part written by hand begins.
const KEPT_MARKER: &str = "<!-- written by hand below: `wrun-bench table` keeps it -->";

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "failed to read {} (run `wrun-bench startup` and `density` first)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("invalid results in {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let startup: StartupReport = read(&args.results.join("startup.json"))?;
    let density: DensityReport = read(&args.results.join("density.json"))?;
    let mut md = render(&startup, &density);
    // The page's hand-written part (after the marker) is kept as it is.
    if let Ok(page) = std::fs::read_to_string(&args.out) {
        if let Some(at) = page.find(KEPT_MARKER) {
            md.push('\n');
            md.push_str(&page[at..]);
        }
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &md)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    print!("{md}");
    Ok(())
}

fn ms(startup: &StartupReport, key: &str) -> Option<String> {
    let row = startup.row(key)?;
    Some(format!("{:.1} ms", row.median()?))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn render(startup: &StartupReport, density: &DensityReport) -> String {
    let vm_start = ms(startup, "microvm")
        .or_else(|| {
            ms(startup, "microvm-tcg").map(|t| format!("{t} (software-emulated TCG; KVM n/a here)"))
        })
        .unwrap_or_else(|| "n/a".into());
    let container_start = ms(startup, "runc").map_or("n/a".into(), |r| {
        format!(
            "{r} (`runc run`); {} (`crun run`)",
            ms(startup, "crun").unwrap_or("n/a".into())
        )
    });
    let wasm_start = ms(startup, "wasm-warm").map_or("n/a".into(), |w| {
        format!(
            "{w} (warm cache); {} (cold, compiling)",
            ms(startup, "wasm-cold").unwrap_or("n/a".into())
        )
    });
    let row = |key: &str| density.rows.iter().find(|r| r.key == key);
    let per = |key: &str| {
        row(key).map_or("n/a".into(), |r| {
            format!("{} ({} measured)", mib(r.pss_per_sandbox()), r.count)
        })
    };
    let vm_mem = row("microvm").map_or("n/a".into(), |r| {
        format!(
            "{} ({})",
            mib(r.pss_bytes as f64),
            if r.label.contains("TCG") {
                "TCG guest"
            } else {
                "KVM guest"
            }
        )
    });
    let images = crate::microvm::Images {
        dir: std::env::var_os("WRUN_BENCH_MICROVM")
            .map_or("/var/cache/wrun-bench/microvm".into(), PathBuf::from),
    };
    let vm_size = match images.size() {
        0 => "n/a".into(),
        bytes => format!(
            "{} (kernel + busybox initramfs; a distribution guest is GBs)",
            mib(bytes as f64)
        ),
    };
    let repo = crate::repo();
    let busybox = size_of(&repo.join("samples/build/busybox-oci.tar")).map_or("n/a".into(), |b| {
        format!("{} (busybox OCI image)", mib(b as f64))
    });
    let hello = size_of(&repo.join("samples/build/hello.wasm")).map_or("n/a".into(), |b| {
        format!("{:.0} KiB (the hello module)", b as f64 / 1024.0)
    });
    let tools = match startup.tool_ratios_markdown() {
        Some(table) => format!("\n## Through Docker and Podman\n\n{TOOLS}\n\n{table}"),
        None => String::new(),
    };
    let mut md = format!(
        "# Micro-VM vs container vs Wasm sandbox\n\n\
         The classic teaching table says virtual machines boot in minutes and cost hundreds of MB\n\
         each, while containers start in milliseconds and cost MBs. Here it is measured on this\n\
         machine, with a Wasm column: written by `wrun-bench table` from\n\
         [bench/startup.md](bench/startup.md) ({}) and [bench/density.md](bench/density.md) ({}).\n\n\
         {}\n\
         | | micro-VM | native container | Wasm sandbox (wrun) |\n\
         |---|---|---|---|\n\
         | start to exit (median) | {vm_start} | {container_start} | {wasm_start} |\n\
         | idle memory per instance (PSS) | {vm_mem} | {} (runc); wrun native: {} | {} |\n\
         | image size | {vm_size} | {busybox} | {hello} |\n\
         | isolation layers | hardware virtualization (EPT, VMX) + a guest kernel | namespaces, cgroups, seccomp, dropped capabilities (one shared kernel) | the Wasm sandbox (memory-safe, no ambient authority) **and** namespaces, cgroups, a seccomp allowlist, no capabilities |\n\
         | what runs | any OS | Linux binaries | WebAssembly modules and components (WASI) |\n\n\
         The kernel floor for the namespaces a sandbox uses (`unshare`) is {}; the engine alone\n\
         (instantiate and run in-process) takes {}. Idle memory of a native container counts its\n\
         process alone (`runc run -d` leaves no supervisor behind); wrun's figures include each\n\
         container's monitor process.\n",
        startup.measured_at,
        density.measured_at,
        startup.machine.markdown(),
        per("runc"),
        per("native"),
        per("wasm"),
        ms(startup, "floor").unwrap_or("n/a".into()),
        ms(startup, "engine").unwrap_or("n/a".into()),
    );
    md.push_str(&tools);
    md
}
