//! `wrun-bench startup`: every row runs the same hello (or busybox `true`) in turn, round after
//! round (A B C A B C …), so drift in the machine hits all rows alike. Warm-up rounds are
//! discarded.

use crate::containerd::Containerd;
use crate::engine_floor::EngineFloor;
use crate::fixtures::{self, Fixtures};
use crate::microvm::{self, Accel};
use crate::oci_tools::{self, Dockerd, ImageTars, Podman};
use crate::pool::PoolDaemon;
use crate::report::{RowResult, StartupReport};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Measured runs per row
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Warm-up rounds, discarded
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Rows to leave out, by key (bare, floor, engine, wasm-warm, wasm-pooled, wasm-cold, native, crun,
    /// runc, ctr-wrun, ctr-wrun-pooled, ctr-runc, docker-wrun, docker-wrun-wasm, docker-runc,
    /// podman-wrun, podman-wrun-wasm, podman-crun, podman-runc, microvm)
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Pause before each run, so that every row starts on a settled host: the kernel finishes
    /// tearing the previous run's cgroup down asynchronously, and whichever run comes next
    /// would otherwise wait for it (10+ ms after a compiling run here)
    #[arg(long, default_value_t = 100)]
    gap_ms: u64,
    /// Software-emulated (TCG) micro-VM boots to add, labelled, when KVM cannot boot the guest
    #[arg(long, default_value_t = 3)]
    tcg_runs: usize,
    /// Where startup.{md,json,svg} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
    /// File stem of the results
    #[arg(skip = "startup".to_string())]
    name: String,
    /// Rows measured on their own after the interleaved rounds (see `burst`)
    #[arg(skip)]
    alone: Vec<&'static str>,
}

/// `wrun-bench burst`: the start-up rows that need no daemon of another tool, back to back
/// (no pause between runs), many runs, for the tails (p90, p99) a burst of starts sees.
#[derive(clap::Args)]
pub struct BurstArgs {
    /// Measured runs per row
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Where burst.{md,json,svg} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
}

/// The rows a burst leaves out: cold compiles, and the tools whose own daemons dominate.
const NOT_IN_BURST: [&str; 12] = [
    "wasm-cold",
    "ctr-wrun",
    "ctr-wrun-pooled",
    "ctr-runc",
    "docker-wrun",
    "docker-wrun-wasm",
    "docker-runc",
    "podman-wrun",
    "podman-wrun-wasm",
    "podman-crun",
    "podman-runc",
    "microvm",
];

pub fn burst(args: BurstArgs) -> Result<()> {
    run(Args {
        runs: args.runs,
        warmup: 10,
        skip: NOT_IN_BURST.iter().map(|key| key.to_string()).collect(),
        gap_ms: 0,
        tcg_runs: 0,
        out: args.out,
        name: "burst".into(),
        // With no pause, a pooled run's refill (the daemon forking and warming the next
        // sandbox, ≈1 ms of CPU on 2 cores) would land on whichever row runs next.
        alone: vec!["wasm-pooled"],
    })
}

type Run<'a> = Box<dyn FnMut(usize) -> Result<Duration> + 'a>;

/// The rows through Docker: key, runtime (a name in dockerd's configuration), what runs.
const DOCKER_ROWS: [(&str, &str, Workload); 3] = [
    ("docker-wrun", "wrun", Workload::Busybox),
    ("docker-wrun-wasm", "wrun", Workload::Hello),
    ("docker-runc", "runc", Workload::Busybox),
];

/// The rows through Podman: key, runtime (a binary, given to Podman by its path), what runs.
const PODMAN_ROWS: [(&str, &str, Workload); 4] = [
    ("podman-wrun", "wrun", Workload::Busybox),
    ("podman-wrun-wasm", "wrun", Workload::Hello),
    ("podman-crun", "crun", Workload::Busybox),
    ("podman-runc", "runc", Workload::Busybox),
];

/// What a Docker or Podman row runs: busybox `true`, or the Wasm hello image.
#[derive(Clone, Copy)]
enum Workload {
    Busybox,
    Hello,
}

impl Workload {
    /// Image and command for `run`.
    fn args(self) -> &'static [&'static str] {
        match self {
            Workload::Busybox => &[oci_tools::BUSYBOX, "true"],
            Workload::Hello => &[oci_tools::HELLO],
        }
    }

    fn label(self, tool: &str, runtime: &str) -> String {
        match self {
            Workload::Busybox => format!("`{tool} run --rm --runtime {runtime}` busybox `true`"),
            Workload::Hello => format!("`{tool} run --rm --runtime {runtime}` Wasm hello image"),
        }
    }
}

/// One row of the table: what it runs, and what it measured.
struct Row<'a> {
    key: &'static str,
    label: String,
    run: Option<Run<'a>>,
    samples: Vec<f64>,
    error: Option<String>,
}

impl<'a> Row<'a> {
    fn new(key: &'static str, label: impl Into<String>, run: Run<'a>) -> Row<'a> {
        Row {
            key,
            label: label.into(),
            run: Some(run),
            samples: Vec::new(),
            error: None,
        }
    }

    fn unavailable(key: &'static str, label: impl Into<String>, reason: String) -> Row<'a> {
        Row {
            key,
            label: label.into(),
            run: None,
            samples: Vec::new(),
            error: Some(reason),
        }
    }

    fn measure(&mut self, round: usize, keep: bool) {
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match run(round) {
            Ok(elapsed) if keep => self.samples.push(elapsed.as_secs_f64() * 1e3),
            Ok(_) => {}
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                self.run = None;
            }
        }
    }
}

/// wrun's own kernel work for one standalone start (namespaces, cgroup, empty root) and
/// nothing else: how far below the `unshare` floor a start doing that work can go.
fn kernel_steps_row<'a>(scratch: &Path) -> Row<'a> {
    const KEY: &str = "kernel-steps";
    const LABEL: &str = "wrun's kernel steps alone: its namespaces, cgroup and empty root, no engine (`wrun-kernel-steps`)";
    let mount_point = scratch.join("kernel-steps-root");
    let binary = match crate::sibling_binary("wrun-kernel-steps") {
        Ok(binary) => binary,
        Err(e) => return Row::unavailable(KEY, LABEL, format!("{e:#}")),
    };
    if let Err(e) = std::fs::create_dir_all(&mount_point) {
        return Row::unavailable(KEY, LABEL, e.to_string());
    }
    Row::new(
        KEY,
        LABEL,
        Box::new(move |_| {
            let mut cmd = Command::new(&binary);
            cmd.arg(&mount_point).arg("wrun-bench");
            time_command(cmd)
        }),
    )
}

/// Spawns `cmd` with no input or output and times it to its exit, which must be success.
fn time_command(mut cmd: Command) -> Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

pub fn run(args: Args) -> Result<()> {
    fixtures::enter_private_mount_namespace()?;
    let fx = Fixtures::prepare()?;
    let skip = |key: &str| args.skip.iter().any(|s| s == key);
    let hello = fx.hello.to_str().unwrap().to_string();
    let bundle = fx.bundle.to_str().unwrap().to_string();
    let state = fx.dir.path().to_path_buf();
    let ctd = if skip("ctr-wrun") && skip("ctr-runc") {
        None
    } else {
        Some(Containerd::with_images(&fx, &["hello:v1"]))
    };
    let images = if skip("microvm") {
        None
    } else {
        Some(microvm::Images::ensure())
    };
    let pool = (!skip("wasm-pooled") || !skip("ctr-wrun-pooled"))
        .then(|| PoolDaemon::start(&fx.wrun, fx.dir.path().join("pool"), 4, &fx.hello));
    let want_docker = DOCKER_ROWS.iter().any(|(key, ..)| !skip(key));
    let want_podman = PODMAN_ROWS.iter().any(|(key, ..)| !skip(key));
    let tars = (want_docker || want_podman).then(|| {
        ImageTars::make(fx.dir.path(), &fx.bundle.join("rootfs"), &fx.hello)
            .map_err(|e| format!("{e:#}"))
    });
    let docker = want_docker.then(|| match tars.as_ref().unwrap() {
        Ok(tars) => Dockerd::start(&fx.dir.path().join("docker"), &fx.wrun, tars)
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.clone()),
    });
    let podman = want_podman.then(|| match tars.as_ref().unwrap() {
        Ok(tars) => Podman::start(&fx.dir.path().join("podman"), &fx.wrun, tars)
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.clone()),
    });
    let mut rows: Vec<Row> = Vec::new();

    rows.push(Row::new(
        "bare",
        "fork+exec, static busybox `echo` (no isolation)",
        Box::new(|_| time_command(command("/bin/busybox", &["echo", "hello"]))),
    ));
    rows.push(Row::new(
        "floor",
        "`unshare` pid+mount+uts+ipc+net+cgroup (kernel floor)",
        Box::new(|_| {
            time_command(command(
                "unshare",
                &[
                    "--pid",
                    "--fork",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--net",
                    "--cgroup",
                    "/bin/busybox",
                    "true",
                ],
            ))
        }),
    ));
    rows.push(kernel_steps_row(fx.dir.path()));
    match EngineFloor::load(&fx.hello, &fx.root().join("cache")) {
        Ok(floor) => rows.push(Row::new(
            "engine",
            "engine floor: in-process instantiate+run (no sandbox)",
            Box::new(move |_| floor.run_once()),
        )),
        Err(e) => rows.push(Row::unavailable("engine", "engine floor", format!("{e:#}"))),
    }
    let fx_ref = &fx;
    let hello_ref = hello.clone();
    rows.push(Row::new(
        "wasm-warm",
        "wrun Wasm hello, warm AOT cache",
        Box::new(move |_| {
            time_command(fx_ref.wrun_cmd(&["run", "--cgroup-parent", "wrun-bench", &hello_ref]))
        }),
    ));
    let hello_ref = hello.clone();
    rows.push(Row::new(
        "wasm-cold",
        "wrun Wasm hello, cold (cache cleared before each run)",
        Box::new(move |_| {
            let cache = fx_ref.root().join("cache");
            if cache.exists() {
                std::fs::remove_dir_all(&cache)?;
            }
            time_command(fx_ref.wrun_cmd(&["run", "--cgroup-parent", "wrun-bench", &hello_ref]))
        }),
    ));
    match &pool {
        Some(Ok(daemon)) => {
            let hello_path = fx.hello.clone();
            rows.push(Row::new(
                "wasm-pooled",
                "wrun Wasm hello, pooled (`wrun daemon --pool 4`), warm",
                Box::new(move |_| time_command(daemon.run_cmd(&hello_path))),
            ))
        }
        Some(Err(e)) => rows.push(Row::unavailable(
            "wasm-pooled",
            "wrun Wasm hello, pooled",
            format!("{e:#}"),
        )),
        None => {}
    }
    let bundle_ref = bundle.clone();
    rows.push(Row::new(
        "native",
        "wrun native busybox `true` (OCI bundle)",
        Box::new(move |_| {
            time_command(fx_ref.wrun_cmd(&[
                "run",
                "--cgroup-parent",
                "wrun-bench",
                "--bundle",
                &bundle_ref,
            ]))
        }),
    ));
    for runtime in ["crun", "runc"] {
        let root = state.join(runtime).display().to_string();
        let bundle = bundle.clone();
        rows.push(Row::new(
            runtime,
            format!("`{runtime} run` busybox `true` (same bundle)"),
            Box::new(move |round| {
                let id = format!("wrun-bench-{runtime}-{}-{round}", std::process::id());
                time_command(command(
                    runtime,
                    &["--root", &root, "run", "-b", &bundle, &id],
                ))
            }),
        ));
    }
    match &ctd {
        Some(Ok((ctd, config))) => {
            rows.push(ctr_wrun_row(
                ctd,
                "ctr-wrun",
                "`ctr run --rm` io.containerd.wrun.v1, Wasm hello image",
                config,
            ));
            if let Some(Ok(daemon)) = &pool {
                // The shim's `wrun` finds the daemon through the state root its config names.
                let pooled_config = fx.dir.path().join("wrun-pooled.toml");
                let root = format!("root = \"{}\"\n", daemon.root().display());
                match std::fs::write(&pooled_config, root) {
                    Ok(()) => rows.push(ctr_wrun_row(
                        ctd,
                        "ctr-wrun-pooled",
                        "`ctr run --rm` io.containerd.wrun.v1, Wasm hello image, pooled",
                        &pooled_config,
                    )),
                    Err(e) => rows.push(Row::unavailable(
                        "ctr-wrun-pooled",
                        "`ctr run --rm` io.containerd.wrun.v1, pooled",
                        e.to_string(),
                    )),
                }
            }
            rows.push(Row::new(
                "ctr-runc",
                "`ctr run --rm` io.containerd.runc.v2, busybox `true`",
                Box::new(move |round| {
                    let id = format!("bench-runc-{round}");
                    time_command(ctd.ctr(&[
                        "run",
                        "--rm",
                        "--runtime",
                        "io.containerd.runc.v2",
                        "docker.io/library/busybox:latest",
                        &id,
                        "true",
                    ]))
                }),
            ));
        }
        Some(Err(e)) => {
            let reason = format!("{e:#}");
            rows.push(Row::unavailable(
                "ctr-wrun",
                "`ctr run --rm` io.containerd.wrun.v1",
                reason.clone(),
            ));
            rows.push(Row::unavailable(
                "ctr-runc",
                "`ctr run --rm` io.containerd.runc.v2",
                reason,
            ));
        }
        None => {}
    }
    for (key, runtime, workload) in DOCKER_ROWS {
        let label = workload.label("docker", runtime);
        rows.push(match &docker {
            None => continue,
            Some(Err(e)) => Row::unavailable(key, label, e.clone()),
            Some(Ok(docker)) => Row::new(
                key,
                label,
                Box::new(move |_| time_command(docker.run(runtime, workload.args()))),
            ),
        });
    }
    for (key, runtime, workload) in PODMAN_ROWS {
        let label = workload.label("podman", runtime);
        rows.push(match &podman {
            None => continue,
            Some(Err(e)) => Row::unavailable(key, label, e.clone()),
            Some(Ok(podman)) => {
                let binary = match runtime {
                    "wrun" => Some(podman.wrun().to_path_buf()),
                    other => oci_tools::on_path(other),
                };
                match binary {
                    Some(binary) => Row::new(
                        key,
                        label,
                        Box::new(move |_| time_command(podman.run(&binary, workload.args()))),
                    ),
                    None => Row::unavailable(key, label, format!("{runtime} is not installed")),
                }
            }
        });
    }
    let mut tcg_needed = None;
    match &images {
        Some(Ok(images)) if microvm::kvm_usable() => {
            match microvm::boot_once(images, Accel::Kvm, Duration::from_secs(20)) {
                Ok(_) => rows.push(Row::new(
                    "microvm",
                    "micro-VM: QEMU microvm + KVM, kernel + busybox initramfs, to power-off",
                    Box::new(move |_| {
                        microvm::boot_once(images, Accel::Kvm, Duration::from_secs(60))
                    }),
                )),
                Err(e) => {
                    rows.push(Row::unavailable(
                        "microvm",
                        "micro-VM: QEMU microvm + KVM",
                        format!("KVM boot failed: {e:#}"),
                    ));
                    tcg_needed = Some(images);
                }
            }
        }
        Some(Ok(images)) => {
            rows.push(Row::unavailable(
                "microvm",
                "micro-VM: QEMU microvm + KVM",
                "/dev/kvm is absent".into(),
            ));
            tcg_needed = Some(images);
        }
        Some(Err(e)) => rows.push(Row::unavailable("microvm", "micro-VM", format!("{e:#}"))),
        None => {}
    }
    rows.retain(|r| !skip(r.key));

    let (alone, mut interleaved): (Vec<&mut Row>, Vec<&mut Row>) =
        rows.iter_mut().partition(|r| args.alone.contains(&r.key));
    for round in 0..args.warmup + args.runs {
        for row in interleaved.iter_mut() {
            std::thread::sleep(Duration::from_millis(args.gap_ms));
            row.measure(round, round >= args.warmup);
        }
    }
    for row in alone {
        for round in 0..args.warmup + args.runs {
            std::thread::sleep(Duration::from_millis(args.gap_ms));
            row.measure(round, round >= args.warmup);
        }
    }
    if let Some(images) = tcg_needed.filter(|_| args.tcg_runs > 0) {
        let mut row = Row::new(
            "microvm-tcg",
            "micro-VM: QEMU microvm, **software-emulated (TCG), not KVM**",
            Box::new(move |_| microvm::boot_once(images, Accel::Tcg, Duration::from_secs(120))),
        );
        for round in 0..args.tcg_runs {
            row.measure(round, true);
        }
        rows.push(row);
    }

    let timeline = if skip("wasm-warm") {
        None
    } else {
        start_path_timeline(&fx, &hello)
    };
    let results: Vec<RowResult> = rows
        .into_iter()
        .map(|r| RowResult::new(r.key, r.label, &r.samples, r.error))
        .collect();
    let mut report = StartupReport::new(args.runs, args.warmup, args.gap_ms, results);
    report.timeline = timeline;
    report.measured_alone = args.alone.iter().map(|key| key.to_string()).collect();
    report.code_pages = pool.as_ref().and_then(|p| p.as_ref().ok()?.code_pages());
    // The tools the Docker and Podman rows went through, with the machine's.
    let tools = [
        (matches!(docker, Some(Ok(_))), &["dockerd"][..]),
        (matches!(podman, Some(Ok(_))), &["podman", "conmon"]),
    ];
    for (used, programs) in tools {
        if used {
            let versions = programs.iter().filter_map(|p| oci_tools::version(p));
            report.machine.tools.extend(versions);
        }
    }
    report.write(&args.out, &args.name)?;
    print!("{}", report.markdown(&args.name));
    Ok(())
}

/// Where a warm Wasm start spends its time: wrun's own per-step timeline (`WRUN_TIMINGS=1`)
/// of one run on the settled host.
fn start_path_timeline(fx: &Fixtures, hello: &str) -> Option<Vec<String>> {
    std::thread::sleep(Duration::from_millis(200));
    let out = fx
        .wrun_cmd(&["run", "--cgroup-parent", "wrun-bench", hello])
        .env("WRUN_TIMINGS", "1")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("wrun-timing"))
        .map(|l| l.trim().to_string())
        .collect();
    (!lines.is_empty()).then_some(lines)
}

/// `ctr run --rm` of the Wasm hello image through wrun's shim with the wrun `config`.
fn ctr_wrun_row<'a>(ctd: &'a Containerd, key: &'static str, label: &str, config: &Path) -> Row<'a> {
    let config = config.display().to_string();
    Row::new(
        key,
        label,
        Box::new(move |round| {
            let id = format!("bench-{key}-{round}");
            time_command(ctd.ctr(&[
                "run",
                "--rm",
                "--runtime",
                "io.containerd.wrun.v1",
                "--runtime-config-path",
                &config,
                "docker.io/library/hello:v1",
                &id,
            ]))
        }),
    )
}
