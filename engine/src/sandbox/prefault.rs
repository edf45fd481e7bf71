//! Maps pages into a process ahead of use: a module mapped ahead by a pooled sandbox would
//! otherwise take a minor fault on each page of its code the first time its claim runs it.
//! (Populating the whole binary's pages in each pooled process was measured too: it cost
//! ≈0.8 ms of CPU per pooled sandbox and no start-up time once the claim's own code paths are
//! warmed, see `pool::supervisor::warm_up`.)

/// `MADV_POPULATE_READ` (Linux 5.14): fault the range in, readable, without changing it.
const MADV_POPULATE_READ: libc::c_int = 22;

/// Populates `range`, one of this process's own mappings (widened to whole pages); an older
/// kernel only loses the gain.
pub fn range(range: std::ops::Range<*const u8>) {
    let start = range.start as usize & !(4096 - 1);
    let end = range.end as usize;
    if end > start {
        // SAFETY: the range lies within this process's own mappings; populating reads it only.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_READ) };
    }
}
