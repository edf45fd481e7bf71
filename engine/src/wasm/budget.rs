//! `--memory` inside wasmtime: one byte budget shared by all linear memories and tables, with
//! default caps when no `--memory` was given.

use wasmtime::ResourceLimiter;

/// Bytes one table element is charged (a pointer-sized reference).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// The budget without `--memory`: a 32-bit linear memory's own maximum, for all memories and
/// tables together, so that a guest growing tables or several memories cannot take the
/// host's memory (16 GB were seen in under a minute). A program needing more (memory64, a
/// full 4 GiB memory beside its tables) asks for it with `--memory`.
pub const DEFAULT_MEMORY_BUDGET: u64 = 4 << 30;

/// The most elements one table may hold (80 MB of references). Real programs' function
/// tables hold thousands to a few hundred thousand; wasmtime's pooling allocator allows
/// 20,000 by default.
pub const MAX_TABLE_ELEMENTS: u64 = 10_000_000;

/// Refuses growth that would take the store past its budget; the guest sees `memory.grow`
/// (or `table.grow`) return -1, exactly as on a host out of memory.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (`--memory`), or [`DEFAULT_MEMORY_BUDGET`].
    pub fn new(limit: Option<u64>) -> MemoryBudget {
        MemoryBudget {
            limit: limit.unwrap_or(DEFAULT_MEMORY_BUDGET),
            used: 0,
        }
    }

    /// Grows from `current` to `desired` bytes if `transient` more bytes fit while it does.
    fn grow(&mut self, current: u64, desired: u64, transient: u64) -> bool {
        let extra = desired.saturating_sub(current);
        let after = self.used.saturating_add(extra);
        if after.saturating_add(transient) > self.limit {
            return false;
        }
        self.used = after;
        true
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A memory grows in place (its reservation is mapped ahead).
        Ok(self.grow(current as u64, desired as u64, 0))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        // A table's storage is reallocated as it grows: the old copy is still there while
        // the new one fills, so the old size must fit too, or the kernel's limit (not -1)
        // would answer.
        let current = current as u64 * TABLE_ELEMENT_BYTES;
        Ok(self.grow(current, desired as u64 * TABLE_ELEMENT_BYTES, current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut budget = MemoryBudget::new(Some(100 << 10));
        assert!(budget.memory_growing(0, 64 << 10, None).unwrap());
        assert!(budget.table_growing(0, 1024, None).unwrap());
        assert!(!budget.memory_growing(0, 64 << 10, None).unwrap());
        assert!(budget
            .memory_growing(0, (100 << 10) - (64 << 10) - 8192, None)
            .unwrap());
        assert!(!budget.table_growing(1024, 1025, None).unwrap());
    }

    #[test]
    fn a_growing_table_needs_room_for_its_old_copy() {
        let mut budget = MemoryBudget::new(Some(64 << 10));
        // 4,096 elements are 32 KiB: from 2,048 (16 KiB) it needs 16 + 32 KiB at once.
        assert!(budget.table_growing(0, 2048, None).unwrap());
        assert!(budget.table_growing(2048, 4096, None).unwrap());
        // 32 KiB held; 40 KiB would need 32 + 40 KiB at once.
        assert!(!budget.table_growing(4096, 5120, None).unwrap());
        // The old copy is only needed while growing: the rest is still there for a memory.
        assert!(budget.memory_growing(0, 32 << 10, None).unwrap());
    }

    #[test]
    fn without_memory_the_defaults_hold() {
        let mut budget = MemoryBudget::new(None);
        assert!(budget.memory_growing(0, 4 << 30, None).unwrap());
        assert!(!budget
            .memory_growing(4 << 30, (4 << 30) + 65536, None)
            .unwrap());
        let mut budget = MemoryBudget::new(None);
        assert!(budget
            .table_growing(0, MAX_TABLE_ELEMENTS as usize, None)
            .unwrap());
        assert!(!budget
            .table_growing(
                MAX_TABLE_ELEMENTS as usize,
                MAX_TABLE_ELEMENTS as usize + 1,
                None
            )
            .unwrap());
    }
}
