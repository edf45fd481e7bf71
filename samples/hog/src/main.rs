//! Grows linear memory 1 MiB at a time, writing to every page, until `memory.grow` is
//! refused; then reports how far it got and exits 0. `hog N` stops after N MiB.

#[cfg(target_arch = "wasm32")]
fn grow_one_mib() -> bool {
    const PAGE: usize = 65536;
    const PAGES: usize = 16;
    let previous = core::arch::wasm32::memory_grow(0, PAGES);
    if previous == usize::MAX {
        return false;
    }
    let base = (previous * PAGE) as *mut u8;
    for page in 0..PAGES {
        // SAFETY: these pages were just added by memory.grow and nothing else owns them.
        unsafe { base.add(page * PAGE).write_volatile(1) };
    }
    true
}

#[cfg(not(target_arch = "wasm32"))]
fn grow_one_mib() -> bool {
    false
}

fn main() {
    let stop_at = std::env::args().nth(1).and_then(|s| s.parse::<u64>().ok());
    let mut grown: u64 = 0;
    while stop_at.is_none_or(|max| grown < max) {
        if !grow_one_mib() {
            println!("hog: memory.grow refused after {grown} MiB");
            return;
        }
        grown += 1;
    }
    println!("hog: grew {grown} MiB");
}
