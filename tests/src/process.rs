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

/// wrun's background compilers (`wrun-compile`, detached from the runs that started them)
/// at work for runs in `root`.
pub fn background_compilers(root: &Path) -> Vec<i32> {
    processes_of(root)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "wrun-compile")
        })
        .collect()
}

/// Kills the background compilers of `root` (its cache is about to go) and waits until they
/// are gone: nobody reaps them here, init does.
pub fn end_background_compilers(root: &Path) {
    kill_and_wait(&background_compilers(root), 10);
}

/// SIGKILLs `pids` and waits up to `secs` for them to end; never panics, as it may run while
/// a failed test unwinds.
pub fn kill_and_wait(pids: &[i32], secs: u64) {
    for &pid in pids {
        kill(pid, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while pids.iter().any(|&pid| alive(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        state.flatten().is_some_and(|s| s != 'Z')
    })
}

/// What `pid`'s descriptors that are directories point at: a sandbox holding one could
/// `openat` its way past its root (the host's `/sys/fs/cgroup`, say).
pub fn directory_descriptors(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.is_dir()))
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect()
}

/// The cgroup of `pid` in each v1 hierarchy (or the v2 one), as `/proc/<pid>/cgroup` has it:
/// `(controllers, path)`.
pub fn cgroups_of(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((controllers.to_string(), path.to_string()))
        })
        .collect()
}

/// The inodes of the sockets `pid`'s descriptors point at (`socket:[N]`).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The inode of the listening Unix socket bound at `path`, in this network namespace's
/// `/proc/net/unix` (a listener's flags have `__SO_ACCEPTCON`, 0x10000).
pub fn listening_socket_inode(path: &std::path::Path) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = u64::from_str_radix(fields.get(3)?, 16).ok()?;
        let listening = flags & 0x10000 != 0;
        (listening && fields.get(7) == Some(&path.to_str()?))
            .then(|| fields.get(6)?.parse().ok())
            .flatten()
    })
}
