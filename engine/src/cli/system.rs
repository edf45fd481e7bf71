//! `wrun version` and `wrun info`: what this wrun is and what it finds on this host, as
//! `docker version` and `docker info` tell it.

use super::Failure;
use wrun::state::StateRoot;

/// Show wrun's, wasmtime's, WASI's and the OCI runtime spec's versions, and the host's kernel
/// and cgroup version
#[derive(clap::Args, Debug)]
pub struct VersionCommand {}

impl VersionCommand {
    pub fn execute(self) -> Result<(), Failure> {
        for (name, value) in [
            ("wrun", env!("CARGO_PKG_VERSION").to_string()),
            ("wasmtime", env!("WRUN_WASMTIME_VERSION").to_string()),
            (
                "WASI",
                "preview 1 (wasi_snapshot_preview1), 0.2 (wasi:cli/command, wasi:http/proxy)"
                    .into(),
            ),
            ("OCI runtime spec", wrun::runtime::OCI_VERSION.to_string()),
            ("kernel", kernel()),
            ("cgroup", cgroup_version().to_string()),
        ] {
            wrun::out_line!("{:<18}{value}", format!("{name}:"));
        }
        Ok(())
    }
}

/// Show the state root, the cgroup set-up, the namespaces and seccomp available, the
/// containers and images, and whether a warm pool serves this root
#[derive(clap::Args, Debug)]
pub struct InfoCommand {}

impl InfoCommand {
    pub fn execute(self, state: &StateRoot) -> Result<(), Failure> {
        use wrun::container::record::{Containers, Status};
        let containers = Containers::open(state).map_err(|e| Failure::runtime(e.into()))?;
        let states: Vec<Status> = containers
            .list()
            .iter()
            .filter_map(|c| c.state().ok())
            .map(|s| s.status())
            .collect();
        let count = |wanted: Status| states.iter().filter(|&&s| s == wanted).count();
        let images = wrun::image::open_store(state)
            .and_then(|store| store.entries())
            .map(|entries| entries.len().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let pool = match wrun::pool::client::connect(&wrun::pool::socket_path(state)) {
            Ok(_) => format!("running ({})", wrun::pool::socket_path(state).display()),
            Err(_) => "not running (`wrun daemon` starts one)".to_string(),
        };
        for (name, value) in [
            ("State root", state.path().display().to_string()),
            (
                "Containers",
                format!(
                    "{} (running {}, created {}, exited {})",
                    states.len(),
                    count(Status::Running),
                    count(Status::Created),
                    count(Status::Exited)
                ),
            ),
            ("Images", images),
            ("Cgroup version", cgroup_version().to_string()),
            ("Cgroup driver", "cgroupfs".to_string()),
            ("Namespaces", namespaces()),
            ("Seccomp", seccomp()),
            ("Warm pool", pool),
            ("Kernel", kernel()),
            ("CPUs", cpus()),
        ] {
            wrun::out_line!("{:<16}{value}", format!("{name}:"));
        }
        Ok(())
    }
}

fn kernel() -> String {
    match nix::sys::utsname::uname() {
        Ok(name) => format!(
            "{} {} ({})",
            name.sysname().to_string_lossy(),
            name.release().to_string_lossy(),
            name.machine().to_string_lossy()
        ),
        Err(e) => format!("unknown ({e})"),
    }
}

/// v2 when /sys/fs/cgroup is the unified hierarchy; v1 otherwise, "hybrid" when a
/// controller-less cgroup2 mount sits beside the v1 hierarchies.
fn cgroup_version() -> &'static str {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        "v2"
    } else if root.join("unified/cgroup.controllers").exists() {
        "v1 (hybrid: a cgroup2 mount without controllers beside it)"
    } else {
        "v1"
    }
}

/// The namespace kinds this kernel has (`/proc/self/ns`).
fn namespaces() -> String {
    let kinds = ["mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time"];
    let present: Vec<&str> = kinds
        .into_iter()
        .filter(|kind| std::path::Path::new(&format!("/proc/self/ns/{kind}")).exists())
        .collect();
    present.join(", ")
}

fn seccomp() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match status.lines().find(|l| l.starts_with("Seccomp:")) {
        Some(_) => "available (filter mode: every sandbox gets a filter)".to_string(),
        None => "not available in this kernel".to_string(),
    }
}

fn cpus() -> String {
    std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
