//! Keeps a freshly forked sandbox off its parent's CPU, so that the two halves of a start
//! (the child's namespaces and engine, the parent's network namespace and cgroup) overlap.
//!
//! A new child starts on its parent's CPU, and whichever of the two runs first there keeps
//! the other waiting — about a millisecond here, until a load balance moves it, while the
//! other CPU idles. Moving the parent once it runs (as wrun first did) comes too late when the
//! child runs first. So whichever of the two gets to run first moves the *child*: the parent
//! by setting the queued child's affinity, the child by moving itself; a shared word decides
//! which, so that only one of them acts. The child then takes back every CPU it may use.

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

    /// In the parent, right after the fork: moves a child that has not run yet.
    pub fn parent_side(&self, child: Pid) {
        if self.decide(PARENT_ACTS) {
            let _ = sched_setaffinity(child, &self.elsewhere);
        }
    }

    /// In the child, first thing after the fork: leaves the parent's CPU if the parent did not
    /// move it already, then takes back every allowed CPU (no move: it is on one of them).
    pub fn child_side(&self) {
        let me = Pid::from_raw(0);
        if self.decide(CHILD_ACTS) && sched_getcpu().ok() == Some(self.parent_cpu) {
            let _ = sched_setaffinity(me, &self.elsewhere);
        }
        let _ = sched_setaffinity(me, &self.allowed);
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
            eprintln!("skipped: a single CPU, nothing to split");
            return;
        };
        split.parent_side(Pid::from_raw(0));
        // The parent acted (on this process, standing in for the child): the child's half
        // must not act again, and gives this process back every CPU it had.
        assert!(!split.decide(CHILD_ACTS));
        split.child_side();
        let now = sched_getaffinity(Pid::from_raw(0)).unwrap();
        assert_eq!(now, split.allowed);
    }
}
