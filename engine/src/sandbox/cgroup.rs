//! The per-run cgroup (v1 or v2, through cgroups-rs): created with the run's limits, joined
//! by the workload, read for OOM kills, and removed when the run ends.

use crate::spec::{Limits, CPU_PERIOD_US};
use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::{Cgroup, Resources};
use cgroups_rs::CgroupPid;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to create cgroup `{path}`")]
    Create {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("failed to apply limits to cgroup `{path}`")]
    Limits {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("failed to move the workload into cgroup `{path}`")]
    Join {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("failed to move into cgroup `{path}`")]
    JoinSelf {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup `{path}` already has processes in it: wrun only joins a new or empty cgroup")]
    InUse { path: String },
    #[error("failed to remove cgroup `{path}`")]
    Remove {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
}

/// The controllers a run uses: memory and pids always (accounting and containment), cpu only
/// for a CPU limit. On cgroup v1 each is a directory of its own to create, join and remove on
/// the start path; CPU time comes from the workload's rusage instead of cpuacct.
pub fn controllers(limits: &Limits) -> Vec<String> {
    let mut names = vec!["memory".to_string(), "pids".to_string()];
    if limits.cpu_quota_us.is_some() || limits.cpu_shares.is_some() {
        names.push("cpu".to_string());
    }
    names
}

/// The cgroups-rs resources that express `limits`, with `headroom` bytes of memory added
/// for the runtime (see [`crate::spec::RunSpec::memory_headroom`]).
pub fn resources(limits: &Limits, headroom: u64) -> Resources {
    let mut res = Resources::default();
    res.memory.memory_hard_limit = limits.memory.map(|m| m.saturating_add(headroom) as i64);
    res.pid.maximum_number_of_processes = limits.pids.map(|n| MaxValue::Value(n as i64));
    if let Some(quota) = limits.cpu_quota_us {
        res.cpu.quota = Some(quota as i64);
        res.cpu.period = Some(limits.cpu_period_us.unwrap_or(CPU_PERIOD_US));
    }
    res.cpu.shares = limits.cpu_shares;
    res
}

/// A run's cgroup. One this process created is removed on drop if [`RunCgroup::remove`]
/// was not called; one it only looked up ([`RunCgroup::existing`]) is left alone, and so is
/// one that existed, empty, before the run (adopted: joined and limited, never removed).
pub struct RunCgroup {
    cgroup: Option<Cgroup>,
    path: String,
    owned: bool,
    adopted: bool,
}

/// A run's cgroup as one process hands it to the next ([`RunCgroup::held`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeldCgroup {
    path: String,
    owned: bool,
    adopted: bool,
}

impl RunCgroup {
    /// Creates `path` (relative to each hierarchy's root) in every hierarchy wrun uses,
    /// with `limits` applied.
    pub fn create(path: &str, limits: &Limits, headroom: u64) -> Result<RunCgroup, CgroupError> {
        let mut run = RunCgroup::plan(path, limits)?;
        run.make()?;
        run.apply(limits, headroom)?;
        Ok(run)
    }

    /// Looks at `path` in the hierarchies a run with `limits` uses, creating nothing yet: a
    /// cgroup that exists there with processes in it belongs to someone else (a service, a
    /// running task) and is refused; an empty one is adopted.
    pub fn plan(path: &str, limits: &Limits) -> Result<RunCgroup, CgroupError> {
        let path = path.to_string();
        let cgroup = load(&path, limits);
        let adopted = cgroup.exists();
        // A parent of others (a slice, a pod's cgroup) counts as in use even without
        // processes of its own: on v2 it can have none, its children hold them.
        if adopted && (!cgroup.procs().is_empty() || has_children(&cgroup)) {
            return Err(CgroupError::InUse { path });
        }
        Ok(RunCgroup {
            cgroup: Some(cgroup),
            path,
            owned: false,
            adopted,
        })
    }

    /// Creates a planned cgroup's directories.
    pub fn make(&mut self) -> Result<(), CgroupError> {
        self.handle()
            .create()
            .map_err(|source| CgroupError::Create {
                path: self.path.clone(),
                source,
            })?;
        self.owned = !self.adopted;
        Ok(())
    }

    /// Limits of a pooled sandbox's cgroup: every controller wrun may use, none limited
    /// until the claim ([`RunCgroup::apply`]).
    pub fn unlimited() -> Limits {
        Limits {
            cpu_shares: Some(0),
            ..Limits::default()
        }
    }

    /// Creates `path` in every hierarchy wrun may use, without limits: a pooled sandbox's,
    /// whose limits are only known when it is claimed ([`RunCgroup::apply`]).
    pub fn create_unlimited(path: &str) -> Result<RunCgroup, CgroupError> {
        let mut run = RunCgroup::plan(path, &RunCgroup::unlimited())?;
        run.make()?;
        Ok(run)
    }

    /// Whether the cgroup existed, empty, before this run: then it is not wrun's to remove,
    /// nor to name in a run record for the sweep.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Applies `limits` (with `headroom` bytes of memory for the runtime) to this cgroup.
    pub fn apply(&self, limits: &Limits, headroom: u64) -> Result<(), CgroupError> {
        self.handle()
            .apply(&resources(limits, headroom))
            .map_err(|source| CgroupError::Limits {
                path: self.path.clone(),
                source,
            })
    }

    /// What a process that carries this run on after an exec needs to hold the cgroup again
    /// ([`RunCgroup::from_held`]).
    pub fn held(&self) -> HeldCgroup {
        HeldCgroup {
            path: self.path.clone(),
            owned: self.owned,
            adopted: self.adopted,
        }
    }

    /// The cgroup `held` describes, made for a run with `limits` by the process this one was
    /// exec'd from: removed, as that process would have, when it ends.
    pub fn from_held(held: HeldCgroup, limits: &Limits) -> RunCgroup {
        RunCgroup {
            cgroup: Some(load(&held.path, limits)),
            path: held.path,
            owned: held.owned,
            adopted: held.adopted,
        }
    }

    /// The cgroup an earlier run made, in whichever of wrun's hierarchies it exists.
    pub fn existing(path: &str) -> RunCgroup {
        let path = path.to_string();
        let all = ["memory", "pids", "cpu"].map(String::from).to_vec();
        let cgroup = Cgroup::load_with_specified_controllers(
            cgroups_rs::fs::hierarchies::auto(),
            &path,
            all,
        );
        RunCgroup {
            cgroup: Some(cgroup),
            path,
            owned: false,
            adopted: false,
        }
    }

    /// SIGKILLs every process left in the cgroup (cgroup.kill on v2, one by one on v1) and
    /// waits briefly for them to go.
    pub fn kill_all(&self) {
        let cgroup = self.handle();
        if cgroup.kill().is_ok() {
            return;
        }
        for _ in 0..50 {
            let procs = cgroup.procs();
            if procs.is_empty() {
                return;
            }
            for pid in procs {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn handle(&self) -> &Cgroup {
        self.cgroup.as_ref().expect("present until removed")
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cgroup's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.handle()
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect()
    }

    /// The cgroup's one directory opened, on cgroup v2 (where it holds every controller),
    /// for a child to be forked into.
    pub fn open_dir(&self) -> Option<std::os::fd::OwnedFd> {
        if !self.handle().v2() {
            return None;
        }
        let dir = self.dirs().into_iter().next()?;
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::open(&dir, flags, nix::sys::stat::Mode::empty()).ok()
    }

    /// Moves the process `pid` (all its threads) into the cgroup.
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        self.handle()
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|source| CgroupError::Join {
                path: self.path.clone(),
                source,
            })
    }

    /// Moves this single-threaded process into the cgroup in each hierarchy where it exists,
    /// as an exec'd process joins a container's: on cgroup v1 by writing `0` to `tasks`,
    /// which spares the kernel's global lock ([`super::self_join`]).
    pub fn join_present_self(&self) -> Result<(), CgroupError> {
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            return self.join_present(std::process::id());
        }
        for dir in self.dirs().iter().filter(|dir| dir.exists()) {
            std::fs::write(dir.join("tasks"), "0").map_err(|source| CgroupError::JoinSelf {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Moves the process `pid` into the cgroup in each hierarchy where it exists (a run
    /// without a CPU limit has no cpu one).
    pub fn join_present(&self, pid: u32) -> Result<(), CgroupError> {
        for subsystem in self.handle().subsystems() {
            let controller = subsystem.to_controller();
            if controller.path().exists() {
                controller
                    .add_task_by_tgid(&CgroupPid::from(pid as u64))
                    .map_err(|source| CgroupError::Join {
                        path: self.path.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// How many processes the kernel's OOM killer ended in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.memory_dir() else {
            return 0;
        };
        let v2 = self.handle().v2();
        let (file, parse): (&str, fn(&str) -> u64) = if v2 {
            ("memory.events", oom_kills_v2)
        } else {
            ("memory.oom_control", oom_kills_v1)
        };
        std::fs::read_to_string(dir.join(file))
            .map(|text| parse(&text))
            .unwrap_or(0)
    }

    /// The most memory the cgroup used (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub fn memory_peak(&self) -> Option<u64> {
        self.memory_value("memory.peak", "memory.max_usage_in_bytes")
    }

    /// The memory the cgroup uses now.
    pub fn memory_usage(&self) -> Option<u64> {
        self.memory_value("memory.current", "memory.usage_in_bytes")
    }

    /// The processes in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        self.handle()
            .procs()
            .into_iter()
            .map(|pid| pid.pid as u32)
            .collect()
    }

    /// The memory limit, if one is set (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_value("memory.max", "memory.limit_in_bytes")
            .and_then(set_limit)
    }

    /// A number from the memory controller's file of this hierarchy's version.
    fn memory_value(&self, v2_file: &str, v1_file: &str) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = if self.handle().v2() { v2_file } else { v1_file };
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// CPU time used, in nanoseconds, where the hierarchy accounts it (v2 `cpu.stat`; v1
    /// accounts it in cpuacct, which wrun does not use).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        let cgroup = self.handle();
        if !cgroup.v2() {
            return None;
        }
        let controller = cgroup.controller_of::<cgroups_rs::fs::cpu::CpuController>()?;
        let dir = cgroups_rs::fs::Controller::path(controller).to_path_buf();
        let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        Some(field(&text, "usage_usec") * 1000)
    }

    /// Processes and threads in the cgroup now.
    pub fn pids_current(&self) -> Option<u64> {
        let controller = self
            .handle()
            .controller_of::<cgroups_rs::fs::pid::PidController>()?;
        let dir = cgroups_rs::fs::Controller::path(controller).to_path_buf();
        std::fs::read_to_string(dir.join("pids.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn memory_dir(&self) -> Option<PathBuf> {
        let cgroup = self.handle();
        cgroup
            .controller_of::<cgroups_rs::fs::memory::MemController>()
            .map(|c| cgroups_rs::fs::Controller::path(c).to_path_buf())
    }

    /// Removes the cgroup (an adopted one stays); its processes must have exited. cgroups-rs retries each rmdir for
    /// ~150 ms (the kernel may still be tearing the last task down); this retries that thrice.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<(), CgroupError> {
        let Some(cgroup) = self.cgroup.take() else {
            return Ok(());
        };
        if self.adopted {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..3 {
            match cgroup.delete() {
                Ok(()) => return Ok(()),
                // Gone already (v1's controllers say so themselves, v2 reports the rmdir's
                // ENOENT): a record may name a cgroup removed before it was rewritten.
                Err(_) if !cgroup.exists() => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(CgroupError::Remove {
            path: self.path.clone(),
            source: last.expect("at least one attempt"),
        })
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = self.remove_now() {
            tracing::warn!("{e:#}");
        }
    }
}

/// The cgroup at `path` in the hierarchies a run with `limits` uses, as it is (nothing made).
fn load(path: &str, limits: &Limits) -> Cgroup {
    let hierarchy = cgroups_rs::fs::hierarchies::auto();
    Cgroup::load_with_specified_controllers(hierarchy, path, controllers(limits))
}

/// Whether the cgroup has cgroups below it, in any of its hierarchies.
fn has_children(cgroup: &Cgroup) -> bool {
    cgroup.subsystems().iter().any(|subsystem| {
        std::fs::read_dir(cgroups_rs::fs::Controller::path(subsystem.to_controller()))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            })
            .unwrap_or(false)
    })
}

/// `oom_kill N` in v1's `memory.oom_control`.
/// A memory limit as read, or `None` for "no limit": v1 writes the largest page-aligned i64,
/// v2 writes `max` (which does not parse as a number, so never gets here).
fn set_limit(limit: u64) -> Option<u64> {
    (limit < i64::MAX as u64 & !0xfff).then_some(limit)
}

fn oom_kills_v1(text: &str) -> u64 {
    field(text, "oom_kill")
}

/// `oom_kill N` in v2's `memory.events`.
fn oom_kills_v2(text: &str) -> u64 {
    field(text, "oom_kill")
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_controller_only_for_a_cpu_limit() {
        assert_eq!(controllers(&Limits::default()), ["memory", "pids"]);
        let limited = Limits {
            cpu_quota_us: Some(50_000),
            ..Limits::default()
        };
        assert_eq!(controllers(&limited), ["memory", "pids", "cpu"]);
    }

    #[test]
    fn limits_map_to_resources() {
        let limits = Limits {
            memory: Some(64 << 20),
            cpu_quota_us: Some(50_000),
            pids: Some(8),
            ..Limits::default()
        };
        let res = resources(&limits, 1 << 20);
        assert_eq!(res.memory.memory_hard_limit, Some((65 << 20) as i64));
        assert_eq!(res.cpu.quota, Some(50_000));
        assert_eq!(res.cpu.period, Some(CPU_PERIOD_US));
        assert!(matches!(
            res.pid.maximum_number_of_processes,
            Some(MaxValue::Value(8))
        ));
    }

    #[test]
    fn no_limits_set_nothing() {
        let res = resources(&Limits::default(), 0);
        assert_eq!(res.memory.memory_hard_limit, None);
        assert_eq!(res.cpu.quota, None);
        assert!(res.pid.maximum_number_of_processes.is_none());
    }

    #[test]
    fn unlimited_memory_reads_as_no_limit_in_both_versions() {
        assert_eq!(set_limit(9_223_372_036_854_771_712), None);
        assert_eq!(set_limit(64 << 20), Some(64 << 20));
        assert!("max".parse::<u64>().is_err());
    }

    #[test]
    fn oom_kills_are_read_from_both_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kills_v1(v1), 3);
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kills_v2(v2), 2);
        assert_eq!(oom_kills_v2("low 0\n"), 0);
    }
}
