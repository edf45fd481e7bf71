//! The machine the figures were measured on, recorded with them.

use serde::{Deserialize, Serialize};
use std::process::Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub cgroup: String,
    pub kvm: bool,
    pub tools: Vec<(String, String)>,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2"
        } else {
            "v1 (hybrid)"
        };
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let cgroup = if mounts
            .lines()
            .any(|l| l.contains("cgroup") && l.contains("favordynmods"))
        {
            format!("{cgroup}, favordynmods")
        } else {
            cgroup.to_string()
        };
        let tools = [
            ("runc", &["--version"][..]),
            ("crun", &["--version"]),
            ("containerd", &["--version"]),
            ("qemu-system-x86_64", &["--version"]),
        ]
        .iter()
        .filter_map(|(tool, args)| {
            let out = Command::new(tool).args(*args).output().ok()?;
            let first = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .to_string();
            Some((tool.to_string(), first))
        })
        .collect();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cgroup,
            kvm: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok(),
            tools,
        }
    }

    pub fn markdown(&self) -> String {
        let mut text = format!(
            "Machine: {} · {} cores · {} GiB · Linux {} · cgroup {} · /dev/kvm {}\n",
            self.cpu,
            self.cores,
            self.memory_gib,
            self.kernel,
            self.cgroup,
            if self.kvm { "usable" } else { "absent" }
        );
        for (tool, version) in &self.tools {
            text.push_str(&format!("\n- {tool}: {version}"));
        }
        text.push('\n');
        text
    }
}
