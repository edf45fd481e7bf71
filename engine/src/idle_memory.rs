//! What a process that has settled into waiting gives back: its allocator's free pages and
//! the mappings of wrun's own code it touched while starting.
//!
//! A supervisor that waits for its sandbox, and a sandbox whose guest sleeps, keep every page
//! of wrun's ≈25 MiB of code and read-only data they touched while starting mapped (10–13 MiB
//! each, counted in their RSS and PSS), and the heap their set-up freed. Neither needs them
//! to wait. Unmapping the code's pages (`MADV_DONTNEED` on the read-only segments) leaves
//! them in the page cache, shared and reclaimable, and a later use takes a minor fault that
//! maps them again from there; the file's contents never change under a running binary (the
//! kernel refuses writes to it), so the pages come back as they were.

use std::ops::Range;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a process runs before it is taken to be settled: long after any short run (a
/// hello ends in a few milliseconds, and nothing is given back on its path), short enough
/// that idle containers shed their start-up pages soon after they are up.
pub const SETTLED_AFTER: Duration = Duration::from_secs(1);

/// Gives the allocator's free pages and the code mappings back to the kernel.
pub fn give_back() {
    free_heap_pages();
    prepare();
    drop_code_pages();
    drop_stack_below_caller();
}

/// Gives back the main thread's stack pages below its caller's frame. Starting made deeper
/// calls than waiting does (a carried-on monitor had 36 KiB of stack resident and used the top
/// 13 KiB to wait); below the stack pointer nothing is live, and a page used again comes
/// back zeroed. A page under this frame is kept for the `madvise` call itself. Nothing on a
/// thread that is not the main one.
#[inline(never)]
fn drop_stack_below_caller() {
    let page = 4096;
    let frame = 0u8;
    let here = std::hint::black_box(&frame) as *const u8 as usize;
    let Some(stack) = main_stack().filter(|stack| stack.contains(&here)) else {
        return;
    };
    let end = (here & !(page - 1)).saturating_sub(page);
    if end > stack.start {
        // SAFETY: the range lies in this thread's stack below its stack pointer, where no
        // frame lives: dropping the pages loses nothing.
        unsafe {
            libc::madvise(
                stack.start as *mut libc::c_void,
                end - stack.start,
                libc::MADV_DONTNEED,
            )
        };
    }
}

/// The main thread's stack mapping, from `/proc/self/maps`.
fn main_stack() -> Option<Range<usize>> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[stack]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let address = |hex| usize::from_str_radix(hex, 16).ok();
    Some(address(start)?..address(end)?)
}

/// Returns the allocator's free pages to the kernel (`mi_collect`). A sandbox calls it before
/// its guest starts, since its alarm handler cannot (the allocator is not async-signal-safe):
/// measured, an idle sandbox then holds ≈870 KiB of anonymous memory instead of ≈1110 KiB,
/// and a hello's start takes no longer (2.89 and 3.00 ms against 2.90 and 3.02 ms median,
/// 400 runs back to back, alternated).
pub fn free_heap_pages() {
    // SAFETY: `mi_collect` only returns free memory of mimalloc's own heaps to the OS.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Has mimalloc give each page back to the kernel as soon as it is free, in a process that is
/// to wait more than work (a detached container's monitor). mimalloc otherwise keeps freed
/// pages for a while to reuse them, and an idle process keeps some for good: measured, an
/// idle container's monitor then held 424 KiB of anonymous memory instead of 388, which
/// `mi_collect` does not return. Not for a process that allocates much: a compile took 10%
/// longer (one `madvise` per page).
pub fn purge_at_once() {
    // SAFETY: options are plain settings that mimalloc reads when it next frees a page.
    unsafe {
        let delay = libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY);
        if delay != 0 {
            USUAL_PURGE_DELAY.store(delay as i64, std::sync::atomic::Ordering::Relaxed);
        }
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// Undoes [`purge_at_once`], for the work of a guest or of a compiler.
pub fn purge_later() {
    let delay = USUAL_PURGE_DELAY.load(std::sync::atomic::Ordering::Relaxed);
    if delay != 0 {
        // SAFETY: as in `purge_at_once`.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay as _) };
    }
}

/// mimalloc.h's `mi_option_purge_delay` (libmimalloc-sys does not name it): milliseconds a
/// freed page is kept before it is given back (10; ×10 for its arenas).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The delay [`purge_at_once`] replaced; 0 until it has.
static USUAL_PURGE_DELAY: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Finds the executable's read-only segments, so that [`drop_code_pages`] can run in a signal
/// handler (finding them allocates).
pub fn prepare() {
    CODE_SEGMENTS.get_or_init(read_only_segments);
}

static CODE_SEGMENTS: OnceLock<Vec<Range<usize>>> = OnceLock::new();

/// Unmaps the pages of the read-only segments found by [`prepare`] (nothing before it).
/// Async-signal-safe: an atomic load and `madvise` calls.
pub fn drop_code_pages() {
    for segment in CODE_SEGMENTS.get().map_or(&[][..], Vec::as_slice) {
        // SAFETY: the range is one of this executable's loaded segments that is mapped
        // without write permission, so no page of it differs from the file: dropping the
        // mapping loses nothing, and a later access maps the same bytes again.
        unsafe {
            libc::madvise(
                segment.start as *mut libc::c_void,
                segment.len(),
                libc::MADV_DONTNEED,
            )
        };
    }
}

/// The whole pages of the executable's loaded segments that are not writable (code and
/// read-only data), from its program headers.
fn read_only_segments() -> Vec<Range<usize>> {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and
        // `data` is the Vec below.
        let (info, found) = unsafe { (&*info, &mut *(data as *mut Vec<Range<usize>>)) };
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let page = 4096;
        for header in headers
            .iter()
            .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0)
        {
            let start = (info.dlpi_addr as usize + header.p_vaddr as usize).next_multiple_of(page);
            let end = (info.dlpi_addr as usize + (header.p_vaddr + header.p_memsz) as usize)
                & !(page - 1);
            if end > start {
                found.push(start..end);
            }
        }
        // The first object is the executable itself; its libraries (if any) are not ours.
        1
    }
    let mut found: Vec<Range<usize>> = Vec::new();
    // SAFETY: the callback matches dl_iterate_phdr's contract and only reads the headers.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            &mut found as *mut _ as *mut libc::c_void,
        )
    };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_given_back_at_once_until_told_otherwise() {
        let option = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let usual = option();
        assert_ne!(usual, 0, "mimalloc delays purges by default");
        purge_at_once();
        assert_eq!(option(), 0);
        purge_at_once();
        purge_later();
        assert_eq!(option(), usual);
    }

    /// Resident KiB of this process's read-only mappings of its own executable, from smaps.
    fn executable_rss_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut counted = false;
        let mut total = 0;
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A mapping's header: "start-end perms offset dev inode [path]".
            if fields.len() >= 5 && fields[0].contains('-') && fields[1].len() == 4 {
                counted = fields.get(5) == Some(&exe) && !fields[1].contains('w');
            } else if counted && fields.first() == Some(&"Rss:") {
                total += fields[1].parse::<u64>().unwrap();
            }
        }
        total
    }

    #[test]
    fn the_code_segments_found_are_the_executables_read_only_ones() {
        let segments = read_only_segments();
        assert!(!segments.is_empty());
        let code = read_only_segments as fn() -> Vec<Range<usize>> as usize;
        assert!(
            segments.iter().any(|s| s.contains(&code)),
            "this function's code is in no segment: {segments:x?}"
        );
        static WRITABLE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        let data = &WRITABLE as *const _ as usize;
        assert!(
            !segments.iter().any(|s| s.contains(&data)),
            "a writable static is in {segments:x?}"
        );
    }

    #[test]
    fn the_main_stack_is_found_and_other_threads_stacks_are_not_it() {
        let stack = main_stack().expect("a [stack] mapping");
        assert!(stack.start < stack.end && stack.end - stack.start >= 4096);
        let local = 0u8;
        let here = std::hint::black_box(&local) as *const u8 as usize;
        let on_main = std::thread::current().name() == Some("main");
        assert_eq!(stack.contains(&here), on_main, "{stack:x?} {here:x}");
    }

    #[test]
    fn giving_back_unmaps_code_pages_and_the_code_still_runs() {
        let before = executable_rss_kib();
        give_back();
        let after = executable_rss_kib();
        assert!(
            after < before,
            "resident code pages {before} KiB before, {after} KiB after"
        );
        // Code and read-only data used after the unmapping come back as they were.
        let text = format!(
            "{:?}",
            std::collections::BTreeMap::from([(1, "one"), (2, "two")])
        );
        assert_eq!(text, r#"{1: "one", 2: "two"}"#);
    }
}
