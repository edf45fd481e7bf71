//! wrun's global allocator, chosen by what a process does:
//!
//! - **setting up and waiting** (the command line, a container's monitor, a supervisor, a
//!   pool's supervisor once it has forked its sandbox: [`allocate_compactly`]): blocks up to
//!   16 KiB from musl's allocator, the compact one, larger ones from mimalloc;
//! - **a sandbox's set-up**: side by side in an arena ([`setup_arena`]), from loading its
//!   module until its guest is about to run; `run`'s command line is parsed there too, and
//!   copied out ([`copy_out_of_setup_arena`]);
//! - **a command's guest running**: as a process that sets up and waits, until it has had
//!   [`BUSY_AFTER`] small blocks ([`close_setup_arena`]);
//! - **work that allocates much, on several threads** (a compiler, an HTTP handler's server,
//!   a warm pool's daemon and sandboxes, a busy guest): mimalloc for everything
//!   ([`allocate_for_speed`]), with small sizes rounded up in a sandbox ([`round_small_sizes`]);
//! - **waiting from its start** (a detached container's monitor carried on after its exec,
//!   `container::hand_over`): musl's for everything.
//!
//! mimalloc keeps a 64 KiB page per size class in use and starts a small size class's blocks a
//! little past the page's start, so the first 4 KiB of blocks it prepares span two pages of
//! memory: a carried-on monitor held 84 KiB of heap with it for a few KiB of live data, 16 KiB
//! with musl's. musl's allocator, for its part, maps and unmaps memory for many of its larger
//! blocks: a sandbox set up with it for blocks up to 16 KiB started a hello ≈0.3 ms later
//! (≈45 more `mmap` and 25 `munmap` calls). A sandbox inherits its parent's heap at the fork,
//! freed blocks and all: musl's keeps that small. Measured on idle detached containers
//! (docs/architecture.md, "Set-up allocates compactly, work fast"): 494–497 KiB of anonymous
//! memory each with mimalloc everywhere, 381–384 KiB with this split and the arena, and a
//! hello no slower.

mod setup_arena;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use setup_arena::SETUP;

/// From now on, a sandbox's set-up allocates side by side ([`setup_arena`]).
pub fn open_setup_arena() {
    SETUP.open();
}

/// Closes the set-up arena, leaving what it made where it is; gives `value` back.
pub fn leave_setup_arena<T>(value: T) -> T {
    SETUP.close();
    value
}

/// Closes the set-up arena, in which `value` was made (`run`'s command line, parsed there:
/// musl's allocator maps and unmaps memory for its larger blocks as a parse's vectors grow,
/// ≈40 calls a parse), and gives back a copy of it made by the process's allocator. The
/// arena is emptied if nothing else of it is live, so that a sandbox forked later starts its
/// set-up from the arena's start and inherits none of the parse's pages. Only where no other
/// thread opens the arena meanwhile (`main`, before it starts any).
pub fn copy_out_of_setup_arena<T: Clone>(value: T) -> T {
    SETUP.close();
    let copy = value.clone();
    drop(value);
    SETUP.empty_if_unused();
    copy
}

/// From now on, every block comes from mimalloc, the fast allocator on many threads: for a
/// compiler, an HTTP handler's server, a warm pool and its sandboxes (their allocations come
/// and go). The set-up arena, if open, closes: its blocks stay where they are.
pub fn allocate_for_speed() {
    SETUP.close();
    CHOSEN.store(MIMALLOC, Ordering::Relaxed);
}

/// From now on, small blocks come from musl's allocator again, larger ones from mimalloc: for
/// a process forked from one that allocates for speed, which from then on sets up and waits.
pub fn allocate_compactly() {
    SETUP.close();
    CHOSEN.store(SPLIT, Ordering::Relaxed);
}

/// A command's guest is about to run: small blocks come from musl's allocator again until the
/// guest's host calls have made [`BUSY_AFTER`] of them, then every block from mimalloc. An
/// idle guest's few host calls then cost ≈65 KiB less than with mimalloc; a busy one (a
/// server) soon allocates for speed. The set-up arena's blocks stay where they are. Nothing
/// changes in a process that allocates for speed already (a warm pool's sandbox).
pub fn close_setup_arena() {
    SETUP.close();
    let _ = CHOSEN.compare_exchange(SPLIT, GUEST, Ordering::Relaxed, Ordering::Relaxed);
}

/// How many small blocks a command's guest gets from musl's allocator before it allocates
/// for speed: an idle guest makes a few per wake-up; a server, a few per request.
const BUSY_AFTER: usize = 4096;

/// Small blocks a command's guest has had from musl's allocator.
static GUEST_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// Set (to anything) in the environment of a process that is to allocate with musl's
/// allocator from its first allocation.
pub const COMPACT_ENV: &std::ffi::CStr = c"WRUN_COMPACT_HEAP";

/// The largest block musl's allocator makes in a process that sets up and waits.
const SMALL_BLOCK: usize = 16 << 10;

/// The global allocator: see the module.
pub struct Allocator;

const UNDECIDED: u8 = 0;
/// Small blocks musl's, larger ones mimalloc's.
const SPLIT: u8 = 1;
const MIMALLOC: u8 = 2;
const MUSL: u8 = 3;
/// As [`SPLIT`], until a command's guest has had [`BUSY_AFTER`] small blocks.
const GUEST: u8 = 4;

static CHOSEN: AtomicU8 = AtomicU8::new(UNDECIDED);

/// How this process allocates now; at its first allocation, [`SPLIT`] unless [`COMPACT_ENV`]
/// is set.
fn chosen() -> u8 {
    match CHOSEN.load(Ordering::Relaxed) {
        UNDECIDED => {
            // SAFETY: getenv reads the environment, which nothing changes this early.
            let compact = !unsafe { libc::getenv(COMPACT_ENV.as_ptr()) }.is_null();
            let choice = if compact { MUSL } else { SPLIT };
            CHOSEN.store(choice, Ordering::Relaxed);
            choice
        }
        choice => choice,
    }
}

/// Whether musl's allocator takes a block of `size` bytes now.
fn musl_takes(size: usize) -> bool {
    match chosen() {
        MUSL => true,
        SPLIT => size <= SMALL_BLOCK,
        GUEST if size <= SMALL_BLOCK => {
            let busy = GUEST_BLOCKS.fetch_add(1, Ordering::Relaxed) >= BUSY_AFTER;
            if busy {
                CHOSEN.store(MIMALLOC, Ordering::Relaxed);
            }
            !busy
        }
        _ => false,
    }
}

/// Whether mimalloc made the block at `ptr` (a process holds blocks of both allocators: what
/// it allocated before it changed, and what its parent did before the fork).
fn mimalloc_owns(ptr: *mut u8) -> bool {
    // SAFETY: only asks whether the address lies in one of mimalloc's segments.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

// SAFETY: each block is freed or resized by the allocator that made it.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = SETUP.alloc(layout) {
            return block;
        }
        if musl_takes(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(mimalloc_layout(layout)) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(block) = SETUP.alloc(layout) {
            // The room may be a freed block's, taken back.
            unsafe { block.write_bytes(0, layout.size()) };
            return block;
        }
        if musl_takes(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(mimalloc_layout(layout)) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if SETUP.owns(ptr) {
            SETUP.dealloc(ptr, layout);
        } else if mimalloc_owns(ptr) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if SETUP.owns(ptr) {
            unsafe { self.move_from_arena(ptr, layout, new_size) }
        } else if mimalloc_owns(ptr) {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, mimalloc_size(new_size)) }
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

impl Allocator {
    /// Resizes a block of the set-up arena: where it lies if it can, else in a new block (of
    /// the arena while it is open, else mimalloc's).
    unsafe fn move_from_arena(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if SETUP.resize_in_place(ptr, layout, new_size) {
            return ptr;
        }
        // SAFETY: the caller's contract for `realloc`: `new_size` fits the layout's alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size, as `realloc` requires of its caller.
        let block = unsafe { self.alloc(new_layout) };
        if !block.is_null() {
            // SAFETY: both blocks hold at least the bytes copied, and they do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size)) };
            SETUP.dealloc(ptr, layout);
        }
        block
    }
}

/// Whether small sizes are rounded up ([`round_small_sizes`]).
static ROUND_SMALL: AtomicBool = AtomicBool::new(false);

/// From now on, asks mimalloc for small blocks (up to 1 KiB) in power-of-two sizes. mimalloc has
/// four size classes per doubling, and each class in use holds at least one page of its own
/// (two pages of memory, see the module): a sandbox, whose few allocations mostly live as
/// long as it does, then touches fewer of them. Measured: an idle container ≈35 KiB smaller,
/// a hello run ≈25 fewer page faults (326–329 → 302–307), its time unchanged. Not for a
/// compiler: compiling a 26 MB module took ≈4% more CPU with it.
pub fn round_small_sizes() {
    ROUND_SMALL.store(true, Ordering::Relaxed);
}

/// The size to ask mimalloc for.
fn mimalloc_size(size: usize) -> usize {
    if size <= 1024 && ROUND_SMALL.load(Ordering::Relaxed) {
        size.next_power_of_two()
    } else {
        size
    }
}

fn mimalloc_layout(layout: Layout) -> Layout {
    // A power of two no larger than 1 KiB never overflows a layout.
    Layout::from_size_align(mimalloc_size(layout.size()), layout.align()).unwrap_or(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_round_up_to_powers_of_two_once_asked_and_large_ones_never() {
        assert_eq!(mimalloc_size(24), 24);
        round_small_sizes();
        let rounded: Vec<usize> = [1, 8, 9, 24, 33, 100, 513, 1024, 1025, 4000]
            .map(mimalloc_size)
            .to_vec();
        assert_eq!(rounded, [1, 8, 16, 32, 64, 128, 1024, 1024, 1025, 4000]);
        let layout = Layout::from_size_align(40, 16).unwrap();
        assert_eq!(
            mimalloc_layout(layout),
            Layout::from_size_align(64, 16).unwrap()
        );
    }

    /// The tests below change this process's choice: one at a time.
    static CHOICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn set_up_blocks_keep_their_bytes_when_they_move_out_and_reused_room_comes_zeroed() {
        let _choice = CHOICE.lock().unwrap();
        CHOSEN.store(SPLIT, Ordering::Relaxed);
        let small = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: each block is written within its layout, resized and freed with the layout
        // it has.
        unsafe {
            open_setup_arena();
            let block = Allocator.alloc(small);
            assert!(SETUP.owns(block));
            block.write_bytes(0x5a, 100);
            Allocator.dealloc(block, small);
            let zeroed = Allocator.alloc_zeroed(small);
            assert!(SETUP.owns(zeroed) && (0..100).all(|i| *zeroed.add(i) == 0));
            zeroed.write_bytes(0x5a, 100);
            let moved = Allocator.realloc(zeroed, small, 64 << 10);
            assert!(mimalloc_owns(moved), "too large for the arena");
            assert!((0..100).all(|i| *moved.add(i) == 0x5a));
            Allocator.dealloc(moved, Layout::from_size_align(64 << 10, 8).unwrap());
            let kept = Allocator.alloc(small);
            kept.write_bytes(0x77, 100);
            allocate_for_speed();
            let grown = Allocator.realloc(kept, small, 200);
            assert!(
                mimalloc_owns(grown),
                "a closed arena's blocks grow elsewhere"
            );
            assert!((0..100).all(|i| *grown.add(i) == 0x77));
            Allocator.dealloc(grown, Layout::from_size_align(200, 8).unwrap());
        }
    }

    #[test]
    fn a_guests_small_blocks_are_musls_until_it_is_busy_and_a_fast_process_stays_fast() {
        let _choice = CHOICE.lock().unwrap();
        let small = Layout::from_size_align(48, 8).unwrap();
        CHOSEN.store(SPLIT, Ordering::Relaxed);
        GUEST_BLOCKS.store(0, Ordering::Relaxed);
        close_setup_arena();
        // SAFETY: each block is freed with the layout it was made with.
        unsafe {
            let blocks: Vec<*mut u8> = (0..BUSY_AFTER).map(|_| Allocator.alloc(small)).collect();
            assert!(blocks.iter().all(|block| !mimalloc_owns(*block)));
            let busy = Allocator.alloc(small);
            assert!(mimalloc_owns(busy), "busy, the guest allocates for speed");
            for block in blocks.into_iter().chain([busy]) {
                Allocator.dealloc(block, small);
            }
            allocate_for_speed();
            close_setup_arena();
            let fast = Allocator.alloc(small);
            assert!(
                mimalloc_owns(fast),
                "a pooled sandbox's guest allocates for speed"
            );
            Allocator.dealloc(fast, small);
        }
    }

    #[test]
    fn blocks_come_from_the_allocator_chosen_and_go_back_to_the_one_that_made_them() {
        let _choice = CHOICE.lock().unwrap();
        CHOSEN.store(SPLIT, Ordering::Relaxed);
        let sizes = [
            1usize,
            24,
            100,
            700,
            5000,
            SMALL_BLOCK,
            SMALL_BLOCK + 1,
            100_000,
        ];
        // SAFETY: each layout has a non-zero size; each block is written within it, then
        // grown and freed with the layout it has.
        unsafe {
            let blocks = sizes.map(|size| {
                let block = Allocator.alloc(Layout::from_size_align(size, 8).unwrap());
                assert_eq!(mimalloc_owns(block), size > SMALL_BLOCK, "size {size}");
                block.write_bytes(0xa5, size);
                block
            });
            allocate_for_speed();
            for (block, size) in blocks.into_iter().zip(sizes) {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let grown = Allocator.realloc(block, layout, size * 3);
                assert!((0..size).all(|i| *grown.add(i) == 0xa5), "size {size}");
                assert_eq!(mimalloc_owns(grown), size > SMALL_BLOCK, "size {size}");
                Allocator.dealloc(grown, Layout::from_size_align(size * 3, 8).unwrap());
                let fast = Allocator.alloc(layout);
                assert!(mimalloc_owns(fast), "size {size}");
                Allocator.dealloc(fast, layout);
            }
            let musls = System.alloc(Layout::from_size_align(24, 8).unwrap());
            assert!(!mimalloc_owns(musls));
            Allocator.dealloc(musls, Layout::from_size_align(24, 8).unwrap());
        }
    }
}
