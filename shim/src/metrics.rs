//! A task's cgroup figures in the form containerd decodes (`io.containerd.cgroups.v1.Metrics`,
//! which containerd also reads from shims on cgroup v2 hosts).

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use wrun::sandbox::cgroup::RunCgroup;

pub fn of(cgroup: &RunCgroup) -> Metrics {
    let memory = MemoryEntry {
        usage: cgroup.memory_usage().unwrap_or_default(),
        max: cgroup.memory_peak().unwrap_or_default(),
        limit: cgroup.memory_limit().unwrap_or_default(),
        ..Default::default()
    };
    Metrics {
        memory: Some(MemoryStat {
            usage: Some(memory).into(),
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: cgroup.cpu_usage_ns().unwrap_or_default(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStat {
            current: cgroup.pids_current().unwrap_or_default(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
