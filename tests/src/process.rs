//! Finding and signalling the host processes that a test's runs start.

use std::path::Path;

/// Sends `signo` to `pid`; kill(2)'s result.
pub fn kill(pid: i32, signo: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signo) }
}

/// PIDs of live processes whose command line contains every needle.
pub fn processes_matching(needles: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            !cmdline.is_empty() && needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

/// Processes whose command line mentions `root`: a world's runs, or a daemon and everything
/// it forked.
pub fn processes_of(root: &Path) -> Vec<i32> {
    processes_matching(&[&root.to_string_lossy()])
}
