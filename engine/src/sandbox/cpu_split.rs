//! Keeps a freshly forked sandbox off its parent's CPU, so that the two halves of a start
//! (the child's namespaces and engine, the parent's network namespace and cgroup) overlap.
//!
//! A new child starts on its parent's CPU, and whichever of the two runs first there keeps
//! the other waiting — about a millisecond here, until a load balance moves it, while the
//! other CPU idles. Moving the parent once it runs (as wrun first did) comes too late when the
//! child runs first. So whichever of the two gets to run first moves the *child*: the parent
//! by setting the queued child's affinity, the child by moving itself; a shared word decides
//! which, so that only one of them acts. The one that acted then gives the child back every
//! CPU it may use (no move: it is on one of them), before the parent joins it to its cgroup,
//! whose cpuset the kernel may then narrow it to.

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

const UNDECIDED: u32 = 0;
const PARENT_ACTS: u32 = 1;
const CHILD_ACTS: u32 = 2;

/// Made before the fork; each side calls its half right after it.
pub struct CpuSplit {
    /// Shared between parent and child (`MAP_SHARED`): who acts.
    decided: NonNull<AtomicU32>,
    parent_cpu: usize,
    /// The CPUs the child may use.
    allowed: CpuSet,
    /// `allowed` without the parent's CPU.
    elsewhere: CpuSet,
}

impl CpuSplit {
    /// `None` when there is no other CPU to move to (or the affinity cannot be read).
    pub fn prepare() -> Option<CpuSplit> {
        let parent_cpu = sched_getcpu().ok()?;
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut elsewhere = allowed;
        elsewhere.unset(parent_cpu).ok()?;
        let any_other = (0..CpuSet::count()).any(|cpu| elsewhere.is_set(cpu).unwrap_or(false));
        if !any_other {
            return None;
        }
        let length = std::num::NonZeroUsize::new(std::mem::size_of::<AtomicU32>())?;
        // SAFETY: a new anonymous mapping, aliasing nothing; zero-filled, i.e. UNDECIDED.
        let mapped = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                length,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        }
        .ok()?;
        Some(CpuSplit {
            decided: mapped.cast(),
            parent_cpu,
            allowed,
            elsewhere,
        })
    }

    fn decide(&self, who: u32) -> bool {
        // SAFETY: the mapping lives as long as this value, in both processes.
        let decided = unsafe { self.decided.as_ref() };
        decided
            .compare_exchange(UNDECIDED, who, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// In the parent, right after the fork: moves a child that has not run yet (a queued
    /// task moves within the call), then gives it back every allowed CPU.
    pub fn parent_side(&self, child: Pid) {
        if self.decide(PARENT_ACTS) {
            Self::move_off(child, &self.elsewhere, &self.allowed);
        }
    }

    /// In the child, first thing after the fork: leaves the parent's CPU unless the parent
    /// acted first.
    pub fn child_side(&self) {
        if self.decide(CHILD_ACTS) && sched_getcpu().ok() == Some(self.parent_cpu) {
            Self::move_off(Pid::from_raw(0), &self.elsewhere, &self.allowed);
        }
    }

    fn move_off(task: Pid, elsewhere: &CpuSet, allowed: &CpuSet) {
        if sched_setaffinity(task, elsewhere).is_ok() {
            let _ = sched_setaffinity(task, allowed);
        }
    }
}

impl Drop for CpuSplit {
    fn drop(&mut self) {
        // SAFETY: mapped in `prepare` with this length, not used after this.
        let _ = unsafe {
            nix::sys::mman::munmap(self.decided.cast(), std::mem::size_of::<AtomicU32>())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_side_acts_and_the_child_keeps_its_cpus() {
        let Some(split) = CpuSplit::prepare() else {
            crate::err_line!("skipped: a single CPU, nothing to split");
            return;
        };
        let me = Pid::from_raw(0);
        // This thread stands in for the child: the parent's half moves it off the parent's
        // CPU and gives it back every CPU it had.
        split.parent_side(me);
        assert_ne!(sched_getcpu().unwrap(), split.parent_cpu);
        assert_eq!(sched_getaffinity(me).unwrap(), split.allowed);
        // The child's half then does nothing: only one side acts.
        assert!(!split.decide(CHILD_ACTS));
        let cpu = sched_getcpu().unwrap();
        split.child_side();
        assert_eq!(sched_getcpu().unwrap(), cpu);
        assert_eq!(sched_getaffinity(me).unwrap(), split.allowed);
    }
}
