//! A sandbox's set-up arena: blocks handed out one after another from one mapping, from the
//! sandbox's start until its guest is about to run, and kept for the process's life. `run`'s
//! command line is parsed there first, and the arena emptied once the result is copied out.
//!
//! A sandbox's set-up makes about a thousand allocations (≈200 KB for a hello, ≈90 KB of it
//! still live when the guest starts: the engine's, the module's, the store's and the WASI
//! context's) and then, for a guest that only waits, none. mimalloc spreads them over a page
//! per size class; here they lie side by side. A freed block's room is taken back only when
//! it was the last one handed out (a growing vector's, a short-lived buffer's); else it stays
//! unused, a few tens of KiB in all.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The arena's address space, reserved and touched only as far as blocks reach: set-up needs
/// a few hundred KiB; once full, blocks come from mimalloc again.
const RESERVED: usize = 2 << 20;

/// Blocks above this size come from mimalloc, which gives large ones pages of their own.
const LARGEST_BLOCK: usize = 32 << 10;

/// The arena a sandbox's set-up allocates from ([`crate::allocator`] asks it first).
pub static SETUP: Arena = Arena::new();

/// Blocks one after another in one mapping, made when the arena is opened.
pub struct Arena {
    start: AtomicUsize,
    next: AtomicUsize,
    /// Blocks handed out and not freed.
    live: AtomicUsize,
    open: AtomicBool,
}

impl Arena {
    pub const fn new() -> Arena {
        Arena {
            start: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            open: AtomicBool::new(false),
        }
    }

    /// Hands blocks out from now on, after those handed out before, mapping the arena the
    /// first time; does nothing if mapping fails.
    pub fn open(&self) {
        if self.start.load(Ordering::Relaxed) != 0 {
            self.open.store(true, Ordering::Release);
            return;
        }
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RESERVED,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return;
        }
        self.next.store(start as usize, Ordering::Relaxed);
        self.start.store(start as usize, Ordering::Relaxed);
        self.open.store(true, Ordering::Release);
    }

    /// Hands no more blocks out: what was allocated stays where it is.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// Whether the arena made the block at `ptr`.
    pub fn owns(&self, ptr: *mut u8) -> bool {
        let start = self.start.load(Ordering::Relaxed);
        start != 0 && (start..start + RESERVED).contains(&(ptr as usize))
    }

    /// A block for `layout`, or None when the arena is closed, full, or the block large.
    pub fn alloc(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() > LARGEST_BLOCK || !self.open.load(Ordering::Acquire) {
            return None;
        }
        // Counted before the arena is asked again whether it is open, as `empty_if_unused`
        // closes it before it counts: one of the two sees the other (both `SeqCst`).
        self.live.fetch_add(1, Ordering::SeqCst);
        let block = self.bump(layout);
        if block.is_none() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
        block
    }

    /// The next `layout.size()` bytes, if the arena is still open and has them.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if !self.open.load(Ordering::SeqCst) {
            return None;
        }
        let end = self.start.load(Ordering::Relaxed) + RESERVED;
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let block = next.checked_next_multiple_of(layout.align())?;
            let after = block
                .checked_add(layout.size())
                .filter(|after| *after <= end)?;
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(block as *mut u8),
                Err(moved) => next = moved,
            }
        }
    }

    /// Takes the room of the block at `ptr` back if it was the last one handed out.
    pub fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        let after = ptr as usize + layout.size();
        let _ =
            self.next
                .compare_exchange(after, ptr as usize, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Resizes the block at `ptr` where it lies, when it is the last one handed out and the
    /// arena is open with room for it; false if it must move.
    pub fn resize_in_place(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> bool {
        if new_size > LARGEST_BLOCK || !self.open.load(Ordering::Acquire) {
            return false;
        }
        let end = self.start.load(Ordering::Relaxed) + RESERVED;
        let after = ptr as usize + layout.size();
        let fits = (ptr as usize)
            .checked_add(new_size)
            .filter(|new_after| *new_after <= end);
        fits.is_some_and(|new_after| {
            self.next
                .compare_exchange(after, new_after, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// When the arena is closed and every block it handed out was freed: gives its pages back
    /// to the kernel (the whole reservation: pages never touched cost nothing to drop) and
    /// hands the next blocks out from its start. Whether it did.
    pub fn empty_if_unused(&self) -> bool {
        let start = self.start.load(Ordering::Relaxed);
        if start == 0 || self.open.load(Ordering::SeqCst) || self.live.load(Ordering::SeqCst) != 0 {
            return false;
        }
        // SAFETY: the arena's own mapping, in which no block is live.
        unsafe { libc::madvise(start as *mut libc::c_void, RESERVED, libc::MADV_DONTNEED) };
        self.next.store(start, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_lie_side_by_side_and_the_last_ones_room_comes_back() {
        let arena = Arena::new();
        assert_eq!(
            arena.alloc(layout(8, 8)),
            None,
            "closed before it is opened"
        );
        arena.open();
        let first = arena.alloc(layout(24, 8)).unwrap();
        let second = arena.alloc(layout(10, 16)).unwrap();
        assert!(arena.owns(first) && arena.owns(second));
        assert_eq!(second as usize, (first as usize + 24).next_multiple_of(16));
        arena.dealloc(first, layout(24, 8));
        let third = arena.alloc(layout(8, 8)).unwrap();
        let after_second = (second as usize + 10).next_multiple_of(8);
        assert_eq!(
            third as usize, after_second,
            "only the last block's room returns"
        );
        arena.dealloc(third, layout(8, 8));
        assert_eq!(arena.alloc(layout(8, 8)), Some(third));
        assert!(
            arena.resize_in_place(third, layout(8, 8), 4000),
            "the last block grows"
        );
        assert!(
            !arena.resize_in_place(second, layout(10, 16), 20),
            "an inner one moves"
        );
        assert_eq!(
            arena.alloc(layout(LARGEST_BLOCK + 1, 8)),
            None,
            "large blocks go elsewhere"
        );
        arena.close();
        assert_eq!(arena.alloc(layout(8, 8)), None);
        assert!(!arena.resize_in_place(third, layout(4000, 8), 5000));
        assert!(arena.owns(third), "closed, its blocks stay");
        assert!(!arena.owns(Box::into_raw(Box::new(0u8))));
    }

    #[test]
    fn an_arena_whose_blocks_were_all_freed_is_emptied_and_starts_again() {
        let arena = Arena::new();
        arena.open();
        let first = arena.alloc(layout(5000, 8)).unwrap();
        let second = arena.alloc(layout(100, 8)).unwrap();
        // SAFETY: both blocks are the arena's, written within their layouts.
        unsafe {
            first.write_bytes(0x5a, 5000);
            second.write_bytes(0x5a, 100);
        }
        assert!(!arena.empty_if_unused(), "not while it is open");
        arena.close();
        arena.dealloc(first, layout(5000, 8));
        assert!(!arena.empty_if_unused(), "not while a block is live");
        arena.dealloc(second, layout(100, 8));
        assert!(arena.empty_if_unused());
        arena.open();
        let again = arena.alloc(layout(5000, 8)).unwrap();
        assert_eq!(again, first, "handed out from the start again");
        // SAFETY: a block of the arena, read within its layout.
        assert!(
            (0..5000).all(|i| unsafe { *again.add(i) } == 0),
            "its pages given back, so zero again"
        );
    }

    #[test]
    fn a_full_arena_hands_nothing_out() {
        let arena = Arena::new();
        arena.open();
        let block = layout(LARGEST_BLOCK, 4096);
        let handed = std::iter::from_fn(|| arena.alloc(block)).count();
        assert_eq!(handed, RESERVED / LARGEST_BLOCK);
        assert_eq!(arena.alloc(layout(1, 1)), None);
    }
}
