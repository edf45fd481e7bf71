//! `--memory` inside wasmtime: one byte budget shared by all linear memories and tables.

use wasmtime::ResourceLimiter;

/// Bytes one table element is charged (a pointer-sized reference).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// Refuses growth that would take the store past its budget; the guest sees `memory.grow`
/// (or `table.grow`) return -1, exactly as on a host out of memory.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: Option<u64>,
    used: u64,
}

impl MemoryBudget {
    pub fn new(limit: Option<u64>) -> MemoryBudget {
        MemoryBudget { limit, used: 0 }
    }

    fn grow(&mut self, current: u64, desired: u64) -> bool {
        let extra = desired.saturating_sub(current);
        let after = self.used.saturating_add(extra);
        if self.limit.is_some_and(|limit| after > limit) {
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
        Ok(self.grow(current as u64, desired as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current as u64 * TABLE_ELEMENT_BYTES,
            desired as u64 * TABLE_ELEMENT_BYTES,
        ))
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
    fn no_limit_allows_everything() {
        let mut budget = MemoryBudget::new(None);
        assert!(budget.memory_growing(0, usize::MAX, None).unwrap());
    }
}
