//! `wrun-bench density`: N idle sandboxes per runtime: the time to start them all, the memory
//! they hold (cgroup usage and PSS summed over their processes), then a teardown that must
//! leave nothing behind.

use crate::density_pods::{PodKind, PodRow, Pods};
use crate::fixtures::{self, Fixtures};
use crate::microvm::{self, Accel};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Sandboxes per row
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Sandboxes started at once
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Rows: wasm, native, runc, crun, ctr-wasm and ctr-runc (idle pods under containerd,
    /// shims counted), microvm (one idle VM)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wasm,native,runc,crun,ctr-wasm,ctr-runc,microvm"
    )]
    rows: Vec<String>,
    /// Where density.{md,json} go
    #[arg(long, default_value_os_t = crate::repo().join("docs/bench"))]
    out: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DensityRow {
    pub key: String,
    pub label: String,
    pub count: usize,
    pub parallel: usize,
    pub start_all_s: f64,
    pub per_second: f64,
    pub cgroup_bytes: Option<u64>,
    pub pss_bytes: u64,
    /// How much `MemAvailable` fell while the row's sandboxes were up (kernel memory too).
    #[serde(default)]
    pub mem_available_drop: Option<u64>,
    /// How much anonymous memory, page tables, kernel stacks and unreclaimable slab grew
    /// while the row's sandboxes were up: what the host cannot reclaim from them.
    #[serde(default)]
    pub unreclaimable_added: Option<u64>,
    pub processes: usize,
    pub teardown_s: f64,
    pub left_behind: Vec<String>,
}

impl DensityRow {
    pub fn pss_per_sandbox(&self) -> f64 {
        self.pss_bytes as f64 / self.count as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DensityReport {
    pub measured_at: String,
    pub machine: crate::machine::Machine,
    pub rows: Vec<DensityRow>,
    pub errors: Vec<(String, String)>,
}

/// How one runtime starts and removes an idle sandbox.
pub(crate) trait Subject: Sync {
    fn start(&self, n: usize) -> Result<()>;
    fn remove_all(&self, count: usize) -> Result<()>;
    /// The cgroup that holds every sandbox of the row (hierarchical usage).
    fn cgroup(&self) -> Option<String>;
}

struct Wrun<'a> {
    fx: &'a Fixtures,
    native: bool,
    cgroup_parent: String,
}

impl Subject for Wrun<'_> {
    fn start(&self, n: usize) -> Result<()> {
        let name = self.name(n);
        let mut args = vec![
            "run",
            "-d",
            "--cgroup-parent",
            &self.cgroup_parent,
            "--name",
            &name,
        ];
        if self.native {
            args.extend(["busybox", "sleep", "1000000"]);
        } else {
            args.push("idle:v1");
        }
        self.fx.wrun_ok(&args).map(|_| ())
    }

    fn remove_all(&self, count: usize) -> Result<()> {
        let names: Vec<String> = (0..count).map(|n| self.name(n)).collect();
        for chunk in names.chunks(200) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk.iter().map(String::as_str));
            self.fx.wrun_ok(&args)?;
        }
        Ok(())
    }

    fn cgroup(&self) -> Option<String> {
        Some(self.cgroup_parent.clone())
    }
}

impl Wrun<'_> {
    fn name(&self, n: usize) -> String {
        format!(
            "density-{}-{n}",
            if self.native { "native" } else { "wasm" }
        )
    }
}

/// runc or crun with `run -d`, one bundle per container over a shared busybox root.
struct OciRuntime {
    runtime: &'static str,
    state: PathBuf,
    bundles: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
}

impl OciRuntime {
    fn id(&self, n: usize) -> String {
        format!("wrun-density-{}-{}-{n}", self.runtime, std::process::id())
    }
}

impl Subject for OciRuntime {
    fn start(&self, n: usize) -> Result<()> {
        let id = self.id(n);
        let bundle = self.bundles.join(&id);
        std::fs::create_dir_all(&bundle)?;
        let template = self.bundles.join("template/config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(template)?)?;
        spec["root"]["path"] = self.rootfs.display().to_string().into();
        spec["linux"]["cgroupsPath"] = format!("/{}/{id}", self.cgroup_parent).into();
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        // The container keeps the descriptors it is given: a pipe would never reach EOF.
        let errors = bundle.join("run.err");
        let status = Command::new(self.runtime)
            .arg("--root")
            .arg(&self.state)
            .args(["run", "-d", "-b"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors)?)
            .status()?;
        if !status.success() {
            let message = std::fs::read_to_string(&errors).unwrap_or_default();
            bail!("{} run -d {id}: {}", self.runtime, message.trim());
        }
        Ok(())
    }

    fn remove_all(&self, count: usize) -> Result<()> {
        for n in 0..count {
            let status = Command::new(self.runtime)
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "-f", &self.id(n)])
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("{} delete -f {} failed", self.runtime, self.id(n));
            }
        }
        Ok(())
    }

    fn cgroup(&self) -> Option<String> {
        Some(self.cgroup_parent.clone())
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.count == 0 || args.parallel == 0 {
        bail!("--count and --parallel must be at least 1");
    }
    fixtures::enter_private_mount_namespace()?;
    // Detached sandboxes (wrun's monitors, runc's containers) are re-parented to us, so
    // their processes can be counted, reaped and checked for leaks.
    nix::sys::prctl::set_child_subreaper(true)?;
    let fx = Fixtures::prepare()?;
    let tag = std::process::id();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut pods: Option<Result<Pods>> = None;
    for key in &args.rows {
        if key.starts_with("ctr-") && pods.is_none() {
            pods = Some(Pods::start(&fx));
        }
        let serving: Vec<i32> = pods.iter().flatten().map(Pods::daemon_pid).collect();
        let result = match key.as_str() {
            "wasm" | "native" => {
                let subject = Wrun {
                    fx: &fx,
                    native: key == "native",
                    cgroup_parent: format!("wrun-density-{tag}/{key}"),
                };
                let label = if key == "wasm" {
                    "wrun Wasm (idle module, detached container)"
                } else {
                    "wrun native (busybox sleep, detached container)"
                };
                measure(key, label, &subject, &args, &serving)
            }
            "runc" | "crun" => oci_subject(&fx, runtime_name(key), tag).and_then(|subject| {
                let label = format!("{key} run -d (busybox sleep)");
                measure(key, &label, &subject, &args, &serving)
            }),
            "ctr-wasm" | "ctr-runc" => match pods.as_ref().expect("started above") {
                Ok(pods) => {
                    let (kind, label) = if key == "ctr-wasm" {
                        (
                            PodKind::WrunWasm,
                            "containerd pod, io.containerd.wrun.v1 (idle module)",
                        )
                    } else {
                        (
                            PodKind::RuncBusybox,
                            "containerd pod, io.containerd.runc.v2 (busybox sleep)",
                        )
                    };
                    let subject = PodRow {
                        pods,
                        kind,
                        cgroup_parent: format!("wrun-density-{tag}/{key}"),
                    };
                    measure(key, label, &subject, &args, &serving)
                }
                Err(e) => Err(anyhow::anyhow!("containerd: {e:#}")),
            },
            "microvm" => microvm_row(&args, &serving),
            other => Err(anyhow::anyhow!("unknown row `{other}`")),
        };
        match result {
            Ok(row) => rows.push(row),
            Err(e) => errors.push((key.clone(), format!("{e:#}"))),
        }
    }
    let report = DensityReport {
        measured_at: crate::report::now_utc(),
        machine: crate::machine::Machine::describe(),
        rows,
        errors,
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("density.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("density.md"), &md)?;
    print!("{md}");
    if report.rows.iter().any(|r| !r.left_behind.is_empty()) {
        bail!("a teardown left something behind (see the table)");
    }
    Ok(())
}

fn oci_subject(fx: &Fixtures, runtime: &'static str, tag: u32) -> Result<OciRuntime> {
    let bundles = fx.dir.path().join(format!("{runtime}-bundles"));
    let template = bundles.join("template");
    fixtures::make_busybox_bundle(&template, &["sleep", "1000000"])?;
    Ok(OciRuntime {
        runtime,
        state: fx.dir.path().join(format!("{runtime}-state")),
        rootfs: template.join("rootfs"),
        bundles,
        cgroup_parent: format!("wrun-density-{tag}/{runtime}"),
    })
}

fn runtime_name(key: &str) -> &'static str {
    match key {
        "runc" => "runc",
        _ => "crun",
    }
}

/// Starts the row, measures it, tears it down; `not_counted` are descendants that serve the
/// rows without being part of any sandbox (containerd itself).
fn measure(
    key: &str,
    label: &str,
    subject: &dyn Subject,
    args: &Args,
    not_counted: &[i32],
) -> Result<DensityRow> {
    let host_before = HostMemory::settled();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let failures: Vec<anyhow::Error> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.parallel)
            .map(|_| {
                scope.spawn(|| {
                    let mut failed = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= args.count {
                            return failed;
                        }
                        if let Err(e) = subject.start(n) {
                            failed.push(e);
                            return failed;
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let start_all = started.elapsed();
    let started_count = next.load(Ordering::SeqCst).min(args.count);
    if let Some(e) = failures.into_iter().next() {
        let _ = subject.remove_all(started_count);
        reap_zombies();
        return Err(e.context(format!("starting {label}")));
    }
    // Past wrun's `idle_memory::SETTLED_AFTER` for the last sandbox started: every process
    // is then as it stays while idle.
    std::thread::sleep(Duration::from_secs(2));
    let host_after = HostMemory::settled();
    let host_change = host_before.zip(host_after);
    let mem_available_drop =
        host_change.map(|(before, after)| before.available.saturating_sub(after.available));
    let unreclaimable_added =
        host_change.map(|(before, after)| after.unreclaimable.saturating_sub(before.unreclaimable));
    let mut processes = descendants();
    processes.retain(|pid| !not_counted.contains(pid));
    let pss_bytes = processes.iter().filter_map(|pid| pss_of(*pid)).sum();
    let cgroup_bytes = subject.cgroup().and_then(|c| cgroup_memory(&c));
    let torn = Instant::now();
    subject.remove_all(args.count)?;
    let teardown = torn.elapsed();
    let left_behind = leftovers(subject.cgroup().as_deref(), not_counted);
    Ok(DensityRow {
        key: key.into(),
        label: label.into(),
        count: args.count,
        parallel: args.parallel,
        start_all_s: start_all.as_secs_f64(),
        per_second: args.count as f64 / start_all.as_secs_f64(),
        cgroup_bytes,
        pss_bytes,
        mem_available_drop,
        unreclaimable_added,
        processes: processes.len(),
        teardown_s: teardown.as_secs_f64(),
        left_behind,
    })
}

/// One idle micro-VM's PSS (KVM if it boots the guest, else TCG, labelled); `not_counted` as
/// for [`measure`].
fn microvm_row(args: &Args, not_counted: &[i32]) -> Result<DensityRow> {
    let images = microvm::Images::ensure()?;
    let accel = if microvm::kvm_usable()
        && microvm::boot_once(&images, Accel::Kvm, Duration::from_secs(20)).is_ok()
    {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let started = Instant::now();
    let settle = if accel == Accel::Kvm { 3 } else { 15 };
    let pss = microvm::idle_pss(&images, accel, Duration::from_secs(settle))?;
    let label = match accel {
        Accel::Kvm => "micro-VM, one idle guest (QEMU microvm + KVM, 256 MiB)",
        Accel::Tcg => "micro-VM, one idle guest (QEMU microvm, software-emulated TCG, 256 MiB)",
    };
    reap_zombies();
    Ok(DensityRow {
        key: "microvm".into(),
        label: label.into(),
        count: 1,
        parallel: 1.min(args.parallel),
        start_all_s: started.elapsed().as_secs_f64(),
        per_second: 0.0,
        cgroup_bytes: None,
        pss_bytes: pss,
        mem_available_drop: None,
        unreclaimable_added: None,
        processes: 1,
        teardown_s: 0.0,
        left_behind: leftovers(None, not_counted),
    })
}

/// Every live descendant of this process (zombies reaped first).
fn descendants() -> Vec<i32> {
    reap_zombies();
    let me = std::process::id() as i32;
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 2..];
            let ppid = after_name.split(' ').nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![me];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.retain(|p| *p != me);
    found
}

fn reap_zombies() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Proportional set size of a process, from smaps_rollup.
pub fn pss_of(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The host's memory as /proc/meminfo tells it, in bytes.
#[derive(Clone, Copy)]
struct HostMemory {
    available: u64,
    /// What the processes and the kernel hold that reclaim cannot take back: anonymous and
    /// shared memory, page tables, kernel stacks, unreclaimable slab.
    unreclaimable: u64,
}

impl HostMemory {
    /// The median of five reads, 100 ms apart, once the kernel has finished tearing down
    /// what came before (freed cgroups and namespaces go asynchronously).
    fn settled() -> Option<HostMemory> {
        std::thread::sleep(Duration::from_millis(500));
        let mut reads: Vec<HostMemory> = (0..5)
            .filter_map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                HostMemory::read()
            })
            .collect();
        let middle = reads.len() / 2;
        reads.sort_unstable_by_key(|m| m.available);
        let available = reads.get(middle)?.available;
        reads.sort_unstable_by_key(|m| m.unreclaimable);
        Some(HostMemory {
            available,
            unreclaimable: reads.get(middle)?.unreclaimable,
        })
    }

    fn read() -> Option<HostMemory> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            let kb: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb * 1024)
        };
        let unreclaimable = [
            "AnonPages",
            "Shmem",
            "PageTables",
            "KernelStack",
            "SUnreclaim",
            // Per-CPU allocations: a network namespace's statistics, a memory cgroup's.
            "Percpu",
        ]
        .iter()
        .map(|name| field(name))
        .sum::<Option<u64>>()?;
        Some(HostMemory {
            available: field("MemAvailable")?,
            unreclaimable,
        })
    }
}

/// Hierarchical memory usage of a cgroup (v1 memory controller or v2).
fn cgroup_memory(path: &str) -> Option<u64> {
    [
        format!("/sys/fs/cgroup/memory/{path}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/{path}/memory.current"),
    ]
    .iter()
    .find_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())
}

/// Processes still descending from us and cgroups still under the row's parent; the parent
/// cgroups themselves are removed.
fn leftovers(cgroup: Option<&str>, not_counted: &[i32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let still_there = || {
        let mut left = descendants();
        left.retain(|pid| !not_counted.contains(pid));
        left
    };
    let mut left = still_there();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = still_there();
    }
    let mut found: Vec<String> = left.iter().map(|p| format!("process {p}")).collect();
    if let Some(cgroup) = cgroup {
        for hierarchy in cgroup_hierarchies() {
            let dir = Path::new(&hierarchy).join(cgroup);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
                    found.push(format!("cgroup {}", e.path().display()));
                }
            }
            let _ = std::fs::remove_dir(&dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    found
}

pub(crate) fn cgroup_hierarchies() -> Vec<String> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec!["/sys/fs/cgroup".into()];
    }
    [
        "memory",
        "pids",
        "cpu",
        "cpu,cpuacct",
        "cpuacct",
        "blkio",
        "devices",
        "freezer",
        "net_cls",
        "perf_event",
        "hugetlb",
        "cpuset",
        "net_prio",
        "systemd",
        "rdma",
        "misc",
        // The hybrid layout's cgroup2 mount, where runc and crun also make their cgroups.
        "unified",
    ]
    .iter()
    .map(|c| format!("/sys/fs/cgroup/{c}"))
    .filter(|d| Path::new(d).is_dir())
    .collect()
}

fn markdown(report: &DensityReport) -> String {
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    let mut md = format!(
        "# Density\n\nIdle sandboxes started by `wrun-bench density`, measured {}.\n\n{}\n\
         | row | sandboxes | parallel | start all | per second | cgroup memory | PSS total | PSS per sandbox | MemAvailable drop per sandbox | anon + kernel per sandbox | processes | teardown | left behind |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        report.measured_at,
        report.machine.markdown()
    );
    for r in &report.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} s | {:.0} | {} | {} | **{}** | {} | **{}** | {} | {:.2} s | {} |\n",
            r.label,
            r.count,
            r.parallel,
            r.start_all_s,
            r.per_second,
            r.cgroup_bytes.map_or("n/a".into(), |b| mib(b as f64)),
            mib(r.pss_bytes as f64),
            mib(r.pss_per_sandbox()),
            r.mem_available_drop
                .map_or("n/a".into(), |b| mib(b as f64 / r.count as f64)),
            r.unreclaimable_added
                .map_or("n/a".into(), |b| mib(b as f64 / r.count as f64)),
            r.processes,
            r.teardown_s,
            if r.left_behind.is_empty() {
                "nothing".to_string()
            } else {
                r.left_behind.join(", ")
            }
        ));
    }
    for (key, error) in &report.errors {
        md.push_str(&format!("\n- {key}: n/a — {error}"));
    }
    md.push_str(
        "\nPSS counts every process of the row: for wrun each container's monitor and its \
         sandbox; for runc and crun the container process alone (`run -d` leaves no \
         supervisor); for the containerd pods each pod's shim and what it started (containerd \
         itself is not counted). The host's view is read from /proc/meminfo before the row \
         starts and once it is up (each a median of five reads): the fall of MemAvailable, and \
         the growth of what reclaim cannot take back (AnonPages, Shmem, PageTables, \
         KernelStack, SUnreclaim, Percpu: \"anon + kernel\"). Both count kernel memory (namespaces, \
         cgroups, page tables) that PSS does not; MemAvailable also moves with the page cache \
         and whatever else the host did meanwhile, so it is the noisier of the two.\n",
    );
    md
}
