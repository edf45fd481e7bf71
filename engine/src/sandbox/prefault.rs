//! Maps the binary's pages into a freshly forked process ahead of use. A fork copies no page
//! table entries for file-backed memory, so a pooled process would otherwise take a minor
//! fault on each code page the first time its claim runs it; this moves them off the start
//! path.

/// `MADV_POPULATE_READ` (Linux 5.14): fault the range in, readable, without changing it.
const MADV_POPULATE_READ: libc::c_int = 22;

/// Populates every file-backed mapping of the running binary; errors are ignored (an older
/// kernel only loses the gain).
pub fn binary_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines().filter(|line| line.ends_with(exe.as_ref())) {
        let Some((start, end)) = line
            .split_whitespace()
            .next()
            .and_then(|range| range.split_once('-'))
        else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        populate(start, end);
    }
}

/// Populates `range`, one of this process's own mappings (widened to whole pages).
pub fn range(range: std::ops::Range<*const u8>) {
    let page = 4096;
    let start = range.start as usize & !(page - 1);
    populate(start, range.end as usize);
}

fn populate(start: usize, end: usize) {
    if end > start {
        // SAFETY: the range lies within this process's own mappings; populating reads it only.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_READ) };
    }
}
