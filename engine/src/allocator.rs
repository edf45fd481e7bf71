//! wrun's global allocator: mimalloc, fast on wasmtime's many small allocations; musl's own in
//! a process that only waits from its start (a detached container's monitor carried on after
//! its exec, `container::hand_over`), where it is the more compact of the two.
//!
//! mimalloc keeps a 64 KiB page per size class in use, and starts a small size class's blocks
//! past the page's first 4 KiB boundary, so each class in use holds two pages of memory: a
//! carried-on monitor held 84 KiB of heap for a few KiB of live data.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// Set (to anything) in the environment of a process that is to allocate with musl's
/// allocator from its first allocation.
pub const COMPACT_ENV: &std::ffi::CStr = c"WRUN_COMPACT_HEAP";

/// mimalloc, or musl's allocator where [`COMPACT_ENV`] is set.
pub struct Allocator;

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const MUSL: u8 = 2;

static CHOSEN: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Which allocator this process uses, decided at its first allocation.
fn chosen() -> u8 {
    match CHOSEN.load(Ordering::Relaxed) {
        UNDECIDED => {
            // SAFETY: getenv reads the environment, which nothing changes this early.
            let compact = !unsafe { libc::getenv(COMPACT_ENV.as_ptr()) }.is_null();
            let choice = if compact { MUSL } else { MIMALLOC };
            CHOSEN.store(choice, Ordering::Relaxed);
            choice
        }
        choice => choice,
    }
}

/// Whether musl's allocator made the block at `ptr` (in a compact process, mimalloc made only
/// what was allocated before the choice, if anything).
fn musl_owns(ptr: *mut u8) -> bool {
    // SAFETY: only asks whether the address lies in one of mimalloc's segments.
    chosen() == MUSL && !unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: each block is freed or resized by the allocator that made it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match chosen() {
            MUSL => unsafe { System.alloc(layout) },
            _ => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match chosen() {
            MUSL => unsafe { System.alloc_zeroed(layout) },
            _ => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if musl_owns(ptr) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if musl_owns(ptr) {
            unsafe { System.realloc(ptr, layout, new_size) }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}
