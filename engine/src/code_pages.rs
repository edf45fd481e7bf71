//! Marks wrun's own code and read-only data for 2 MiB pages, first thing in `main`.
//!
//! wrun's code is ≈20 MiB; a run touches a few MiB of it in scattered places, one page fault
//! per 64 KiB window at best, and a forked sandbox faults it all in again (≈110 faults, each
//! ≈2.5 µs on this VM). When the page cache holds the binary in 2 MiB folios, the kernel
//! maps a whole 2 MiB of it with one fault (the segments are 2 MiB-aligned: `build.rs`).
//! `MADV_HUGEPAGE` makes the binary's pages that are read from disk after this call come
//! in as 2 MiB folios, and lets khugepaged collapse them where the kernel can
//! (`CONFIG_READ_ONLY_THP_FOR_FS`). docs/architecture.md, "wrun's own code pages".

/// The image's first and one-past-last address, as the linker laid it out.
fn image_range() -> (usize, usize) {
    extern "C" {
        static __executable_start: u8;
        static _end: u8;
    }
    // Only the symbols' addresses are taken, never their bytes.
    (
        &raw const __executable_start as usize,
        &raw const _end as usize,
    )
}

/// Asks for 2 MiB pages over the whole image. The gaps between segments are not mapped, so
/// the call reports `ENOMEM` after applying the advice to every mapping in the range; any
/// failure only leaves the code in 4 KiB pages.
pub fn hint_huge_pages() {
    let (start, end) = image_range();
    // SAFETY: advice only: MADV_HUGEPAGE changes how pages are mapped, never their contents.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_mapping_is_marked_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            crate::err_line!("skipped: this kernel has no transparent huge pages");
            return;
        }
        hint_huge_pages();
        let code = hint_huge_pages as *const () as usize;
        let (start, end) = image_range();
        assert!(start <= code && code < end);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_code = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-')) {
                let (low, high) = range.split_once('-').unwrap();
                let low = usize::from_str_radix(low, 16).unwrap_or(usize::MAX);
                let high = usize::from_str_radix(high, 16).unwrap_or(0);
                in_code = low <= code && code < high;
            } else if in_code {
                if let Some(vm_flags) = line.strip_prefix("VmFlags:") {
                    flags = Some(vm_flags.to_string());
                }
            }
        }
        let flags = flags.expect("the mapping holding this code");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        assert!(flags.split_whitespace().any(|f| f == "ex"), "{flags}");
    }
}
